"""The runtime's top-1 agrees with the Keras model fed through the training input pipeline, on the
real cats/dogs JPEGs.

The ONNX model is exported here with tf2onnx ``from_function`` and a uint8 input signature (the
same contract as ``edgeclf export``), from a Keras model built by ``train.models``. Its weights are
random except the last layer, fitted by least squares, so the predictions vary across the photos
with clear margins, as in a trained model (a model that always says one class would prove nothing).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import TRAIN_EXTRA, run_cli

pytestmark = [pytest.mark.tf]

SIZE = 128


@pytest.fixture(scope="module")
def exported(tmp_path_factory, cats_dogs_dir):
    pytest.importorskip("tensorflow", reason=TRAIN_EXTRA)
    tf2onnx = pytest.importorskip("tf2onnx", reason=TRAIN_EXTRA)
    import keras
    import onnx
    import tensorflow as tf
    from onnx_fixtures import edgeclf_metadata

    from edgeclf.data.labelled import load_files
    from edgeclf.image import list_images
    from edgeclf.train.models import ARCHITECTURES

    keras_model = ARCHITECTURES["edgenet"].build(2, SIZE)
    # A head fitted by least squares on the random features of 200 photos: a model with a real
    # decision boundary across the photos, without the minutes of training.
    paths = [p for c in ("cats", "dogs") for p in list_images(cats_dogs_dir / c)[:100]]
    x, ok, _ = load_files(paths, (SIZE, SIZE))
    y = np.where(np.array([paths[i].parent.name == "dogs" for i in ok]), 1.0, -1.0)
    features = keras.Model(keras_model.input, keras_model.get_layer("gap").output).predict(x.astype(np.float32), verbose=0)
    design = np.c_[features, np.ones(len(features))]
    w = np.linalg.lstsq(design, y, rcond=None)[0]
    score = design @ w
    scale = 3.0 / score.std()
    half = (w * scale / 2).astype(np.float32)
    keras_model.get_layer("probs").set_weights([np.stack([-half[:-1], half[:-1]], 1), np.array([-half[-1], half[-1]])])

    spec = (tf.TensorSpec([None, SIZE, SIZE, 3], tf.uint8, name="image"),)

    @tf.function(input_signature=spec)
    def serve(image):
        return {"probs": keras_model(tf.cast(image, tf.float32), training=False)}

    model_proto, _ = tf2onnx.convert.from_function(serve, input_signature=spec, opset=17)
    for k, v in edgeclf_metadata(["cats", "dogs"], (SIZE, SIZE)).items():
        model_proto.metadata_props.add(key=k, value=v)
    path = tmp_path_factory.mktemp("parity") / "model.onnx"
    onnx.save(model_proto, str(path))
    return keras_model, path


def test_runtime_top1_agrees_with_keras_on_real_jpegs(exported, cats_dogs_dir):
    from edgeclf.data.labelled import load_labelled
    from edgeclf.image import read_image
    from edgeclf.model.classifier import Classifier

    keras_model, onnx_path = exported
    # Keras, fed as training feeds it (edgeclf.data.labelled is what train/data.py reads through).
    data = load_labelled(cats_dogs_dir, (SIZE, SIZE))
    keras_probs = keras_model.predict(data.x.astype(np.float32), batch_size=64, verbose=0)

    # The runtime, from the JPEG files, as on the device.
    clf = Classifier(onnx_path, provider="cpu")
    runtime_probs = np.stack([np.array(list(clf.predict(read_image(p)).probs.values())) for p in data.paths])

    keras_top = keras_probs.argmax(1)
    runtime_top = runtime_probs.argmax(1)
    agree = float(np.mean(keras_top == runtime_top))
    assert len(data.paths) >= 100
    assert min(np.mean(keras_top == 0), np.mean(keras_top == 1)) > 0.05, "the model must not predict one class only"
    # Only near-ties may differ (float summation order differs between TF and onnxruntime).
    margin = np.abs(keras_probs[:, 0] - keras_probs[:, 1])
    disagreements = np.flatnonzero(keras_top != runtime_top)
    print(f"parity: {len(data.paths)} photos, top-1 agreement {agree:.4f}, {len(disagreements)} differ, "
          f"max |prob diff| {np.max(np.abs(keras_probs - runtime_probs)):.2e}, keras says dogs for {np.mean(keras_top):.2f}")
    assert agree >= 0.99, f"top-1 agreement {agree:.4f}"
    assert np.all(margin[disagreements] < 0.01), margin[disagreements]
    assert np.max(np.abs(keras_probs - runtime_probs)) < 1e-3


def test_edgeclf_predict_folder_matches_keras(exported, cats_dogs_dir):
    """The whole CLI pipeline (reader thread, batches) on one class folder gives the same labels."""
    from edgeclf.data.labelled import load_files
    from edgeclf.image import list_images

    keras_model, onnx_path = exported
    paths = list_images(cats_dogs_dir / "cats")[:120]
    x, ok, _ = load_files(paths, (SIZE, SIZE))
    keras_labels = ["cats", "dogs"]
    expected = {str(paths[i]): keras_labels[j] for i, j in zip(ok, keras_model.predict(x.astype(np.float32), verbose=0).argmax(1))}
    r = run_cli("predict", onnx_path, cats_dogs_dir / "cats", "--json", "--batch", "16", "--max-frames", "120", "--provider", "cpu")
    assert r.returncode == 0, r.stderr
    got = {rec["source"]: rec["label"] for rec in map(json.loads, r.stdout.splitlines())}
    assert set(got) == set(expected)
    agree = np.mean([got[p] == expected[p] for p in expected])
    assert agree >= 0.99
