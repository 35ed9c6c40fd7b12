"""A tiny real LiteRT int8 model for the tests (TensorFlow's converter: the train extra)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def colour_tflite(tmp: Path) -> bytes:
    """Full-integer int8 .tflite (uint8 input, float output) of softmax(0.05 * mean RGB) over red/green/blue."""
    import keras
    import tensorflow as tf

    inp = keras.Input((32, 32, 3))
    dense = keras.layers.Dense(3, activation="softmax")
    model = keras.Model(inp, dense(keras.layers.GlobalAveragePooling2D()(inp)))
    dense.set_weights([np.eye(3, dtype=np.float32) * 0.05, np.zeros(3, np.float32)])
    rng = np.random.default_rng(0)
    calib = [np.full((1, 32, 32, 3), c, np.float32) for c in (*np.eye(3) * 255, (0, 0, 0), (255, 255, 255))]
    calib += [rng.integers(0, 256, (1, 32, 32, 3)).astype(np.float32) for _ in range(10)]

    try:
        c = tf.lite.TFLiteConverter.from_keras_model(model)
    except Exception:  # noqa: BLE001 - Keras 3 models that it cannot take go through a SavedModel
        model.export(str(tmp / "saved_model"), format="tf_saved_model")
        c = tf.lite.TFLiteConverter.from_saved_model(str(tmp / "saved_model"))
    c.optimizations = [tf.lite.Optimize.DEFAULT]
    c.representative_dataset = lambda: ([x] for x in calib)
    c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    c.inference_input_type = tf.uint8
    c.inference_output_type = tf.float32
    return c.convert()


def scored_colour_tflite(tmp: Path, width: int = 4) -> tuple[bytes, list[str]]:
    """A full-integer int8 .tflite with two outputs, as ``export --format tflite`` writes where the
    unknown score is on: a ``width``-wide embedding (0.01 x mean RGB, then 0.1) and softmax
    probabilities over red/green/blue from it. Returns the flatbuffer and its outputs' names in
    LiteRT's order (told apart by width: with ``width`` 3, both are named as the probabilities)."""
    import keras
    import tensorflow as tf

    from edgeclf.model import metadata as md

    inp = keras.Input((32, 32, 3))
    embed = keras.layers.Dense(width, name="features")
    probs = keras.layers.Dense(3, activation="softmax", name="probs")
    features = embed(keras.layers.GlobalAveragePooling2D()(inp))
    model = keras.Model(inp, [probs(features), features])
    embed.set_weights([np.eye(3, width, dtype=np.float32) * 0.01, np.array([0, 0, 0, 0.1][:width], np.float32)])
    probs.set_weights([np.eye(width, 3, dtype=np.float32) * 2, np.zeros(3, np.float32)])
    rng = np.random.default_rng(0)
    calib = [np.full((1, 32, 32, 3), c, np.float32) for c in (*np.eye(3) * 255, (0, 0, 0), (255, 255, 255))]
    calib += [rng.integers(0, 256, (1, 32, 32, 3)).astype(np.float32) for _ in range(10)]
    model.export(str(tmp / f"saved_model_scored{width}"), format="tf_saved_model")
    c = tf.lite.TFLiteConverter.from_saved_model(str(tmp / f"saved_model_scored{width}"))
    c.optimizations = [tf.lite.Optimize.DEFAULT]
    c.representative_dataset = lambda: ([x] for x in calib)
    c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    c.inference_input_type = tf.uint8
    c.inference_output_type = tf.float32
    raw = c.convert()
    from ai_edge_litert.interpreter import Interpreter

    outs = Interpreter(model_content=raw).get_output_details()
    return raw, [md.OUTPUT_NAME if o["shape"][-1] == 3 else md.EMBEDDING_NAME for o in outs]
