"""Tests for lasagne_caption.metrics (the MS-COCO caption metrics).

The PTB tokenizer and METEOR run on Java; METEOR's start-up (~10 s, loading
its paraphrase table) is paid once through the module-scoped scorer.
"""
import json
import logging
import math
import shutil

import pandas as pd
import pytest

from lasagne_caption import metrics
from lasagne_caption.errors import UserError

needs_java = pytest.mark.skipif(shutil.which("java") is None,
                                reason="the PTB tokenizer and METEOR need Java")

DOG_REF = "a dog is running on the grass"
DOG_CAND = "a dog runs on the grass"
CAT = "a cat sits on a mat"


@pytest.fixture(scope="module")
def meteor_scorer():
    with metrics.CaptionScorer(("METEOR",)) as scorer:
        yield scorer


def pretend_no_java(monkeypatch):
    """Hide Java from metrics, and fail if its Java tokenizer is called anyway."""
    monkeypatch.setattr(metrics.shutil, "which", lambda name: None)

    def refuse(sentences):
        raise AssertionError("the Java tokenizer was called without Java")
    monkeypatch.setattr(metrics, "_ptb_tokenize", refuse)


@needs_java
def test_identical_captions_score_one():
    refs = {1: [DOG_REF], 2: ["two children play football in a park"]}
    scores = metrics.score_captions(refs, {k: v[0] for k, v in refs.items()},
                                    metrics=("BLEU", "ROUGE_L", "CIDEr"))
    for n in range(1, 5):
        assert scores["BLEU-%d" % n] == pytest.approx(1.0, abs=1e-6)
    assert scores["ROUGE-L"] == 1.0
    # Each image's tf-idf vector equals its reference's: cosine 1, no length
    # penalty, times pycocoevalcap's factor 10.
    assert scores["CIDEr-D"] == pytest.approx(10.0, abs=1e-6)


@needs_java
def test_bleu_partial_match_by_hand():
    # candidate: a dog runs on the grass            (c = 6 words)
    # reference: a dog is running on the grass      (r = 7 words)
    # 1-grams matched: a dog on the grass           -> p1 = 5/6
    # 2-grams matched: "a dog" "on the" "the grass" -> p2 = 3/5
    # c < r: brevity penalty BP = exp(1 - r/c) = exp(1 - 7/6)
    # BLEU-n = BP * (p1 ... pn) ** (1/n); pycocoevalcap's smoothing constants
    # (1e-15 / 1e-9) move this by ~1e-10.
    scores = metrics.score_captions({"dog": [DOG_REF]}, {"dog": DOG_CAND},
                                    metrics=("BLEU",))
    bp = math.exp(1 - 7 / 6)
    assert scores["BLEU-1"] == pytest.approx(bp * 5 / 6, abs=1e-6)           # 0.7054
    assert scores["BLEU-2"] == pytest.approx(bp * math.sqrt(5 / 6 * 3 / 5), abs=1e-6)  # 0.5986


@needs_java
def test_bleu_is_corpus_level_not_a_mean_over_images():
    # Adding an exact match (6 words, 6 unigrams, 5 bigrams) pools the counts:
    # p1 = (5+6)/(6+6), p2 = (3+5)/(5+5), BP = exp(1 - (7+6)/(6+6)).
    # The mean of per-image BLEU-1 would be (0.7054 + 1) / 2 = 0.853 instead.
    scores = metrics.score_captions({"dog": [DOG_REF], "cat": [CAT]},
                                    {"dog": DOG_CAND, "cat": CAT}, metrics=("BLEU",))
    bp = math.exp(1 - 13 / 12)
    assert scores["BLEU-1"] == pytest.approx(bp * 11 / 12, abs=1e-6)          # 0.8434
    assert scores["BLEU-2"] == pytest.approx(bp * math.sqrt(11 / 12 * 8 / 10), abs=1e-6)


@needs_java
def test_empty_candidates_are_scored_zero_in_place():
    # Empty captions must keep their line in the tokenizer's output, or every
    # later caption would be paired with the wrong image.
    refs = {1: [DOG_REF], 2: [CAT], 3: [DOG_REF, CAT]}
    scores = metrics.score_captions(refs, {1: "", 2: CAT, 3: ""}, metrics=("ROUGE_L",))
    assert scores["ROUGE-L"] == pytest.approx(1 / 3)


@pytest.mark.parametrize("refs, cands, message", [
    ({1: [CAT]}, {1: CAT, 7: CAT, 8: CAT}, "2 captioned image(s) are not in the references"),
    ({1: [CAT], 2: [CAT]}, {1: CAT}, "1 reference image(s) have no candidate caption"),
    ({1: [CAT], 2: []}, {1: CAT, 2: CAT}, "1 image(s) have no reference captions"),
    ({1: [CAT], 2: CAT}, {1: CAT, 2: CAT}, "1 image(s) have no reference captions"),
])
def test_mismatched_inputs_are_user_errors(refs, cands, message):
    with pytest.raises(UserError) as err:
        metrics.score_captions(refs, cands)
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_unknown_metric_is_a_user_error():
    with pytest.raises(UserError, match="unknown metric"):
        metrics.score_captions({1: [CAT]}, {1: CAT}, metrics=("BLEU", "WER"))


