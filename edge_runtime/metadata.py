"""The keys edgeclf writes into an ONNX model's metadata_props, so the runtime needs no other file."""

CLASS_NAMES = "class_names"  # JSON list, index order
INPUT_HEIGHT = "input_height"
INPUT_WIDTH = "input_width"
COLOR_ORDER = "color_order"  # "RGB"
PREPROCESSING = "preprocessing"  # JSON object: resize rule, where rescaling happens
ARCHITECTURE = "architecture"
VAL_ACCURACY = "val_accuracy"
SOURCE_SHA256 = "source_sha256"  # hash of the Keras model file it came from
EDGECLF_VERSION = "edgeclf_version"
PRECISION = "precision"  # "fp32", "int8" or "fp16"
WEIGHTS = "weights"  # JSON object: the pretrained backbone and its weights file's SHA-256 (absent: from scratch)
INT8_CPUS = "int8_cpus"  # JSON list of sysinfo.CPU_FAMILIES the int8 model was made and checked for

INPUT_NAME = "image"  # uint8 NHWC, batch dynamic, RGB 0-255
OUTPUT_NAME = "probs"  # float32 [N, classes], softmax
