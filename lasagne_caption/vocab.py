"""Words <-> indices: the tokenizer and the vocabulary every model shares.

The layout follows the seminar: indices 0, 1, 2 are ``#UNK#``, ``#START#``,
``#END#``; padding is ``-1`` (never a row of the embedding, so a model must
mask it). The kept words come next, most frequent first and ties broken
alphabetically, so the same captions give the same indices in every run and
process (a plain ``dict``/``set`` order would depend on PYTHONHASHSEED).
"""
import collections
import os
import re

import numpy as np

from .errors import UserError
from .files import atomic_write

UNK, START, END = "#UNK#", "#START#", "#END#"
SPECIALS = (UNK, START, END)
PAD_IX = -1


class VocabularyError(UserError, ValueError):
    """A word list that cannot be a vocabulary (a :class:`UserError`, and a
    ``ValueError`` for callers that catch that)."""

# A word is a run of letters/digits (any script, no underscore), optionally
# followed by one apostrophe suffix: "man's" and "don't" stay whole, while
# "stairs." / "stairs" and "t-shirt" -> "t", "shirt" are split on everything
# else. Captions are lowercased first.
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?")


def tokenize(caption):
    """Split a caption into lowercase words, punctuation removed.

    Parameters
    ----------
    caption : str

    Returns
    -------
    list of str
        The words, without ``#START#``/``#END#``.

    Examples
    --------
    >>> tokenize("A man's dog climbs the stairs.")
    ['a', "man's", 'dog', 'climbs', 'the', 'stairs']
    """
    return _WORD.findall(caption.lower())


class Vocabulary:
    """An ordered word list with its index and the training counts.

    Parameters
    ----------
    words : list of str
        Must start with ``#UNK#``, ``#START#``, ``#END#``.
    counts : dict, optional
        word -> number of occurrences in the captions it was built from.
    """

    unk_ix, start_ix, end_ix, pad_ix = 0, 1, 2, PAD_IX

    def __init__(self, words, counts=None):
        if not isinstance(words, (list, tuple)):
            raise VocabularyError("a vocabulary is a list of words, not %s" % type(words).__name__)
        for i, w in enumerate(words):
            if not isinstance(w, str):
                raise VocabularyError("vocabulary entry %d is %s, not a word" % (i, type(w).__name__))
            if not w or w != w.strip() or any(c.isspace() for c in w):
                raise VocabularyError("vocabulary entry %d (%r) is empty or has whitespace" % (i, w[:40]))
        if tuple(words[:3]) != SPECIALS:
            raise VocabularyError("a vocabulary must start with %s" % ", ".join(SPECIALS))
        self.words = list(words)
        self.index = {w: i for i, w in enumerate(self.words)}
        if len(self.index) != len(self.words):
            seen = set()
            first = next(w for w in self.words if w in seen or seen.add(w))
            raise VocabularyError("the word %r is in the vocabulary twice" % first[:40])
        if counts is not None and not isinstance(counts, dict):
            raise VocabularyError("vocabulary counts are a word -> count mapping, not %s"
                                  % type(counts).__name__)
        self.counts = dict(counts or {})

    @classmethod
    def build(cls, token_lists, min_count=5):
        """Keep the words seen at least ``min_count`` times.

        Parameters
        ----------
        token_lists : iterable of list of str
            Tokenized captions; ``#START#``/``#END#`` in them are not counted.
        min_count : int

        Returns
        -------
        Vocabulary
        """
        counts = collections.Counter(
            w for tokens in token_lists for w in tokens if w not in SPECIALS)
        kept = sorted((w for w, c in counts.items() if c >= min_count),
                      key=lambda w: (-counts[w], w))
        return cls(list(SPECIALS) + kept, {w: counts[w] for w in kept})

    def __len__(self):
        return len(self.words)

    def as_matrix(self, sequences, max_len=None):
        """Turn captions into an int32 matrix padded with ``-1``.

        Parameters
        ----------
        sequences : list of (list of str or str)
            Token lists, already wrapped in ``#START#``/``#END#``; a string
            is split on whitespace, as in the seminar.
        max_len : int, optional
            Truncate longer captions (their ``#END#`` is then cut off too).

        Returns
        -------
        numpy.ndarray
            int32 [len(sequences), T], T = longest caption (at most max_len);
            unknown words map to ``#UNK#``.
        """
        sequences = [s.split() if isinstance(s, str) else s for s in sequences]
        width = max(map(len, sequences), default=0)
        if max_len is not None:
            width = min(width, max_len)
        matrix = np.full((len(sequences), width), PAD_IX, dtype="int32")
        for row, tokens in enumerate(sequences):
            ixs = [self.index.get(w, self.unk_ix) for w in tokens[:width]]
            matrix[row, :len(ixs)] = ixs
        return matrix

    def decode(self, indices):
        """Words of one row of indices, up to ``#END#``, without specials.

        Parameters
        ----------
        indices : iterable of int

        Returns
        -------
        str
        """
        words = []
        for ix in indices:
            ix = int(ix)
            if ix == self.end_ix:
                break
            if ix not in (self.start_ix, PAD_IX):
                words.append(self.words[ix])
        return " ".join(words)

    def save(self, path):
        """Write ``word<TAB>count`` lines (UTF-8), atomically.

        The specials come first with count 0; the line order is the index.
        """
        path = os.fspath(path)
        lines = ["%s\t%d\n" % (w, self.counts.get(w, 0)) for w in self.words]
        if any(w != w.strip() or "\t" in w or not w for w in self.words):
            raise VocabularyError("words with whitespace cannot be saved")
        atomic_write(path, lambda f: f.writelines(lines), text=True)

    @classmethod
    def load(cls, path):
        """Read a file written by :meth:`save`.

        Raises
        ------
        UserError
            The file is missing or a line is not ``word<TAB>count``.
        """
        try:
            with open(path, "rb") as f:
                raw = f.read().splitlines()
        except OSError as exc:
            raise UserError("%s: cannot read vocabulary (%s)" % (path, exc.strerror))
        words, counts = [], {}
        for n, line in enumerate(raw, 1):
            try:
                word, count = line.decode("utf-8").split("\t")
                count = int(count)
            except (UnicodeDecodeError, ValueError):
                raise UserError("%s:%d: expected 'word<TAB>count' in UTF-8" % (path, n))
            if not word or word in counts:
                raise UserError("%s:%d: empty or repeated word %r" % (path, n, word[:40]))
            if word != word.strip() or any(c.isspace() for c in word):
                raise UserError("%s:%d: the word %r has whitespace" % (path, n, word[:40]))
            if count < 0:
                raise UserError("%s:%d: negative count %d" % (path, n, count))
            words.append(word)
            counts[word] = count
        if tuple(words[:3]) != SPECIALS:
            raise UserError("%s: the first lines must be %s" % (path, ", ".join(SPECIALS)))
        try:
            return cls(words, {w: c for w, c in counts.items() if w not in SPECIALS})
        except VocabularyError as exc:
            raise UserError("%s: %s" % (path, exc))
