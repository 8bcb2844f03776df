"""Shared fixtures: the real data in ../shared, and a scratch folder."""
import os
import pathlib

import pytest

import lasagne_caption  # noqa: F401  (applies the compatibility layer first)

ROOT = pathlib.Path(__file__).resolve().parent.parent
SHARED = pathlib.Path(os.environ.get("LASAGNE_CAPTION_SHARED", ROOT.parent / "shared"))


@pytest.fixture(scope="session")
def shared_dir():
    """``../shared`` beside the project root (override: LASAGNE_CAPTION_SHARED)."""
    if not (SHARED / "README.md").is_file():
        pytest.fail("the real data folder %s is missing: clone the project next to "
                    "shared/ or set LASAGNE_CAPTION_SHARED" % SHARED)
    return SHARED


@pytest.fixture(scope="session")
def flickr8k_dir(shared_dir):
    return shared_dir / "data" / "flickr8k"


def write_tiny_dataset(path, n_images=40, code_size=12, seed=0):
    """A small dataset in the seminar's layout: codes that determine the captions."""
    import json
    import pickle

    import numpy as np

    rng = np.random.RandomState(seed)
    colours, animals = ["red", "blue", "green", "black"], ["dog", "cat", "bird", "horse"]
    codes = rng.randn(n_images, code_size).astype("float32")
    captions = []
    for i in range(n_images):
        colour, animal = colours[i % 4], animals[(i // 4) % 4]
        codes[i, i % 4] += 3
        codes[i, 4 + (i // 4) % 4] += 3
        captions.append(["a %s %s runs on the grass" % (colour, animal),
                         "the %s %s is running" % (colour, animal),
                         "a %s %s" % (colour, animal),
                         "there is a %s %s outside on the grass today" % (colour, animal),
                         "%s %s" % (colour, animal)])
    path = pathlib.Path(path)
    path.mkdir(parents=True, exist_ok=True)
    np.save(path / "image_codes.npy", codes)
    with open(path / "caption_tokens.pcl", "wb") as f:
        pickle.dump(captions, f, protocol=2)
    order = list(range(n_images))
    (path / "splits.json").write_text(json.dumps(
        {"train": order[:30], "val": order[30:35], "test": order[35:]}))
    return path


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    return write_tiny_dataset(tmp_path_factory.mktemp("tiny") / "tiny")


@pytest.fixture(scope="session")
def tiny_model(tiny_dataset):
    """A small seminar network whose Theano functions are compiled once per session."""
    from lasagne_caption.data import load_dataset
    from lasagne_caption.models import NetworkConfig, SeminarModel

    import lasagne
    import numpy as np

    ds = load_dataset(tiny_dataset)
    vocab = ds.vocabulary(min_count=1)
    config = NetworkConfig(n_tokens=len(vocab), code_size=ds.code_size, embed_size=8, units=16)
    # seeded: Lasagne draws initial weights from numpy's global generator, and
    # what the tests train this model to decide depends on where it starts
    previous = lasagne.random.get_rng()
    lasagne.random.set_rng(np.random.RandomState(0))
    try:
        return SeminarModel(config, vocab, learning_rate=0.01)
    finally:
        lasagne.random.set_rng(previous)


@pytest.fixture(scope="session")
def demo_checkpoint(tmp_path_factory, shared_dir):
    """A tiny model trained briefly on Flickr8k MobileNetV2 logits (notebooks/make_demo_model.py)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("make_demo_model",
                                                  ROOT / "notebooks" / "make_demo_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_demo_model(tmp_path_factory.getbasetemp() / "demo", shared_dir)
