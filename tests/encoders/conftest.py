"""Fixtures of the encoder tests: the compiled MobileNetV2 (once per session), a fake encoder."""
import pytest

from lasagne_caption.encoders import get_encoder

from .fakes import PixelEncoder


@pytest.fixture(scope="session")
def mobilenet_dir(shared_dir):
    return shared_dir / "models" / "mobilenet_v2"


@pytest.fixture(scope="session")
def mobilenet_path(mobilenet_dir):
    return mobilenet_dir / "mobilenet_v2_1.0_224_quant.tflite"


@pytest.fixture(scope="session")
def mobilenet(mobilenet_path):
    """The encoder with its Theano forward function compiled once per session (~15 s)."""
    return get_encoder("mobilenet_v2", mobilenet_path).compile()


@pytest.fixture(scope="session")
def mobilenet_reference(mobilenet_path):
    """The encoder's reference implementation (grouped conv2d and CorrMM on NCHW), compiled once."""
    return get_encoder("mobilenet_v2", mobilenet_path, depthwise_impl="groups",
                       conv_impl="corrmm").compile()


@pytest.fixture(scope="session")
def sample_paths(shared_dir):
    """The photos of shared/data/samples (BMP and JPEG, not 224x224), sorted."""
    paths = sorted(str(p) for p in (shared_dir / "data" / "samples").iterdir())
    assert len(paths) >= 5
    return paths


@pytest.fixture
def pixel_encoder():
    """A fresh :class:`~tests.encoders.fakes.PixelEncoder` (224x224, batches of 4)."""
    return PixelEncoder()
