"""The evaluate command: caption a split, score it, write COCO results and scores."""
import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from lasagne_caption.data import load_dataset
from lasagne_caption.errors import UserError
from lasagne_caption.evaluate import evaluate, references_of


def test_references_are_every_caption_of_the_split(demo_checkpoint):
    dataset = load_dataset(demo_checkpoint.parent / "flickr8k")
    refs = references_of(dataset, "test")
    assert len(refs) == 1000 and all(len(r) == 5 for r in refs.values())
    assert not any("#START#" in c or "#END#" in c for r in refs.values() for c in r)
    with pytest.raises(UserError, match="unknown split 'dev'"):
        references_of(dataset, "dev")


def test_evaluate_writes_results_and_scores(demo_checkpoint, tmp_path):
    scores, candidates, written, _, record = evaluate(str(demo_checkpoint), split="test", beam=2,
                                                      out=str(tmp_path))
    assert len(candidates) == 1000
    assert (record["beam"], record["length_normalization"]) == (2, 0.0)
    results = json.load(open(written[0]))
    assert len(results) == 1000 and set(results[0]) == {"image_id", "caption"}
    saved = json.load(open(written[1]))
    assert saved["scores"] == pytest.approx(scores) and saved["meta"]["beam"] == 2
    row = pd.read_csv(written[2])
    assert row.loc[0, "BLEU-4"] == pytest.approx(scores["BLEU-4"])
    for key in ("BLEU-1", "BLEU-4", "ROUGE-L", "CIDEr-D"):
        assert 0 <= scores[key] <= 10


def test_cli_prints_the_table_beside_published_results(demo_checkpoint, tmp_path):
    out = subprocess.run([sys.executable, "-m", "lasagne_caption.evaluate", "--checkpoint",
                          str(demo_checkpoint), "--split", "val", "--beam", "1",
                          "--out", str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "BLEU-4" in out.stdout and "NeuralTalk" in out.stdout
    assert "1000 val images, beam 1" in out.stdout


@pytest.mark.parametrize("options, message", [
    (["--max-len", "-1"], "--max-len must be a whole number of at least 1, not -1"),
    (["--max-len", "0"], "--max-len must be a whole number of at least 1, not 0"),
    (["--beam", "0"], "--beam must be a whole number of at least 1"),
    (["--length-normalization", "nan"], "--length-normalization must be a finite number >= 0"),
    (["--length-normalization", "-1"], "--length-normalization must be a finite number >= 0"),
])
def test_cli_options_are_checked_first(tmp_path, options, message):
    out = subprocess.run([sys.executable, "-m", "lasagne_caption.evaluate", "--checkpoint",
                          str(tmp_path / "none.params"), "--out", str(tmp_path / "out")] + options,
                         capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and message in out.stderr
    assert list(tmp_path.iterdir()) == []


def test_unwritable_output_is_found_before_captioning(demo_checkpoint, tmp_path, monkeypatch):
    from lasagne_caption import evaluate as module

    def no_captioning(*args, **kwargs):
        raise AssertionError("captioning started before the output was checked")
    monkeypatch.setattr(module, "caption_split", no_captioning)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="--out .*file/sub: cannot create the folder"):
        evaluate(str(demo_checkpoint), split="test", beam=1, out=str(tmp_path / "file" / "sub"))
    stem = module.output_stem(str(demo_checkpoint), "test", 1, 0.0, str(tmp_path / "o"))
    os.makedirs(stem + ".scores.csv")          # a folder where a result file goes
    with pytest.raises(UserError, match="scores.csv is a folder"):
        evaluate(str(demo_checkpoint), split="test", beam=1, out=str(tmp_path / "o"))
    with pytest.raises(UserError, match="unknown split 'nope'"):
        evaluate(str(demo_checkpoint), split="nope", beam=1, out=str(tmp_path / "p"))
    assert not (tmp_path / "p").exists()
