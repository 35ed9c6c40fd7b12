"""The CLI shell: help everywhere, no TensorFlow on import, a clear message on a base install."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import ROOT, error_line, run_cli

COMMANDS = ["train", "eval", "export", "predict", "bench", "demo"]


def test_help_lists_every_command():
    res = run_cli("--help")
    assert res.returncode == 0
    for cmd in COMMANDS:
        assert cmd in res.stdout


@pytest.mark.parametrize("cmd", COMMANDS)
def test_each_command_has_help(cmd):
    res = run_cli(cmd, "--help")
    assert res.returncode == 0, res.stderr
    assert "Usage" in res.stdout


def test_version():
    from edgeclf import __version__

    res = run_cli("--version")
    assert res.returncode == 0 and __version__ in res.stdout


def test_cli_import_and_help_do_not_load_tensorflow():
    code = (
        "import sys\n"
        "import edgeclf.cli as c\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'TF imported'\n"
        "try:\n"
        "    c.app(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'TF imported by --help'\n"
        "print('clean')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert "clean" in res.stdout


BLOCK_TF = """
import importlib.abc, sys
class _NoTF(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('tensorflow', 'keras', 'tf2onnx'):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None
sys.meta_path.insert(0, _NoTF())
"""


@pytest.mark.parametrize("args", [["train", "data", "--out", "run"], ["export", "run"], ["demo"], ["eval", "run", "data"]])
def test_base_install_says_to_install_train_extra(tmp_path, args):
    """Without TensorFlow, commands that need it say so in one line and exit 2."""
    (tmp_path / "sitecustomize.py").write_text(BLOCK_TF)
    (tmp_path / "run").mkdir()
    (tmp_path / "data").mkdir()
    res = run_cli(*args, env={"PYTHONPATH": str(tmp_path)}, cwd=tmp_path)
    assert "pip install 'edgeclf[train]'" in error_line(res), res.stderr
