"""The command line, ``python -m lasagne_caption.data``."""
import pytest

from lasagne_caption.data.__main__ import main
from lasagne_caption.errors import run_cli
from tests.data.helpers import flickr_folder, prepare_cli, seminar_folder


def test_cli_prepare_and_info(tmp_path, capsys, monkeypatch):
    source = flickr_folder(tmp_path / "src")
    monkeypatch.chdir(tmp_path)
    assert main(["prepare", "flickr8k", "--source", str(source)]) == 0
    assert (tmp_path / "data" / "flickr8k" / "image_codes.npy").exists()
    assert main(["info", "data/flickr8k", "--min-count", "1"]) == 0
    out = capsys.readouterr().out
    assert "4 images, 12 captions, code size 5" in out and "train      2 images" in out
    with pytest.raises(SystemExit) as exc:
        run_cli(main, ["prepare", "flickr8k", "--source", str(source)])
    assert exc.value.code == 2 and "already exists" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["prepare", "--help"])
    assert "seminar" in capsys.readouterr().out


def test_cli_refuses_out_equal_to_source_in_one_line(tmp_path):
    source = seminar_folder(tmp_path / "raw")
    before = {p.name: p.read_bytes() for p in source.iterdir()}
    code, out, err = prepare_cli("prepare", "seminar", "--source", source, "--out", source,
                                 "--force")
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: --out ")
    assert "is the input" in err
    assert {p.name: p.read_bytes() for p in source.iterdir()} == before
