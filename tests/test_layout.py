"""The house: one installed name, and imports that run one way (runtime <- train <- export <- commands).

Read from the sources (every import statement, lazy ones inside functions too, and
``importlib.import_module`` calls with a literal name) and checked on the installed package.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from conftest import ROOT

RUNTIME, TRAIN, EXPORT = ROOT / "edge_runtime", ROOT / "train", ROOT / "export"
PACKAGE_OF = {RUNTIME: "edgeclf", TRAIN: "edgeclf.train", EXPORT: "edgeclf.export"}


def imported_modules(path: Path, package: str) -> set[str]:
    """Absolute names of every module ``path`` (part of ``package``) imports, however lazily."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the package, as Python would
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)  # `from edgeclf import train`
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            found.add(node.args[0].value)
    return found


def package_of(path: Path, folder: Path) -> str:
    """The package a source file's relative imports resolve against (its subpackage, if any)."""
    return ".".join([PACKAGE_OF[folder], *path.parent.relative_to(folder).parts])


def imports_of(folder: Path) -> dict[str, set[str]]:
    return {str(p.relative_to(ROOT)): imported_modules(p, package_of(p, folder)) for p in sorted(folder.rglob("*.py"))}


def reaching(imports: dict[str, set[str]], *packages: str) -> list[str]:
    return sorted(f"{f} imports {m}" for f, mods in imports.items() for m in mods
                  if any(m == p or m.startswith(p + ".") for p in packages))


def test_the_import_walker_sees_lazy_relative_and_dynamic_imports(tmp_path):
    """The walker itself: a check that cannot see an import would pass whatever the code does."""
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from .train.trainer import train\n    from . import export\n"
                   "    import importlib\n    importlib.import_module('edgeclf.export.api')\n")
    found = imported_modules(src, "edgeclf")
    assert reaching({"m.py": found}, "edgeclf.train", "edgeclf.export") == [
        "m.py imports edgeclf.export", "m.py imports edgeclf.export.api", "m.py imports edgeclf.train.trainer",
        "m.py imports edgeclf.train.trainer.train"]


def test_runtime_imports_neither_training_nor_export():
    imports = imports_of(RUNTIME)
    assert len(imports) > 20  # every runtime module was read
    assert reaching(imports, "edgeclf.train", "edgeclf.export", "train", "export", "tensorflow", "keras", "tf2onnx") == []


def test_training_does_not_import_export():
    """Export builds on training (the run record, the Keras model); never the other way round."""
    assert reaching(imports_of(TRAIN), "edgeclf.export", "export") == []


def test_nothing_imports_the_folders_by_their_old_top_level_names():
    for folder in PACKAGE_OF:
        assert reaching(imports_of(folder), "edge_runtime", "train", "export") == []
    for folder in (ROOT / "benchmarks", ROOT / "tests"):
        for p in folder.glob("*.py"):
            assert reaching({p.name: imported_modules(p, "")}, "edge_runtime", "train", "export") == []


def test_benchmarks_import_nothing_from_tests():
    """A benchmark runs from a checkout without the test helpers on its path; tests may use benchmarks' modules."""
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


LOADED = "print(sorted(n for n in sys.modules if n.startswith(('edgeclf.train', 'edgeclf.export', 'tensorflow', 'keras', 'onnx.'))))"


def test_public_face_and_no_workstation_module_loaded_by_the_runtime():
    """``from edgeclf import ...`` gives the runtime's API; loading every runtime module but the CLI
    loads no training or export module."""
    code = (
        "import sys, pkgutil, importlib, edgeclf\n"
        "from edgeclf import Classifier, Prediction, open_source, LiveServer\n"
        "assert Classifier.__module__ == 'edgeclf.model.classifier' and open_source.__module__ == 'edgeclf.sources.open'\n"
        "assert Prediction.__module__ == 'edgeclf.model.prediction' and LiveServer.__module__ == 'edgeclf.serve.server'\n"
        # walk_packages would import edgeclf.train and edgeclf.export to look inside them
        "def walk(path, prefix):\n"
        "    for m in pkgutil.iter_modules(path, prefix):\n"
        "        if m.name not in ('edgeclf.train', 'edgeclf.export', 'edgeclf.cli', 'edgeclf.__main__'):\n"
        "            mod = importlib.import_module(m.name)\n"
        "            if m.ispkg:\n"
        "                walk(mod.__path__, m.name + '.')\n"
        "walk(edgeclf.__path__, 'edgeclf.')\n"
        + LOADED
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT.parent)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_the_cli_gets_the_workstation_commands_from_their_entry_points_only():
    """The CLI loads the command modules the entry points name, and nothing else of the workstation."""
    code = "import sys, edgeclf.cli as c\nprint([i.name or i.callback.__name__ for i in c.app.registered_commands])\n" + LOADED
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT.parent)
    assert r.returncode == 0, r.stderr
    commands, loaded = r.stdout.strip().splitlines()
    assert commands == "['train', 'eval', 'export', 'predict', 'serve', 'add-class', 'remove-class', 'bench', 'demo']"
    assert loaded == "['edgeclf.export', 'edgeclf.export.commands', 'edgeclf.train', 'edgeclf.train.commands']"


