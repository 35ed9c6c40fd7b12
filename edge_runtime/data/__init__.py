"""Labelled image folders read through the shared preprocessing (``labelled``), and the data
edgeclf generates itself for demos and tests (``synthetic``)."""
