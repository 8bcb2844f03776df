"""The one archive extractor, for tar (``prepare seminar``) and zip (``download flickr8k``) alike."""
import io
import os
import re
import tarfile

import pytest

from lasagne_caption.data.archives import extract
from lasagne_caption.errors import UserError
from tests.data.helpers import make_zip


def make_tar(path, members):
    with tarfile.open(path, "w:gz") as tar:
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))


def make_archive(kind, path, members):
    (make_tar if kind == "tar" else make_zip)(path, members)
    return path


def test_unsafe_or_broken_zip(tmp_path):
    archive = tmp_path / "bad.zip"
    make_zip(archive, {"../../evil.txt": b"x"})
    with pytest.raises(UserError, match="unsafe member path '../../evil.txt'"):
        extract(archive, "zip", tmp_path / "out", lambda n: True, "text")
    archive.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(UserError, match="bad.zip: truncated or not a zip"):
        extract(archive, "zip", tmp_path / "out", lambda n: True, "text")


@pytest.mark.parametrize("kind", ["tar", "zip"])
@pytest.mark.parametrize("evil", ["../evil", "a/../../evil", "/tmp/evil", "C:evil"])
def test_an_unsafe_member_refuses_the_whole_archive(tmp_path, kind, evil):
    archive = make_archive(kind, tmp_path / ("x." + kind), {"good.txt": b"fine", evil: b"x"})
    with pytest.raises(UserError, match=re.escape("x.%s: refused, unsafe member path %r"
                                                  % (kind, evil))):
        extract(archive, kind, tmp_path / "out", lambda n: True, "x")
    assert os.listdir(tmp_path / "out") == [] and not (tmp_path / "evil").exists()


@pytest.mark.parametrize("kind", ["tar", "zip"])
def test_kept_files_are_written_under_their_base_names(tmp_path, kind):
    archive = make_archive(kind, tmp_path / ("x." + kind), {
        "data/a.txt": b"first", "other/a.txt": b"second", "data/b.jpg": b"photo",
        "__MACOSX/data/._c.txt": b"junk", "data/skip.bin": b"not kept"})
    out = tmp_path / "out"
    written = extract(archive, kind, out, lambda n: not n.endswith(".bin"), "x")
    assert written == [out / "a.txt", out / "b.jpg"]
    assert sorted(os.listdir(out)) == ["a.txt", "b.jpg"]          # no .part left
    assert (out / "a.txt").read_bytes() == b"second"              # the last one wins
    extract(archive, kind, tmp_path / "staged", lambda n: n == "b.jpg", "x", part_files=False)
    assert os.listdir(tmp_path / "staged") == ["b.jpg"]
    # a required file that is missing: an error before anything is written
    with pytest.raises(UserError, match=r"x\.%s: no c\.txt in the archive" % kind):
        extract(archive, kind, tmp_path / "none", lambda n: True, "x", required=("a.txt", "c.txt"))
    assert os.listdir(tmp_path / "none") == []


@pytest.mark.parametrize("kind, raw, message", [
    ("tar", b"\x1f\x8b\x08 not gzip", r"x: truncated or not a tar archive \(.*\)$"),
    ("zip", b"PK\x03\x04 truncated", r"x: truncated or not a zip \(.*\); delete it and run again$"),
])
def test_a_broken_or_missing_archive_is_a_one_line_error(tmp_path, kind, raw, message):
    (tmp_path / "x").write_bytes(raw)
    with pytest.raises(UserError, match=message):
        extract(tmp_path / "x", kind, tmp_path / "out", lambda n: True, "x",
                advice="; delete it and run again" if kind == "zip" else "")
    with pytest.raises(UserError, match="missing: cannot read archive .No such file"):
        extract(tmp_path / "missing", kind, tmp_path / "out", lambda n: True, "x")
