"""``edgeclf train DATA --from RUN``: train again from a run, on its photos and new ones.

The loop "collect, sort, retrain, export, deploy": ``predict --collect`` keeps the frames worth a
look, a person sorts them into class folders (new classes too), and this retrains. The data is the
run's own folder and DATA together, as a folder of links inside the new run (so run.json's file
lists stay valid for ``export``); the network starts from the run's trained weights rather than
ImageNet's (every layer but the head, which the linear probe fits again for the classes there are
now); the recipe is otherwise the same.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from edgeclf.errors import EdgeclfError
from edgeclf.image import scan_class_folders

from .run_record import read_run_record

MERGED_DIR = "data"  # inside the new run folder


def merged_data(run: Path, new_data: Path, out: Path) -> Path:
    """``out/data/<class>/``: links to every photo of the run's data folder and of ``new_data``
    (class folders of the same name merge), rebuilt from scratch. Returns the folder."""
    record = read_run_record(run / "run.json")
    if not record.data_dir or not Path(record.data_dir).is_dir():
        raise EdgeclfError(f"{run}: its data folder {record.data_dir} is gone; --from needs the run's photos")
    folder = out / MERGED_DIR
    if folder.is_symlink() or folder.is_file():
        raise EdgeclfError(f"{folder}: in the way of --from's merged data folder")
    shutil.rmtree(folder, ignore_errors=True)
    for origin, root in (("run", Path(record.data_dir)), ("new", new_data)):
        classes, files = scan_class_folders(root)
        for c in classes:
            (folder / c).mkdir(parents=True, exist_ok=True)
            for i, f in enumerate(files[c]):
                os.symlink(f.resolve(), folder / c / f"{origin}-{i:05d}-{f.name}")
    return folder


def warm_start(run: Path | None, out: Path, model: str | None, img_size: int | None) -> tuple[str | None, int | None, Path | None]:
    """(--model, --img-size, the model file to start from) for ``--from run``: the run's
    architecture and input size unless given; as given, and no file, without ``--from``."""
    if run is None:
        return model, img_size, None
    if Path(out).resolve() == Path(run).resolve():
        raise EdgeclfError(f"{out}: --out is the run --from starts from; give the new run its own folder")
    if not (run / "run.json").is_file() or not (run / "model.keras").is_file():
        raise EdgeclfError(f"{run}: --from needs a run folder with run.json and model.keras")
    record = read_run_record(run / "run.json")
    return model or record.architecture, img_size or int(record.input_size[0]), run / "model.keras"


def transfer(model, source: Path) -> dict:
    """Copy every layer's weights from the Keras model in ``source`` into ``model`` where the
    names and shapes match, except the head (``probs``). Returns the record for run.json."""
    import keras

    old = keras.models.load_model(source, compile=False)
    copied = 0
    for layer in model.layers:
        if layer.name == "probs" or not layer.weights:
            continue
        try:
            theirs = old.get_layer(layer.name).get_weights()
        except ValueError:
            continue
        if [w.shape for w in theirs] == [tuple(w.shape) for w in layer.get_weights()]:
            layer.set_weights(theirs)
            copied += len(theirs)  # tensors: a pretrained backbone is one layer holding hundreds
    if copied == 0:
        raise EdgeclfError(f"{source}: no layer of it fits this network; --from needs a run of the same --model")
    with open(source, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    return {"source": "edgeclf run (--from)", "run": str(source.parent.resolve()), "file": source.name,
            "sha256": digest, "tensors_copied": copied}
