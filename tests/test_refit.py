"""The refit (train/refit.py): once the held-out run has chosen how to train, the kept model is
trained again on every photo. run.json's validation figures stay the held-out run's, and export
and eval say that the validation photos were trained on."""

from __future__ import annotations

import json

import pytest

from conftest import TRAIN_EXTRA, error_line, run_cli

pytest.importorskip("tensorflow", reason=TRAIN_EXTRA)

CLUSTER = json.dumps({"cluster": {"worker": ["localhost:1", "localhost:2"]}, "task": {"type": "worker", "index": 0}})


def _cfg(tmp_path, **options):
    from edgeclf.train.config import TrainConfig

    return TrainConfig(data_dir=tmp_path, out=tmp_path / "run", **{"model": "efficientnet_lite0", "weights": "imagenet",
                                                                   **options})


def test_on_by_default_only_for_a_pretrained_network_on_a_small_split_of_its_own_folder(tmp_path, monkeypatch):
    from edgeclf.train.refit import REFIT_MAX_PHOTOS, planned

    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert planned(_cfg(tmp_path), 600)
    assert planned(_cfg(tmp_path), REFIT_MAX_PHOTOS) and not planned(_cfg(tmp_path), REFIT_MAX_PHOTOS + 1)
    assert not planned(_cfg(tmp_path, val_dir=tmp_path / "val"), 600)  # the user's own validation folder stays held out
    assert not planned(_cfg(tmp_path, weights="none"), 600)
    assert not planned(_cfg(tmp_path, model="edgenet"), 600)
    assert planned(_cfg(tmp_path, model="edgenet", refit=True), 600)  # asked for: any network, any size
    assert planned(_cfg(tmp_path, refit=True), 10 * REFIT_MAX_PHOTOS)
    assert not planned(_cfg(tmp_path, refit=False), 600)
    monkeypatch.setenv("TF_CONFIG", CLUSTER)
    assert not planned(_cfg(tmp_path), 600)  # a multi-worker run: the chief alone could not train again


def test_refit_in_a_multi_worker_run_is_a_one_line_error(tmp_path, shapes_dir):
    res = run_cli("train", shapes_dir, "--out", tmp_path / "run", "--refit", env={"TF_CONFIG": CLUSTER})
    assert "--refit" in error_line(res) and "multi-worker" in error_line(res)
    assert not (tmp_path / "run" / "model.keras").exists()


def test_run_json_refit_field_is_checked(tmp_path):
    from edgeclf.errors import EdgeclfError
    from edgeclf.train.run_record import record_from_dict

    assert record_from_dict({"class_names": ["a", "b"], "refit": {"photos": 10, "epochs": 2}}, "r").refitted
    assert not record_from_dict({"class_names": ["a", "b"], "refit": {"interrupted": True}}, "r").refitted
    assert not record_from_dict({"class_names": ["a", "b"]}, "r").refitted
    with pytest.raises(EdgeclfError, match="'refit'"):
        record_from_dict({"class_names": ["a", "b"], "refit": 5}, "run.json")


def _weights(path):
    import keras

    return keras.models.load_model(path, compile=False).get_weights()


def _train_with(tmp_path, shapes_dir, monkeypatch, **patches):
    """An edgenet run asked to refit, in this process, with ``patches`` set on train/refit.py's
    module; returns its summary, the held-out model's weights (read as the refit began), the kept
    model's, run.json and the rows of every data set the refit trained on."""
    import edgeclf.train.pipeline as pipeline
    import edgeclf.train.refit as refit_module
    from edgeclf.train.config import TrainConfig
    from edgeclf.train.trainer import train

    seen: dict = {"rows": []}
    real_refit, real_datasets = refit_module.refit, pipeline.datasets

    def spy(cfg, *args):
        seen.update(held_out=_weights(cfg.out / "model.keras"), run=json.loads((cfg.out / "run.json").read_text()))
        return real_refit(cfg, *args)

    def datasets(train_set, *args):  # the refit's own call (the trainer imported its own name before)
        seen["rows"].append(len(train_set))
        return real_datasets(train_set, *args)

    monkeypatch.setattr(refit_module, "refit", spy)
    monkeypatch.setattr(pipeline, "datasets", datasets)
    for name, value in patches.items():
        monkeypatch.setattr(refit_module, name, value)
    out = tmp_path / "run"
    run = train(TrainConfig(data_dir=shapes_dir, out=out, model="edgenet", img_size=32, epochs=2, refit=True, quiet=True))
    return run, seen, _weights(out / "model.keras"), json.loads((out / "run.json").read_text())


