"""Exporting a trained edgeclf run to ONNX: fp32 (checked against Keras), verified int8, and fp16.

Needs the ``train`` extra (TensorFlow, tf2onnx, onnx). The Python entry point is
:func:`edgeclf.export.api.export_model`.
"""
