"""Which devices training runs on: one, or several in step under ``tf.distribute.MirroredStrategy``.

With two or more GPUs visible, each batch is split across them and the gradients are summed
(synchronous data parallelism); the batch size stays the global one. Several logical CPU
devices (made with ``tf.config.set_logical_device_configuration``) count the same way, which is
how the tests exercise this path without a GPU. Beyond one machine the same code runs under
``tf.distribute.MultiWorkerMirroredStrategy`` with a ``TF_CONFIG`` per worker (see the README).
"""

from __future__ import annotations

import contextlib
from typing import Iterator


def select_strategy():
    """MirroredStrategy over every GPU when there are several (else over several logical CPUs),
    otherwise TensorFlow's default single-device strategy."""
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    cpus = tf.config.list_logical_devices("CPU")
    devices = gpus if len(gpus) > 1 else (cpus if not gpus and len(cpus) > 1 else [])
    if devices:
        return tf.distribute.MirroredStrategy(devices=[d.name for d in devices])
    return tf.distribute.get_strategy()


@contextlib.contextmanager
def distribution() -> Iterator[object]:
    """Make the selected strategy the current one for everything built inside (model, optimizer)."""
    import tensorflow as tf

    if tf.distribute.has_strategy():  # a caller already chose (e.g. MultiWorkerMirroredStrategy)
        yield tf.distribute.get_strategy()
        return
    strategy = select_strategy()
    with strategy.scope():
        yield strategy


def describe() -> dict:
    """The current strategy for run.json: its name, replica count and devices."""
    import tensorflow as tf

    s = tf.distribute.get_strategy()
    if not tf.distribute.has_strategy():
        return {"strategy": "one device", "replicas": 1, "devices": []}
    devices = list(getattr(s.extended, "worker_devices", ()) or ())
    return {"strategy": type(s).__name__, "replicas": int(s.num_replicas_in_sync), "devices": devices}
