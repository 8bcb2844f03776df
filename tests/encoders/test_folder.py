"""lasagne_caption.encoders.folder: encode_folder."""
import shutil
import warnings

import numpy as np
import pytest
from PIL import Image

from lasagne_caption.errors import UserError
from lasagne_caption.encoders import encode_folder


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


def test_encode_folder_keeps_aspect_and_shapes(pixel_encoder, tmp_path):
    from lasagne_caption.encoders.preprocess import load_image
    rgb = np.zeros((100, 300, 3), np.uint8)
    rgb[:, 100:200] = 200                          # a bright centre third
    Image.fromarray(rgb).save(tmp_path / "wide.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        crop, names, failed = encode_folder(tmp_path, encoder=pixel_encoder, features="pixels",
                                            progress=False, keep_aspect=True)
        stretch, _, _ = encode_folder([tmp_path / "wide.png"], encoder=pixel_encoder,
                                      features="pixels", progress=False)
        empty, none, all_failed = encode_folder([tmp_path / "empty.png"], encoder=pixel_encoder,
                                                features="mean", progress=False)
    assert names == ["wide.png"] and [p.split("/")[-1] for p, _ in failed] == ["empty.png"]
    assert crop.shape == stretch.shape == (1, 224, 224, 3)
    np.testing.assert_array_equal(crop[0], load_image(tmp_path / "wide.png", keep_aspect=True))
    assert crop[0].mean() > 190 and stretch[0].mean() < 100
    assert empty.shape == (0, 3) and empty.dtype == np.float32
    assert none == [] and len(all_failed) == 1
