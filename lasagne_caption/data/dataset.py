"""The on-disk dataset layout: its file names, its one reader and its one writer.

A dataset is a folder ``data/NAME/`` with ``image_codes.npy`` (float32
[N, D], required; or uint8 grid codes, below), ``caption_tokens.pcl`` (N lists of caption strings,
protocol 2 so the seminar notebook reads it too; required),
``image_names.txt``, ``splits.json`` and ``dataset.json`` (optional). An
unpacked seminar archive is such a folder.

When ``splits.json`` is absent, :func:`default_splits` makes the split:
``numpy.random.RandomState(0).permutation(N)``; the first k rows are
``val``, the next k ``test``, the rest ``train``, with k = N // 20 (5%)
capped at 5000 (and at least 1 when N >= 3). Indices are sorted in each split.

Grid codes (``prepare flickr8k --features grid``: MobileNetV2's 7x7x1280
``Conv_1`` map per photo) are stored as uint8 [N, 49, 1280], the int8 model's
own activation format: ``dataset.json`` records ``"code_dtype": "uint8"``,
``"grid_shape": [7, 7, 1280]``, ``"image_shape": [49, 1280]`` and
``"quantization": {"scale", "zero_point", ...}``; :func:`load_dataset` maps the
file (``mmap_mode="r"``) and ``dataset.codes`` is a :class:`QuantizedCodes`
that gives float32 ``scale * (q - zero_point)`` on indexing.

:func:`load_dataset` reads a folder into a :class:`CaptionDataset`;
:func:`write_dataset` is the only code that writes one (``prepare`` calls it
inside a staging folder, see :mod:`lasagne_caption.data.output`).
"""
import datetime
import json
import math
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
QUANTIZED_DTYPE = "uint8"   # dataset.json "code_dtype" of quantised (grid) codes


def quantize_codes(codes, scale, zero_point):
    """float codes -> uint8 ``round(codes / scale) + zero_point``, clipped to 0..255.

    Rounds half away from zero, as the int8 runtime and the encoder's fake
    quantisation do, in float32 (codes already on the grid come back exactly).

    >>> quantize_codes(np.array([0.0, 0.0235, 6.0, 7.0, -1.0]), 6 / 255.0, 0).tolist()
    [0, 1, 255, 255, 0]
    """
    v = np.asarray(codes, np.float32) / np.float32(scale)
    q = np.sign(v) * np.floor(np.abs(v) + np.float32(0.5)) + np.float32(zero_point)
    return np.clip(q, 0, 255).astype(np.uint8)


def dequantize_codes(q, scale, zero_point):
    """uint8 codes -> float32 ``(q - zero_point) * scale`` (the encoder's own float32 formula).

    >>> dequantize_codes(np.array([0, 1, 255], np.uint8), 0.5, 1).tolist()
    [-0.5, 0.0, 127.0]
    """
    return (np.asarray(q).astype(np.float32) - np.float32(zero_point)) * np.float32(scale)


class QuantizedCodes:
    """uint8 codes on disk (memory-mapped), float32 when indexed.

    ``codes[ix]`` (an int, a slice, an index or boolean array, or a tuple
    starting with one of these) reads those rows of the uint8 array ``data``
    and returns ``dequantize_codes(rows, scale, zero_point)``, float32 of shape
    ``(len(ix),) + image_shape``. ``shape``, ``dtype`` (float32), ``ndim`` and
    ``len()`` describe that float32 view, so code that indexes rows
    (:func:`~lasagne_caption.data.generate_batch`) works unchanged.
    :meth:`subset` is a lazy view of some rows (a split); ``numpy.asarray(codes)``
    dequantises everything (the Flickr8k grid: 2 GB), so index instead.
    """

    dtype = np.dtype("float32")

    def __init__(self, data, scale, zero_point, rows=None):
        self.data = data
        self.scale, self.zero_point = float(scale), int(zero_point)
        self.rows = None if rows is None else np.asarray(rows, dtype="int64")

    @property
    def shape(self):
        return (len(self),) + tuple(self.data.shape[1:])

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def image_shape(self):
        return tuple(self.data.shape[1:])

    def __len__(self):
        return len(self.data) if self.rows is None else len(self.rows)

    def __getitem__(self, key):
        first, rest = (key[0], key[1:]) if isinstance(key, tuple) and key else (key, ())
        if self.rows is not None:
            first = self.rows[first if isinstance(first, (int, np.integer, slice))
                              else np.asarray(first)]
        elif not isinstance(first, (int, np.integer, slice)):
            first = np.asarray(first)
        return dequantize_codes(self.data[(first,) + tuple(rest)], self.scale, self.zero_point)

    def subset(self, ix):
        """A lazy view of rows ``ix`` (nothing is read until it is indexed)."""
        ix = np.arange(len(self))[ix] if isinstance(ix, slice) else np.asarray(ix, dtype="int64")
        return QuantizedCodes(self.data, self.scale, self.zero_point,
                              ix if self.rows is None else self.rows[ix])

    def __array__(self, dtype=None):
        out = self[:]
        return out if dtype is None else out.astype(dtype, copy=False)

    def __repr__(self):
        return "QuantizedCodes(%s uint8 as float32, scale=%g, zero_point=%d)" % (
            self.shape, self.scale, self.zero_point)


