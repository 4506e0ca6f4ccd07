"""Executes notebooks/continual.ipynb end to end in a fresh kernel.

The kernel is set up as for the quickstart notebook (tests/notebook_test.py:
this interpreter, the repository on PYTHONPATH, the test environment's fake
devices and data directory). The notebook asserts its own invariants (a 5x5
accuracy matrix, replay's ACC above fine-tuning's 1/T, the memory in the final
TrainState and in its checkpoint); a failing assert fails the execution.
"""

import ast
import os
import pathlib

import pytest

from notebook_test import _tagged_output, execute_notebook

NOTEBOOK = pathlib.Path(__file__).resolve().parents[1] / "notebooks" / "continual.ipynb"


@pytest.mark.slow
def test_continual_notebook(tmp_path, data_dir):
    assert os.environ["TFDS_DATA_DIR"] == data_dir
    nb = execute_notebook(NOTEBOOK, tmp_path)  # saved without outputs, as the quickstart

    got = ast.literal_eval(_tagged_output(nb, "continual-metrics"))
    assert set(got) == {"acc", "bwt", "forgetting"}
    assert got["acc"] > 0.4 and got["forgetting"] >= -got["bwt"] - 1e-4, got
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.outputs if o.output_type == "stream")
    assert "checkpointed memory == final memory" in text
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if "image/png" in o.get("data", {})]
    assert len(images) == 1  # the accuracy-matrix heatmap
