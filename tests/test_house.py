"""The house stays legible: rooms of modest size, functions that read in one sitting. Read from the sources, so a change that breaks a rule fails here, not in a later review."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

PACKAGE = [ROOT / "edge_runtime", ROOT / "train", ROOT / "export"]
MODULE_LINES = 400
FUNCTION_LINES = 55  # "about 50": a docstring or a long signature may tip one over


def sources(folders=PACKAGE) -> list[Path]:
    return sorted(p for folder in folders for p in folder.rglob("*.py"))


def test_no_module_over_400_lines_without_a_reason_at_its_top():
    long = []
    for path in sources():
        text = path.read_text()
        doc = ast.get_docstring(ast.parse(text)) or ""
        if len(text.splitlines()) > MODULE_LINES and "lines because" not in doc:
            long.append(f"{path.relative_to(ROOT)}: {len(text.splitlines())} lines")
    assert long == []


def test_no_function_over_about_50_lines():
    long = []
    for path in sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {n} lines")
    assert long == []


def test_the_runtime_keeps_its_rooms():
    """Modules side by side at the runtime's top stay few; the rest live in rooms named for a concept."""
    runtime = ROOT / "edge_runtime"
    top = sorted(p.name for p in runtime.glob("*.py") if p.name not in ("__init__.py", "__main__.py"))
    rooms = sorted(p.name for p in runtime.iterdir() if (p / "__init__.py").is_file())
    assert len(top) <= 14, top
    assert {"model", "sources", "sinks", "serve", "predict", "bench", "data"} <= set(rooms)
