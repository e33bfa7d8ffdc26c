"""examples/03_ase_workflows.ipynb: committed with outputs, and runs end to end (smoke mode)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "03_ase_workflows.ipynb"


def _text(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            parts.append(out.get("text", ""))
        elif "data" in out:
            parts.append(out["data"].get("text/plain", ""))
    return "".join(parts)


def test_committed_notebook_has_outputs_and_no_errors():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.get("execution_count") for c in code)
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    figures = [o for c in code for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(figures) == 2  # torsion profiles, NVE energies
    text = "".join(_text(c) for c in code)
    assert "smoke mode: False" in text  # the committed outputs are the full run
    assert "OptimizationResult(converged=True" in text and "all converged: True" in text


def test_notebook_runs_in_smoke_mode(tmp_path, monkeypatch, shared_data):
    committed = NOTEBOOK.read_bytes()
    copy = tmp_path / NOTEBOOK.name
    shutil.copy(NOTEBOOK, copy)
    monkeypatch.setenv("MFGNN_SMOKE", "1")
    monkeypatch.setenv("MFGNN_SHARED_DATA", str(shared_data))
    nb = nbformat.read(copy, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=180, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError on any failing cell
    text = "".join(_text(c) for c in nb.cells if c.cell_type == "code")
    assert "smoke mode: True" in text
    assert "all converged: True" in text
    assert (tmp_path / "runs" / "03_ase_ch3oh_smoke" / "model.pt").is_file()
    assert NOTEBOOK.read_bytes() == committed  # only the copy was executed
