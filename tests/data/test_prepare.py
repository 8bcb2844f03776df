"""Preparing Flickr8k, COCO and the seminar archive into a dataset folder.

Real data: the Flickr8k and COCO files in ../shared. Seminar-format files
(a Python 2 pickle and a tar.gz) are written by tests.data.helpers.
"""
import io
import json
import os
import pickle
import shutil
import sys
import tarfile

import numpy as np
import pandas as pd
import pytest

from lasagne_caption.data.dataset import load_dataset
from lasagne_caption.data.prepare import prepare_coco, prepare_flickr8k, prepare_seminar
from lasagne_caption.data.readers import DataWarning, read_coco
from lasagne_caption.errors import UserError
from lasagne_caption.vocab import END, START, Vocabulary, tokenize
from tests.data.helpers import (CAPTIONS, all_tokens, corrupt, flickr_folder, py2_pickle,
                                seminar_folder)


# The train-split vocabulary of Flickr8k at min_count=5, specials included;
# recomputed independently with pandas in test_flickr8k_vocabulary_size.
FLICKR8K_VOCAB_SIZE = 2537


def test_flickr8k_counts_and_splits(flickr):
    assert flickr.codes.shape == (8091, 1001) and flickr.codes.dtype == np.float32
    assert flickr.code_size == 1001 and len(flickr.image_names) == 8091
    assert sum(map(len, flickr.captions)) == 40455
    assert {k: len(v) for k, v in flickr.splits.items()} == {"train": 6000, "val": 1000, "test": 1000}
    every = np.concatenate(list(flickr.splits.values()))
    assert len(set(every.tolist())) == 8000
    assert flickr.meta["source"] == "flickr8k"
    assert flickr.captions[0][0][:3] == [START, "a", "child"] and flickr.captions[0][0][-1] == END
    codes, captions = flickr.split("val")
    assert len(codes) == len(captions) == 1000
    with pytest.raises(UserError, match="unknown split 'dev' .*train, val, test"):
        flickr.split("dev")


def test_flickr8k_vocabulary_size(flickr, flickr8k_dir):
    # independent count: pandas over the raw token file, train images only
    tokens = pd.read_csv(flickr8k_dir / "Flickr8k.token.txt", sep="\t", header=None,
                         names=["key", "caption"], quoting=3)
    tokens["image"] = tokens["key"].str.rsplit("#", n=1).str[0]
    train = set((flickr8k_dir / "Flickr_8k.trainImages.txt").read_text().split())
    words = tokens[tokens["image"].isin(train)]["caption"].map(tokenize).explode()
    expected = int((words.value_counts() >= 5).sum()) + 3
    assert expected == FLICKR8K_VOCAB_SIZE
    vocab = flickr.vocabulary(min_count=5)
    assert len(vocab) == FLICKR8K_VOCAB_SIZE
    assert vocab.words[3] == "a"  # the most frequent word comes first


def test_coco_subset_loads(shared_dir, tmp_path):
    path = shared_dir / "data" / "coco" / "captions_val2014_subset.json"
    ids, files, captions = read_coco(path)
    assert len(ids) == 4800 and sum(map(len, captions)) == 24019
    with pytest.raises(UserError, match="need codes: pass --codes"):
        prepare_coco(path, tmp_path / "coco")
    # codes for every second image, named by file name: the rest are dropped
    rows = np.random.RandomState(0).rand(2400, 7).astype("float32")
    np.save(tmp_path / "codes.npy", rows)
    (tmp_path / "names.txt").write_text("\n".join(files[::2]))
    with pytest.warns(DataWarning, match="dropped 2400 images without codes"):
        prepare_coco(path, tmp_path / "coco", tmp_path / "codes.npy", tmp_path / "names.txt")
    ds = load_dataset(tmp_path / "coco")
    assert ds.codes.shape == (2400, 7) and ds.image_names == files[::2]
    assert sum(map(len, ds.splits.values())) == 2400 and len(ds.splits["val"]) == 120
    # without names, the rows follow the JSON's images
    np.save(tmp_path / "all.npy", np.zeros((4800, 3), "float32"))
    prepare_coco(path, tmp_path / "coco2", tmp_path / "all.npy")
    assert load_dataset(tmp_path / "coco2").codes.shape == (4800, 3)


