"""The on-disk dataset layout: its file names, its one reader and its one writer.

A dataset is a folder ``data/NAME/`` with ``image_codes.npy`` (float32
[N, D], required), ``caption_tokens.pcl`` (N lists of caption strings,
protocol 2 so the seminar notebook reads it too; required),
``image_names.txt``, ``splits.json`` and ``dataset.json`` (optional). An
unpacked seminar archive is such a folder.

When ``splits.json`` is absent, :func:`default_splits` makes the split:
``numpy.random.RandomState(0).permutation(N)``; the first k rows are
``val``, the next k ``test``, the rest ``train``, with k = N // 20 (5%)
capped at 5000 (and at least 1 when N >= 3). Indices are sorted in each split.

:func:`load_dataset` reads a folder into a :class:`CaptionDataset`;
:func:`write_dataset` is the only code that writes one (``prepare`` calls it
inside a staging folder, see :mod:`lasagne_caption.data.output`).
"""
import datetime
import json
import os
import pathlib
import pickle

import numpy as np
from tqdm import tqdm

from ..errors import UserError
from ..vocab import END, START, Vocabulary, tokenize
from .readers import read_caption_pickle, read_codes, read_lines

SPLITS = ("train", "val", "test")
CODES, CAPTIONS = "image_codes.npy", "caption_tokens.pcl"
NAMES, SPLITS_FILE, META = "image_names.txt", "splits.json", "dataset.json"
# dataset.json of a folder write_dataset wrote says so; only these files are ever in it
DATASET_FORMAT = "lasagne-caption dataset 1"
DATASET_FILES = (CODES, CAPTIONS, NAMES, SPLITS_FILE, META)
SOURCES = ("flickr8k", "coco", "seminar")


class CaptionDataset:
    """A dataset folder in memory; see the module docstring for the layout.

    Attributes
    ----------
    path : pathlib.Path
    name : str
    codes : numpy.ndarray
        float32 [N, D].
    captions : list of list of list of str
        Per image, its captions as ``[#START#, words..., #END#]``.
    image_names : list of str
    splits : dict
        split name -> int64 row indices.
    meta : dict
        ``dataset.json`` ({} when absent).
    """

    def __init__(self, path, codes, captions, image_names, splits, meta):
        self.path, self.name = pathlib.Path(path), pathlib.Path(path).name
        self.codes, self.captions, self.image_names = codes, captions, image_names
        self.splits, self.meta = splits, meta

    @property
    def code_size(self):
        return self.codes.shape[1]

    def split(self, name):
        """``(codes, captions)`` of one split, ready for :func:`~lasagne_caption.data.generate_batch`."""
        if name not in self.splits:
            raise UserError("%s: unknown split %r (valid: %s)"
                            % (self.path, name, ", ".join(self.splits)))
        ix = self.splits[name]
        if not len(ix):
            raise UserError("%s: the %s split has no images" % (self.path, name))
        return self.codes[ix], [self.captions[i] for i in ix]

    def vocabulary(self, min_count=5):
        """The vocabulary of the ``train`` split only, so val/test words do not leak."""
        return Vocabulary.build((c for img in self.split("train")[1] for c in img), min_count)


