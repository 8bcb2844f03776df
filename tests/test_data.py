"""Dataset readers, the on-disk layout, batches and the prepare command.

Real data: the Flickr8k and COCO files in ../shared. Seminar-format files
(a Python 2 pickle and a tar.gz) are written here byte for byte.
"""
import io
import json
import os
import pickle
import re
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


# ---- --out and --force: only the toolkit's own dataset folders are replaced

def prepare_cli(*argv):
    """``python -m lasagne_caption.data ARGV`` in a subprocess: (exit code, stdout, stderr)."""
    import subprocess
    out = subprocess.run([sys.executable, "-m", "lasagne_caption.data"] + [str(a) for a in argv],
                         capture_output=True, text=True)
    return out.returncode, out.stdout, out.stderr


def test_force_never_replaces_a_folder_it_did_not_make(tmp_path, monkeypatch):
    source = flickr_folder(tmp_path / "src")
    snapshot = sorted(p.relative_to(source) for p in source.rglob("*"))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    with pytest.raises(UserError, match=r"mine already exists and it is not a dataset folder "
                                        r"made by .*refusing to replace it"):
        prepare_flickr8k(source, mine, force=True)
    assert (mine / "thesis.tex").read_text() == "years of work"
    # --out equal to, inside or containing the source
    with pytest.raises(UserError, match="is the input .*src itself"):
        prepare_flickr8k(source, source, force=True)
    with pytest.raises(UserError, match="is inside the input"):
        prepare_flickr8k(source, source / "codes" / "out", force=True)
    with pytest.raises(UserError, match="contains the input .*would delete the input"):
        prepare_flickr8k(source, tmp_path, force=True)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="--out . contains the input"):
        prepare_flickr8k("src", ".", force=True)
    monkeypatch.chdir(mine)
    with pytest.raises(UserError, match="--out . already exists and it is not a dataset"):
        prepare_flickr8k(source, ".", force=True)
    # a dataset it made, with a file of the user's added: not replaced either
    prepare_flickr8k(source, tmp_path / "ds")
    (tmp_path / "ds" / "wrote_net.params").write_bytes(b"a trained model")
    with pytest.raises(UserError, match=r"besides a dataset it holds 1 other entry "
                                        r"\(wrote_net.params\)"):
        prepare_flickr8k(source, tmp_path / "ds", force=True)
    assert (tmp_path / "ds" / "wrote_net.params").exists()
    # a file, and a symbolic link
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="exists and is not a folder"):
        prepare_flickr8k(source, tmp_path / "file", force=True)
    os.symlink(tmp_path / "ds", tmp_path / "link")
    with pytest.raises(UserError, match="is a symbolic link"):
        prepare_flickr8k(source, tmp_path / "link", force=True)
    assert sorted(p.relative_to(source) for p in source.rglob("*")) == snapshot
    assert not list(tmp_path.glob("*.lock")) and not list(tmp_path.glob("*.tmp-*"))


def test_force_replaces_its_own_dataset_and_says_so(tmp_path, capsys):
    source = flickr_folder(tmp_path / "src")
    (tmp_path / "empty").mkdir()
    prepare_flickr8k(source, tmp_path / "empty")          # an empty folder needs no --force
    assert load_dataset(tmp_path / "empty").meta["format"] == data.DATASET_FORMAT
    prepare_flickr8k(source, tmp_path / "out")
    assert capsys.readouterr().out == ""
    prepare_flickr8k(source, tmp_path / "out", force=True)
    assert re.match(r"replaced a flickr8k dataset of 4 images made \S+ in .*out\n$",
                    capsys.readouterr().out)
    # a dataset written before the format marker existed is recognised too
    meta = json.loads((tmp_path / "out" / "dataset.json").read_text())
    del meta["format"]
    (tmp_path / "out" / "dataset.json").write_text(json.dumps(meta))
    prepare_flickr8k(source, tmp_path / "out", force=True)
    assert sorted(os.listdir(tmp_path)) == ["empty", "out", "src"]
    mode = os.stat(tmp_path / "out").st_mode & 0o777
    assert mode == 0o777 & ~data.current_umask()          # not mkdtemp's 0700