# ---- the seminar's format

def test_seminar_archive_matches_flickr_form(tmp_path):
    folder = seminar_folder(tmp_path / "src" / "data")
    with tarfile.open(tmp_path / "data.tar.gz", "w:gz") as tar:
        tar.add(folder, arcname="data")
    prepare_seminar(tmp_path / "data.tar.gz", tmp_path / "out" / "seminar")
    prepare_flickr8k(flickr_folder(tmp_path / "flickr"), tmp_path / "out" / "flickr")
    sem, fl = load_dataset(tmp_path / "out" / "seminar"), load_dataset(tmp_path / "out" / "flickr")
    assert sem.captions == fl.captions
    v1, v2 = Vocabulary.build(all_tokens(sem), 2), Vocabulary.build(all_tokens(fl), 2)
    assert v1.words == v2.words and v1.counts == v2.counts and "dog" in v1.index
    assert sem.meta["source"] == "seminar" and sem.code_size == 1000
    assert sorted(os.listdir(tmp_path / "out")) == ["flickr", "seminar"]  # no .tmp- left
    # the unpacked folder itself is a dataset, with the documented default split
    raw = load_dataset(folder)
    assert raw.captions == sem.captions and raw.image_names[0] == "img_000000"
    assert {k: v.tolist() for k, v in raw.splits.items()} == {"train": [0, 1], "val": [2], "test": [3]}
    prepare_seminar(folder, tmp_path / "out" / "again")
    # a Python 3 pickle of bytes at protocol 2 reads the same
    entries = [[" ".join(tokenize(c)).encode() for c in caps] for caps in CAPTIONS.values()]
    as_bytes = seminar_folder(tmp_path / "bytes", pickled=pickle.dumps(entries, protocol=2))
    assert load_dataset(as_bytes).captions == sem.captions


