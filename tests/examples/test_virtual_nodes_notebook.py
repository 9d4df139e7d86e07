"""examples/virtual_nodes.ipynb runs top to bottom with the shipped AdK checkpoints."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import nbclient
import nbformat

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "examples" / "virtual_nodes.ipynb"
TIMEOUT = 600  # seconds per cell; the whole notebook takes well under a minute on a quiet machine


def test_notebook_is_stored_without_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code
    assert all(cell.outputs == [] and cell.execution_count is None for cell in code)
    assert 'CHECKPOINTS = {"with MMD": "adk-dims", "without MMD": "adk-dims-no-mmd"}' in code[0].source


def test_virtual_nodes_notebook_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A kernelspec named python3 that runs this interpreter, found first through JUPYTER_PATH,
    # so the notebook imports the fastegnn_md under test whatever kernels the machine has.
    spec_dir = tmp_path / "jupyter" / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (test)",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the kernel's torch uses one thread
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    workdir = tmp_path / "work"
    workdir.mkdir()

    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=TIMEOUT, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}
    )
    client.execute()  # raises CellExecutionError on the first cell that fails

    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    errors = [out for out in outputs if out.output_type == "error"]
    assert not errors, errors
    images = [out for out in outputs if "image/png" in out.get("data", {})]
    assert images, "the notebook drew no figure"
    assert (workdir / "virtual-nodes-rollout" / "adk-dims" / "report.md").exists()
    assert (workdir / "virtual-nodes-rollout" / "adk-dims-no-mmd" / "predicted-virtual.npz").exists()
