"""lasagne_caption.encoders.base: ImageEncoder's taps and its one batching loop, encode().

Most tests use the fake ``pixel_encoder`` of tests/encoders/conftest.py (its
``pixels`` tap is the loaded image, a non-flat code); the last ones use the
real MobileNetV2, compiled once per session.
"""
import numpy as np
import pytest
from PIL import Image

from lasagne_caption.errors import UserError
from lasagne_caption.encoders import Encoded, ImageEncoder
from lasagne_caption.encoders.preprocess import load_image

from .fakes import PixelEncoder


def _photos(folder, n=5):
    """``n`` small PNG photos of different sizes and colours; their paths."""
    rng = np.random.RandomState(0)
    paths = []
    for i in range(n):
        rgb = rng.randint(0, 256, (30 + 7 * i, 50 + 3 * i, 3)).astype(np.uint8)
        paths.append(str(folder / ("p%d.png" % i)))
        Image.fromarray(rgb).save(paths[-1])
    return paths


def _close(a, b):
    """Equal up to what float32 keeps (1e-5 of the codes' scale): the CPU model varies."""
    scale = max(float(np.abs(b).max()), 1.0)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * scale)


def test_taps_and_tap_shapes(pixel_encoder, tmp_path):
    enc = pixel_encoder
    assert isinstance(enc, ImageEncoder) and enc.taps == ("pixels", "mean")
    result = enc.encode(_photos(tmp_path, 3), progress=False)
    assert isinstance(result, Encoded) and list(result) == ["pixels", "mean"]
    for tap, shape in enc.tap_shapes.items():
        assert result[tap].shape == (3,) + shape and result[tap].dtype == np.float32
    assert result.kept == [0, 1, 2] and result.failed == []
    only = enc.encode(_photos(tmp_path, 3), taps="mean", progress=False)
    assert list(only) == ["mean"] and dict(only)["mean"].shape == (3, 3)
    assert list(enc.encode(_photos(tmp_path, 1), taps=["mean", "pixels"], progress=False)) \
        == ["mean", "pixels"]


def test_paths_arrays_and_one_array_give_the_same_codes(pixel_encoder, tmp_path):
    paths = _photos(tmp_path)
    images = [load_image(p) for p in paths]
    from_paths = pixel_encoder.encode(paths, batch_size=2, progress=False)["pixels"]
    np.testing.assert_array_equal(from_paths, np.stack(images))
    for items in (images, np.stack(images), [paths[0], images[1], paths[2], images[3], paths[4]]):
        np.testing.assert_array_equal(pixel_encoder.encode(items, progress=False)["pixels"],
                                      from_paths)
    np.testing.assert_array_equal(pixel_encoder.encode(images[3], progress=False)["pixels"],
                                  from_paths[3:4])
    np.testing.assert_array_equal(pixel_encoder.encode(paths[3], progress=False)["pixels"],
                                  from_paths[3:4])


def test_paths_are_loaded_batch_by_batch(tmp_path):
    events = []

    class Recording(PixelEncoder):
        def load(self, item, keep_aspect=False):
            events.append("load")
            return super(Recording, self).load(item, keep_aspect)

        def forward(self, batch, taps=None):
            events.append("forward %d" % len(batch))
            return super(Recording, self).forward(batch, taps)

    Recording().encode(_photos(tmp_path), batch_size=2, progress=False)
    assert events == ["load", "load", "forward 2", "load", "load", "forward 2",
                      "load", "forward 1"]


