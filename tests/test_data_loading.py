"""Module layout of mfgnn.data: load_dataset lives in loading, spec does not import it."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import mfgnn.data
from mfgnn.data import loading, spec

DATA_DIR = Path(mfgnn.data.__file__).resolve().parent
READERS = ("loading", "dataset", "npz", "ani_h5", "extxyz")


def imported_modules(node: ast.AST) -> list[tuple[int, str]]:
    """(relative level, dotted name) of every module an import statement under ``node`` names."""
    out: list[tuple[int, str]] = []
    for n in ast.walk(node):
        if isinstance(n, ast.ImportFrom):
            out.append((n.level, n.module or ""))
            if n.level and not n.module:  # from . import loading
                out.extend((n.level, a.name) for a in n.names)
        elif isinstance(n, ast.Import):
            out.extend((0, a.name) for a in n.names)
    return out


def names_a_reader(level: int, module: str) -> bool:
    name = module.split(".")[-1]
    return name in READERS and (level == 1 or module.startswith("mfgnn.data."))


def test_spec_source_imports_neither_loading_nor_the_readers():
    tree = ast.parse((DATA_DIR / "spec.py").read_text(encoding="utf-8"))
    bad = [m for n in tree.body for m in imported_modules(n)
           if names_a_reader(*m) or m == (1, "loading")]
    assert bad == [], f"spec.py imports {bad}"


def test_importing_spec_alone_loads_no_reader():
    """Import mfgnn.data.spec without running mfgnn/data/__init__ (which imports everything)."""
    code = f"""
import sys, types, importlib
import mfgnn
package = types.ModuleType("mfgnn.data")
package.__path__ = [{str(DATA_DIR)!r}]
sys.modules["mfgnn.data"] = package
spec = importlib.import_module("mfgnn.data.spec")
loaded = sorted(m for m in sys.modules if m.startswith("mfgnn.data."))
assert loaded == ["mfgnn.data.fidelity_order", "mfgnn.data.spec"], loaded  # no reader
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_load_dataset_lives_in_loading_with_its_old_signature():
    assert mfgnn.data.load_dataset is loading.load_dataset
    assert loading.load_dataset.__module__ == "mfgnn.data.loading"
    params = inspect.signature(loading.load_dataset).parameters
    assert list(params) == ["spec", "cutoff"] and params["cutoff"].default is None
    assert not hasattr(spec, "load_dataset")  # one home: mfgnn.data.loading


def test_dead_helpers_are_gone():
    from mfgnn.data import download, graph

    assert not hasattr(download, "copy_atomic") and not hasattr(graph, "has_torch_cluster")


@pytest.mark.parametrize("path", sorted(DATA_DIR.glob("*.py")), ids=lambda p: p.name)
def test_data_modules_are_short_and_documented(path):
    text = path.read_text(encoding="utf-8")
    assert len(text.splitlines()) < 400
    assert ast.get_docstring(ast.parse(text)), f"{path.name} has no module docstring"
