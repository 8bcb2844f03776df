"""Grid datasets: MobileNetV2's 7x7x1280 map per photo, stored as uint8, read memory-mapped.

Fixtures ``grid_dataset`` and ``mobilenet`` (the session's compiled encoder): tests/data/conftest.py.
"""
import json
import shutil

import numpy as np
import pytest
from hypothesis import given, strategies as st

from lasagne_caption.data.__main__ import main
from lasagne_caption.data.batches import generate_batch
from lasagne_caption.data.dataset import (CODES, META, QuantizedCodes, QuantizedCodesWriter,
                                          dequantize_codes, load_dataset, quantize_codes)
from lasagne_caption.data.prepare import grid_quantization, prepare_flickr8k
from lasagne_caption.data.readers import DataWarning
from lasagne_caption.encoders import get_encoder
from lasagne_caption.encoders.preprocess import load_image
from lasagne_caption.errors import UserError
from tests.data.helpers import PROPERTY, flickr_folder, flickr_photo_folder

SCALE = 6 / 255.0   # a ReLU6 output's step


# ---- quantised storage

@PROPERTY
@given(st.lists(st.floats(0, 255 * SCALE, width=32), min_size=1, max_size=50),
       st.sampled_from([(SCALE, 0), (0.05, 128), (1.0, 3)]))
def test_quantised_round_trip_is_within_half_a_step(values, quant):
    scale, zero_point = quant
    x = np.array(values, np.float32)
    x = np.clip(x, (0 - zero_point) * np.float32(scale), (255 - zero_point) * np.float32(scale))
    q = quantize_codes(x, scale, zero_point)
    assert q.dtype == np.uint8
    back = dequantize_codes(q, scale, zero_point)
    assert back.dtype == np.float32
    # half a step, plus float32's rounding of values up to 255 steps (a value
    # halfway between two steps may go either way: 5.0 at 6/255 is 212.5 steps)
    rounding = 4 * np.finfo(np.float32).eps * 255 * scale
    assert np.abs(back - x).max() <= 0.5 * scale + rounding


def test_values_on_the_grid_come_back_exactly_and_the_rest_is_clipped():
    q = np.arange(256, dtype=np.uint8)
    for scale, zero_point in ((SCALE, 0), (0.05, 128)):
        x = dequantize_codes(q, scale, zero_point)
        assert np.array_equal(quantize_codes(x, scale, zero_point), q)
    assert quantize_codes(np.array([-1.0, 7.0, 1000.0]), SCALE, 0).tolist() == [0, 255, 255]
    # ties round away from zero, as the int8 runtime does
    assert quantize_codes(np.array([0.5, 1.5, 2.5]), 1.0, 0).tolist() == [1, 2, 3]


def test_quantized_codes_index_like_a_float_array(tmp_path):
    data = np.arange(5 * 4 * 3, dtype=np.uint8).reshape(5, 4, 3)
    np.save(tmp_path / "q.npy", data)
    codes = QuantizedCodes(np.load(tmp_path / "q.npy", mmap_mode="r"), 0.5, 2)
    full = (data.astype(np.float32) - 2) * np.float32(0.5)
    assert isinstance(codes.data, np.memmap)
    assert len(codes) == 5 and codes.shape == (5, 4, 3) and codes.dtype == np.float32
    assert codes.image_shape == (4, 3) and codes.ndim == 3
    for key in (1, np.int64(4), slice(1, 4), [3, 0, 3], np.array([True, False, True, False, True]),
                (np.array([2, 1]), 0), (slice(None), slice(None), 2)):
        got = codes[key]
        assert got.dtype == np.float32 and np.array_equal(got, full[key]), key
    view = codes.subset(np.array([4, 1, 2]))
    assert len(view) == 3 and view.shape == (3, 4, 3)
    assert np.array_equal(view[[0, 2]], full[[4, 2]]) and np.array_equal(view[1], full[1])
    assert np.array_equal(view.subset([2])[0], full[2])
    assert np.array_equal(np.asarray(codes), full) and np.asarray(view).shape == (3, 4, 3)
    images, _ = generate_batch(view, [[["#START#", "a", "#END#"]]] * 3,
                               _Vocab(), 4, np.random.RandomState(0))
    assert images.shape == (4, 4, 3) and images.dtype == np.float32


