"""lasagne_caption.encoders: get_encoder / encode_folder."""
import shutil
import warnings

import numpy as np
import pytest

from lasagne_caption.errors import UserError
from lasagne_caption.encoders import get_encoder, encode_folder, default_model_path


@pytest.fixture(scope="module")
def mobilenet(shared_dir):
    """Same compiled forward function as test_encoders_mobilenet_v2 (cached per process)."""
    path = shared_dir / "models" / "mobilenet_v2" / "mobilenet_v2_1.0_224_quant.tflite"
    return get_encoder("mobilenet_v2", path).compile()


def test_default_model_path(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = default_model_path()
    assert path == str(tmp_path / "lasagne-caption" / "models" / "mobilenet_v2_1.0_224_quant.tflite")
    with pytest.raises(UserError) as exc:
        get_encoder()
    assert path in str(exc.value) and "https://" in str(exc.value)
    with pytest.raises(UserError, match="unknown encoder 'vgg'"):
        get_encoder("vgg")


def test_encode_folder_skips_bad_file(mobilenet, flickr8k_dir, tmp_path):
    names = (flickr8k_dir / "codes" / "image_names.txt").read_text().split()[:3]
    for n in names:
        shutil.copy(flickr8k_dir / "images" / n, tmp_path / n)
    (tmp_path / "broken.jpg").write_text("not a photo")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        codes, got, failed = encode_folder(tmp_path, encoder=mobilenet, features="pool",
                                           batch_size=2, progress=False)
    assert codes.shape == (3, 1280) and codes.dtype == np.float32
    assert got == sorted(names)
    assert len(failed) == 1 and failed[0][0].endswith("broken.jpg")
    assert any("broken.jpg" in str(x.message) for x in w)
    ref = np.load(flickr8k_dir / "codes" / "mobilenet_v2_pool.npy", mmap_mode="r")
    order = [names.index(g) for g in got]
    for row, i in zip(codes, order):
        assert np.corrcoef(row, ref[i].astype(np.float32))[0, 1] > 0.99
    with pytest.raises(UserError, match="unknown features"):
        encode_folder(tmp_path, encoder=mobilenet, features="fc7", progress=False)
