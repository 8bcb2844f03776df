"""The readers of the input formats: caption pickles, codes and COCO JSON.

Files are written by hand or by hypothesis; the real COCO file is read in
test_prepare.py.
"""
import io
import json
import os
import pickle
import struct

import numpy as np
import pytest
from hypothesis import given, strategies as st

from lasagne_caption.data.dataset import load_dataset
from lasagne_caption.data.readers import read_caption_pickle, read_codes, read_coco
from lasagne_caption.errors import UserError
from tests.data.helpers import PROPERTY, py2_pickle, seminar_folder


@pytest.mark.parametrize("doc, message", [
    ({"images": [{"id": 1}], "annotations": [{"id": 5, "image_id": 2, "caption": "a"}]},
     "annotation 5 is for unknown image 2"),
    ({"images": [{"id": 1}], "annotations": [{"id": 5, "image_id": 1, "caption": "?"}]},
     "empty caption in annotation 5"),
    ({"images": [{"id": 1}]}, "not a COCO captions file .bad or missing 'annotations'"),
    ("{not json", "not a JSON file"),
])
def test_bad_coco_files(tmp_path, doc, message):
    path = tmp_path / "captions.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    with pytest.raises(UserError, match="captions.json: " + message):
        read_coco(path)


def test_py2_pickle_helper_is_a_real_pickle():
    entries = [["a dog", "x" * 300], []]
    assert pickle.loads(py2_pickle(entries), encoding="latin1") == entries


class Evil:
    def __reduce__(self):
        return (os.system, ("touch %s" % os.path.join(os.environ["EVIL_DIR"], "pwned"),))


def test_malicious_pickle_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("EVIL_DIR", str(tmp_path))
    folder = seminar_folder(tmp_path / "evil", captions={"a": ["x"]},
                            pickled=pickle.dumps([[Evil()]], protocol=2))
    with pytest.raises(UserError, match=r"caption_tokens.pcl: refused to unpickle posix.system"):
        load_dataset(folder)
    assert not (tmp_path / "pwned").exists()


# ---- codes and caption pickles of the wrong kind

def huge_header(path, shape):
    """A .npy header promising ``shape`` float32 values, followed by 64 bytes."""
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False,
                                                 "shape": shape})
        f.write(b"\0" * 64)


@pytest.mark.parametrize("write, message", [
    (lambda p: np.savez(open(p, "wb"), codes=np.ones((4, 3), "float32")),
     "an .npz archive, not a .npy"),
    (lambda p: np.save(p, np.ones((4, 0), "float32")), r"shape \(4, 0\) hold no values per image"),
    (lambda p: np.save(p, np.ones((0, 3), "float32")), r"shape \(0, 3\) hold no images"),
    (lambda p: np.save(p, np.ones((4, 3), "int64")), "codes must be floats, got int64"),
    (lambda p: np.save(p, np.ones((4, 3), "complex64")), "codes must be floats"),
    (lambda p: np.save(p, np.ones((4, 3), bool)), "codes must be floats"),
    (lambda p: np.save(p, np.array([[None] * 3] * 4), allow_pickle=True), "codes must be floats"),
    (lambda p: np.save(p, np.full((4, 3), 1e300)), "4 rows contain NaN or inf .*float32's range"),
    (lambda p: np.save(p, np.array([[1.0, np.inf, 0]] * 4, "float16")), "4 rows contain NaN or inf"),
    (lambda p: huge_header(p, (100000000000, 100000)),
     r"truncated or not a .npy file \(64 bytes of data for float32 \(100000000000, 100000\)"),
    (lambda p: p.write_bytes(b"not numpy at all"), "truncated or not a .npy file"),
])
def test_bad_codes_are_one_line_errors_naming_the_file(tmp_path, write, message):
    path = tmp_path / "codes.npy"
    write(path)
    with pytest.raises(UserError, match=message) as err:
        read_codes(path)
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)


