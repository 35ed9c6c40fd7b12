"""The phases of a run: one for a network trained from scratch, two for a pretrained backbone
(a new head on the frozen backbone, then its top blocks fine-tuned)."""

from __future__ import annotations

from dataclasses import dataclass

from .config import TrainConfig
from .models import ARCHITECTURES


@dataclass
class Stage:
    """One phase of training (mobilenet_v2 has two: head only, then fine-tuning)."""

    name: str
    epochs: int
    lr: float
    backbone_trainable_from: str | None = None  # None: whole model as built; "": backbone frozen
    label_smoothing: float = 0.1


def stages_of(cfg: TrainConfig) -> list[Stage]:
    """The stages of the run ``cfg`` describes (its defaults resolved)."""
    arch = ARCHITECTURES[cfg.model]
    lr = cfg.lr or arch.default_lr
    if arch.fine_tune_from is None or cfg.weights == "none":
        return [Stage("train", cfg.epochs, lr)]
    if arch.probe:  # the head is fitted on frozen features first (train.probe): fine-tuning only,
        # on the probe's own loss (plain cross-entropy: smoothing would first pull its logits in)
        return [Stage("fine-tune", cfg.epochs, lr * arch.fine_tune_lr_scale, backbone_trainable_from=arch.fine_tune_from,
                      label_smoothing=0.0)]
    # Transfer learning as keras-io's guide does it: a new head on the frozen backbone first (so
    # its random gradients cannot wreck the pretrained features), then the top blocks fine-tuned
    # slowly with BatchNorm kept in inference mode.
    head = min(cfg.epochs, arch.head_epochs) if cfg.epochs >= 2 else cfg.epochs
    head = min(head, max(1, cfg.epochs // 2))
    stages = [Stage("head", head, lr, backbone_trainable_from="")]
    if cfg.epochs - head > 0:
        stages.append(Stage("fine-tune", cfg.epochs - head, lr * arch.fine_tune_lr_scale,
                            backbone_trainable_from=arch.fine_tune_from))
    return stages


def probes(cfg: TrainConfig) -> bool:
    """Whether the run fits its head on the pretrained backbone's frozen features first (train.probe)."""
    return ARCHITECTURES[cfg.model].probe and cfg.weights != "none"


def set_trainable(model, stage: Stage) -> None:
    """Freeze or unfreeze ``model``'s backbone as ``stage`` says."""
    if stage.backbone_trainable_from is None:
        return
    backbone = model.get_layer("backbone")
    backbone.trainable = stage.backbone_trainable_from != ""
    if backbone.trainable:
        unfreeze = False
        for layer in backbone.layers:
            unfreeze = unfreeze or layer.name == stage.backbone_trainable_from
            # BatchNorm stays frozen (the backbone runs with training=False) as keras-io advises.
            layer.trainable = unfreeze and layer.__class__.__name__ != "BatchNormalization"
