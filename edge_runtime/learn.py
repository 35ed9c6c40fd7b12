"""The ``add-class`` and ``remove-class`` commands: photos from a folder or frames from a camera or
stream, progress, and what they print (``edgeclf.model.classes`` does the work)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import numpy as np

from edgeclf.errors import EdgeclfError, safe_text, warn_skip
from edgeclf.image import list_images, read_image
from edgeclf.model.classes import add_class, photo_keeper, remove_class
from edgeclf.progress import Bars, console as make_console

#: Photos read from a folder at most (the bank grows by each one).
MAX_PHOTOS = 1000


def collect(source: str, count: int, every: int = 1, bars: Bars | None = None, *,
            keep: Callable[[np.ndarray], np.ndarray]) -> list[np.ndarray]:
    """BGR images of the new class: every photo of a folder (up to MAX_PHOTOS), or ``count``
    frames of a camera, video or stream (every ``every``-th), each as ``keep`` leaves it
    (``photo_keeper``: what the model will read of it; a photo is never held whole)."""
    if count < 1:
        raise EdgeclfError(f"--count must be at least 1 (got {count})")
    if every < 1:
        raise EdgeclfError(f"--every must be at least 1 (got {every})")
    path = Path(source)
    if path.is_dir():
        files = list_images(path)
        if not files:
            raise EdgeclfError(f"{path}: no image files in this folder")
        if len(files) > MAX_PHOTOS:
            raise EdgeclfError(f"{path}: {len(files)} photos; add-class learns from a few (at most {MAX_PHOTOS})")
        tick = bars.add("reading photos", len(files)) if bars else None
        images = []
        for f in files:
            try:
                images.append(keep(read_image(f)))
            except EdgeclfError as e:
                warn_skip(f, str(e))
            if tick:
                tick(1)
        return images
    from edgeclf.sources import open_source

    src = open_source(source, every=every, max_frames=count)
    tick = bars.add(f"taking frames from {safe_text(source)}", count) if bars else None
    images = []
    try:
        for frame in src:
            images.append(keep(frame.image).copy())  # the source may reuse its buffer
            if tick:
                tick(1)
            if len(images) >= count:
                break
    finally:
        src.close()
    return images


def run_add_class(model: Path, name: str, source: str, out: Path, count: int = 20, every: int = 1,
                  json_out: bool = False) -> dict:
    console = make_console(stderr=True)
    with Bars(quiet=json_out or not console.is_terminal, console=console) as bars:
        images = collect(source, count, every, bars, keep=photo_keeper(model))
        report = add_class(model, name, images, out, source=source)
    if json_out:
        print(json.dumps(report))
    else:
        classes = next(iter(report["models"].values()))["classes"]
        print(f"added {name!r} from {report['photos']} photo(s) in {report['seconds']:.2f} s: {out}{os.sep} "
              f"({', '.join(report['models'])}; classes: {', '.join(classes)})")
    return report


def run_remove_class(model: Path, name: str, out: Path, json_out: bool = False) -> dict:
    report = remove_class(model, name, out)
    if json_out:
        print(json.dumps(report))
    else:
        classes = next(iter(report["models"].values()))["classes"]
        print(f"removed {name!r}: {out}{os.sep} ({', '.join(report['models'])}; classes: {', '.join(classes)})")
    return report