def test_batch_size_does_not_change_the_codes(pixel_encoder, tmp_path):
    paths = _photos(tmp_path)
    ref = pixel_encoder.encode(paths, batch_size=32, progress=False)
    for batch_size in (1, 2, 3, None):
        pixel_encoder.calls[:] = []
        got = pixel_encoder.encode(paths, batch_size=batch_size, progress=False)
        for tap in ref:
            np.testing.assert_array_equal(got[tap], ref[tap])
        size = batch_size or pixel_encoder.default_batch_size
        assert pixel_encoder.calls == [size] * (5 // size) + ([5 % size] if 5 % size else [])


def test_skip_unreadable_reports_index_and_encodes_the_rest(pixel_encoder, tmp_path):
    paths = _photos(tmp_path, 3)
    notes = tmp_path / "notes.jpg"
    notes.write_text("a text file, not a photo")
    image = load_image(paths[1])
    items = [paths[0], str(notes), image, paths[2], tmp_path / "missing.png"]
    with pytest.raises(UserError) as exc:
        pixel_encoder.encode(items, progress=False)
    assert "notes.jpg" in str(exc.value) and "\n" not in str(exc.value)
    result = pixel_encoder.encode(items, batch_size=2, progress=False, skip_unreadable=True)
    assert result.kept == [0, 2, 3]
    assert [(i, item) for i, item, _ in result.failed] == [(1, str(notes)),
                                                           (4, tmp_path / "missing.png")]
    assert "notes.jpg is not" in result.failed[0][2] and "does not exist" in result.failed[1][2]
    want = pixel_encoder.encode([paths[0], image, paths[2]], progress=False)
    for tap in want:
        np.testing.assert_array_equal(result[tap], want[tap])
    nothing = pixel_encoder.encode([notes], progress=False, skip_unreadable=True)
    assert nothing["pixels"].shape == (0, 224, 224, 3) and nothing.kept == []
    assert len(nothing.failed) == 1


def test_bad_requests(pixel_encoder):
    with pytest.raises(UserError) as exc:
        pixel_encoder.encode(np.zeros((1, 224, 224, 3), np.uint8), taps="fc7", progress=False)
    assert str(exc.value) == "unknown features 'fc7' for encoder pixels (choose from pixels, mean)"
    with pytest.raises(ValueError, match=r"expected a uint8 image \(224, 224, 3\)"):
        pixel_encoder.encode(np.zeros((2, 100, 100, 3), np.uint8), progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        pixel_encoder.encode(np.zeros((1, 224, 224, 3), np.uint8), batch_size=0)
    with pytest.raises(ValueError, match=r"expected uint8 images \(N, 224, 224, 3\)"):
        pixel_encoder.forward(np.zeros((224, 224, 3), np.uint8))
    empty = pixel_encoder.encode([], progress=False)
    assert empty["pixels"].shape == (0, 224, 224, 3) and empty["mean"].shape == (0, 3)
    assert pixel_encoder.calls == []


def test_a_wrong_tap_shape_is_an_error(tmp_path):
    class Wrong(PixelEncoder):
        def forward(self, batch, taps=None):
            codes = super(Wrong, self).forward(batch, taps)
            codes["mean"] = codes["mean"][:, :2]
            return codes

    with pytest.raises(RuntimeError, match="returned \\(1, 2\\) for tap 'mean'"):
        Wrong().encode(np.zeros((1, 224, 224, 3), np.uint8), progress=False)


def test_progress_bar(pixel_encoder, tmp_path, capsys):
    paths = _photos(tmp_path, 3)
    pixel_encoder.encode(paths, batch_size=2, progress=False)
    assert capsys.readouterr().err == ""
    pixel_encoder.encode(paths, batch_size=2, progress=True)
    err = capsys.readouterr().err
    assert "encoding photos" in err and "3/3" in err


# ---- the real MobileNetV2

def test_mobilenet_taps(mobilenet):
    assert mobilenet.taps == ("logits", "pool", "grid", "block16")
    assert mobilenet.tap_shapes == {"logits": (1001,), "pool": (1280,), "grid": (7, 7, 1280),
                                    "block16": (7, 7, 320)}
    assert mobilenet.input_size == (224, 224)
    codes = mobilenet.forward(np.zeros((2, 224, 224, 3), np.uint8))
    assert {t: a.shape[1:] for t, a in codes.items()} == mobilenet.tap_shapes
    assert list(mobilenet.forward(np.zeros((1, 224, 224, 3), np.uint8), taps="pool")) == ["pool"]


def test_mobilenet_one_loop_for_paths_lists_and_arrays(mobilenet, sample_paths):
    by_path = mobilenet.encode(sample_paths, progress=False)
    for tap, shape in mobilenet.tap_shapes.items():
        assert by_path[tap].shape == (len(sample_paths),) + shape
        assert by_path[tap].dtype == np.float32
    images = [load_image(p) for p in sample_paths]
    by_list = mobilenet.encode(images, progress=False)
    by_array = mobilenet.encode(np.stack(images), progress=False)
    for tap in mobilenet.taps:
        _close(by_list[tap], by_path[tap])
        _close(by_array[tap], by_path[tap])
    # the batch size does not change the codes
    for batch_size in (1, 3):
        other = mobilenet.encode(sample_paths, batch_size=batch_size, progress=False)
        for tap in mobilenet.taps:
            _close(other[tap], by_path[tap])


def test_mobilenet_skips_a_file_that_is_not_an_image(mobilenet, sample_paths, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a photo")
    items = sample_paths[:2] + [str(notes)] + sample_paths[2:4]
    result = mobilenet.encode(items, taps="logits", batch_size=2, progress=False,
                              skip_unreadable=True)
    assert result.kept == [0, 1, 3, 4] and list(result) == ["logits"]
    assert len(result.failed) == 1
    index, item, message = result.failed[0]
    assert index == 2 and item == str(notes) and "notes.txt" in message
    want = mobilenet.encode(sample_paths[:4], taps="logits", batch_size=2, progress=False)
    _close(result["logits"], want["logits"])
