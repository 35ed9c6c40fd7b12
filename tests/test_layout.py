"""The repository's folders depend one way: benchmarks/ never imports tests/ (a benchmark must run
from a checkout without the test helpers on its path); tests may use benchmarks' modules."""

from __future__ import annotations

import ast

from conftest import ROOT


def test_benchmarks_import_nothing_from_tests():
    helpers = {p.stem for p in (ROOT / "tests").glob("*.py")}
    for path in sorted((ROOT / "benchmarks").glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for n in ast.walk(tree):
            names = ([a.name for a in n.names] if isinstance(n, ast.Import)
                     else [n.module or ""] if isinstance(n, ast.ImportFrom) and n.level == 0 else [])
            for name in names:
                top = name.split(".")[0]
                assert top != "tests" and top not in helpers, f"{path.name}:{n.lineno} imports {name} from tests/"
            # Nor puts tests/ on the import path (sys.path.insert(0, str(ROOT / "tests"))).
            if isinstance(n, ast.Constant) and n.value == "tests":
                raise AssertionError(f"{path.name}:{n.lineno} names the tests folder")