def default_splits(n, seed=0):
    """The seeded 90/5/5 split used when a dataset has no ``splits.json``.

    >>> {name: ix.tolist() for name, ix in default_splits(5).items()}
    {'train': [1, 3, 4], 'val': [2], 'test': [0]}
    >>> {name: len(ix) for name, ix in default_splits(123287).items()}
    {'train': 113287, 'val': 5000, 'test': 5000}
    """
    k = min(5000, max(1, n // 20)) if n >= 3 else 0
    order = np.random.RandomState(seed).permutation(n)
    parts = {"val": order[:k], "test": order[k:2 * k], "train": order[2 * k:]}
    return {s: np.sort(parts[s]).astype("int64") for s in SPLITS}


def _read_json_object(path, what="a JSON object"):
    """The dict a UTF-8 JSON file holds; anything else is a one-line UserError."""
    try:
        with open(path, "rb") as f:
            raw = json.loads(f.read().decode("utf-8"))
    except OSError as exc:
        raise UserError("%s: cannot read (%s)" % (path, exc.strerror or exc))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise UserError("%s: not JSON (%s)" % (path, str(exc).splitlines()[0]))
    if not isinstance(raw, dict):
        raise UserError("%s: expected %s, got %s" % (path, what, type(raw).__name__))
    return raw


def _read_splits(path, n):
    """``splits.json``: an object of split name -> list of distinct row numbers."""
    raw = _read_json_object(path, "a JSON object of index lists")
    splits = {}
    for name, ix in raw.items():
        if not isinstance(ix, list) or not all(type(i) is int for i in ix):
            raise UserError("%s: split %r is not a list of row numbers" % (path, name))
        if ix and (min(ix) < 0 or max(ix) >= n):
            raise UserError("%s: split %r has rows outside 0..%d" % (path, name, n - 1))
        if len(set(ix)) != len(ix):
            raise UserError("%s: split %r lists a row twice" % (path, name))
        splits[str(name)] = np.array(ix, dtype="int64")
    return splits


def load_dataset(path):
    """Load and check a dataset folder.

    Parameters
    ----------
    path : str or pathlib.Path

    Returns
    -------
    CaptionDataset

    Raises
    ------
    UserError
        Missing folder or file, bad codes, or files that disagree on N.
    """
    path = pathlib.Path(path)
    if not path.is_dir():
        raise UserError("%s: no such dataset folder (make one with "
                        "'python -m lasagne_caption.data prepare ...')" % path)
    codes = read_codes(path / CODES)
    raw = read_caption_pickle(path / CAPTIONS)
    if len(raw) != len(codes):
        raise UserError("%s: %d caption entries but %s has %d rows"
                        % (path / CAPTIONS, len(raw), CODES, len(codes)))
    captions = []
    # the seminar's 600k captions take seconds: show progress only then
    for i, entry in enumerate(tqdm(raw, desc="tokenizing", unit="img", delay=2, leave=False, disable=None)):
        tokens = [tokenize(c) for c in entry]
        if not tokens or not all(tokens):
            raise UserError("%s: image %d has an empty caption or none" % (path / CAPTIONS, i))
        captions.append([[START] + t + [END] for t in tokens])
    names = ["img_%06d" % i for i in range(len(codes))]
    if (path / NAMES).exists():
        names = [line for _, line in read_lines(path / NAMES)]
        if len(names) != len(codes):
            raise UserError("%s: %d names for %d rows of codes" % (path / NAMES, len(names), len(codes)))
    splits = (_read_splits(path / SPLITS_FILE, len(codes)) if (path / SPLITS_FILE).exists()
              else default_splits(len(codes)))
    meta = _read_json_object(path / META) if (path / META).exists() else {}
    return CaptionDataset(path, codes, captions, names, splits, meta)


def _describe_dataset(path):
    """``(summary, problem)`` of an existing folder: a summary when
    :func:`write_dataset` made it (``dataset.json`` and only the layout's
    files), else a problem."""
    try:
        entries = sorted(os.listdir(path))
    except OSError as exc:
        return None, "cannot list it (%s)" % (exc.strerror or exc)
    meta = None
    if META in entries:
        try:
            meta = _read_json_object(path / META)
        except UserError:
            meta = None
    ours = isinstance(meta, dict) and (
        meta.get("format") == DATASET_FORMAT
        or (meta.get("source") in SOURCES and "created" in meta and "images" in meta))
    if not ours:
        return None, ("it is not a dataset folder made by 'lasagne_caption.data prepare' "
                      "(no %s of ours in it)" % META)
    others = [e for e in entries if e not in DATASET_FILES]
    if others:
        return None, ("besides a dataset it holds %d other entr%s (%s)"
                      % (len(others), "y" if len(others) == 1 else "ies", ", ".join(others[:3])))
    return ("a %s dataset of %s images made %s" % (meta.get("source"), meta.get("images"),
                                                 meta.get("created"))), None


def write_dataset(folder, codes, captions, names, splits, source, features, data_copied=False):
    """Write a dataset into ``folder``: the one writer of the layout.

    Parameters
    ----------
    folder : pathlib.Path
        A fresh, empty folder (a staging folder of
        :class:`~lasagne_caption.data.output.DatasetOutput`).
    codes : numpy.ndarray
        [N, D] codes, saved as float32.
    captions : list of list of str
        Per image its caption strings; saved as their lowercase words joined
        by spaces (the seminar's own format), pickled at protocol 2.
    names : list of str
        One image name per row.
    splits : dict
        split name -> row indices, saved as ``splits.json``.
    source, features : str
        Where the dataset came from and which codes it has, for ``dataset.json``.
    data_copied : bool
        The data files (codes, captions, names) are already in ``folder``,
        copied byte for byte (the seminar's own files); ``codes`` and
        ``captions`` (token lists will do) then only give the counts of
        ``dataset.json``, and ``names`` is not used.
    """
    if not data_copied:
        texts = [[" ".join(tokenize(c)) for c in entry] for entry in captions]
        np.save(folder / CODES, np.ascontiguousarray(codes, dtype="float32"))
        with open(folder / CAPTIONS, "wb") as f:
            pickle.dump(texts, f, protocol=2)
        (folder / NAMES).write_text("".join(n + "\n" for n in names), encoding="utf-8")
    (folder / SPLITS_FILE).write_text(json.dumps({k: [int(i) for i in v] for k, v in splits.items()}))
    meta = {"format": DATASET_FORMAT, "source": source, "features": features,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "images": len(codes), "captions": sum(map(len, captions)),
            "code_size": int(codes.shape[1]), "splits": {k: len(v) for k, v in splits.items()}}
    (folder / META).write_text(json.dumps(meta, indent=2) + "\n")