class CaptionDataset:
    """A dataset folder in memory; see the module docstring for the layout.

    Attributes
    ----------
    path : pathlib.Path
    name : str
    codes : numpy.ndarray or QuantizedCodes
        float32 [N, D]; for a grid dataset a :class:`QuantizedCodes` (uint8
        [N, 49, 1280] memory-mapped, float32 when indexed).
    image_shape : tuple
        The shape of one image's codes: ``(D,)``, or ``(49, 1280)`` for a grid.
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
    def image_shape(self):
        """The shape of one image's codes: ``(1001,)`` for flat codes, ``(49, 1280)`` for a grid."""
        return tuple(self.codes.shape[1:])

    @property
    def code_size(self):
        """D of flat codes [N, D]; a grid dataset has none (a one-line error: use ``image_shape``)."""
        if len(self.codes.shape) != 2:
            raise UserError("%s holds a grid of codes per image (%s, %s), not one flat code: "
                            "this needs a network that reads image regions (image_shape %s)"
                            % (self.path, "x".join(map(str, self.meta.get("grid_shape") or
                                                       self.image_shape)),
                               self.meta.get("features", "features"), self.image_shape))
        return self.codes.shape[1]

    def split(self, name):
        """``(codes, captions)`` of one split, ready for :func:`~lasagne_caption.data.generate_batch`.

        Flat codes come as a float32 array; grid codes as a lazy
        :class:`QuantizedCodes` view (float32 when indexed).
        """
        if name not in self.splits:
            raise UserError("%s: unknown split %r (valid: %s)"
                            % (self.path, name, ", ".join(self.splits)))
        ix = self.splits[name]
        if not len(ix):
            raise UserError("%s: the %s split has no images" % (self.path, name))
        codes = self.codes.subset(ix) if isinstance(self.codes, QuantizedCodes) else self.codes[ix]
        return codes, [self.captions[i] for i in ix]

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
    meta = _read_json_object(path / META) if (path / META).exists() else {}
    if meta.get("code_dtype") == QUANTIZED_DTYPE:
        codes = read_quantized_codes(path / CODES, meta, path / META)
    else:
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
    return CaptionDataset(path, codes, captions, names, splits, meta)


def _quantization_of(meta, meta_path):
    """``(scale, zero_point, image_shape)`` that ``dataset.json`` records for uint8 codes."""
    quant = meta.get("quantization")
    if not isinstance(quant, dict):
        raise UserError("%s: uint8 codes need a \"quantization\" object (scale, zero_point)"
                        % meta_path)
    scale, zero_point = quant.get("scale"), quant.get("zero_point")
    if not (isinstance(scale, (int, float)) and not isinstance(scale, bool)
            and math.isfinite(scale) and scale > 0):
        raise UserError("%s: quantization scale must be a positive number, not %r"
                        % (meta_path, scale))
    if type(zero_point) is not int or not 0 <= zero_point <= 255:
        raise UserError("%s: quantization zero_point must be an integer 0..255, not %r"
                        % (meta_path, zero_point))
    shape = meta.get("image_shape")
    if not (isinstance(shape, list) and shape and len(shape) <= 3
            and all(type(d) is int and 0 < d <= 1 << 20 for d in shape)):
        raise UserError("%s: image_shape must be a list of 1 to 3 positive sizes, not %r"
                        % (meta_path, shape))
    return float(scale), zero_point, tuple(shape)


def read_quantized_codes(path, meta, meta_path):
    """uint8 codes ``[N, *image_shape]`` memory-mapped, as :class:`QuantizedCodes`.

    The scale, zero point and per-image shape come from ``dataset.json``
    (``meta``); the ``.npy`` header is checked against them, and against the
    file's size, before the file is mapped (``numpy.load(mmap_mode="r")``).
    """
    scale, zero_point, image_shape = _quantization_of(meta, meta_path)
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise UserError("%s: cannot read codes (%s)" % (path, exc.strerror or exc))
    with f:
        try:
            version = np.lib.format.read_magic(f)
            shape, fortran, dtype = np.lib.format._read_array_header(f, version)
        except Exception as exc:   # a damaged header: ValueError, SyntaxError, ...
            raise UserError("%s: truncated or not a .npy file (%s)"
                            % (path, str(exc).splitlines()[0] if str(exc) else type(exc).__name__))
        if dtype != np.uint8 or fortran or tuple(shape[1:]) != image_shape or not shape[0]:
            raise UserError("%s: expected uint8 codes (N, %s) as %s says, got %s%s %s"
                            % (path, ", ".join(map(str, image_shape)), meta_path.name, dtype,
                               " (Fortran order)" if fortran else "", shape))
        available = os.fstat(f.fileno()).st_size - f.tell()
        needed = int(np.prod(shape))
        if available < needed:
            raise UserError("%s: truncated (%d bytes of data for uint8 %s, which needs %d)"
                            % (path, available, shape, needed))
    data = np.load(path, mmap_mode="r")
    return QuantizedCodes(data, scale, zero_point)


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


