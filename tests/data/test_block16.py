"""``prepare flickr8k --features block16``: MobileNetV2's last inverted-residual block
(``expanded_conv_16/project``, 7x7x320, the input of Conv_1) per photo, stored as uint8.

Fixtures ``mobilenet`` (the session's compiled encoder, shared with tests/encoders/):
tests/data/conftest.py; the photo folder: :func:`tests.data.helpers.flickr_photo_folder`.
"""
import json

import numpy as np
import pytest

from lasagne_caption.checkpoint import encoder_of
from lasagne_caption.data.__main__ import main
from lasagne_caption.data.dataset import CODES, META, QuantizedCodes, load_dataset
from lasagne_caption.data.prepare import GRID_FEATURES, grid_quantization, prepare_flickr8k
from lasagne_caption.errors import UserError, run_cli
from lasagne_caption.encoders import get_encoder
from tests.data.helpers import flickr_folder, flickr_photo_folder


@pytest.fixture(scope="module")
def block16(flickr8k_dir, mobilenet, tmp_path_factory):
    """``python -m lasagne_caption.data prepare flickr8k --features block16`` of 4/2/2 real
    photos: (the dataset folder, the source folder, what the command printed)."""
    root = tmp_path_factory.mktemp("block16")
    source = flickr_photo_folder(root / "src", flickr8k_dir, 4, 2, 2)
    out = root / "flickr8k-block16"
    assert main(["prepare", "flickr8k", "--source", str(source), "--features", "block16",
                 "--model", str(mobilenet.model_path), "--out", str(out)]) == 0
    return out, source


def test_block16_dataset_is_uint8_with_its_own_quantisation(block16, mobilenet):
    out, _ = block16
    meta = json.loads((out / META).read_text())
    scale, zero_point = grid_quantization(mobilenet.model_path, "block16")
    # a tensor of its own: not Conv_1's ReLU6 step, and a zero point (it can be negative)
    assert (scale, zero_point) != grid_quantization(mobilenet.model_path, "grid")
    assert zero_point > 0
    assert meta["features"] == "mobilenet_v2_block16" and meta["code_dtype"] == "uint8"
    assert meta["grid_shape"] == [7, 7, 320] and meta["image_shape"] == [49, 320]
    quant = meta["quantization"]
    assert (quant["scale"], quant["zero_point"]) == (scale, zero_point)
    assert meta["quantization"]["clipped_values"] == 0
    assert meta["quantization"]["max_abs_error"] <= 0.5 * scale
    assert "code_size" not in meta and meta["images"] == 8
    assert meta["splits"] == {"train": 4, "val": 2, "test": 2}
    raw = np.load(out / CODES, mmap_mode="r")
    assert raw.dtype == np.uint8 and raw.shape == (8, 49, 320)
    assert (out / CODES).stat().st_size == 128 + 8 * 49 * 320


def test_block16_features_name_the_encoder_and_its_tap(block16):
    out, _ = block16
    ds = load_dataset(out)
    assert encoder_of(ds.meta["features"]) == {"name": "mobilenet_v2", "tap": "block16"}
    assert ds.meta["features"][len("mobilenet_v2_"):] in GRID_FEATURES


def test_block16_codes_equal_the_encoders_tap(block16, mobilenet):
    out, source = block16
    ds = load_dataset(out)
    assert isinstance(ds.codes, QuantizedCodes) and ds.image_shape == (49, 320)
    codes = ds.codes[:]
    assert codes.dtype == np.float32 and codes.shape == (8, 49, 320)
    paths = [str(source / "images" / name) for name in ds.image_names]
    tap = mobilenet.encode(paths, taps=["block16"], progress=False)["block16"]
    assert tap.shape == (8, 7, 7, 320)
    # NHWC rows of the 7x7 map, row-major: region 7 * y + x
    tap = tap.reshape(8, 49, 320)
    assert np.abs(codes - tap).max() <= 0.5 * ds.codes.scale
    # the block's output is not ReLU'd: the stored codes keep its negative values
    assert codes.min() < 0 < codes.max()
    # the prepare used this session's compiled function, not a second compile
    assert get_encoder("mobilenet_v2", mobilenet.model_path).compile()._fn is mobilenet._fn


def test_info_describes_a_block16_dataset(block16, capsys):
    out, _ = block16
    assert main(["info", str(out), "--min-count", "1"]) == 0
    assert ("8 images, 40 captions, codes 7x7x320 per image (uint8 on disk)"
            in capsys.readouterr().out)
    with pytest.raises(UserError, match=r"7x7x320, mobilenet_v2_block16.*\(49, 320\)"):
        load_dataset(out).code_size


def test_features_help_names_block16(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["prepare", "flickr8k", "--help"])
    assert exc.value.code == 0
    text = "".join(capsys.readouterr().out.split())   # whatever the terminal's width
    assert "{logits,pool,grid,block16}" in text
    assert "block16(the7x7x320outputofthelastinverted-residualblock" in text


def test_block16_needs_photos_in_one_line(tmp_path, capsys):
    source = flickr_folder(tmp_path / "src")   # codes/ only
    with pytest.raises(SystemExit) as exc:
        run_cli(main, ["prepare", "flickr8k", "--source", str(source), "--features", "block16",
                       "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1
    assert err.startswith("error: %s: no images/ folder; block16 features are encoded from "
                          "the photos" % source)
    assert not (tmp_path / "out").exists()
    with pytest.raises(UserError, match=r"unknown features 'block15' \(valid: logits, pool, "
                                        r"grid, block16\)"):
        prepare_flickr8k(source, tmp_path / "out", features="block15")