def test_pickle_memo_bomb_is_refused_in_bounded_memory(tmp_path):
    import tracemalloc
    path = tmp_path / "caption_tokens.pcl"
    # 9 bytes asking the unpickler for a memo of 600 million slots (4.6 GB measured)
    path.write_bytes(b"\x80\x02]r" + struct.pack("<I", 300_000_000) + b".")
    tracemalloc.start()
    try:
        with pytest.raises(UserError, match="caption_tokens.pcl: truncated or corrupt pickle .memo index"):
            read_caption_pickle(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


@pytest.mark.parametrize("value, message", [
    ([[1, 2]], "entry 0 is not a list of caption strings .got a list holding int"),
    ([["a dog"], "a cat"], "entry 1 is not a list of caption strings .got str"),
    ((["a dog"],), "expected a list of caption lists, got tuple"),
    ({"a.jpg": ["a dog"]}, "expected a list of caption lists, got dict"),
    (None, "expected a list of caption lists, got NoneType"),
])
def test_caption_pickles_of_the_wrong_structure(tmp_path, value, message):
    path = tmp_path / "caption_tokens.pcl"
    path.write_bytes(pickle.dumps(value, protocol=2))
    with pytest.raises(UserError, match="caption_tokens.pcl: " + message):
        read_caption_pickle(path)


# ---- property-based: mutated files load or raise UserError, in bounded memory

PLAIN_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda children: (st.lists(children, max_size=5) | st.tuples(children, children)
                      | st.dictionaries(st.text(max_size=5), children, max_size=3)
                      | st.frozensets(st.integers(), max_size=3)),
    max_leaves=20)


CAPTION_LISTS = st.lists(st.lists(st.text(max_size=30) | st.binary(max_size=30), max_size=4),
                         max_size=6)


@st.composite
def mutated(draw, data):
    """``data`` (bytes) truncated, with bytes flipped, inserted or deleted, or as is."""
    data = bytearray(data)
    for _ in range(draw(st.integers(0, 3))):
        how = draw(st.sampled_from(["truncate", "flip", "insert", "delete"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if how == "truncate":
            del data[at:]
        elif how == "flip" and data:
            data[at] = draw(st.integers(0, 255))
        elif how == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif data:
            del data[at:at + draw(st.integers(1, 8))]
    return bytes(data)


@st.composite
def pickle_files(draw):
    if draw(st.booleans()):
        return draw(st.binary(max_size=300))
    value = draw(CAPTION_LISTS | PLAIN_VALUES)
    return draw(mutated(pickle.dumps(value, protocol=draw(st.integers(0, 5)))))


NPY_DTYPES = ["float16", "float32", ">f4", "float64", "longdouble", "int8", "uint16", "int64",
              "bool", "complex64", "U3", "O", "V4", "f4,f4"]


@st.composite
def npy_files(draw):
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=300))
    dtype = np.dtype(draw(st.sampled_from(NPY_DTYPES)))
    shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
    count = int(np.prod(shape))
    if dtype.kind == "O":
        array = np.array([draw(PLAIN_VALUES) for _ in range(count)] + [None],
                         dtype=object)[:count].reshape(shape)
    elif dtype.kind == "U":
        array = np.array([draw(st.text(max_size=3)) for _ in range(count)], dtype).reshape(shape)
    else:
        raw = draw(st.binary(min_size=count * dtype.itemsize, max_size=count * dtype.itemsize))
        array = np.frombuffer(raw, dtype).reshape(shape)
    buffer = io.BytesIO()
    if draw(st.integers(0, 9)) == 0:
        np.savez(buffer, codes=array)
    else:
        np.save(buffer, array, allow_pickle=True)
    return draw(mutated(buffer.getvalue()))


def loads_or_refuses(read, path, raw):
    """``read(path)`` either succeeds or raises a one-line UserError, within bounded memory.

    Memory: numpy and Python allocations traced by tracemalloc; a small file
    must never make the reader allocate more than a fixed 2 MiB plus 200
    bytes per byte of file (Python objects for a list of strings).
    """
    import tracemalloc
    path.write_bytes(raw)
    tracemalloc.start()
    try:
        try:
            return read(path)
        except UserError as exc:
            assert "\n" not in str(exc) and str(exc).startswith(str(path)), str(exc)
            return None
        finally:
            peak = tracemalloc.get_traced_memory()[1]
            assert peak < (2 << 20) + 200 * len(raw), (peak, len(raw))
    finally:
        tracemalloc.stop()


@PROPERTY
@given(raw=pickle_files())
def test_property_caption_pickles_load_or_raise_user_error(scratch, raw):
    value = loads_or_refuses(read_caption_pickle, scratch / "caption_tokens.pcl", raw)
    if value is not None:
        assert isinstance(value, list)
        assert all(isinstance(e, list) and all(isinstance(c, str) for c in e) for e in value)


@PROPERTY
@given(raw=npy_files())
def test_property_codes_load_or_raise_user_error(scratch, raw):
    codes = loads_or_refuses(read_codes, scratch / "image_codes.npy", raw)
    if codes is not None:
        assert codes.dtype == np.float32 and codes.ndim == 2 and codes.size > 0
        assert np.isfinite(codes).all()
