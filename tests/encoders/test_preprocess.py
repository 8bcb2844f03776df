"""lasagne_caption.encoders.preprocess: any photo -> uint8 RGB 224x224.

Skipping unreadable photos in a batch (once ``preprocess.load_images``) is
the encoders' one loop now: it is tested through ``encode_folder`` with the
fake ``pixel_encoder`` (tests/encoders/conftest.py), whose ``pixels`` tap is
the loaded image itself.
"""
import warnings

import numpy as np
import pytest
from PIL import Image

from lasagne_caption.errors import UserError
from lasagne_caption.encoders import encode_folder
from lasagne_caption.encoders.preprocess import load_image, list_images


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


def test_batch_skips_bad_file(tmp_path, pixel_encoder):
    Image.fromarray(_gradient()).save(tmp_path / "1.png")
    (tmp_path / "2.jpg").write_bytes(b"\x00\x01garbage")
    Image.fromarray(_gradient()).save(tmp_path / "3.jpg")
    paths = list_images(tmp_path)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        imgs, ok, failed = encode_folder(paths, encoder=pixel_encoder, features="pixels",
                                         progress=False)
    assert imgs.shape == (2, 224, 224, 3)
    assert [p.split("/")[-1] for p in ok] == ["1.png", "3.jpg"]
    assert len(failed) == 1 and "2.jpg" in failed[0][1]
    assert any("2.jpg" in str(x.message) for x in w)


# ---- large photos: decoded small, a pixel limit, bounded memory

def write_big_png(path, width, height):
    """An RGB PNG written row by row, so making it takes little memory.

    Rows use PNG's "Up" filter (the difference to the row above, mostly
    zeros): 12000x12000 compresses to a few hundred KB.
    """
    import struct
    import zlib

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))
    x = (np.arange(width) * 255 // (width - 1)).astype(np.uint8)
    comp = zlib.compressobj(6)
    prev = np.zeros((width, 3), np.uint8)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)))
        parts = []
        for y in range(height):
            row = np.empty((width, 3), np.uint8)
            row[:] = x[:, None]
            row[:, 0] = y * 255 // (height - 1)
            parts.append(comp.compress(b"\x02" + (row - prev).tobytes()))
            prev = row
            if len(parts) >= 512:
                f.write(chunk(b"IDAT", b"".join(parts)))
                parts = []
        f.write(chunk(b"IDAT", b"".join(parts) + comp.flush()))
        f.write(chunk(b"IEND", b""))
    return path


JPEG_MAKER = """
import sys
import numpy as np
from PIL import Image
w, h = int(sys.argv[2]), int(sys.argv[3])
img = np.empty((h, w, 3), np.uint8)
img[:, :, 0] = (np.arange(w) * 255 // (w - 1)).astype(np.uint8)[None, :]
img[:, :, 1] = (np.arange(h) * 255 // (h - 1)).astype(np.uint8)[:, None]
img[:, :, 2] = 40
Image.fromarray(img).save(sys.argv[1], quality=90, progressive=sys.argv[4] == "1")
"""

MEASURE = """
import resource, sys, warnings
from lasagne_caption.errors import UserError
from lasagne_caption.encoders.preprocess import load_image
import skimage.transform  # loaded before the baseline, as load_image would
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    result = "shape %s" % (load_image(sys.argv[1]).shape,)
except UserError as exc:
    result = "UserError %s" % exc
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print("%d %d %s" % (before // 1024, peak // 1024, result))
"""


def peak_memory_of_loading(path):
    """``(baseline MiB, peak MiB, result)`` of load_image(path) in a fresh process."""
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", MEASURE, str(path)], capture_output=True,
                         text=True, check=True).stdout.strip()
    before, peak, result = out.split(" ", 2)
    return int(before), int(peak), result


@pytest.fixture(scope="module")
def big_photos(tmp_path_factory):
    import subprocess
    import sys
    folder = tmp_path_factory.mktemp("big")
    paths = {"png12000": write_big_png(folder / "huge.png", 12000, 12000),
             "png7000": write_big_png(folder / "big.png", 7000, 7000)}
    for name, progressive in (("jpeg8000", "0"), ("jpeg8000p", "1")):
        paths[name] = folder / (name + ".jpg")
        subprocess.run([sys.executable, "-c", JPEG_MAKER, str(paths[name]), "8000", "8000",
                        progressive], check=True)
    return paths


