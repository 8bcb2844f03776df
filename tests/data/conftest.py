"""Fixtures of the tests of :mod:`lasagne_caption.data`: the real Flickr8k, prepared once;
a grid dataset encoded from 40 real photos (and one broken file), prepared once."""
import pytest

from lasagne_caption.data.dataset import load_dataset
from lasagne_caption.data.prepare import prepare_flickr8k
from lasagne_caption.data.readers import DataWarning
# the session's compiled MobileNetV2 (tests/encoders/conftest.py), shared, not compiled again
from tests.encoders.conftest import mobilenet, mobilenet_dir, mobilenet_path  # noqa: F401
from tests.data.helpers import flickr_photo_folder


@pytest.fixture(scope="package")
def flickr(flickr8k_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared") / "flickr8k"
    with pytest.warns(DataWarning, match="dropped 2 images.*2258277193_586949ec62"):
        prepare_flickr8k(flickr8k_dir, out)
    return load_dataset(out)


@pytest.fixture(scope="package")
def grid_dataset(flickr8k_dir, mobilenet, tmp_path_factory):
    """``prepare flickr8k --features grid`` of 24/8/8 real photos plus a broken train photo."""
    root = tmp_path_factory.mktemp("grid")
    source = flickr_photo_folder(root / "src", flickr8k_dir, broken=True)
    with pytest.warns(DataWarning, match="skipping .*broken.jpg"):
        prepare_flickr8k(source, root / "flickr8k-grid", features="grid",
                         model_path=mobilenet.model_path)
    return load_dataset(root / "flickr8k-grid")


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("property")
