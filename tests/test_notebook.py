"""The notebooks run top to bottom (so they never rot), and are stored with their outputs."""
import os

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def text_outputs(nb) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


def has_figure(nb) -> bool:
    return any(o.get("output_type") == "display_data" and "image/png" in o.get("data", {})
               for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


@pytest.mark.parametrize("name, expected", [
    ("quickstart", ["level 3:  12.5% of weights: ticket", "pruned weights still 0: True"]),
    ("data_diet", ["GraNd path: fast", "AUROC for the flipped labels", "el2n window   1750 examples"]),
])
def test_notebook_runs_and_is_stored_with_outputs(name, expected):
    path = os.path.join(ROOT, "notebooks", f"{name}.ipynb")
    stored = nbformat.read(path, as_version=4)
    opening = stored.cells[0].source  # install from a clone, and in a Colab runtime
    assert "`pip install -e .`" in opening and "`!pip install -q -e /content/lth_jax`" in opening
    assert all(e in text_outputs(stored) for e in expected) and has_figure(stored)
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": ROOT}}).execute()
    assert all(e in text_outputs(nb) for e in expected) and has_figure(nb)
    assert "Error" not in text_outputs(nb)
