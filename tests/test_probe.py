"""LP-FT's pieces: the linear probe (train/probe.py) and the epoch choice that a tiny validation
split cannot fool (train/checkpoint.py)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import TRAIN_EXTRA

pytest.importorskip("tensorflow", reason=TRAIN_EXTRA)


def _features(n: int, dim: int = 32, seed: int = 0, separable: bool = True):
    """Features with a class signal in a few dimensions on very different scales (as pooled CNN
    features are), or labels with no relation to the features at all."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.normal(0, 1, (n, dim)) * rng.uniform(0.01, 5, dim)
    if separable:
        x[:, :3] += np.eye(3)[y] * 4 * x[:, :3].std(0)
    else:
        rng.shuffle(y)
    return x.astype(np.float32), y


def test_cross_validation_measures_held_out_accuracy_not_fit():
    from edgeclf.train.probe import L2_GRID, cross_validate

    x, y = _features(300)
    xn, yn = _features(300, separable=False)
    good = cross_validate(x, x, y, 3, seed=0)
    noise = cross_validate(xn, xn, yn, 3, seed=0)
    assert set(good) == set(L2_GRID)
    assert max(good.values()) >= 0.95
    # 32 features can fit 240 random labels far above chance; held-out folds cannot
    assert max(noise.values()) <= 0.5


def test_the_fitted_head_lives_in_the_dense_layer_with_standardisation_folded_in():
    """The head is fitted on standardised features, yet the Keras layer takes the raw ones."""
    import keras

    from edgeclf.train.probe import fit_head, softmax

    x, y = _features(600, seed=1)
    x, y, xt, yt = x[:400], y[:400], x[400:], y[400:]
    inputs = keras.Input((x.shape[1],))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="probs")(inputs))
    record = fit_head(model, x, x, y, 3, seed=0)  # no mirror images here: the plain features twice
    assert record["photos"] == len(x) and record["l2"] in (1e-3, 1e-2, 1e-1)
    probs = model.predict(xt, verbose=0)
    assert np.allclose(probs.sum(1), 1, atol=1e-5)
    assert (probs.argmax(1) == yt).mean() >= 0.95
    kernel, bias = model.get_layer("probs").get_weights()
    assert np.allclose(softmax(xt @ kernel + bias), probs, atol=1e-5)


def _checkpointer_run(tmp_path, accuracies: list[float], n_val: int | None) -> dict:
    import keras

    from edgeclf.train.checkpoint import Checkpointer

    tmp_path.mkdir()
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    state = {"history": [], "best": {"epoch": 0, "val_accuracy": 0.0, "val_loss": 0.0}, "wait": 0, "epoch": 0}
    cb = Checkpointer(tmp_path, state, patience=99, stage_index=0, n_val=n_val)
    cb.set_model(model)
    for epoch, acc in enumerate(accuracies):
        cb.on_epoch_begin(epoch)
        cb.on_epoch_end(epoch, {"loss": 0.1, "val_loss": 0.2, "val_accuracy": acc})
    return state


def test_a_later_epoch_wins_unless_credibly_worse(tmp_path):
    # 50 photos: 0.91 after 0.92 is one photo, noise; 0.80 is 6 photos fewer, beyond it
    state = _checkpointer_run(tmp_path / "a", [0.90, 0.92, 0.91, 0.80], n_val=50)
    assert state["best"]["epoch"] == 3 and state["best"]["val_accuracy"] == 0.91
    # without a split size (runs that are not LP-FT): the highest figure, as before
    state = _checkpointer_run(tmp_path / "b", [0.90, 0.92, 0.91, 0.80], n_val=None)
    assert state["best"]["epoch"] == 2
    # a perfect epoch on 70 photos, then one photo missed: still noise, the later epoch is kept
    state = _checkpointer_run(tmp_path / "d", [0.9857, 1.0, 0.9857], n_val=70)
    assert state["best"]["epoch"] == 3
    # 5,000 photos tell two points apart (the noise bound there is 1.1 points): the best stays
    state = _checkpointer_run(tmp_path / "c", [0.90, 0.92, 0.90], n_val=5000)
    assert state["best"]["epoch"] == 2


def _tiny_model():
    import keras

    inputs = keras.Input((4,))
    x = keras.layers.BatchNormalization()(inputs)
    return keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Dense(5)(x)))


@pytest.mark.parametrize("share", [0.5, 0.25])
def test_wise_ft_averages_the_kept_model_with_the_probes_weights(tmp_path, share):
    import keras

    from edgeclf.train.wise import PROBE_WEIGHTS, average_into, save_start

    model = _tiny_model()
    save_start(model, tmp_path)
    start = model.get_weights()
    tuned = [w + np.float32(1.0 + i) for i, w in enumerate(start)]
    model.set_weights(tuned)
    model.save(tmp_path / "model.keras")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras", PROBE_WEIGHTS]  # no temporary left
    assert average_into(tmp_path, share)
    kept = keras.models.load_model(tmp_path / "model.keras", compile=False).get_weights()
    for s, t, k in zip(start, tuned, kept):
        np.testing.assert_allclose(k, (1 - share) * s + share * t, rtol=1e-6, atol=1e-6)


def test_wise_ft_leaves_the_model_alone_at_share_one_or_without_probe_weights(tmp_path):
    from edgeclf.train.wise import PROBE_WEIGHTS, average_into, save_start

    model = _tiny_model()
    model.save(tmp_path / "model.keras")
    before = (tmp_path / "model.keras").read_bytes()
    assert not average_into(tmp_path, 0.5)  # no probe ran (a network trained from scratch)
    save_start(model, tmp_path)
    assert (tmp_path / PROBE_WEIGHTS).is_file()
    assert not average_into(tmp_path, 1.0)
    assert (tmp_path / "model.keras").read_bytes() == before
