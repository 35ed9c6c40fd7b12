"""``edgeclf bench``: latency, throughput and end-to-end speed on this device (``run``), the
report's tables and PNG (``report``), the machine's own matmul peak to hold them against
(``peak``), and bar charts without matplotlib (``charts``)."""
