"""--out and --force: only the toolkit's own dataset folders are replaced; locks and leftovers."""
import json
import os
import re

import numpy as np
import pytest

from lasagne_caption.data.dataset import DATASET_FORMAT, load_dataset
from lasagne_caption.data.output import DatasetOutput
from lasagne_caption.data.prepare import prepare_flickr8k
from lasagne_caption.errors import UserError
from lasagne_caption.files import current_umask
from tests.data.helpers import flickr_folder, prepare_cli


def test_existing_dataset_needs_force(tmp_path):
    source = flickr_folder(tmp_path / "src")
    prepare_flickr8k(source, tmp_path / "out")
    with pytest.raises(UserError, match="already exists .*--force"):
        prepare_flickr8k(source, tmp_path / "out")
    np.save(source / "codes" / "mobilenet_v2_logits.npy", np.zeros((4, 2), "float16"))
    prepare_flickr8k(source, tmp_path / "out", force=True)
    assert load_dataset(tmp_path / "out").code_size == 2
    assert os.listdir(tmp_path) == ["src", "out"] or sorted(os.listdir(tmp_path)) == ["out", "src"]


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
    assert load_dataset(tmp_path / "empty").meta["format"] == DATASET_FORMAT
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
    assert mode == 0o777 & ~current_umask()          # not mkdtemp's 0700


def test_a_second_prepare_into_the_same_output_is_refused(tmp_path):
    source = flickr_folder(tmp_path / "src")
    with DatasetOutput(tmp_path / "out", False, [source]):      # a first prepare, still running
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
