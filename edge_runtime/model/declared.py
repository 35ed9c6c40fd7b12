"""Checks of what a model's metadata declares (class names, input size, int8 CPU target), the same
for every engine: a hostile file must not make the runtime allocate gigabytes per image, recurse
without end, or show names that hide what they say."""

from __future__ import annotations

import json

from edgeclf.errors import EdgeclfError, first_line, safe_text
from edgeclf.model import metadata as md

#: Bounds on what a model's metadata may declare (a hostile file must not make the runtime allocate
#: gigabytes per image or recurse without end).
MAX_INPUT_SIDE = 4096
MAX_CLASSES = 10_000
_MAX_CLASS_NAMES_TEXT = 1 << 20  # bytes of JSON


def parse_class_names(text: str, path: object = "<model>") -> list[str]:
    """A model's ``class_names`` metadata: a JSON list of distinct strings that pass
    ``metadata.class_name_problem``, at most ``MAX_CLASSES`` of them. One-line EdgeclfError naming the file
    and the field otherwise."""
    where = f"{path}: metadata class_names"
    if len(text) > _MAX_CLASS_NAMES_TEXT:
        raise EdgeclfError(f"{where} is {len(text)} characters long (at most {_MAX_CLASS_NAMES_TEXT})")
    try:
        names = json.loads(text)
    except RecursionError:
        raise EdgeclfError(f"{where} is nested too deeply") from None
    except ValueError as e:
        raise EdgeclfError(f"{where} is not valid JSON ({first_line(e, 80)})") from None
    if not isinstance(names, list):
        raise EdgeclfError(f"{where} is a JSON {type(names).__name__}, not a list of names")
    if not 2 <= len(names) <= MAX_CLASSES:
        raise EdgeclfError(f"{where} has {len(names)} names (2 to {MAX_CLASSES} expected)")
    for i, name in enumerate(names):
        if not isinstance(name, str):
            raise EdgeclfError(f"{where}[{i}] is a JSON {type(name).__name__}, not a string")
        problem = md.class_name_problem(name)
        if problem:
            raise EdgeclfError(f"{where}[{i}] {safe_text(name)[:60]!r} {problem}")
    dupes = sorted({n for n in names if names.count(n) > 1}) if len(set(names)) != len(names) else []
    if dupes:
        raise EdgeclfError(f"{where} names {dupes[0]!r} more than once; class names must be distinct")
    return names


def metadata_side(meta: dict[str, str], key: str, path: object) -> int:
    """``input_height`` / ``input_width`` from a model's metadata: a whole number 1 to MAX_INPUT_SIDE."""
    if key not in meta:
        raise EdgeclfError(f"{path}: metadata has no {key} (it must give input_height and input_width)")
    text = meta[key].strip()
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_INPUT_SIDE:
        raise EdgeclfError(f"{path}: metadata {key} {safe_text(meta[key])[:40]!r} is not a whole number "
                           f"from 1 to {MAX_INPUT_SIDE}")
    return int(text)


def int8_cpu_warning(metadata: dict[str, str], family: str) -> str | None:
    """Why an int8 model's export-time accuracy may not hold on a CPU of ``family``, or None.

    Integer results differ between CPU families (``sysinfo.CPU_FAMILIES``); an export records the
    ones its int8 model was checked for. Models from before that record are safe on x86 with
    VNNI and on ARM, but may have been exported with full-range weights, which saturate elsewhere."""
    if metadata.get(md.PRECISION) != "int8":
        return None
    try:
        cpus = json.loads(metadata[md.INT8_CPUS])
    except (KeyError, ValueError):
        if family in ("x86-vnni", "arm64-dotprod", "arm64-neon"):
            return None
        return f"int8 model records no CPU target (an older export); on this CPU ({family}) its accuracy may differ from the export's: re-export it"
    if family in cpus:
        return None
    return f"int8 model checked on {', '.join(cpus)}, not on this CPU ({family}): its accuracy may differ from the export's"
