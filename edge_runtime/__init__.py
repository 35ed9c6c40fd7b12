"""edgeclf's edge runtime: what ships to the device (numpy, OpenCV, onnxruntime; never TensorFlow)."""

__version__ = "0.1.0"
