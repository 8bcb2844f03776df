"""Readers of the input formats: each file in, checked values out, or a one-line error.

* ``caption_tokens.pcl``, the seminar's captions: a Python 2 pickle of one
  list of caption strings per image, unpickled by :mod:`lasagne_caption.safe_pickle`
  (data opcodes only) after its opcodes are checked;
* ``.npy`` codes: a 2-D float array, its header checked before numpy reads it;
* UTF-8 text files of lines (image names, Flickr8k's split lists);
* ``Flickr8k.token.txt`` (``IMAGE.jpg#N<TAB>caption``);
* an MS-COCO captions JSON (``images`` and ``annotations``).

Every problem is a :class:`~lasagne_caption.errors.UserError` naming the
file; input that is usable but incomplete gives a :class:`DataWarning`.
"""
import io
import json
import os
import warnings

import numpy as np

from .. import safe_pickle
from ..errors import UserError
from ..vocab import tokenize


class DataWarning(UserWarning):
    """Input that is usable but not complete (e.g. images without codes)."""


def _warn(message):
    """A :class:`DataWarning` pointing at the caller of the function that warns."""
    warnings.warn(message, DataWarning, stacklevel=3)


def _check_pickle_opcodes(data, path):
    """:func:`safe_pickle.check_opcodes`, as a one-line UserError naming ``path``."""
    try:
        safe_pickle.check_opcodes(data)
    except safe_pickle.Corrupt as exc:
        raise UserError("%s: truncated or corrupt pickle (%s)" % (path, exc))


