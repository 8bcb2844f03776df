"""The dataset layout: loading a folder, its splits, and the default split rule."""
import json
import os
import shutil

import numpy as np
import pytest
from hypothesis import given, strategies as st

from lasagne_caption.data.dataset import (CAPTIONS, CODES, DATASET_FORMAT, META, SPLITS_FILE,
                                          _describe_dataset, _read_splits, default_splits,
                                          load_dataset, write_dataset)
from lasagne_caption.errors import UserError
from lasagne_caption.vocab import END, START
from tests.data.helpers import PROPERTY, seminar_folder


def test_default_split_rule():
    splits = default_splits(123287)
    assert [len(splits[k]) for k in ("train", "val", "test")] == [113287, 5000, 5000]
    assert {k: len(v) for k, v in default_splits(100).items()} == {"train": 90, "val": 5, "test": 5}
    assert np.array_equal(default_splits(100)["val"], default_splits(100)["val"])


def test_missing_dataset_and_bad_splits(tmp_path):
    with pytest.raises(UserError, match="no such dataset folder"):
        load_dataset(tmp_path / "nothing")
    folder = seminar_folder(tmp_path / "ds")
    (folder / "splits.json").write_text(json.dumps({"train": [0, 9]}))
    with pytest.raises(UserError, match="splits.json: split 'train' has rows outside"):
        load_dataset(folder)


@pytest.mark.parametrize("splits, message", [
    ({"train": [0.5, 1]}, "split 'train' is not a list of row numbers"),
    ({"train": [[0, 1]]}, "split 'train' is not a list of row numbers"),
    ({"train": [True]}, "split 'train' is not a list of row numbers"),
    ({"train": "0 1"}, "split 'train' is not a list of row numbers"),
    ([[0, 1]], "expected a JSON object of index lists, got list"),
    ({"train": [0, 0, 1]}, "split 'train' lists a row twice"),
    ({"train": [-1]}, "split 'train' has rows outside 0..3"),
])
def test_bad_splits_json(tmp_path, splits, message):
    folder = seminar_folder(tmp_path / "ds")
    (folder / "splits.json").write_text(json.dumps(splits))
    with pytest.raises(UserError, match="splits.json: " + message):
        load_dataset(folder)


def test_an_empty_split_is_a_one_line_error_when_used(tmp_path):
    folder = seminar_folder(tmp_path / "ds")
    (folder / "splits.json").write_text(json.dumps({"train": [], "val": [0], "test": [1]}))
    (folder / "dataset.json").write_text("[1, 2]")
    with pytest.raises(UserError, match="dataset.json: expected a JSON object"):
        load_dataset(folder)
    (folder / "dataset.json").unlink()
    ds = load_dataset(folder)
    with pytest.raises(UserError, match="ds: the train split has no images"):
        ds.split("train")
    with pytest.raises(UserError, match="the train split has no images"):
        ds.vocabulary()



def test_write_dataset_is_what_load_dataset_reads(tmp_path):
    codes = np.arange(8, dtype="float64").reshape(4, 2)
    captions = [["A Dog."], ["a cat", "The CAT!"], ["x y"], ["z"]]
    splits = {"train": [0, 1], "val": [2], "test": [3]}
    write_dataset(tmp_path, codes, captions, ["a", "b", "c", "d"], splits, "coco", "mine")
    ds = load_dataset(tmp_path)
    assert ds.codes.dtype == np.float32 and ds.codes.tolist() == codes.tolist()
    assert ds.captions[1] == [[START, "a", "cat", END], [START, "the", "cat", END]]
    assert ds.image_names == ["a", "b", "c", "d"]
    assert {k: v.tolist() for k, v in ds.splits.items()} == splits
    assert ds.meta["format"] == DATASET_FORMAT and ds.meta["source"] == "coco"
    assert (ds.meta["images"], ds.meta["captions"], ds.meta["code_size"]) == (4, 5, 2)
    assert ds.meta["splits"] == {"train": 2, "val": 1, "test": 1}
    assert _describe_dataset(tmp_path)[1] is None
    # data files copied in byte for byte: only splits.json and dataset.json are written
    copied = tmp_path / "copied"
    copied.mkdir()
    for name in (CODES, CAPTIONS):
        shutil.copy(tmp_path / name, copied / name)
    write_dataset(copied, ds.codes, ds.captions, None, splits, "seminar", "googlenet",
                  data_copied=True)
    assert sorted(os.listdir(copied)) == sorted([CODES, CAPTIONS, SPLITS_FILE, META])
    assert (copied / CODES).read_bytes() == (tmp_path / CODES).read_bytes()
    again = load_dataset(copied)
    assert (again.meta["images"], again.meta["captions"], again.meta["source"]) == (4, 5, "seminar")


# ---- property-based: mutated splits load or raise UserError

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=5),
                                                                       children, max_size=3),
    max_leaves=20)


SPLITS_LIKE = st.dictionaries(st.sampled_from(["train", "val", "test"]),
                              st.lists(st.integers(-2, 6), max_size=6), max_size=3)


@PROPERTY
@given(raw=st.binary(max_size=200) | st.builds(json.dumps, JSON_VALUES | SPLITS_LIKE).map(str.encode))
def test_property_splits_files_load_or_raise_user_error(scratch, raw):
    (scratch / "splits.json").write_bytes(raw)
    try:
        splits = _read_splits(scratch / "splits.json", 4)
    except UserError as exc:
        assert "\n" not in str(exc)
    else:
        assert all(v.dtype == np.int64 and ((v >= 0) & (v < 4)).all() for v in splits.values())
