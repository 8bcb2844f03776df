"""Tokenizer and vocabulary: the index contract every model relies on."""
import os
import subprocess
import sys

import numpy as np
import pytest

from lasagne_caption.errors import UserError
from lasagne_caption.vocab import END, PAD_IX, SPECIALS, START, UNK, Vocabulary, tokenize


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
    (b"#UNK#\t0\n#START#\t0\n#END#\t0\nhot dog\t3\n", ":4: the word 'hot dog' has whitespace"),
    (b"#UNK#\t0\n#START#\t0\n#END#\t0\ndog\t-3\n", ":4: negative count -3"),
    (b'["#UNK#", "#START#", "#END#", "dog"]\n', ":1: expected 'word<TAB>count'"),
    (b"", ": the first lines must be"),
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


@pytest.mark.parametrize("words, message", [
    ("#UNK# #START# #END# dog", "a vocabulary is a list of words, not str"),
    ({"#UNK#": 0}, "a vocabulary is a list of words, not dict"),
    (None, "a vocabulary is a list of words, not NoneType"),
    ([UNK, START, END, 7], "vocabulary entry 3 is int, not a word"),
    ([UNK, START, END, ["dog"]], "vocabulary entry 3 is list, not a word"),
    ([UNK, START, END, "hot dog"], "vocabulary entry 3 .'hot dog'. is empty or has whitespace"),
    ([UNK, START, END, ""], "vocabulary entry 3 .''. is empty"),
    (["dog", START, END], "must start with #UNK#, #START#, #END#"),
    ([UNK, START, END, "dog", "dog"], "the word 'dog' is in the vocabulary twice"),
])
def test_a_word_list_that_is_not_a_vocabulary_is_a_user_error(words, message):
    with pytest.raises(UserError, match=message) as err:
        Vocabulary(words)
    assert isinstance(err.value, ValueError) and "\n" not in str(err.value)


# ---- property-based: any file or word list loads or gives a UserError

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

PROPERTY = settings(max_examples=100, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
WORDS = st.text(st.characters(blacklist_categories=("Cs",)), min_size=0, max_size=8)


@st.composite
def vocabulary_files(draw):
    if draw(st.booleans()):
        return draw(st.binary(max_size=300))
    words = list(SPECIALS) + draw(st.lists(WORDS, max_size=8))
    lines = ["%s\t%s" % (w, draw(st.integers(-3, 10**6) | WORDS)) for w in words]
    raw = bytearray("\n".join(lines).encode("utf-8"))
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, max(0, len(raw) - 1)))
        how = draw(st.sampled_from(["truncate", "flip", "insert"]))
        if how == "truncate":
            del raw[at:]
        elif how == "flip" and raw:
            raw[at] = draw(st.integers(0, 255))
        else:
            raw[at:at] = draw(st.binary(min_size=1, max_size=4))
    return bytes(raw)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("vocab_property")


@PROPERTY
@given(raw=vocabulary_files())
def test_property_vocabulary_files_load_or_raise_user_error(scratch, raw):
    import tracemalloc
    path = scratch / "vocab.txt"
    path.write_bytes(raw)
    tracemalloc.start()
    try:
        vocab = Vocabulary.load(path)
    except UserError as exc:
        assert "\n" not in str(exc) and str(exc).startswith(str(path))
    else:
        assert tuple(vocab.words[:3]) == SPECIALS and len(set(vocab.words)) == len(vocab)
        assert all(isinstance(w, str) and w and not any(c.isspace() for c in w)
                   for w in vocab.words)
        # what loads also saves and loads back the same
        vocab.save(scratch / "again.txt")
        assert Vocabulary.load(scratch / "again.txt").words == vocab.words
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < (1 << 20) + 200 * len(raw)


ANY_VALUES = st.recursive(st.none() | st.integers() | st.floats() | WORDS | st.binary(max_size=5),
                          lambda c: st.lists(c, max_size=4) | st.dictionaries(WORDS, c, max_size=3),
                          max_leaves=10)


@PROPERTY
@given(words=ANY_VALUES | st.lists(WORDS, max_size=6).map(lambda w: list(SPECIALS) + w)
       | st.lists(ANY_VALUES, max_size=6).map(lambda w: list(SPECIALS) + w))
def test_property_word_lists_make_a_vocabulary_or_raise_user_error(words):
    try:
        vocab = Vocabulary(words)
    except UserError as exc:
        assert "\n" not in str(exc)
    else:
        assert vocab.words == list(words) and vocab.decode([1, len(vocab) - 1, 2]) in (
            "", vocab.words[-1])