def test_unsafe_tar_member_is_refused(tmp_path):
    with tarfile.open(tmp_path / "data.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo("../image_codes.npy")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    with pytest.raises(UserError, match="unsafe member path '../image_codes.npy'"):
        prepare_seminar(tmp_path / "data.tar.gz", tmp_path / "out" / "x")
    (tmp_path / "data.tar.gz").write_bytes(b"\x1f\x8b\x08 not gzip")
    with pytest.raises(UserError, match="data.tar.gz: "):
        prepare_seminar(tmp_path / "data.tar.gz", tmp_path / "out" / "x")
    assert not (tmp_path / "image_codes.npy").exists() and os.listdir(tmp_path / "out") == []
    # errors in files inside an archive name the archive, not a temporary folder
    folder = seminar_folder(tmp_path / "src" / "data")
    corrupt(folder / "caption_tokens.pcl", "truncate")
    with tarfile.open(tmp_path / "data.tar.gz", "w:gz") as tar:
        tar.add(folder, arcname="data")
    with pytest.raises(UserError, match=r"data.tar.gz/caption_tokens.pcl: truncated or corrupt"):
        prepare_seminar(tmp_path / "data.tar.gz", tmp_path / "out" / "x")



def test_the_seminar_files_are_kept_byte_for_byte(tmp_path):
    folder = seminar_folder(tmp_path / "src" / "data")
    (folder / "image_names.txt").write_text("a\nb\nc\nd\n")
    with tarfile.open(tmp_path / "data.tar.gz", "w:gz") as tar:
        tar.add(folder, arcname="data")
    prepare_seminar(folder, tmp_path / "from_folder")
    prepare_seminar(tmp_path / "data.tar.gz", tmp_path / "from_archive")
    for out in (tmp_path / "from_folder", tmp_path / "from_archive"):
        for name in ("image_codes.npy", "caption_tokens.pcl"):
            assert (out / name).read_bytes() == (folder / name).read_bytes()
        meta = json.loads((out / "dataset.json").read_text())
        assert (meta["source"], meta["images"], meta["captions"], meta["code_size"]) == \
            ("seminar", 4, 12, 1000)
    # from a folder its image names come too; from an archive only the two data files
    assert (tmp_path / "from_folder" / "image_names.txt").read_text() == "a\nb\nc\nd\n"
    assert not (tmp_path / "from_archive" / "image_names.txt").exists()


# ---- bad input: one-line UserError naming the file, nothing written

@pytest.mark.parametrize("target, how, message", [
    ("image_codes.npy", "truncate", "image_codes.npy: truncated or not a .npy"),
    ("caption_tokens.pcl", "truncate", "caption_tokens.pcl: truncated or corrupt pickle"),
    ("image_codes.npy", lambda p: p.unlink(), "image_codes.npy: cannot read codes"),
    ("image_codes.npy", lambda p: np.save(p, np.ones(4, "float32")), "must be a 2-D"),
    ("image_codes.npy", lambda p: np.save(p, np.ones((3, 4), "float32")),
     "caption_tokens.pcl: 4 caption entries but image_codes.npy has 3 rows"),
    ("image_codes.npy", lambda p: np.save(p, np.full((4, 2), np.nan, "float32")),
     "image_codes.npy: 4 rows contain NaN"),
    ("caption_tokens.pcl", lambda p: p.write_bytes(py2_pickle([["a"], ["b"], ["..."], ["d"]])),
     "caption_tokens.pcl: image 2 has an empty caption"),
    ("caption_tokens.pcl", lambda p: p.write_bytes(pickle.dumps({"a": 1}, protocol=2)),
     "caption_tokens.pcl: expected a list"),
])
def test_bad_seminar_files(tmp_path, target, how, message):
    folder = seminar_folder(tmp_path / "src")
    corrupt(folder / target, how)
    with pytest.raises(UserError, match=message) as err:
        prepare_seminar(folder, tmp_path / "out" / "x")
    assert "\n" not in str(err.value)
    assert os.listdir(tmp_path / "out") == []


def replace_line(n, line):
    def edit(path):
        lines = path.read_bytes().split(b"\n")
        lines[n - 1] = line
        path.write_bytes(b"\n".join(lines))
    return edit


@pytest.mark.parametrize("target, how, message", [
    ("Flickr8k.token.txt", replace_line(5, b"c.jpg#1\tA caf\xe9"), r"Flickr8k.token.txt:5: not UTF-8"),
    ("Flickr8k.token.txt", replace_line(2, b"a.jpg#1\t . "), r"Flickr8k.token.txt:2: empty caption"),
    ("Flickr8k.token.txt", replace_line(2, b"a.jpg no tab"), r"Flickr8k.token.txt:2: expected"),
    ("codes/image_names.txt", lambda p: p.write_text("x.jpg\ny.jpg\nz.jpg\nw.jpg\n"),
     "no caption ids match"),
    ("codes/image_names.txt", lambda p: p.write_text("a.jpg\n"), "4 rows but image_names.txt has 1"),
    ("codes/mobilenet_v2_logits.npy", "truncate", "mobilenet_v2_logits.npy: truncated"),
    ("codes/mobilenet_v2_logits.npy", lambda p: np.save(p, np.full((4, 2), np.inf)), "contain NaN or inf"),
    ("Flickr_8k.devImages.txt", lambda p: p.write_text("a.jpg\n"), "overlap"),
    ("Flickr_8k.testImages.txt", lambda p: p.unlink(), "Flickr_8k.testImages.txt: cannot read"),
])
def test_bad_flickr8k_files(tmp_path, target, how, message):
    source = flickr_folder(tmp_path / "src")
    corrupt(source / target, how)
    with pytest.raises(UserError, match=message):
        prepare_flickr8k(source, tmp_path / "out" / "x")
    assert not (tmp_path / "out").exists() or os.listdir(tmp_path / "out") == []


# ---- photos without codes

def test_photos_without_codes_call_the_encoder_hook(tmp_path, monkeypatch):
    source = flickr_folder(tmp_path / "src")
    for p in (source / "codes").iterdir():
        p.unlink()
    (source / "codes").rmdir()
    (source / "images").mkdir()
    (source / "images" / "a.jpg").write_bytes(b"not really")
    monkeypatch.setitem(sys.modules, "lasagne_caption.encoders", None)  # as if not written yet
    with pytest.raises(UserError, match="1 photos need codes, but there is no image encoder yet"):
        prepare_flickr8k(source, tmp_path / "out")


def test_photos_without_codes_are_encoded_with_mobilenet(flickr8k_dir, shared_dir, tmp_path):
    # a Flickr8k-form folder with real photos and no codes/: preparation encodes them
    real = load_dataset(prepare_flickr8k(flickr8k_dir, tmp_path / "real"))
    chosen = real.image_names[:4]
    source = tmp_path / "photos"
    (source / "images").mkdir(parents=True)
    for name in chosen:
        shutil.copy(flickr8k_dir / "images" / name, source / "images" / name)
    (source / "images" / "broken.jpg").write_bytes(b"not a jpeg")
    token_lines = [line for line in (flickr8k_dir / "Flickr8k.token.txt").read_text().splitlines()
                   if line.split("#")[0] in chosen]
    (source / "Flickr8k.token.txt").write_text("\n".join(token_lines) + "\n")
    for split, part in (("train", chosen[:2]), ("dev", chosen[2:3]), ("test", chosen[3:])):
        (source / ("Flickr_8k.%sImages.txt" % split)).write_text("\n".join(part) + "\n")
    model = shared_dir / "models" / "mobilenet_v2" / "mobilenet_v2_1.0_224_quant.tflite"
    with pytest.warns(Warning):
        encoded = load_dataset(prepare_flickr8k(source, tmp_path / "out", model_path=model))
    assert encoded.image_names == sorted(chosen) and encoded.code_size == 1001
    for name, row in zip(encoded.image_names, encoded.codes):
        shared_row = real.codes[real.image_names.index(name)]
        assert np.corrcoef(row, shared_row)[0, 1] > 0.99


# ---- splits that name unknown images, empty splits

def test_split_lists_naming_unknown_images_are_refused(tmp_path):
    source = flickr_folder(tmp_path / "src")
    (source / "Flickr_8k.devImages.txt").write_text("c.jpg\nzebra.jpg\n")
    with pytest.raises(UserError, match=r"Flickr_8k.devImages.txt:2: image zebra.jpg is in "
                                        r"neither Flickr8k.token.txt nor the codes"):
        prepare_flickr8k(source, tmp_path / "out")
    assert sorted(os.listdir(tmp_path)) == ["src"]


@pytest.mark.parametrize("lists, message", [
    ({"train": "x.jpg\ny.jpg\n", "dev": "c.jpg\n"}, "train split would have no images"),
    ({"dev": ""}, "val split would have no images"),
])
def test_empty_train_or_val_split_is_refused(tmp_path, lists, message):
    source = flickr_folder(tmp_path / "src", captions=dict(CAPTIONS, **{
        "x.jpg": ["A cat"], "y.jpg": ["A cow"]}), codes=None)
    # x.jpg and y.jpg have captions but no codes: known, dropped, so train may end up empty
    (source / "codes" / "image_names.txt").write_text("a.jpg\nb.jpg\nc.jpg\nd.jpg\n")
    np.save(source / "codes" / "mobilenet_v2_logits.npy", np.ones((4, 5), "float16"))
    for split, text in lists.items():
        (source / ("Flickr_8k.%sImages.txt" % split)).write_text(text)
    with pytest.warns(DataWarning):
        with pytest.raises(UserError, match=message):
            prepare_flickr8k(source, tmp_path / "out")
    assert sorted(os.listdir(tmp_path)) == ["src"]


def test_too_few_images_for_a_split_are_refused(tmp_path):
    folder = seminar_folder(tmp_path / "two", captions={"a": ["a dog"], "b": ["a cat"]})
    with pytest.raises(UserError, match="two: the val split would have no images"):
        prepare_seminar(folder, tmp_path / "out")
    assert sorted(os.listdir(tmp_path)) == ["two"]