class _Vocab:
    def as_matrix(self, captions, max_len=None):
        return np.zeros((len(captions), 3), np.int32)


def test_writer_shrinks_the_file_to_the_rows_written(tmp_path):
    writer = QuantizedCodesWriter(tmp_path / CODES, 5, (2, 3), 0.5, 0, grid_shape=(1, 2, 3))
    x = np.array([[[0.0, 0.5, 1.0], [1.5, 2.0, 200.0]]] * 3, np.float32)
    writer.append(x[:2])
    writer.append(x[2:].reshape(1, 1, 2, 3))   # any shape of as many values
    assert writer.close() == 3
    stored = np.load(tmp_path / CODES)
    assert stored.dtype == np.uint8 and stored.shape == (3, 2, 3)
    assert stored[0].tolist() == [[0, 1, 2], [3, 4, 255]]
    assert (tmp_path / CODES).stat().st_size == 128 + 3 * 6
    meta = writer.meta()
    assert meta["code_dtype"] == "uint8" and meta["image_shape"] == [2, 3]
    assert meta["grid_shape"] == [1, 2, 3]
    assert meta["quantization"]["clipped_values"] == 3           # 200.0 > 255 * 0.5, 3 times
    assert meta["quantization"]["max_abs_error"] == pytest.approx(200.0 - 127.5)


# ---- a grid dataset prepared from 40 real photos

def test_grid_dataset_is_memory_mapped_uint8_and_reads_float32(grid_dataset, mobilenet):
    ds = grid_dataset
    meta = json.loads((ds.path / META).read_text())
    scale, zero_point = grid_quantization(mobilenet.model_path)
    assert meta["features"] == "mobilenet_v2_grid" and meta["code_dtype"] == "uint8"
    assert meta["grid_shape"] == [7, 7, 1280] and meta["image_shape"] == [49, 1280]
    assert (meta["quantization"]["scale"], meta["quantization"]["zero_point"]) == (scale, zero_point)
    assert "code_size" not in meta and meta["images"] == 40
    raw = np.load(ds.path / CODES, mmap_mode="r")
    assert isinstance(raw, np.memmap) and raw.dtype == np.uint8 and raw.shape == (40, 49, 1280)
    assert isinstance(ds.codes, QuantizedCodes) and isinstance(ds.codes.data, np.memmap)
    assert ds.image_shape == (49, 1280) and len(ds.codes) == 40
    rows = ds.codes[[3, 0, 7]]
    assert rows.dtype == np.float32 and rows.shape == (3, 49, 1280)
    assert np.array_equal(rows[1], dequantize_codes(raw[0], scale, zero_point))
    with pytest.raises(UserError, match="grid of codes per image.*7x7x1280.*image_shape"):
        ds.code_size
    # the broken photo was left out; the splits follow the official lists
    assert "broken.jpg" not in ds.image_names and ds.image_names == sorted(ds.image_names)
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 24, "val": 8, "test": 8}
    codes, captions = ds.split("val")
    assert isinstance(codes, QuantizedCodes) and codes.shape == (8, 49, 1280)
    assert np.array_equal(codes[2], ds.codes[ds.splits["val"][2]])
    # the stored grid is the encoder's: round trip within half a step (here exact)
    assert meta["quantization"]["max_abs_error"] <= 0.5 * scale
    assert meta["quantization"]["clipped_values"] == 0


def test_grid_codes_equal_the_encoders_grid(grid_dataset, mobilenet, flickr8k_dir):
    # the first batch prepare encoded (32 photos; the same batch, so the same float sums)
    names = grid_dataset.image_names[:32]
    images = np.stack([load_image(flickr8k_dir / "images" / n) for n in names])
    grid = mobilenet.encode(images, taps="grid", batch_size=32,
                            progress=False)["grid"].reshape(32, 49, 1280)
    scale = grid_dataset.codes.scale
    assert np.abs(grid_dataset.codes[:32] - grid).max() <= 0.5 * scale
    # the prepare used this session's compiled function, not a second compile
    assert get_encoder("mobilenet_v2", mobilenet.model_path).compile()._fn is mobilenet._fn