def test_photo_over_the_pixel_limit_is_refused_before_decoding(big_photos):
    path = big_photos["png12000"]
    assert path.stat().st_size < 1_000_000          # 144 megapixels in a small file
    before, peak, result = peak_memory_of_loading(path)
    assert result.startswith("UserError %s is too large: 12000x12000 pixels" % path)
    assert "\n" not in result and "limit of 50 megapixels" in result
    assert peak - before < 20, (before, peak)       # nothing was decoded


@pytest.mark.parametrize("name, limit_mib", [("jpeg8000", 80), ("jpeg8000p", 300),
                                             ("png7000", 300)])
def test_large_photos_load_in_bounded_memory(big_photos, name, limit_mib):
    # before: 3.5 GB for the 8000x8000 JPEG, 2.7 GB for the 7000x7000 PNG
    before, peak, result = peak_memory_of_loading(big_photos[name])
    assert result == "shape (224, 224, 3)"
    assert peak - before < limit_mib, (name, before, peak)


def test_a_batch_goes_on_after_a_photo_over_the_limit(big_photos, tmp_path, pixel_encoder):
    Image.fromarray(_gradient()).save(tmp_path / "small.png")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        imgs, ok, failed = encode_folder([str(big_photos["png12000"]), str(tmp_path / "small.png")],
                                         encoder=pixel_encoder, features="pixels", progress=False)
    assert imgs.shape == (1, 224, 224, 3) and ok == ["small.png"]      # basenames
    assert len(failed) == 1 and "12000x12000 pixels" in failed[0][1]
    assert any("huge.png" in str(x.message) for x in w)
    # the limit can be raised (or lifted with None) by the caller
    with pytest.raises(UserError, match="90x60 pixels .* over the limit of 0.001 megapixels"):
        load_image(tmp_path / "small.png", max_pixels=1000)


def test_reduced_decoding_matches_full_decoding(tmp_path):
    from lasagne_caption.encoders.preprocess import resize_image
    rng = np.random.RandomState(0)
    # a smooth photo-like picture, 1800x1200, saved as JPEG and PNG
    small = rng.randint(0, 255, (6, 9, 3)).astype(np.uint8)
    rgb = np.asarray(Image.fromarray(small).resize((1800, 1200), Image.BICUBIC))
    Image.fromarray(rgb).save(tmp_path / "p.jpg", quality=95)
    Image.fromarray(rgb).save(tmp_path / "p.png")
    for name in ("p.jpg", "p.png"):
        full = load_image(tmp_path / name, size=None)
        for size, keep in (((224, 224), False), ((100, 200), True), ((224, 224), True)):
            fast = load_image(tmp_path / name, size=size, keep_aspect=keep).astype(float)
            slow = resize_image(full, size, keep_aspect=keep).astype(float)
            assert fast.shape == slow.shape == size + (3,)
            assert np.abs(fast - slow).mean() < 3, (name, size, keep)


def test_shrinking_keeps_exif_rotation_and_palette_colours(tmp_path):
    rgb = _gradient(800, 1600)                    # landscape, stored
    exif = Image.Exif()
    exif[0x0112] = 6                              # shown as portrait
    Image.fromarray(rgb).save(tmp_path / "r.jpg", exif=exif.tobytes(), quality=95)
    img = load_image(tmp_path / "r.jpg", size=(160, 80))
    assert img.shape == (160, 80, 3)
    assert img[0, :, 0].mean() < 30 and img[-1, :, 0].mean() > 200
    # a palette image is averaged in colours, not in palette indices
    halves = np.zeros((1000, 1000, 3), np.uint8)
    halves[:, :500] = (255, 0, 0)
    halves[:, 500:] = (0, 0, 255)
    Image.fromarray(halves).convert("P", palette=Image.ADAPTIVE, colors=4).save(tmp_path / "p.png")
    img = load_image(tmp_path / "p.png", size=(100, 100)).astype(int)
    assert (np.abs(img[:, :40] - [255, 0, 0]).max() <= 2
            and np.abs(img[:, 60:] - [0, 0, 255]).max() <= 2)
    # 16-bit grayscale
    deep = (np.arange(1000)[None, :] * 60).astype(np.uint16).repeat(1000, axis=0)
    Image.fromarray(deep).save(tmp_path / "d.png")
    img = load_image(tmp_path / "d.png", size=(50, 50))
    assert img.shape == (50, 50, 3) and img[0, 0, 0] < 10 and img[0, -1, 0] > 245