def test_a_users_own_train_and_export_modules_do_not_shadow_edgeclfs(tmp_path):
    """The wheel used to install top-level `train` and `export`; a user's train.py broke `import train.x`."""
    (tmp_path / "train.py").write_text("raise SystemExit('the user train.py was imported')\n")
    (tmp_path / "export.py").write_text("raise SystemExit('the user export.py was imported')\n")
    code = "import edgeclf.train.run_record, edgeclf.export.commands, edgeclf.cli; print('ok')"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert (r.returncode, r.stdout.strip()) == (0, "ok"), r.stderr


def test_built_wheel_installs_one_top_level_name(tmp_path):
    """``pip wheel .``: top_level.txt lists only edgeclf, every folder is inside, the commands are registered."""
    src = tmp_path / "src"  # a copy: building in the tree would leave build/ and egg-info behind
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", "__pycache__", "*.egg-info", "build", "runs", "tests", "benchmarks"))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(src)],
                       capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    (wheel,) = tmp_path.glob("edgeclf-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta = {n.split("/")[-1]: z.read(n).decode() for n in names if ".dist-info/" in n}
    assert meta["top_level.txt"].split() == ["edgeclf"]
    assert {n.split("/")[0] for n in names if not n.startswith("edgeclf-")} == {"edgeclf"}
    for inside in ("edgeclf/model/classifier.py", "edgeclf/serve/live.html", "edgeclf/train/trainer.py", "edgeclf/export/api.py"):
        assert inside in names
    assert "[edgeclf.commands]" in meta["entry_points.txt"] and "edgeclf.train.commands:register" in meta["entry_points.txt"]


PLUGIN = """
import sys
from importlib.metadata import EntryPoint
import edgeclf.plugins as p

BAD = {
    "edgeclf.commands": [("exits", "bad_exit:register"), ("steals", "bad_steal:register"), ("missing", "no_such_module:register")],
    "edgeclf.model_loaders": [("keras", "no_such_module:load"), ("tflite", "no_such_module:load")],
}
real = p._entry_points
p._entry_points = lambda group: real(group) + [EntryPoint(n, v, group) for n, v in BAD[group]]
sys.argv = ["edgeclf", *sys.argv[1:]]
from edgeclf.cli import main
main()
"""


def test_broken_or_hostile_command_plugins_cost_only_themselves(tmp_path):
    """Third-party entry points: one that raises SystemExit, one that redefines `predict`, one that
    does not import. Each is one warning line; edgeclf's commands and its Keras loader still work."""
    (tmp_path / "bad_exit.py").write_text("raise SystemExit('plugin says no')\n")
    (tmp_path / "bad_steal.py").write_text(
        "def register(app):\n    @app.command('predict')\n    def predict() -> None:\n        print('stolen')\n")
    (tmp_path / "main.py").write_text(PLUGIN)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    r = subprocess.run([sys.executable, str(tmp_path / "main.py"), "--help"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    warnings = r.stderr.strip().splitlines()
    assert len(warnings) == 3 and all(w.startswith("warning: edgeclf command plugin") for w in warnings), warnings
    assert "'exits'" in warnings[0] + warnings[1] + warnings[2] and "redefines 'predict'; ignored" in r.stderr
    for name in ("train", "eval", "export", "predict", "bench", "demo"):
        assert f" {name} " in r.stdout
    r = subprocess.run([sys.executable, str(tmp_path / "main.py"), "predict", "--help"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0 and "stolen" not in r.stdout and "SOURCE" in r.stdout.upper()



def test_model_loaders_prefer_edgeclfs_own_and_a_broken_one_is_one_line(tmp_path):
    code = PLUGIN.split("sys.argv")[0] + (
        "print(p.model_loader('keras').__module__)\n"
        "print(p.model_loader('nothing'))\n"
        "try:\n    p.model_loader('tflite')\nexcept p.EdgeclfError as e:\n    print(e)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "edgeclf.train.keras_model", "None",
        "the tflite model loader (no_such_module:load) did not load: No module named 'no_such_module'"]


def test_a_stale_egg_info_in_the_working_folder_does_not_hide_the_commands(tmp_path):
    """An old in-tree build leaves edgeclf.egg-info without the entry points; `python -m edgeclf.cli`
    run there (the folder is first on sys.path) still has train, export and demo."""
    info = tmp_path / "edgeclf.egg-info"
    info.mkdir()
    (info / "PKG-INFO").write_text("Metadata-Version: 2.1\nName: edgeclf\nVersion: 0.0.1\n")
    r = subprocess.run([sys.executable, "-m", "edgeclf.cli", "train", "nowhere", "--out", "run"],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert "No such command" not in r.stderr and r.returncode == 2, r.stderr