@pytest.mark.parametrize("change, message", [
    (lambda m: m.pop("quantization"), "need a \"quantization\" object"),
    (lambda m: m["quantization"].update(scale=-1), "scale must be a positive number"),
    (lambda m: m["quantization"].update(scale="0.02"), "scale must be a positive number"),
    (lambda m: m["quantization"].update(zero_point=300), "zero_point must be an integer 0..255"),
    (lambda m: m.update(image_shape=[49, 320]), r"expected uint8 codes \(N, 49, 320\)"),
    (lambda m: m.update(image_shape="49x1280"), "image_shape must be a list"),
])
def test_bad_grid_metadata_is_a_one_line_error(grid_dataset, tmp_path, change, message):
    copy = tmp_path / "grid"
    shutil.copytree(grid_dataset.path, copy)
    meta = json.loads((copy / META).read_text())
    change(meta)
    (copy / META).write_text(json.dumps(meta))
    with pytest.raises(UserError, match=message) as exc:
        load_dataset(copy)
    assert "\n" not in str(exc.value)


def test_truncated_grid_codes_are_refused(grid_dataset, tmp_path):
    copy = tmp_path / "grid"
    shutil.copytree(grid_dataset.path, copy)
    with open(copy / CODES, "r+b") as f:
        f.truncate((copy / CODES).stat().st_size - 1000)
    with pytest.raises(UserError, match="image_codes.npy: truncated"):
        load_dataset(copy)
    np.save(copy / CODES, np.zeros((40, 49, 1280), np.float32))
    with pytest.raises(UserError, match=r"expected uint8 codes \(N, 49, 1280\).*float32"):
        load_dataset(copy)


def test_grid_needs_photos(tmp_path):
    source = flickr_folder(tmp_path / "src")   # codes/ only
    with pytest.raises(UserError, match="no images/ folder; grid features are encoded"):
        prepare_flickr8k(source, tmp_path / "out", features="grid")
    assert not (tmp_path / "out").exists()


def test_cli_prepares_and_describes_a_grid_dataset(flickr8k_dir, mobilenet, tmp_path, capsys):
    source = flickr_photo_folder(tmp_path / "src", flickr8k_dir, 2, 1, 1)
    out = tmp_path / "flickr8k-grid"
    assert main(["prepare", "flickr8k", "--source", str(source), "--features", "grid",
                 "--model", str(mobilenet.model_path), "--out", str(out)]) == 0
    assert main(["info", str(out), "--min-count", "1"]) == 0
    printed = capsys.readouterr().out
    assert "4 images, 20 captions, codes 7x7x1280 per image (uint8 on disk)" in printed
    assert np.load(out / CODES, mmap_mode="r").shape == (4, 49, 1280)


# ---- flat datasets are what they were

def test_flat_datasets_are_unchanged(tmp_path):
    source = flickr_folder(tmp_path / "src")
    ds = load_dataset(prepare_flickr8k(source, tmp_path / "out"))
    meta = json.loads((tmp_path / "out" / META).read_text())
    assert list(meta) == ["format", "source", "features", "created", "images", "captions",
                          "code_size", "splits"]
    assert meta["features"] == "mobilenet_v2_logits" and meta["code_size"] == 5
    expected = np.arange(20, dtype="float16").reshape(4, 5).astype("float32")
    np.save(tmp_path / "expected.npy", expected)
    assert (tmp_path / "out" / CODES).read_bytes() == (tmp_path / "expected.npy").read_bytes()
    assert type(ds.codes) is np.ndarray and ds.codes.dtype == np.float32
    assert ds.image_shape == (5,) and ds.code_size == 5
    codes, _ = ds.split("train")
    assert type(codes) is np.ndarray and codes.shape == (2, 5)


def test_unknown_features_name_grid(tmp_path):
    with pytest.raises(UserError, match="unknown features 'conv' .*logits, pool, grid"):
        prepare_flickr8k(flickr_folder(tmp_path / "src"), tmp_path / "out", features="conv")


def test_flat_prepare_still_drops_images_without_captions(tmp_path):
    source = flickr_folder(tmp_path / "src")
    (source / "codes" / "image_names.txt").write_text("a.jpg\nb.jpg\nc.jpg\nd.jpg\nz.jpg\n")
    np.save(source / "codes" / "mobilenet_v2_logits.npy", np.ones((5, 2), "float32"))
    with pytest.warns(DataWarning, match=r"dropped 1 images that lack codes or captions \(z.jpg\)"):
        ds = load_dataset(prepare_flickr8k(source, tmp_path / "out"))
    assert ds.image_names == ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]