def test_cli_refuses_out_equal_to_source_in_one_line(tmp_path):
    source = seminar_folder(tmp_path / "raw")
    before = {p.name: p.read_bytes() for p in source.iterdir()}
    code, out, err = prepare_cli("prepare", "seminar", "--source", source, "--out", source,
                                 "--force")
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: --out ")
    assert "is the input" in err
    assert {p.name: p.read_bytes() for p in source.iterdir()} == before


def test_a_second_prepare_into_the_same_output_is_refused(tmp_path):
    source = flickr_folder(tmp_path / "src")
    with data._Output(tmp_path / "out", False, [source]):      # a first prepare, still running
        code, out, err = prepare_cli("prepare", "flickr8k", "--source", source,
                                     "--out", tmp_path / "out")
        assert (tmp_path / "out.lock").exists()
    assert code == 2 and err.count("\n") == 1
    assert "is being written by another process" in err and "out.lock" in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.lock").exists()
    assert prepare_cli("prepare", "flickr8k", "--source", source, "--out", tmp_path / "out")[0] == 0
    # a file of the user's that happens to be named OUT.lock is not taken over
    (tmp_path / "other.lock").write_text("my notes")
    with pytest.raises(UserError, match="other.lock exists and is not a lock file"):
        prepare_flickr8k(source, tmp_path / "other")
    assert (tmp_path / "other.lock").read_text() == "my notes"


def test_leftovers_of_a_killed_prepare_are_cleaned_up(tmp_path, capsys):
    source = flickr_folder(tmp_path / "src")
    prepare_flickr8k(source, tmp_path / "out")
    # killed between moving the old dataset aside and moving the new one in
    (tmp_path / "out").rename(tmp_path / "out.old-abcd1234")
    (tmp_path / "out.tmp-abcd1234").mkdir()
    (tmp_path / "out.tmp-abcd1234" / "image_codes.npy").write_bytes(b"\x93NUMPY half")
    with pytest.raises(UserError, match="already exists .*use --force"):
        prepare_flickr8k(source, tmp_path / "out")
    assert "restored" in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path)) == ["out", "src"]
    assert load_dataset(tmp_path / "out").codes.shape == (4, 5)


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
        data.read_codes(path)
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)


def test_pickle_memo_bomb_is_refused_in_bounded_memory(tmp_path):
    import tracemalloc
    path = tmp_path / "caption_tokens.pcl"
    # 9 bytes asking the unpickler for a memo of 600 million slots (4.6 GB measured)
    path.write_bytes(b"\x80\x02]r" + struct.pack("<I", 300_000_000) + b".")
    tracemalloc.start()
    try:
        with pytest.raises(UserError, match="caption_tokens.pcl: truncated or corrupt pickle .memo index"):
            data.read_caption_pickle(path)
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
        data.read_caption_pickle(path)


# ---- property-based: mutated files load or raise UserError, in bounded memory

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

PROPERTY = settings(max_examples=80, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

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


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("property")


@PROPERTY
@given(raw=pickle_files())
def test_property_caption_pickles_load_or_raise_user_error(scratch, raw):
    value = loads_or_refuses(data.read_caption_pickle, scratch / "caption_tokens.pcl", raw)
    if value is not None:
        assert isinstance(value, list)
        assert all(isinstance(e, list) and all(isinstance(c, str) for c in e) for e in value)


@PROPERTY
@given(raw=npy_files())
def test_property_codes_load_or_raise_user_error(scratch, raw):
    codes = loads_or_refuses(data.read_codes, scratch / "image_codes.npy", raw)
    if codes is not None:
        assert codes.dtype == np.float32 and codes.ndim == 2 and codes.size > 0
        assert np.isfinite(codes).all()


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
        splits = data._read_splits(scratch / "splits.json", 4)
    except UserError as exc:
        assert "\n" not in str(exc)
    else:
        assert all(v.dtype == np.int64 and ((v >= 0) & (v < 4)).all() for v in splits.values())
