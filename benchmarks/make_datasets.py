#!/usr/bin/env python3
"""Build the six small real-photo data sets described in benchmarks/datasets.md.

Photos are read straight out of bare git mirrors at pinned commits (``git ls-tree``
and ``git cat-file``; nothing is checked out). Each set is written to a temporary
folder, checked, and only then renamed to ``OUT/<name>``.

    python benchmarks/make_datasets.py --mirrors MIRRORS --out OUT [names...]

The mirror of ``owner/name`` is looked up under ``MIRRORS/owner+name``: either that
folder itself or the first folder below it that is a git directory.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import random
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
MIN_SIDE = 32
JPEG_QUALITY = 95
NEAR_DUP_BITS = 25  # post-build check: test/train dHash distance must exceed this


@dataclass(frozen=True)
class SetSpec:
    """One data set: source folders per (split, class), caps and split rule."""

    repo: str
    commit: str
    folders: dict[tuple[str, str], str]  # (split, class) -> folder; split "all" = no split
    caps: dict[str, int] = field(default_factory=dict)  # per-(split, class) cap by split
    test_frac: float | None = None  # stratified split for sources without one
    exclude: tuple[str, ...] = ()  # case-insensitive substrings of the path


def _split_folders(root: str, splits: dict[str, str], classes: dict[str, str]) -> dict:
    """Map (split, class) -> f"{root}{src_split}/{src_class}"."""
    return {(s, c): f"{root}{ss}/{sc}" for s, ss in splits.items() for c, sc in classes.items()}


WOOF = {"australian_terrier": "n02096294", "beagle": "n02088364", "border_terrier": "n02093754",
        "dingo": "n02115641", "english_foxhound": "n02089973", "golden_retriever": "n02099601",
        "old_english_sheepdog": "n02105641", "rhodesian_ridgeback": "n02087394",
        "samoyed": "n02111889", "shih_tzu": "n02086240"}
NETTE = {"cassette_player": "n02979186", "chain_saw": "n03000684", "church": "n03028079",
         "french_horn": "n03394916", "garbage_truck": "n03417042", "gas_pump": "n03425413",
         "golf_ball": "n03445777", "parachute": "n03888257"}
SCENES = {c: c for c in ("buildings", "forest", "glacier", "mountain", "sea", "street")}
TRAIN_VAL = {"train": "train", "test": "val"}

SETS: dict[str, SetSpec] = {
    "hymenoptera": SetSpec("zhangtao7750/syn", "f0503091488f67b6809a6da2eaa43c25f2f277fc",
                           _split_folders("hymenoptera_data/", TRAIN_VAL, {"ants": "ants", "bees": "bees"})),
    "intel_scenes": SetSpec("afroozsheikh/Intel-Image-Classifier", "268f8fc38fb3f7307c1861d619ee99ff4158a3f5",
                            _split_folders("", {"train": "train", "test": "test"}, SCENES),
                            caps={"train": 100, "test": 50}),
    "imagewoof": SetSpec("thunderInfy/imagewoof", "6338aeea098965e0a0ebdf74404862fae9760fe3",
                         _split_folders("", TRAIN_VAL, WOOF), caps={"train": 60, "test": 30}),
    "imagenette_objects": SetSpec("thunderInfy/imagenette", "b850f030ff0701c36a4adc8b928ea9483a46915b",
                                  _split_folders("", TRAIN_VAL, NETTE), caps={"train": 80, "test": 40}),
    "flowers": SetSpec("martinwestin/flower_classification", "c169e7e4038bc0e0e2fe80090b6dc8919539816f",
                       {("all", c): f"flowers/{c}" for c in ("daisy", "dandelion", "rose", "sunflower", "tulip")}, caps={"all": 160}, test_frac=0.3),
    "face_mask": SetSpec("chandrikadeb7/Face-Mask-Detection", "7e500749401bad4bb338790fbdb89b58e41ef2d9",
                         {("all", c): f"dataset/{c}" for c in ("with_mask", "without_mask")}, caps={"all": 250}, test_frac=0.3,
                         exclude=("augmented", "screenshot")),
}


class GitMirror:
    """Read-only access to one git directory via ls-tree and a cat-file --batch pipe."""

    def __init__(self, git_dir: Path) -> None:
        self.git_dir = git_dir
        self._cat: subprocess.Popen | None = None

    def _git(self, *args: str, check: bool = True) -> bytes:
        return subprocess.run(["git", "--git-dir", str(self.git_dir), *args], capture_output=True, check=check).stdout

    def has_commit(self, commit: str) -> bool:
        """True if `commit` exists in the mirror as a commit object."""
        return self._git("cat-file", "-t", commit, check=False).strip() == b"commit"

    def ls_tree(self, commit: str, folder: str) -> dict[str, str]:
        """Return {path: blob id} of all blobs below `folder` at `commit`."""
        out = self._git("ls-tree", "-r", "-z", commit, "--", folder.rstrip("/") + "/")
        entries = {}
        for line in filter(None, out.split(b"\0")):
            meta, path = line.split(b"\t", 1)
            _mode, kind, oid = meta.decode().split()
            if kind == "blob":
                entries[path.decode("utf-8", "surrogateescape")] = oid
        return entries

    def read_blob(self, oid: str) -> bytes | None:
        """Return the blob's bytes, or None if the mirror lacks the object."""
        if self._cat is None:
            self._cat = subprocess.Popen(["git", "--git-dir", str(self.git_dir), "cat-file", "--batch"],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self._cat.stdin.write(oid.encode() + b"\n")
        self._cat.stdin.flush()
        header = self._cat.stdout.readline().split()
        if len(header) < 3 or header[1] != b"blob":
            return None
        data = self._cat.stdout.read(int(header[2]))
        self._cat.stdout.read(1)  # trailing newline
        return data

    def close(self) -> None:
        """Stop the cat-file process."""
        if self._cat is not None:
            self._cat.communicate()


def find_git_dir(mirrors: Path, repo: str) -> Path:
    """Find the git directory (holding HEAD and objects/) at most 3 levels below MIRRORS/owner+name."""
    root = mirrors / repo.replace("/", "+")
    for pattern in ("", "*", "*/*", "*/*/*"):
        for path in sorted(root.glob(pattern)) if pattern else [root]:
            if (path / "HEAD").is_file() and (path / "objects").is_dir():
                return path
    raise SystemExit(f"no git directory for {repo} under {root}")


def decode(data: bytes) -> np.ndarray | None:
    """Decode image bytes with OpenCV (BGR), or None if it cannot."""
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return img if img is not None and img.size else None


def dhash(img: np.ndarray) -> bytes:
    """256-bit difference hash: 16 rows x 16 horizontal differences of a 17x16 grey thumbnail."""
    grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if img.ndim == 3 else img
    thumb = cv2.resize(grey, (17, 16), interpolation=cv2.INTER_AREA).astype(np.int16)
    return np.packbits(thumb[:, 1:] > thumb[:, :-1]).tobytes()


def is_jpeg(data: bytes) -> bool:
    """True if the bytes are a JPEG file (SOI marker)."""
    return data[:3] == b"\xff\xd8\xff"


@dataclass
class Photo:
    """One accepted photo: where it came from and its (output) bytes."""

    split: str
    label: str
    path: str
    data: bytes
    reencoded: bool
    sha1: str
    dhash: bytes


def candidates(spec: SetSpec, git: GitMirror, split: str, label: str, dropped: list) -> list[tuple[str, str]]:
    """Sorted (path, oid) list of one (split, class) after extension and exclusion filters."""
    kept = []
    for path, oid in sorted(git.ls_tree(spec.commit, spec.folders[split, label]).items()):
        if not path.lower().endswith(EXTENSIONS):
            dropped.append({"path": path, "reason": "extension"})
        elif any(word in path.lower() for word in spec.exclude):
            dropped.append({"path": path, "reason": "excluded"})
        else:
            kept.append((path, oid))
    return kept


def draw(spec: SetSpec, git: GitMirror, split: str, label: str, seen: dict, dropped: list) -> list[Photo]:
    """Shuffle one (split, class) with Random(0) and keep valid, new photos up to the cap."""
    items = candidates(spec, git, split, label, dropped)
    random.Random(0).shuffle(items)
    cap, photos = spec.caps.get(split, len(items)), []
    for path, oid in items:
        if len(photos) >= cap:
            break
        data = git.read_blob(oid)
        img = decode(data) if data is not None else None
        reason = ("missing-blob" if data is None else "undecodable" if img is None
                  else "too-small" if min(img.shape[:2]) < MIN_SIDE else None)
        if reason:
            dropped.append({"path": path, "reason": reason})
            continue
        sha1, hsh = hashlib.sha1(data).hexdigest(), dhash(img)
        first = seen.get(("sha1", sha1)) or seen.get(("dhash", hsh))
        if first is not None:
            kind = "sha1" if ("sha1", sha1) in seen else "dhash"
            dropped.append({"path": path, "reason": f"duplicate-{kind}", "of": first.path})
            if first.label != label:  # conflicting labels: drop both copies
                dropped.append({"path": first.path, "reason": f"duplicate-{kind}-conflict", "of": path})
                first.split = "dropped"
            continue
        reenc = not is_jpeg(data)  # decided by content: a PNG named *.jpg is re-encoded too
        out = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])[1].tobytes() if reenc else data
        photo = Photo(split, label, path, out, reenc, sha1, hsh)
        seen[("sha1", sha1)] = seen[("dhash", hsh)] = photo
        photos.append(photo)
    return photos


