"""The package: it hands names on, its modules import only lower ones, and
importing the command line runs nothing."""
import ast
import pathlib
import subprocess
import sys

import lasagne_caption.data as data
from lasagne_caption.data import batches, dataset, prepare, readers

# lower modules first: each may import only those before it
LAYERS = ["readers", "dataset", "archives", "output", "batches", "download", "prepare", "__main__"]


def test_the_package_hands_on_the_names_other_code_imports():
    from lasagne_caption.data import (END, START, CaptionDataset, DataWarning,  # noqa: F401
                                      generate_batch, iterate_captions, load_dataset, read_codes)
    assert all(hasattr(data, name) for name in data.__all__)
    assert data.load_dataset is dataset.load_dataset and data.generate_batch is batches.generate_batch
    assert data.prepare_flickr8k is prepare.prepare_flickr8k and data.DataWarning is readers.DataWarning


def test_modules_import_only_lower_ones():
    folder = pathlib.Path(data.__file__).parent
    assert sorted(p.stem for p in folder.glob("*.py")) == sorted(LAYERS + ["__init__"])
    for i, name in enumerate(LAYERS):
        tree = ast.parse((folder / (name + ".py")).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                targets = [node.module.split(".")[0]] if node.module else [a.name for a in node.names]
                assert all(t in LAYERS[:i] for t in targets), (name, targets)


def test_importing_the_command_line_runs_nothing():
    out = subprocess.run([sys.executable, "-c", "import lasagne_caption.data.__main__"],
                         capture_output=True, text=True)
    assert (out.returncode, out.stdout, out.stderr) == (0, "", "")
