"""Dataset readers, the on-disk layout, batches and the prepare command.

Real data: the Flickr8k and COCO files in ../shared. Seminar-format files
(a Python 2 pickle and a tar.gz) are written here byte for byte.
"""
import io
import json
import os
import pickle
import shutil
import struct
import sys
import tarfile

import numpy as np
import pandas as pd
import pytest

from lasagne_caption import data
from lasagne_caption.data import (END, START, DataWarning, generate_batch, iterate_captions,
                                  load_dataset, prepare_coco, prepare_flickr8k, prepare_seminar)
from lasagne_caption.errors import UserError
from lasagne_caption.vocab import Vocabulary, tokenize

# The train-split vocabulary of Flickr8k at min_count=5, specials included;
# recomputed independently with pandas in test_flickr8k_vocabulary_size.
FLICKR8K_VOCAB_SIZE = 2537


@pytest.fixture(scope="module")
def flickr(flickr8k_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared") / "flickr8k"
    with pytest.warns(DataWarning, match="dropped 2 images.*2258277193_586949ec62"):
        prepare_flickr8k(flickr8k_dir, out)
    return load_dataset(out)


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
    ids, files, captions = data.read_coco(path)
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
        data.read_coco(path)


# ---- seminar format, written by hand

def py2_pickle(entries):
    """Protocol-2 bytes as Python 2 writes a list of lists of ``str``."""
    out = [b"\x80\x02]("]                      # PROTO 2, EMPTY_LIST, MARK
    for entry in entries:
        out.append(b"](")
        for text in entry:
            raw = text.encode("latin1")
            out.append(b"U" + bytes([len(raw)]) + raw if len(raw) < 256  # SHORT_BINSTRING
                       else b"T" + struct.pack("<i", len(raw)) + raw)    # BINSTRING
        out.append(b"e")                        # APPENDS
    return b"".join(out) + b"e."


CAPTIONS = {
    "a.jpg": ["A dog runs on the grass .", "The dog is running.", "A brown dog runs"],
    "b.jpg": ["Two men play football .", "Men on a field", "A dog and two men."],
    "c.jpg": ["A girl climbs the stairs.", "A child on stairs", "A girl, a dog."],
    "d.jpg": ["A man's bike .", "A bike and a dog", "Two bikes"],
}


def flickr_folder(root, captions=CAPTIONS, codes=None):
    """A small Flickr8k-form source folder."""
    (root / "codes").mkdir(parents=True)
    lines = ["%s#%d\t%s" % (name, i, c) for name, caps in captions.items() for i, c in enumerate(caps)]
    (root / "Flickr8k.token.txt").write_text("\n".join(lines) + "\n")
    names = list(captions)
    for split, part in (("train", names[:2]), ("dev", names[2:3]), ("test", names[3:])):
        (root / ("Flickr_8k.%sImages.txt" % split)).write_text("\n".join(part) + "\n")
    (root / "codes" / "image_names.txt").write_text("\n".join(names) + "\n")
    codes = np.arange(len(names) * 5, dtype="float16").reshape(-1, 5) if codes is None else codes
    np.save(root / "codes" / "mobilenet_v2_logits.npy", codes)
    return root


def seminar_folder(root, captions=CAPTIONS, pickled=None):
    root.mkdir(parents=True)
    np.save(root / "image_codes.npy", np.ones((len(captions), 1000), "float32"))
    entries = [[" ".join(tokenize(c)) for c in caps] for caps in captions.values()]
    (root / "caption_tokens.pcl").write_bytes(pickled or py2_pickle(entries))
    return root


def all_tokens(ds):
    return [c for img in ds.captions for c in img]


def test_py2_pickle_helper_is_a_real_pickle():
    entries = [["a dog", "x" * 300], []]
    assert pickle.loads(py2_pickle(entries), encoding="latin1") == entries


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


def test_default_split_rule():
    splits = data.default_splits(123287)
    assert [len(splits[k]) for k in ("train", "val", "test")] == [113287, 5000, 5000]
    assert {k: len(v) for k, v in data.default_splits(100).items()} == {"train": 90, "val": 5, "test": 5}
    assert np.array_equal(data.default_splits(100)["val"], data.default_splits(100)["val"])


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


# ---- bad input: one-line UserError naming the file, nothing written

def corrupt(path, how):
    if how == "truncate":
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    else:
        how(path)


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


def test_existing_dataset_needs_force(tmp_path):
    source = flickr_folder(tmp_path / "src")
    prepare_flickr8k(source, tmp_path / "out")
    with pytest.raises(UserError, match="already exists .*--force"):
        prepare_flickr8k(source, tmp_path / "out")
    np.save(source / "codes" / "mobilenet_v2_logits.npy", np.zeros((4, 2), "float16"))
    prepare_flickr8k(source, tmp_path / "out", force=True)
    assert load_dataset(tmp_path / "out").code_size == 2
    assert os.listdir(tmp_path) == ["src", "out"] or sorted(os.listdir(tmp_path)) == ["out", "src"]


def test_missing_dataset_and_bad_splits(tmp_path):
    with pytest.raises(UserError, match="no such dataset folder"):
        load_dataset(tmp_path / "nothing")
    folder = seminar_folder(tmp_path / "ds")
    (folder / "splits.json").write_text(json.dumps({"train": [0, 9]}))
    with pytest.raises(UserError, match="splits.json: split 'train' has rows outside"):
        load_dataset(folder)


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


# ---- batches

def test_generate_batch_is_seeded(flickr):
    codes, captions = flickr.split("train")
    vocab = flickr.vocabulary()
    b1 = generate_batch(codes, captions, vocab, 32, np.random.default_rng(7))
    b2 = generate_batch(codes, captions, vocab, 32, np.random.default_rng(7))
    b3 = generate_batch(codes, captions, vocab, 32, np.random.RandomState(7), max_caption_len=5)
    assert b1[0].dtype == np.float32 and b1[0].shape == (32, 1001)
    assert b1[1].dtype == np.int32 and (b1[1][:, 0] == vocab.start_ix).all()
    assert all(np.array_equal(x, y) for x, y in zip(b1, b2))
    assert b3[1].shape == (32, 5)


def test_iterate_captions_covers_each_caption_once(tmp_path):
    ds = load_dataset(seminar_folder(tmp_path / "ds"))
    vocab = Vocabulary.build(all_tokens(ds), 1)
    batches = list(iterate_captions(ds.codes, ds.captions, vocab, batch_size=5))
    assert [len(m) for _, m in batches] == [5, 5, 2]
    decoded = [vocab.decode(row) for _, m in batches for row in m]
    assert decoded == [" ".join(c[1:-1]) for c in all_tokens(ds)]


# ---- command line

def test_cli_prepare_and_info(tmp_path, capsys, monkeypatch):
    source = flickr_folder(tmp_path / "src")
    monkeypatch.chdir(tmp_path)
    assert data.main(["prepare", "flickr8k", "--source", str(source)]) == 0
    assert (tmp_path / "data" / "flickr8k" / "image_codes.npy").exists()
    assert data.main(["info", "data/flickr8k", "--min-count", "1"]) == 0
    out = capsys.readouterr().out
    assert "4 images, 12 captions, code size 5" in out and "train      2 images" in out
    with pytest.raises(SystemExit) as exc:
        data.run_cli(data.main, ["prepare", "flickr8k", "--source", str(source)])
    assert exc.value.code == 2 and "already exists" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        data.main(["prepare", "--help"])
    assert "seminar" in capsys.readouterr().out


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