def read_caption_pickle(path):
    """Read ``caption_tokens.pcl``: one list of caption strings per image.

    Python 2 ``str`` arrives as ``str`` (latin1); ``bytes`` are decoded as
    latin1 too, so both spellings of a file give the same text. The file is
    read whole and its opcodes checked first (:func:`_check_pickle_opcodes`),
    so memory stays proportional to its size.

    Returns
    -------
    list of list of str

    Raises
    ------
    UserError
        Missing, truncated or malicious file, or not a list of string lists.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise UserError("%s: cannot read (%s)" % (path, exc.strerror or exc))
    _check_pickle_opcodes(data, path)
    try:
        value = safe_pickle.load(io.BytesIO(data))
    except safe_pickle.Refused as exc:
        raise UserError("%s: refused to unpickle %s (only lists of strings are allowed)" % (path, exc))
    except MemoryError:
        raise UserError("%s: corrupt pickle (it needs more memory than this machine has)" % path)
    except Exception as exc:   # only data opcodes run: any failure means a bad file
        raise UserError("%s: truncated or corrupt pickle (%s)"
                        % (path, str(exc).splitlines()[0] if str(exc) else type(exc).__name__))
    if not isinstance(value, list):
        raise UserError("%s: expected a list of caption lists, got %s" % (path, type(value).__name__))
    for i, entry in enumerate(value):
        if not isinstance(entry, list) or not all(isinstance(c, (str, bytes)) for c in entry):
            raise UserError("%s: entry %d is not a list of caption strings (got %s)"
                            % (path, i, _describe(entry)))
        value[i] = [c.decode("latin1") if isinstance(c, bytes) else c for c in entry]
    return value


def _describe(value):
    """What a caption-pickle entry is, for an error message.

    >>> _describe([1, "a"]), _describe(["a"]), _describe("a")
    ('a list holding int', 'a list', 'str')
    """
    if isinstance(value, list):
        bad = [type(c).__name__ for c in value if not isinstance(c, (str, bytes))]
        return "a list holding %s" % bad[0] if bad else "a list"
    return type(value).__name__


def read_codes(path):
    """Read a 2-D ``.npy`` array of finite floats as float32.

    The header is checked before any data is read: the shape must be 2-D
    with at least one row and one column, the type a float, and the file
    must hold all the bytes the header promises (so a damaged header cannot
    make numpy allocate more than the file holds).

    Raises
    ------
    UserError
        Missing, truncated, an ``.npz`` archive, not 2-D, empty, not float,
        or containing NaN/inf (also values beyond float32's range).
    """
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise UserError("%s: cannot read codes (%s)" % (path, exc.strerror or exc))
    with f:
        magic = f.read(6)
        if magic[:4] == b"PK\x03\x04":
            raise UserError("%s: an .npz archive, not a .npy array; save the codes with "
                            "numpy.save (one float array [images, code size])" % path)
        if magic != b"\x93NUMPY":
            raise UserError("%s: truncated or not a .npy file (no .npy header)" % path)
        try:
            f.seek(0)
            version = np.lib.format.read_magic(f)
            shape, fortran, dtype = np.lib.format._read_array_header(f, version)
        except Exception as exc:   # a damaged header: ValueError, SyntaxError, ...
            raise UserError("%s: truncated or not a .npy file (%s)"
                            % (path, str(exc).splitlines()[0] if str(exc) else type(exc).__name__))
        if len(shape) != 2:
            raise UserError("%s: codes must be a 2-D numeric array [images, code size], got %s %s"
                            % (path, dtype, shape))
        if dtype.hasobject or dtype.kind != "f":
            raise UserError("%s: codes must be floats, got %s %s" % (path, dtype, shape))
        if shape[0] == 0 or shape[1] == 0:
            raise UserError("%s: codes of shape %s hold no %s"
                            % (path, shape, "images" if shape[0] == 0 else "values per image"))
        available = os.fstat(f.fileno()).st_size - f.tell()
        needed = shape[0] * shape[1] * dtype.itemsize
        if available < needed:
            raise UserError("%s: truncated or not a .npy file (%d bytes of data for %s %s, "
                            "which needs %d)" % (path, available, dtype, shape, needed))
        try:
            f.seek(0)
            codes = np.load(f, allow_pickle=False)
        except (ValueError, EOFError, OSError) as exc:
            raise UserError("%s: truncated or not a .npy file (%s)" % (path, exc))
    with np.errstate(over="ignore", invalid="ignore"):
        codes = codes.astype("float32", copy=False)
    bad = ~np.isfinite(codes).all(axis=1)
    if bad.any():
        raise UserError("%s: %d rows contain NaN or inf (first: row %d; values beyond "
                        "float32's range count too)" % (path, bad.sum(), bad.argmax()))
    return codes


def read_lines(path):
    """Non-empty stripped lines of a UTF-8 text file.

    Returns
    -------
    list of (int, str)
        Each line with its number (from 1), so errors can name ``file:line``.

    Raises
    ------
    UserError
        Missing file, or a line that is not UTF-8 (named by number).
    """
    try:
        with open(path, "rb") as f:
            raw = f.read().splitlines()
    except OSError as exc:
        raise UserError("%s: cannot read (%s)" % (path, exc.strerror))
    lines = []
    for n, line in enumerate(raw, 1):
        try:
            lines.append((n, line.decode("utf-8").strip()))
        except UnicodeDecodeError:
            raise UserError("%s:%d: not UTF-8 text" % (path, n))
    return [(n, line) for n, line in lines if line]


def read_flickr8k_captions(path):
    """Read ``Flickr8k.token.txt`` (``IMAGE.jpg#N<TAB>caption`` lines).

    Returns
    -------
    dict
        image name -> list of caption strings, in file order.
    """
    captions = {}
    for n, line in read_lines(path):
        key, sep, caption = line.partition("\t")
        name = key.rpartition("#")[0]
        if not sep or not name:
            raise UserError("%s:%d: expected 'IMAGE.jpg#N<TAB>caption'" % (path, n))
        if not tokenize(caption):
            raise UserError("%s:%d: empty caption" % (path, n))
        captions.setdefault(name, []).append(caption)
    return captions


def read_coco(path):
    """Read an MS-COCO captions JSON.

    Images without captions are dropped with a :class:`DataWarning`.

    Returns
    -------
    ids : list of int
        Image ids, in the order of ``images``, of images with captions.
    file_names : list of str
    captions : list of list of str
    """
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except OSError as exc:
        raise UserError("%s: cannot read (%s)" % (path, exc.strerror))
    except (UnicodeDecodeError, ValueError) as exc:
        raise UserError("%s: not a JSON file (%s)" % (path, exc))
    try:
        images, annotations = doc["images"], doc["annotations"]
        by_id = {img["id"]: [] for img in images}
        for ann in annotations:
            if ann["image_id"] not in by_id:
                raise UserError("%s: annotation %s is for unknown image %s" % (path, ann.get("id"), ann["image_id"]))
            if not isinstance(ann["caption"], str) or not tokenize(ann["caption"]):
                raise UserError("%s: empty caption in annotation %s" % (path, ann.get("id")))
            by_id[ann["image_id"]].append(ann["caption"])
    except (KeyError, TypeError, AttributeError) as exc:
        raise UserError("%s: not a COCO captions file (bad or missing %s)" % (path, exc))
    empty = [img["id"] for img in images if not by_id[img["id"]]]
    if empty:
        _warn("%s: dropped %d images without captions" % (path, len(empty)))
    kept = [img for img in images if by_id[img["id"]]]
    return ([img["id"] for img in kept], [img.get("file_name", str(img["id"])) for img in kept],
            [by_id[img["id"]] for img in kept])
