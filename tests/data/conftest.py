"""Fixtures of the tests of :mod:`lasagne_caption.data`: the real Flickr8k, prepared once."""
import pytest

from lasagne_caption.data.dataset import load_dataset
from lasagne_caption.data.prepare import prepare_flickr8k
from lasagne_caption.data.readers import DataWarning


@pytest.fixture(scope="package")
def flickr(flickr8k_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared") / "flickr8k"
    with pytest.warns(DataWarning, match="dropped 2 images.*2258277193_586949ec62"):
        prepare_flickr8k(flickr8k_dir, out)
    return load_dataset(out)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("property")
