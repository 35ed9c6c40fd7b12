"""The input pipeline: tf.data batches from the image cache, augmented (and mixed up) for training.

Augmentation runs here, not in the model, so the saved model holds only rescaling + network.
"""

from __future__ import annotations

from .config import TrainConfig
from .data import CachedSplit, split_dataset


def augmenter(seed: int):
    """The random augmentation applied to training batches (see ``augmentation_description``)."""
    import keras
    from keras import layers

    return keras.Sequential(
        [
            layers.RandomFlip("horizontal", seed=seed),
            layers.RandomRotation(0.06, fill_mode="reflect", seed=seed + 1),
            layers.RandomZoom((-0.2, 0.1), fill_mode="reflect", seed=seed + 2),
            layers.RandomTranslation(0.1, 0.1, fill_mode="reflect", seed=seed + 3),
            layers.RandomContrast(0.2, seed=seed + 4),
        ],
        name="augment",
    )


def augmentation_description(on: bool) -> str:
    """``augmenter`` in words, for run.json."""
    if not on:
        return "off"
    return "horizontal flip, rotation ±0.06 turn, zoom -20%..+10%, translation ±10%, contrast ±20% (training only)"


def datasets(train_set: CachedSplit, val_set: CachedSplit, num_classes: int, cfg: TrainConfig):
    """(training, validation) tf.data pipelines of float images and one-hot labels."""
    import tensorflow as tf

    def onehot(x, y):
        return tf.cast(x, tf.float32), tf.one_hot(y, num_classes)

    train = split_dataset(train_set, cfg.batch_size, shuffle_seed=cfg.seed).map(onehot, num_parallel_calls=tf.data.AUTOTUNE)
    if cfg.augment:
        aug = augmenter(cfg.seed)
        train = train.map(lambda x, y: (aug(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
    if cfg.mixup > 0:
        train = train.map(mixup(cfg.mixup, cfg.seed), num_parallel_calls=tf.data.AUTOTUNE)
    train = train.prefetch(tf.data.AUTOTUNE)
    val = split_dataset(val_set, 64).map(onehot).prefetch(tf.data.AUTOTUNE)
    return train, val


def mixup(alpha: float, seed: int):
    """Blend each batch with itself reversed, images and labels alike (mixup, Zhang et al. 2018):
    on a few hundred photos it keeps the network from memorising them."""
    import tensorflow as tf

    def mix(x, y):
        g1, g2 = tf.random.gamma([], alpha, seed=seed), tf.random.gamma([], alpha, seed=seed + 1)
        lam = g1 / (g1 + g2)
        return lam * x + (1 - lam) * tf.reverse(x, [0]), lam * y + (1 - lam) * tf.reverse(y, [0])

    return mix
