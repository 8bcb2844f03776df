"""Packed parameter files: int8 / float16 weights in an npz, read without pickle."""
import io
import zipfile

import numpy as np
import pytest

from lasagne_caption import packed
from lasagne_caption.checkpoint import load_model, safe_load_arrays
from lasagne_caption.errors import UserError


def _values(seed=0):
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 0.3, (40, 24)).astype(np.float32)
    w[:, 3] = 0                               # a dead column keeps a finite scale
    w[5, 7] = 4.0                             # an outlier only widens its own column
    return [w, rng.normal(size=24).astype(np.float32), np.float32(0.5),
            rng.normal(size=(3, 4, 5)).astype(np.float32)]


def _roundtrip(values, storage, tmp_path):
    path = tmp_path / ("p-%s.npz" % storage)
    packed.save_packed(str(path), values, storage)
    return path, packed.load_packed(str(path))


def test_int8_is_within_half_a_step_of_every_column(tmp_path):
    values = _values()
    path, back = _roundtrip(values, "int8", tmp_path)
    assert [v.shape for v in back] == [np.shape(v) for v in values]
    assert all(v.dtype == np.float32 for v in back)
    w, back_w = values[0], back[0]
    step = np.abs(w).max(axis=0) / 127
    assert np.all(np.abs(back_w - w) <= step / 2 + 1e-7)
    assert np.all(back_w[:, 3] == 0)
    # the outlier's column is coarse, the others keep their own fine steps
    assert step[7] == pytest.approx(4.0 / 127) and np.delete(step, [3, 7]).max() < step[7] / 3
    np.testing.assert_array_equal(back[1], values[1])      # vectors stay float32, exact
    assert back[2] == values[2] and back[2].shape == ()
    assert np.abs(back[3] - values[3]).max() <= np.abs(values[3]).max() / 127


def test_float16_and_sizes(tmp_path):
    values = [np.random.default_rng(1).normal(size=(300, 200)).astype(np.float32)]
    path16, back16 = _roundtrip(values, "float16", tmp_path)
    path8, back8 = _roundtrip(values, "int8", tmp_path)
    np.testing.assert_allclose(back16[0], values[0], rtol=1e-3, atol=1e-4)
    raw = values[0].nbytes
    assert path16.stat().st_size < 0.55 * raw and path8.stat().st_size < 0.3 * raw


def test_a_checkpoint_packs_and_loads_through_load_model(demo_checkpoint, tmp_path):
    model, meta = load_model(str(demo_checkpoint))
    path = tmp_path / "demo.npz"
    packed.save_packed(str(path), model.get_param_values(), "int8")
    assert packed.is_packed(str(path)) and not packed.is_packed(str(demo_checkpoint))
    values = safe_load_arrays(str(path))       # the checkpoint reader knows the format
    for original, back in zip(model.get_param_values(), values):
        assert back.shape == original.shape
        np.testing.assert_allclose(back, original, atol=np.abs(original).max() / 127 + 1e-7)


def _npz(tmp_path, name, **arrays):
    path = tmp_path / name
    np.savez(str(path), **arrays)
    return str(path)


@pytest.mark.parametrize("arrays, message", [
    ({"param_000": np.ones(2, np.float32)}, "not a packed parameter file"),
    ({"storage": np.array("int4"), "param_000": np.ones(2, np.float32)}, "storage 'int4'"),
    ({"storage": np.array("int8"), "param_000": np.ones(2, np.float32),
      "param_002": np.ones(2, np.float32)}, r"parameters \[1\] are missing"),
    ({"storage": np.array("int8"), "param_000": np.ones(2, np.int32)}, "int32 values, not floats"),
    ({"storage": np.array("int8"), "param_000_q": np.ones((2, 3), np.int8)},
     "not int8 values with a float32 scale per column"),
    ({"storage": np.array("int8"), "param_000_q": np.ones((2, 3), np.int8),
      "param_000_scale": np.ones(2, np.float32)}, "not int8 values with a float32 scale"),
    ({"storage": np.array("int8"), "param_000_q": np.ones((2, 3), np.int16),
      "param_000_scale": np.ones(3, np.float32)}, "not int8 values with a float32 scale"),
])
def test_malformed_files_are_one_line_errors_naming_the_file(tmp_path, arrays, message):
    path = _npz(tmp_path, "bad.npz", **arrays)
    with pytest.raises(UserError, match=message) as info:
        packed.load_packed(path)
    assert str(info.value).startswith(path) and "\n" not in str(info.value)


def test_pickled_members_and_broken_zips_are_refused(tmp_path):
    objects = _npz(tmp_path, "objects.npz", storage=np.array("int8"),
                   param_000=np.array([{"x": 1}], dtype=object))
    with pytest.raises(UserError, match="objects.npz: unreadable packed parameter file"):
        packed.load_packed(objects)
    path = tmp_path / "cut.npz"
    packed.save_packed(str(path), _values(), "int8")
    path.write_bytes(path.read_bytes()[:200])          # still starts like a zip
    with pytest.raises(UserError, match="cut.npz: unreadable packed parameter file"):
        safe_load_arrays(str(path))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("notes.txt", "hello")
    (tmp_path / "other.zip").write_bytes(buffer.getvalue())
    with pytest.raises(UserError, match="other.zip: not a packed parameter file"):
        safe_load_arrays(str(tmp_path / "other.zip"))


def test_unknown_storage_is_refused():
    with pytest.raises(UserError, match="unknown storage 'int4'"):
        packed.pack([np.ones((2, 2))], "int4")