def test_the_model_trained_on_every_photo_replaces_the_held_out_one(tmp_path, shapes_dir, monkeypatch):
    import numpy as np

    run, seen, kept, on_disk = _train_with(tmp_path, shapes_dir, monkeypatch)
    assert seen["rows"] == [run["n_train"] + run["n_val"]] == [120]  # trained on the validation photos too
    assert not all(np.array_equal(a, b) for a, b in zip(kept, seen["held_out"]))
    assert run["refit"]["photos"] == 120 and run["refit"]["epochs"] == run["best"]["epoch"]
    assert on_disk["refit"] == run["refit"]
    # the validation figures are the held-out run's, as written before the refit began
    assert on_disk["val_report"] == seen["run"]["val_report"] and on_disk["best"] == seen["run"]["best"]


@pytest.mark.parametrize("failure, record", [(KeyboardInterrupt(), {"interrupted": True}),
                                             (FloatingPointError("nan"), {"diverged": True}),
                                             (MemoryError("out of memory"), {"failed": "out of memory"})])
def test_a_refit_stopped_half_way_keeps_the_held_out_model(tmp_path, shapes_dir, monkeypatch, failure, record):
    import numpy as np

    def stop(*args):  # as the refit's first stage begins, after its data and model are ready
        raise failure

    run, seen, kept, on_disk = _train_with(tmp_path, shapes_dir, monkeypatch, set_trainable=stop)
    assert seen["rows"] == [120]
    assert all(np.array_equal(a, b) for a, b in zip(kept, seen["held_out"]))
    assert run["refit"] == on_disk["refit"] == record


def test_eval_and_export_say_the_validation_photos_were_trained_on(tmp_path, shapes_dir):
    out = tmp_path / "run"
    res = run_cli("train", shapes_dir, "--out", out, "--model", "edgenet", "--img-size", "32", "--epochs", "1", "--refit")
    assert res.returncode == 0, res.stderr
    assert "refit: model.keras trained again on all 120 photos" in res.stdout + res.stderr
    run = json.loads((out / "run.json").read_text())
    res = run_cli("eval", out, "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["trained_on_these_photos"] is True
    assert "photos it has seen" in res.stderr
    res = run_cli("export", out)
    assert res.returncode == 0, res.stderr
    assert "not held out" in " ".join((res.stdout + res.stderr).split())
    refit = json.loads((out / "export" / "export.json").read_text())["refit"]
    assert refit["photos"] == 120 and refit["held_out_accuracy"] == run["val_report"]["accuracy"]
    # without a refit, neither says so
    res = run_cli("train", shapes_dir, "--out", tmp_path / "plain", "--model", "edgenet", "--img-size", "32", "--epochs", "1",
                  "--json")
    assert json.loads(res.stdout).get("refit") is None
    res = run_cli("eval", tmp_path / "plain", "--json")
    assert "trained_on_these_photos" not in json.loads(res.stdout) and "photos it has seen" not in res.stderr


def test_resume_may_turn_the_refit_on_or_off(tmp_path):
    """The refit comes after the run: a resumed run may change it, unlike the options that shape the run."""
    from edgeclf.errors import EdgeclfError
    from edgeclf.train.config import resume_options

    for given in (True, False):
        cfg = _cfg(tmp_path, refit=given)
        resume_options(cfg, {"refit": None, "seed": 1337})
        assert cfg.refit is given and cfg.seed == 1337
    cfg = _cfg(tmp_path)
    resume_options(cfg, {"refit": False})
    assert cfg.refit is False
    with pytest.raises(EdgeclfError, match="--seed"):
        resume_options(_cfg(tmp_path, seed=1), {"refit": None, "seed": 1337})
