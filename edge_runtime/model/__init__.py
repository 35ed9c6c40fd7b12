"""A model on this device: reading an exported ONNX file and its metadata (``metadata``), one
session factory for every execution provider (``session``, ``providers``), the thread policy
(``threads``, ``adaptive``), and the ``Classifier`` that puts them together (``classifier``).

Nothing is imported here: ``edgeclf.model.metadata`` stays light for the exporter, and only a
caller that classifies pays for onnxruntime."""
