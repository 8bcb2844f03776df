"""lasagne_caption.encoders.preprocess: any photo -> uint8 RGB 224x224."""
import warnings

import numpy as np
import pytest
from PIL import Image

from lasagne_caption.errors import UserError
from lasagne_caption.encoders.preprocess import load_image, load_images, list_images


def _gradient(h=60, w=90):
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // w, y * 255 // h, np.full_like(x, 40)], -1).astype(np.uint8)


def test_shapes_and_modes(tmp_path):
    rgb = _gradient()
    Image.fromarray(rgb).save(tmp_path / "a.png")
    Image.fromarray(rgb).convert("L").save(tmp_path / "g.jpg")
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 0, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "t.png")
    Image.fromarray(rgb).save(tmp_path / "b.bmp")
    for name in ["a.png", "g.jpg", "t.png", "b.bmp"]:
        img = load_image(tmp_path / name)
        assert img.shape == (224, 224, 3) and img.dtype == np.uint8, name
    gray = load_image(tmp_path / "g.jpg")
    assert np.array_equal(gray[..., 0], gray[..., 1])
    assert load_image(tmp_path / "t.png").min() == 255          # alpha 0 -> white
    assert load_image(tmp_path / "a.png", size=None).shape == (60, 90, 3)
    assert load_image(tmp_path / "a.png", size=(32, 48), keep_aspect=True).shape == (32, 48, 3)


def test_224_photo_is_not_resampled(flickr8k_dir):
    p = sorted((flickr8k_dir / "images").iterdir())[0]
    assert np.array_equal(load_image(p), np.asarray(Image.open(p).convert("RGB")))


def test_exif_rotation(tmp_path):
    rgb = _gradient(40, 80)                       # landscape pixels
    exif = Image.Exif()
    exif[0x0112] = 6                              # "rotate 90 CW to view"
    Image.fromarray(rgb).save(tmp_path / "r.jpg", exif=exif.tobytes(), quality=95)
    img = load_image(tmp_path / "r.jpg", size=None)
    assert img.shape == (80, 40, 3)               # shown as portrait
    # the left column of the stored image (dark red) is now the top row
    assert img[0, :, 0].mean() < 30 and img[-1, :, 0].mean() > 200


def test_not_an_image(tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_text("hello, I am text")
    with pytest.raises(UserError) as exc:
        load_image(bad)
    msg = str(exc.value)
    assert "notes.jpg" in msg and "not" in msg and "\n" not in msg
    with pytest.raises(UserError, match="does not exist"):
        load_image(tmp_path / "missing.png")


def test_batch_skips_bad_file(tmp_path):
    Image.fromarray(_gradient()).save(tmp_path / "1.png")
    (tmp_path / "2.jpg").write_bytes(b"\x00\x01garbage")
    Image.fromarray(_gradient()).save(tmp_path / "3.jpg")
    paths = list_images(tmp_path)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        imgs, ok, failed = load_images(paths)
    assert imgs.shape == (2, 224, 224, 3)
    assert [p.split("/")[-1] for p in ok] == ["1.png", "3.jpg"]
    assert len(failed) == 1 and "2.jpg" in failed[0][1]
    assert any("2.jpg" in str(x.message) for x in w)