def stratified_split(photos: list[Photo], test_frac: float) -> None:
    """Per class: shuffle the path-sorted list with Random(0); first round(frac*n) go to test."""
    for label in sorted({p.label for p in photos}):
        group = sorted((p for p in photos if p.label == label), key=lambda p: p.path)
        random.Random(0).shuffle(group)
        n_test = round(test_frac * len(group))
        for i, photo in enumerate(group):
            photo.split = "test" if i < n_test else "train"


def collect(spec: SetSpec, git: GitMirror) -> tuple[list[Photo], list[dict]]:
    """Draw all (split, class) groups, train before test, deduplicating across the set."""
    seen: dict = {}
    photos: list[Photo] = []
    dropped: list[dict] = []
    order = {"train": 0, "all": 0, "test": 1}
    for split, label in sorted(spec.folders, key=lambda k: (order[k[0]], k[1])):
        photos += draw(spec, git, split, label, seen, dropped)
    photos = [p for p in photos if p.split != "dropped"]
    if spec.test_frac is not None:
        stratified_split(photos, spec.test_frac)
    return photos, dropped


def write_set(name: str, spec: SetSpec, photos: list[Photo], dropped: list, tmp: Path) -> dict:
    """Write the JPEGs, manifest.csv and summary.json of one set into `tmp`."""
    rows, used = [], set()
    for p in sorted(photos, key=lambda p: (p.split != "train", p.label, p.path)):
        stem = Path(p.path).stem
        rel = f"{p.split}/{p.label}/{stem}.jpg"
        if rel in used:  # e.g. a.png next to a.jpeg
            rel = f"{p.split}/{p.label}/{stem}-{p.sha1[:8]}.jpg"
        used.add(rel)
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_bytes(p.data)
        rows.append([p.split, p.label, rel, spec.repo, spec.commit, p.path,
                     hashlib.sha1(p.data).hexdigest(), len(p.data), p.reencoded])
    with open(tmp / "manifest.csv", "w", newline="", encoding="utf-8", errors="surrogateescape") as f:
        writer = csv.writer(f)
        writer.writerow(["split", "class", "file", "source_repo", "commit", "source_path",
                         "sha1", "size", "reencoded"])
        writer.writerows(rows)
    counts = {s: {c: sum(1 for p in photos if p.split == s and p.label == c)
                  for c in sorted({k[1] for k in spec.folders})} for s in ("train", "test")}
    summary = {"name": name, "source_repo": spec.repo, "commit": spec.commit, "counts": counts,
               "total": {s: sum(v.values()) for s, v in counts.items()},
               "reencoded": sum(p.reencoded for p in photos), "dropped": dropped}
    (tmp / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    return summary


def check_set(root: Path) -> None:
    """Post-build check: decodable, >= 32x32, no shared SHA-1 or near-duplicate across the split."""
    sha1s: dict[str, set] = {"train": set(), "test": set()}
    hashes: dict[str, list] = {"train": [], "test": []}
    files = {split: sorted((root / split).rglob("*.jpg")) for split in ("train", "test")}
    for split, paths in files.items():
        for f in paths:
            data = f.read_bytes()
            img = decode(data)
            if img is None or min(img.shape[:2]) < MIN_SIDE:
                raise SystemExit(f"CHECK FAILED: {f} does not decode or is under {MIN_SIDE} px")
            sha1s[split].add(hashlib.sha1(data).hexdigest())
            hashes[split].append(np.unpackbits(np.frombuffer(dhash(img), np.uint8)))
    if shared := sha1s["train"] & sha1s["test"]:
        raise SystemExit(f"CHECK FAILED: {root.name}: {len(shared)} SHA-1s in both train and test")
    train, test = np.array(hashes["train"], bool), np.array(hashes["test"], bool)
    for f, h in zip(files["test"], test):
        nearest = int((train != h).sum(axis=1).min()) if len(train) else 256
        if nearest <= NEAR_DUP_BITS:
            raise SystemExit(f"CHECK FAILED: {f} is {nearest} of 256 bits from a train photo")


def build(name: str, mirrors: Path, out: Path) -> dict:
    """Build, check and atomically publish one set; return its summary."""
    spec = SETS[name]
    git = GitMirror(find_git_dir(mirrors, spec.repo))
    if not git.has_commit(spec.commit):
        raise SystemExit(f"{spec.repo}: pinned commit {spec.commit} not in {git.git_dir}")
    tmp = out / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        photos, dropped = collect(spec, git)
        summary = write_set(name, spec, photos, dropped, tmp)
        check_set(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        git.close()
    shutil.rmtree(out / name, ignore_errors=True)
    tmp.rename(out / name)
    return summary


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mirrors", type=Path, required=True, help="folder holding owner+name/<git dir>")
    parser.add_argument("--out", type=Path, required=True, help="output folder ($DATASETS)")
    parser.add_argument("names", nargs="*", metavar="name",
                        help=f"sets to build (default: all): {', '.join(SETS)}")
    args = parser.parse_args(argv)
    if unknown := [n for n in args.names if n not in SETS]:
        parser.error(f"unknown set(s): {', '.join(unknown)}")
    for name in args.names or list(SETS):
        start = time.perf_counter()
        s = build(name, args.mirrors, args.out)
        reasons = sorted({d["reason"] for d in s["dropped"]})
        print(f"{name}: train {s['total']['train']} test {s['total']['test']} "
              f"reencoded {s['reencoded']} dropped {len(s['dropped'])} {reasons} "
              f"({time.perf_counter() - start:.1f} s)", flush=True)


if __name__ == "__main__":
    sys.exit(main())
