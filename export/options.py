"""What ``export_model`` takes besides the model and the output folder, checked before any work."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from edgeclf.errors import EdgeclfError
from edgeclf.model import litert

from .quantize import METHODS

DEFAULT_CALIB_SIZE = 200
DEFAULT_MAX_DROP = 0.01
DEFAULT_PARITY_SIZE = 200
OPSETS = range(13, 19)  # what tf2onnx 1.17 writes


@dataclass(frozen=True)
class ExportOptions:
    """The options of one export (``export_model``'s keywords hold their defaults)."""

    int8: bool
    fp16: bool
    calib_dir: Path | None  # calibration images; None: the run's training split
    calib_size: int
    calib_method: str  # "auto" or one of quantize.METHODS
    opset: int
    max_drop: float  # the int8 guard: largest accepted drop vs fp32 (its 95% interval's lower end; int8.judge)
    parity_size: int
    seed: int
    unknown_reject: float = 0.02  # share of held-back in-class photos the unknown score's threshold rejects; 0: no score
    tflite: bool = False  # also model.int8.tflite (``--format tflite``), judged by the same guard

    @property
    def quantizes(self) -> bool:
        """Whether a quantized model is made: it needs calibration images and photos to judge it on."""
        return self.int8 or self.tflite

    @property
    def quantize_flag(self) -> str:
        """The option that asked for calibration, as error messages name it."""
        return "--int8" if self.int8 else "--format tflite"

    def check(self) -> None:
        """Raise EdgeclfError (as the command line spells the option) for a value out of range, or
        for ``--format tflite`` without the LiteRT interpreter that checks its model."""
        if self.tflite and not litert.available():  # before TensorFlow loads: the answer comes in a blink
            raise EdgeclfError(f"--format tflite needs ai-edge-litert to check the model: {litert.INSTALL_HINT}")
        if not math.isfinite(self.max_drop):  # NaN would reject every int8 model, inf accept any
            raise EdgeclfError(f"--max-drop {self.max_drop}: must be a finite accuracy drop (0.01 = 1 point)")
        if self.opset not in OPSETS:
            raise EdgeclfError(f"--opset {self.opset}: tf2onnx writes opsets {OPSETS.start} to {OPSETS.stop - 1}")
        if self.calib_size < 1:
            raise EdgeclfError(f"--calib-size {self.calib_size}: must be at least 1")
        if self.calib_method != "auto" and self.calib_method not in METHODS:
            raise EdgeclfError(f"--calib-method {self.calib_method}: expected auto, {', '.join(METHODS)}")
        if not 0 <= self.unknown_reject < 0.5:
            raise EdgeclfError(f"--unknown-reject {self.unknown_reject}: must be from 0 (no unknown score) to below 0.5")
        if self.parity_size < 1:
            raise EdgeclfError(f"parity size {self.parity_size}: must be at least 1")
