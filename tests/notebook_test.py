"""Executes notebooks/quickstart.ipynb end to end in a fresh kernel.

The kernel is this interpreter (a kernel spec written to a temp dir, so no
installed `python3` spec for another Python can be picked up) and inherits the
test environment: the repository on PYTHONPATH, the 4 fake CPU devices and the
shared TFDS_DATA_DIR from conftest.py. The notebook asserts its own invariants
(step counts, per-phase optimizer states, bit-identical frozen leaves); a
failing assert fails the execution.
"""

import ast
import json
import os
import pathlib
import sys

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402
from jupyter_client.manager import KernelManager  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "quickstart.ipynb"


def _kernel_manager(tmp_path: pathlib.Path) -> KernelManager:
    kernels = tmp_path / "kernels"
    spec_dir = kernels / "python3"
    spec_dir.mkdir(parents=True)
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {"PYTHONPATH": pythonpath, "TMPDIR": str(tmp_path),
           "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
    for key in ("XLA_FLAGS", "TFDS_DATA_DIR"):
        if key in os.environ:
            env[key] = os.environ[key]
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "test python3", "language": "python", "env": env}))
    ksm = KernelSpecManager(kernel_dirs=[str(kernels)], ensure_native_kernel=False)
    return KernelManager(kernel_name="python3", kernel_spec_manager=ksm)


def _tagged_output(nb, tag: str) -> str:
    cells = [c for c in nb.cells if tag in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"expected one cell tagged {tag!r}, found {len(cells)}"
    results = [o for o in cells[0].outputs if o.output_type == "execute_result"]
    assert results, f"cell tagged {tag!r} produced no result: {cells[0].outputs}"
    return results[-1]["data"]["text/plain"]


def execute_notebook(path: pathlib.Path, tmp_path: pathlib.Path):
    """Reads a notebook saved without outputs, executes it in a fresh kernel, returns it.

    The working directory is ``tmp_path / "cwd"``; a failing cell (an assert
    included) raises ``CellExecutionError``.
    """
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, cell.source[:60]
    run_dir = tmp_path / "cwd"
    run_dir.mkdir()
    nbclient.NotebookClient(
        nb, km=_kernel_manager(tmp_path), timeout=300, kernel_name="python3",
        resources={"metadata": {"path": str(run_dir)}}).execute()
    return nb


@pytest.mark.slow
def test_quickstart_notebook(tmp_path, data_dir):
    assert os.environ["TFDS_DATA_DIR"] == data_dir
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # Saved without outputs: the repository holds the source only.
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, cell.source[:60]

    run_dir = tmp_path / "cwd"
    run_dir.mkdir()
    client = nbclient.NotebookClient(
        nb, km=_kernel_manager(tmp_path), timeout=300, kernel_name="python3",
        resources={"metadata": {"path": str(run_dir)}})
    client.execute()  # Raises CellExecutionError on any error, asserts included.

    accuracy = ast.literal_eval(_tagged_output(nb, "final-accuracy"))
    assert set(accuracy) == {"even_test", "odd_test"}
    for name, value in accuracy.items():
        assert value >= 0.9, f"{name} accuracy {value} after the quickstart run"

    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.outputs if o.output_type == "stream")
    assert "phase_steps: {'even': 100, 'odd': 100}" in text
    # Both the inline matplotlib figure and the curves.png image were displayed.
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if "image/png" in o.get("data", {})]
    assert len(images) == 2
