"""Tokenizer and vocabulary: the index contract every model relies on."""
import os
import subprocess
import sys

import numpy as np
import pytest

from lasagne_caption.errors import UserError
from lasagne_caption.vocab import END, PAD_IX, START, UNK, Vocabulary, tokenize


def test_tokenize_strips_punctuation_and_case():
    assert tokenize("A child climbs the Stairs .") == ["a", "child", "climbs", "the", "stairs"]
    assert tokenize("stairs.") == tokenize("stairs") == ["stairs"]
    assert tokenize("A man's T-shirt, don't!") == ["a", "man's", "t", "shirt", "don't"]
    assert tokenize("Café crème") == ["café", "crème"]
    assert tokenize(" ... ") == []


def test_build_orders_by_count_then_word():
    vocab = Vocabulary.build([["b", "a", "c"], ["a", "b", "d"], [START, "a", END]], min_count=2)
    assert vocab.words == [UNK, START, END, "a", "b"]
    assert (vocab.unk_ix, vocab.start_ix, vocab.end_ix, vocab.pad_ix) == (0, 1, 2, PAD_IX)
    assert vocab.index["b"] == 4 and len(vocab) == 5
    assert vocab.counts == {"a": 3, "b": 2}


def test_as_matrix_pads_truncates_and_maps_unknown():
    vocab = Vocabulary.build([["a", "dog"]], min_count=1)
    m = vocab.as_matrix([[START, "a", "dog", END], [START, "cat", END]])
    assert m.dtype == np.int32
    np.testing.assert_array_equal(m, [[1, 3, 4, 2], [1, 0, 2, -1]])
    np.testing.assert_array_equal(vocab.as_matrix(["#START# a dog #END#"], max_len=2), [[1, 3]])
    assert vocab.decode(m[0]) == "a dog"
    assert vocab.decode([1, 4, 3, 2, 4]) == "dog a"
    assert vocab.decode(m[1]) == UNK


def test_save_load_roundtrip(tmp_path):
    vocab = Vocabulary.build([["a", "b", "a", "é"]], min_count=1)
    vocab.save(tmp_path / "vocab.txt")
    text = (tmp_path / "vocab.txt").read_text(encoding="utf-8")
    assert text.splitlines()[:4] == ["#UNK#\t0", "#START#\t0", "#END#\t0", "a\t2"]
    loaded = Vocabulary.load(tmp_path / "vocab.txt")
    assert loaded.words == vocab.words and loaded.counts == vocab.counts
    assert os.listdir(tmp_path) == ["vocab.txt"]  # no temporary file left


@pytest.mark.parametrize("content, where", [
    (b"#UNK#\t0\n#START#\t0\n#END#\t0\ndog 3\n", ":4:"),
    (b"#UNK#\t0\n#START#\t0\n#END#\t0\ndog\tmany\n", ":4:"),
    (b"#UNK#\t0\n#START#\t0\n#END#\t0\n\xff\t3\n", ":4:"),
    (b"#UNK#\t0\n#START#\t0\n#END#\t0\ndog\t3\ndog\t3\n", ":5:"),
    (b"dog\t3\n", "first lines"),
])
def test_load_malformed_names_file_and_line(tmp_path, content, where):
    path = tmp_path / "vocab.txt"
    path.write_bytes(content)
    with pytest.raises(UserError, match="vocab.txt" + ".*" * (where[0] != ":") + where):
        Vocabulary.load(path)
    with pytest.raises(UserError, match="missing.txt"):
        Vocabulary.load(tmp_path / "missing.txt")


SCRIPT = """
import sys
from lasagne_caption.vocab import Vocabulary, tokenize
lines = open(sys.argv[1], encoding="utf-8").read().splitlines()
vocab = Vocabulary.build((tokenize(l.split("\\t")[1]) for l in lines), min_count=5)
print(len(vocab), vocab.index["dog"], "|".join(vocab.words))
"""


def test_vocabulary_identical_across_hash_seeds(flickr8k_dir):
    token_file = str(flickr8k_dir / "Flickr8k.token.txt")
    outputs = []
    for seed in ("1", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        outputs.append(subprocess.run([sys.executable, "-c", SCRIPT, token_file], env=env,
                                      capture_output=True, text=True, check=True).stdout)
    assert outputs[0] == outputs[1] and len(outputs[0]) > 100