def write_dataset(folder, codes, captions, names, splits, source, features, data_copied=False,
                  codes_meta=None):
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
    codes_meta : dict, optional
        The codes are already in ``folder`` (uint8 grid codes written in
        chunks by :class:`QuantizedCodesWriter`, whose ``meta()`` this is);
        ``codes`` then only gives their count, and these entries describe
        them in ``dataset.json`` in place of ``code_size``.
    """
    if not data_copied:
        texts = [[" ".join(tokenize(c)) for c in entry] for entry in captions]
        if codes_meta is None:
            np.save(folder / CODES, np.ascontiguousarray(codes, dtype="float32"))
        with open(folder / CAPTIONS, "wb") as f:
            pickle.dump(texts, f, protocol=2)
        (folder / NAMES).write_text("".join(n + "\n" for n in names), encoding="utf-8")
    (folder / SPLITS_FILE).write_text(json.dumps({k: [int(i) for i in v] for k, v in splits.items()}))
    meta = {"format": DATASET_FORMAT, "source": source, "features": features,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "images": len(codes), "captions": sum(map(len, captions))}
    if codes_meta is None:
        meta["code_size"] = int(codes.shape[1])
    else:
        meta.update(codes_meta)
    meta["splits"] = {k: len(v) for k, v in splits.items()}
    (folder / META).write_text(json.dumps(meta, indent=2) + "\n")


class QuantizedCodesWriter:
    """``image_codes.npy`` of uint8 codes, written chunk by chunk with bounded memory.

    The file is a :func:`numpy.lib.format.open_memmap` of ``max_rows`` rows;
    :meth:`append` quantises float codes (:func:`quantize_codes`) into the
    next rows and tracks the largest round-trip error; :meth:`close` flushes
    it and, when fewer rows were appended (unreadable photos), rewrites the
    header in place and truncates the file. :meth:`meta` is what
    :func:`write_dataset` records about the codes.
    """

    def __init__(self, path, max_rows, image_shape, scale, zero_point, grid_shape=None):
        self.path = pathlib.Path(path)
        self.image_shape = tuple(int(d) for d in image_shape)
        self.grid_shape = tuple(grid_shape) if grid_shape is not None else None
        self.scale, self.zero_point = float(scale), int(zero_point)
        self.rows, self.max_error, self.clipped = 0, 0.0, 0
        self.array = np.lib.format.open_memmap(self.path, mode="w+", dtype=np.uint8,
                                               shape=(int(max_rows),) + self.image_shape)

    def append(self, codes):
        """Quantise float codes ``(B, *image_shape)`` (or any shape of as many values) into the file."""
        codes = np.asarray(codes, np.float32).reshape((-1,) + self.image_shape)
        q = quantize_codes(codes, self.scale, self.zero_point)
        back = dequantize_codes(q, self.scale, self.zero_point)
        if len(codes):
            error = np.abs(back - codes)
            self.max_error = max(self.max_error, float(error.max()))
            # more than half a step off: outside the range 0..255 can hold (clipped)
            self.clipped += int((error > np.float32(0.5001 * self.scale)).sum())
        self.array[self.rows:self.rows + len(q)] = q
        self.array.flush()   # written back: the page cache may drop these pages again
        self.rows += len(q)

    def close(self):
        """Flush; shrink the file to the rows appended. Returns the number of rows."""
        if self.array is None:
            return self.rows
        self.array.flush()
        max_rows = len(self.array)
        self.array = None   # unmaps the file
        if self.rows < max_rows:
            _shrink_npy(self.path, (self.rows,) + self.image_shape)
        return self.rows

    def meta(self):
        """``dataset.json`` entries of these codes (after :meth:`close`)."""
        out = {"code_dtype": QUANTIZED_DTYPE, "image_shape": list(self.image_shape)}
        if self.grid_shape is not None:
            out["grid_shape"] = list(self.grid_shape)
        out["quantization"] = {"scale": self.scale, "zero_point": self.zero_point,
                               "max_abs_error": self.max_error,
                               "max_abs_error_in_scale_steps": self.max_error / self.scale,
                               "clipped_values": self.clipped}
        return out


def _shrink_npy(path, shape):
    """Rewrite a uint8 ``.npy`` header in place to ``shape`` (fewer rows) and cut the file there."""
    with open(path, "r+b") as f:
        version = np.lib.format.read_magic(f)
        np.lib.format._read_array_header(f, version)
        offset = f.tell()
        # magic, version, header length (2 bytes in version 1.0, else 4), then the
        # header padded with spaces to the same data offset as before
        prefix = b"\x93NUMPY" + bytes(version)
        size_field = 2 if version == (1, 0) else 4
        text = repr({"descr": "|u1", "fortran_order": False, "shape": tuple(shape)})
        pad = offset - len(prefix) - size_field - len(text) - 1
        if pad < 0:
            raise RuntimeError("%s: no room to rewrite the .npy header" % path)
        header = (text + " " * pad + "\n").encode("latin1")
        f.seek(0)
        f.write(prefix + len(header).to_bytes(size_field, "little") + header)
        f.truncate(offset + int(np.prod(shape)))
