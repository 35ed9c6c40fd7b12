"""``edgeclf demo``: the whole chain on data it generates itself, in a few minutes on 2 CPU cores."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from edge_runtime.errors import EdgeclfError
from edge_runtime.synthetic import make_shapes_dataset

from .progress import console
from .trainer import TrainConfig, train

DEMO_IMAGES_PER_CLASS = 120
DEMO_SIZE = 64
DEMO_EPOCHS = 25


def run_demo(out: Path, force: bool = False, epochs: int = DEMO_EPOCHS) -> dict:
    """Generate shapes, train the default network on them, and report where everything went."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not force:
            raise EdgeclfError(f"{out}: already exists and is not empty; use --force to start over or --out elsewhere")
        if not (out / "data").is_dir() and not (out / "run").is_dir():
            raise EdgeclfError(f"{out}: not an edgeclf demo folder; refusing to delete it even with --force")
        shutil.rmtree(out)
    t0 = time.time()
    results: dict = {"out": str(out)}

    console.rule("[bold]1/4 data")
    data = make_shapes_dataset(out / "data", per_class=DEMO_IMAGES_PER_CLASS, size=96, seed=0)
    console.print(f"generated {3 * DEMO_IMAGES_PER_CLASS} images of circles, squares and triangles in {data}")

    console.rule("[bold]2/4 train")
    run = train(TrainConfig(data_dir=data, out=out / "run", model="edgenet", img_size=DEMO_SIZE, epochs=epochs,
                            batch_size=32, patience=epochs, seed=0))
    results["val_accuracy"] = run["best"]["val_accuracy"]
    console.print(f"edgenet {DEMO_SIZE}x{DEMO_SIZE}: validation accuracy {run['best']['val_accuracy']:.1%} "
                  f"({run['macs'] / 1e6:.1f} M MACs/frame)")

    console.rule("[bold]done")
    console.print(f"finished in {time.time() - t0:.0f} s. Everything is in {out}/:")
    console.print(f"  data/               generated training images (3 classes)")
    console.print(f"  run/model.keras     trained Keras model; run.json, history.csv, curves.png, confusion.png beside it")
    return results
