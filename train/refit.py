"""The refit: on a small data set, the kept model is trained once more on every photo, the
validation split included, the way the held-out run was trained and for as many epochs as it kept.

Holding out a fifth of a few hundred photos leaves a fifth less to learn from. On the recipe
benchmark's scenes set (600 training photos), the recipe trained on 80% of them scored 87.3% to
91.3% on the set's test photos over four splits, below a linear head fitted on all 600 (91.0%);
trained on all 600 it scored 91.7% and 92.3% (benchmarks/results/recipe-efficientnet_lite0.md).
The held-out run still decides how to train and says how good the recipe is: run.json's
validation figures, curves and confusion matrix stay its own, since the refitted model has seen
the validation photos.
"""

from __future__ import annotations

import math
import time
from typing import Callable

from .config import TrainConfig
from .data import CachedSplit, TrainingData
from .distribute import cluster_task
from .stages import probes, set_trainable, stages_of

#: Above this many photos the automatic refit is off: a fifth more photos gains less there, and
#: the second fit costs as much as the first (--refit still asks for it).
REFIT_MAX_PHOTOS = 5000


def planned(cfg: TrainConfig, photos: int) -> bool:
    """Whether the run ``cfg`` describes ends with a refit on its ``photos`` (training and
    validation together): ``--refit``/``--no-refit`` as given; by default (None) for a pretrained
    network (ImageNet's weights, a weights file or ``--from``'s) on a split of its own data
    folder, in one process, up to ``REFIT_MAX_PHOTOS``."""
    if cfg.refit is not None:
        return cfg.refit
    return probes(cfg) and cfg.val_dir is None and cluster_task() is None and photos <= REFIT_MAX_PHOTOS


def everything(data: TrainingData) -> CachedSplit:
    """Both splits as one (they are rows of one image cache)."""
    import numpy as np

    t, v = data.train, data.val
    return CachedSplit(t.cache, np.concatenate([t.rows, v.rows]), np.concatenate([t.y, v.y]), t.paths + v.paths)


def refit(cfg: TrainConfig, data: TrainingData, epochs: int, new_model: Callable,
          compile_stage: Callable) -> tuple[object, dict]:
    """The network trained afresh on every photo of ``data`` for ``epochs`` epochs (the held-out
    run's kept epoch) with the run's stages, probe (its L2 strength cross-validated again, on
    every photo) and WiSE-FT share; returns it (not saved) and its record for run.json.
    ``new_model`` and ``compile_stage`` are the trainer's."""
    import keras
    import numpy as np

    from .epochs import EpochProgress, load_progress
    from .pipeline import datasets
    from .wise import averaged

    started = time.time()
    photos = everything(data)
    merged = TrainingData(data.class_names, photos, data.val, data.skipped, data.fingerprint)
    keras.utils.set_random_seed(cfg.seed)
    model, _ = new_model(cfg, merged)
    start = None
    if probes(cfg):
        from .probe import linear_probe

        with load_progress(len(photos), "refit: linear probe on every photo", quiet=cfg.quiet) as advance:
            linear_probe(model, photos, len(data.class_names), cfg.seed, advance)
        start = model.get_weights()
    train_ds, _ = datasets(photos, data.val, len(data.class_names), cfg)
    steps, done = math.ceil(len(photos) / cfg.batch_size), 0
    for stage in stages_of(cfg):
        n = min(stage.epochs, epochs - done)
        if n <= 0:
            break
        set_trainable(model, stage)
        compile_stage(model, stage, steps)  # the stage's whole schedule, followed as far as the kept epoch
        shown = {"epoch": done, "best": {"epoch": None}}  # what EpochProgress reads: no best epoch here
        callbacks = [keras.callbacks.TerminateOnNaN()] + ([] if cfg.quiet else [EpochProgress(epochs, steps, shown, "refit")])
        history = model.fit(train_ds, epochs=done + n, initial_epoch=done, shuffle=False, verbose=0, callbacks=callbacks)
        done += n
        if not np.all(np.isfinite(history.history.get("loss", [0.0]))):
            raise FloatingPointError("the loss became non-finite")
    if start is not None and cfg.wise_ft < 1:
        model.set_weights(averaged(start, model.get_weights(), cfg.wise_ft))
    return model, {"photos": len(photos), "epochs": done, "seconds": round(time.time() - started, 1)}
