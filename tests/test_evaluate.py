"""The evaluate command: caption a split, score it, write COCO results and scores."""
import json
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
    scores, candidates, written, _ = evaluate(str(demo_checkpoint), split="test", beam=2,
                                              out=str(tmp_path))
    assert len(candidates) == 1000
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
