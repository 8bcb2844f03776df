"""notebooks/apply_trained_model.ipynb runs top to bottom on a freshly trained small model."""
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "apply_trained_model.ipynb"


def test_notebook_runs_top_to_bottom(demo_checkpoint, shared_dir, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    # the kernel inherits the environment: it reads both variables
    monkeypatch.setenv("LASAGNE_CAPTION_CHECKPOINT", str(demo_checkpoint))
    monkeypatch.setenv("LASAGNE_CAPTION_SHARED", str(shared_dir))
    notebook = nbformat.read(str(NOTEBOOK), as_version=4)
    # "python3" is ipykernel's spec; jupyter_client starts it with this interpreter
    nbclient.NotebookClient(notebook, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()

    text = "".join(out.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                   for out in cell.outputs if out.output_type == "stream")
    lines = text.splitlines()
    for label in ("greedy:", "beam 3:"):
        assert any(line.startswith(label) and line[len(label):].strip() for line in lines), text
    assert sum(line.startswith("sample: ") for line in lines) == 5
    assert any(line.startswith("cat.bmp: ") for line in lines)
    images = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs
              if "image/png" in out.get("data", {})]
    assert len(images) == 2     # the photo and the grid of sample photos