@needs_java
def test_meteor(meteor_scorer):
    partial = meteor_scorer.score({"dog": [DOG_REF]}, {"dog": DOG_CAND})["METEOR"]
    assert 0 < partial < 1
    same = meteor_scorer.score({"dog": [DOG_REF], "cat": [CAT]},
                               {"dog": DOG_REF, "cat": CAT})["METEOR"]
    assert same == pytest.approx(1.0, abs=1e-6)   # METEOR 1.5 gives exactly 1.0 here


@needs_java
def test_closing_ends_the_meteor_process():
    scorer = metrics.CaptionScorer(("METEOR",))
    proc = scorer._meteor.meteor_p
    scorer.close()
    assert proc.poll() is not None
    scorer.close()   # twice is fine
    with pytest.raises(RuntimeError, match="METEOR's Java process has ended"):
        scorer.score({1: [CAT]}, {1: CAT})


@needs_java
def test_no_java_fallback_gives_the_same_bleu(monkeypatch, caplog):
    refs = {1: [DOG_REF, "a brown dog runs across a lawn"],
            2: [CAT, "a cat is lying on a rug"],
            3: ["two children play football in a park"]}
    cands = {1: DOG_CAND, 2: "a cat on a mat", 3: "children playing in the park"}
    with_java = metrics.score_captions(refs, cands, metrics=("BLEU",))
    pretend_no_java(monkeypatch)
    with caplog.at_level(logging.WARNING, logger=metrics.__name__):
        without = metrics.score_captions(refs, cands, metrics=("BLEU", "METEOR"))
    assert "METEOR" not in without
    assert [r.getMessage() for r in caplog.records] == [
        "METEOR skipped: it needs Java and `java` is not on PATH"]
    assert without == pytest.approx(with_java, abs=1e-12)
    assert 0 < with_java["BLEU-4"] < 1


@needs_java
def test_python_tokenizer_mimics_ptb():
    captions = ["A dog's running, on the grass.", "Two kids (boys) play; one shouts: \"Go!\"",
                "We cannot see Mr. Smith's black-and-white T-shirt ... really?",
                "He doesn't like at&t - or 3.5 cats in Washington D.C.", ""]
    assert [metrics.simple_tokenize(c) for c in captions] == metrics._ptb_tokenize(captions)


def test_spice_is_skipped_with_a_note(monkeypatch, caplog):
    pretend_no_java(monkeypatch)   # fast, and SPICE needs no tokenizer
    with caplog.at_level(logging.WARNING, logger=metrics.__name__):
        scores = metrics.score_captions({1: [CAT]}, {1: CAT}, metrics=("BLEU", "SPICE"))
    assert set(scores) == {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4"}
    assert len(caplog.records) == 1 and "SPICE skipped" in caplog.records[0].getMessage()


def test_writers_round_trip(tmp_path):
    cands = {"1000268201_693b08cb0e.jpg": "a girl climbs stairs", 42: ""}
    metrics.write_results_json(tmp_path / "results.json", cands)
    assert json.loads((tmp_path / "results.json").read_text()) == [
        {"image_id": "1000268201_693b08cb0e.jpg", "caption": "a girl climbs stairs"},
        {"image_id": 42, "caption": ""}]

    scores = {"BLEU-1": 0.6, "BLEU-4": 0.16, "CIDEr-D": 0.41}
    meta = {"model": "vgg-lstm", "split": "test"}
    metrics.write_scores(tmp_path / "s.json", tmp_path / "s.csv", scores, meta)
    assert json.loads((tmp_path / "s.json").read_text()) == {"meta": meta, "scores": scores}
    assert pd.read_csv(tmp_path / "s.csv").to_dict("records") == [{**meta, **scores}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json", "s.csv", "s.json"]


def test_format_table():
    scores = {"BLEU-1": 0.579, "BLEU-2": 0.383, "BLEU-3": 0.245, "BLEU-4": 0.16,
              "METEOR": 0.2, "ROUGE-L": 0.45, "CIDEr-D": 0.5}
    table = metrics.format_table(scores, metrics.PUBLISHED_FLICKR8K)
    lines = table.splitlines()
    assert len(lines) == 1 + 1 + len(metrics.PUBLISHED_FLICKR8K)
    assert len({len(line) for line in lines}) == 1            # aligned
    assert lines[0].split() == list(metrics.COLUMNS)
    assert lines[1].split() == ["this", "model", "57.9", "38.3", "24.5", "16.0",
                                "20.0", "45.0", "50.0"]
    karpathy = next(line for line in lines if line.startswith("Karpathy"))
    assert karpathy.split()[-7:] == ["57.9", "38.3", "24.5", "16.0", "-", "-", "-"]
    assert "20.3" in next(line for line in lines if "hard attention" in line)
