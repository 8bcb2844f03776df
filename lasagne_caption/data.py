"""Caption datasets: three sources, one on-disk layout, and the batches.

Sources
-------
* the seminar archive: ``image_codes.npy`` + ``caption_tokens.pcl`` (a
  Python 2 pickle), as a folder or as ``data.tar.gz``;
* Flickr8k: ``Flickr8k.token.txt``, ``Flickr_8k.{train,dev,test}Images.txt``
  and precomputed codes in ``codes/`` (MobileNetV2 logits or pooled features);
* MS-COCO captions JSON, with codes given by the user.

Layout (what training reads), a folder ``data/NAME/`` with
``image_codes.npy`` (float32 [N, D], required), ``caption_tokens.pcl`` (N
lists of caption strings, protocol 2 so the seminar notebook reads it too;
required), ``image_names.txt``, ``splits.json`` and ``dataset.json``
(optional). An unpacked seminar archive is such a folder.

When ``splits.json`` is absent, :func:`default_splits` makes the split:
``numpy.random.RandomState(0).permutation(N)``; the first k rows are
``val``, the next k ``test``, the rest ``train``, with k = N // 20 (5%)
capped at 5000 (and at least 1 when N >= 3). Indices are sorted in each split.

Run ``python -m lasagne_caption.data --help`` for the command line.
"""
import argparse
import contextlib
import datetime
import io
import json
import os
import pathlib
import pickle
import shutil
import sys
import tarfile
import tempfile
import warnings

import numpy as np
from tqdm import tqdm

from . import safe_pickle
from .errors import UserError, run_cli
from .files import current_umask, exclusive_lock, is_safe_archive_member
from .vocab import END, START, Vocabulary, tokenize

SPLITS = ("train", "val", "test")
CODES, CAPTIONS = "image_codes.npy", "caption_tokens.pcl"
NAMES, SPLITS_FILE, META = "image_names.txt", "splits.json", "dataset.json"
FLICKR_SPLITS = {"train": "Flickr_8k.trainImages.txt", "val": "Flickr_8k.devImages.txt",
                 "test": "Flickr_8k.testImages.txt"}
FLICKR_FEATURES = {"logits": "mobilenet_v2_logits.npy", "pool": "mobilenet_v2_pool.npy"}
# dataset.json of a folder this module wrote says so; only these files are ever in it
DATASET_FORMAT = "lasagne-caption dataset 1"
DATASET_FILES = (CODES, CAPTIONS, NAMES, SPLITS_FILE, META)
SOURCES = ("flickr8k", "coco", "seminar")


class DataWarning(UserWarning):
    """Input that is usable but not complete (e.g. images without codes)."""


def _warn(message):
    warnings.warn(message, DataWarning, stacklevel=3)


# ---------------------------------------------------------------- readers

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


# ---------------------------------------------------------------- layout

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
        """``(codes, captions)`` of one split, ready for :func:`generate_batch`."""
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
    """The seeded 90/5/5 split used when a dataset has no ``splits.json``."""
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
    meta = _read_meta(path / META) if (path / META).exists() else {}
    return CaptionDataset(path, codes, captions, names, splits, meta)


def _read_meta(path):
    return _read_json_object(path)


def _describe_dataset(path):
    """``(summary, problem)`` of an existing folder: a summary when this module
    made it (``dataset.json`` and only the layout's files), else a problem."""
    try:
        entries = sorted(os.listdir(path))
    except OSError as exc:
        return None, "cannot list it (%s)" % (exc.strerror or exc)
    meta = None
    if META in entries:
        try:
            meta = json.loads((path / META).read_bytes().decode("utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, RecursionError):
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


def _inside(inner, outer):
    """Whether real path ``inner`` is ``outer`` or below it."""
    return os.path.commonpath([inner, outer]) == outer


class _Output:
    """The folder a prepare command writes, checked before anything is read.

    * ``--out`` must not be, contain or lie inside any input (the source, the
      codes, the names, the encoder model);
    * an existing ``--out`` is replaced only with ``force`` and only when it
      is a dataset this module made (its ``dataset.json``) holding nothing but
      the layout's files; an empty folder is used as is; anything else is
      refused;
    * while the ``with`` block runs, ``OUT.lock`` is locked (``flock``): a
      second process preparing into the same folder gets a one-line error;
    * :meth:`staging` gives a ``OUT.tmp-XXXX`` folder renamed to ``OUT`` only
      on success, so a failure or a kill never leaves a half-written dataset
      under the name and never touches the old one.
    """

    def __init__(self, out_dir, force=False, inputs=()):
        if out_dir is None or not os.fspath(out_dir).strip():
            raise UserError("the output folder (--out) is empty")
        self.given = os.fspath(out_dir)
        self.out = pathlib.Path(os.path.abspath(self.given))
        self.force = force
        self.inputs = [os.fspath(p) for p in inputs if p is not None]
        self.summary = None
        self.check()

    def check(self):
        """Refuse an output that overlaps an input or that must not be replaced."""
        real_out = os.path.realpath(self.out)
        for given in self.inputs:
            real_in = os.path.realpath(given)
            if real_in == real_out:
                raise UserError("--out %s is the input %s itself; choose another output folder"
                                % (self.given, given))
            if _inside(real_out, real_in):
                raise UserError("--out %s is inside the input %s; choose an output folder "
                                "outside it" % (self.given, given))
            if _inside(real_in, real_out):
                raise UserError("--out %s contains the input %s; replacing it would delete "
                                "the input, choose another output folder" % (self.given, given))
        self.summary = None
        if os.path.islink(self.out):
            raise UserError("--out %s is a symbolic link; give the folder itself" % self.given)
        if not os.path.lexists(self.out):
            return
        if not self.out.is_dir():
            raise UserError("--out %s exists and is not a folder; refusing to replace it"
                            % self.given)
        try:
            empty = not os.listdir(self.out)
        except OSError as exc:
            raise UserError("--out %s: cannot list it (%s)" % (self.given, exc.strerror or exc))
        if empty:
            return
        summary, problem = _describe_dataset(self.out)
        if problem:
            raise UserError("--out %s already exists and %s; refusing to replace it, "
                            "choose another output folder" % (self.given, problem))
        if not self.force:
            raise UserError("--out %s already exists (%s); use --force to replace it"
                            % (self.given, summary))
        self.summary = summary

    def _siblings(self, kind):
        prefix = self.out.name + kind
        try:
            names = os.listdir(self.out.parent)
        except OSError:
            return []
        return [self.out.parent / n for n in names
                if n.startswith(prefix) and len(n) == len(prefix) + 8]

    def __enter__(self):
        try:
            self.out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError("--out %s: cannot create %s (%s)"
                            % (self.given, self.out.parent, exc.strerror or exc))
        self._lock = exclusive_lock(str(self.out) + ".lock", self.given)
        self._lock.__enter__()
        try:
            self._recover()
            self.check()   # again, now that no other prepare can change it
        except BaseException:
            self._lock.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, kind, exc, tb):
        self._lock.__exit__(kind, exc, tb)
        return False

    def _recover(self):
        """Clean up after a prepare that was killed (we hold the lock: it is dead)."""
        if not os.path.lexists(self.out):
            # killed between moving the old dataset aside and moving the new one in
            old = [p for p in self._siblings(".old-") if _describe_dataset(p)[1] is None]
            if old:
                old[0].rename(self.out)
                print("restored %s from %s, left by an interrupted run" % (self.given, old[0].name))
        for leftover in self._siblings(".tmp-") + self._siblings(".old-"):
            if leftover.is_dir() and not leftover.is_symlink() and \
                    all(n in DATASET_FILES for n in os.listdir(leftover)):
                _remove_dataset_files(leftover)

    @contextlib.contextmanager
    def staging(self):
        """A fresh folder to write the dataset into; it becomes ``OUT`` on success."""
        tmp = pathlib.Path(tempfile.mkdtemp(prefix=self.out.name + ".tmp-", dir=self.out.parent))
        os.chmod(tmp, 0o777 & ~current_umask())   # as mkdir would, not mkdtemp's 0700
        try:
            yield tmp
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        old = None
        try:
            if os.path.lexists(self.out) and os.listdir(self.out):
                old = self.out.with_name(tmp.name.replace(".tmp-", ".old-"))
                self.out.rename(old)
            tmp.rename(self.out)   # replaces an empty folder
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if old is not None and not os.path.lexists(self.out):
                old.rename(self.out)
            raise UserError("--out %s: cannot move the new dataset into place (%s)"
                            % (self.given, exc.strerror or exc))
        if old is not None:
            if not _remove_dataset_files(old):
                _warn("%s: the previous dataset was kept in %s (something was added to it "
                      "meanwhile)" % (self.given, old))
            print("replaced %s in %s" % (self.summary or "the previous dataset", self.given))


def _remove_dataset_files(folder):
    """Delete the layout's files in ``folder`` and the folder, nothing else."""
    for name in DATASET_FILES:
        try:
            (folder / name).unlink()
        except FileNotFoundError:
            pass
    try:
        folder.rmdir()
    except OSError:
        return False
    return True


def _check_splits(splits, where):
    for name in ("train", "val"):
        if not len(splits.get(name, ())):
            raise UserError("%s: the %s split would have no images; a dataset needs train and "
                            "val images" % (where, name))
    if not len(splits.get("test", ())):
        _warn("%s: the test split has no images" % where)


def _write_dataset(output, codes, captions, names, splits, source, features, where):
    """Write the layout: captions as space-joined tokens, the seminar's own format."""
    _check_splits(splits, where)
    texts = [[" ".join(tokenize(c)) for c in entry] for entry in captions]
    with output.staging() as tmp:
        np.save(tmp / CODES, np.ascontiguousarray(codes, dtype="float32"))
        with open(tmp / CAPTIONS, "wb") as f:
            pickle.dump(texts, f, protocol=2)
        (tmp / NAMES).write_text("".join(n + "\n" for n in names), encoding="utf-8")
        _write_meta(tmp, splits, source, features, len(codes), sum(map(len, texts)),
                    int(codes.shape[1]))
    return pathlib.Path(output.given)


def _write_meta(folder, splits, source, features, images, captions, code_size):
    (folder / SPLITS_FILE).write_text(json.dumps({k: [int(i) for i in v] for k, v in splits.items()}))
    meta = {"format": DATASET_FORMAT, "source": source, "features": features,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "images": images, "captions": captions, "code_size": code_size,
            "splits": {k: len(v) for k, v in splits.items()}}
    (folder / META).write_text(json.dumps(meta, indent=2) + "\n")


# ---------------------------------------------------------------- prepare

def encode_images(paths, features="logits", model_path=None):
    """Codes for photos, from ``lasagne_caption.encoders`` when it is installed.

    Parameters
    ----------
    paths : list of path
        Photo files.
    features : str
        Which code of the encoder (``logits`` or ``pool`` for MobileNetV2).
    model_path : str, optional
        MobileNetV2 ``.tflite`` file (default: the encoders' cache location).

    Returns
    -------
    codes : numpy.ndarray
        float32 [M, D], one row per photo that could be read.
    names : list of str
        Base names of those photos, in row order (unreadable ones are left out).
    """
    try:
        from .encoders import encode_folder, get_encoder
    except ImportError:
        raise UserError("%d photos need codes, but there is no image encoder yet; "
                        "use precomputed codes (Flickr8k codes/, COCO --codes/--names)" % len(paths))
    encoder = get_encoder("mobilenet_v2", model_path)
    codes, names, _failed = encode_folder([os.fspath(p) for p in paths], encoder=encoder,
                                          features=features)
    return codes, names


def prepare_flickr8k(source, out_dir, features="logits", force=False, model_path=None):
    """Make a dataset from a Flickr8k folder with the official split (dev -> val).

    Images without codes (in ``codes/``) or without captions are dropped with
    a warning. Without ``codes/``, the photos in ``images/`` go to
    :func:`encode_images` (MobileNetV2 from ``model_path``). A split list that
    names an image found neither in the captions nor in the codes, or a
    train or val split left without images, is an error.

    Returns
    -------
    pathlib.Path
        ``out_dir``.
    """
    source = pathlib.Path(source)
    if features not in FLICKR_FEATURES:
        raise UserError("unknown features %r (valid: %s)" % (features, ", ".join(FLICKR_FEATURES)))
    with _Output(out_dir, force, [source, model_path]) as output:
        captions = read_flickr8k_captions(source / "Flickr8k.token.txt")
        split_lines = {s: read_lines(source / f) for s, f in FLICKR_SPLITS.items()}
        if (source / "codes").is_dir():
            code_names = [line for _, line in read_lines(source / "codes" / NAMES)]
            codes = read_codes(source / "codes" / FLICKR_FEATURES[features])
            if len(codes) != len(code_names):
                raise UserError("%s: %d rows but %s has %d names" % (
                    source / "codes" / FLICKR_FEATURES[features], len(codes), NAMES, len(code_names)))
        elif (source / "images").is_dir():
            codes, code_names = encode_images(sorted((source / "images").glob("*.jpg")), features,
                                              model_path)
        else:
            raise UserError("%s: neither codes/ nor images/ found" % source)
        row_of = {n: i for i, n in enumerate(code_names)}
        if len(row_of) != len(code_names):
            raise UserError("%s: repeated image names" % (source / "codes" / NAMES))
        names = [n for n in code_names if n in captions]
        if not names:
            raise UserError("%s: no caption ids match the codes' image names" % (source / "Flickr8k.token.txt"))
        dropped = sorted(set(captions) - set(names)) + sorted(set(code_names) - set(captions))
        if dropped:
            _warn("%s: dropped %d images that lack codes or captions (%s)"
                  % (source, len(dropped), ", ".join(dropped[:3])))
        for split, lines in split_lines.items():
            for n, name in lines:
                if name not in captions and name not in row_of:
                    raise UserError("%s:%d: image %s is in neither Flickr8k.token.txt nor the codes"
                                    % (source / FLICKR_SPLITS[split], n, name))
        new_row = {n: i for i, n in enumerate(names)}
        splits = {s: np.array(sorted({new_row[name] for _, name in split_lines[s] if name in new_row}),
                              dtype="int64") for s in SPLITS}
        if len(set().union(*map(set, splits.values()))) != sum(map(len, splits.values())):
            raise UserError("%s: the train/dev/test image lists overlap" % source)
        return _write_dataset(output, codes[[row_of[n] for n in names]],
                              [captions[n] for n in names], names, splits,
                              "flickr8k", "mobilenet_v2_" + features,
                              "%s (its Flickr_8k.*Images.txt lists)" % source)


def prepare_coco(json_path, out_dir, codes=None, names=None, force=False):
    """Make a dataset from an MS-COCO captions JSON and precomputed codes.

    Parameters
    ----------
    codes : path
        ``.npy`` float [M, D]. Without ``names`` its rows follow the JSON's
        ``images`` order (all images, captioned or not).
    names : path, optional
        One image per row of ``codes``: the COCO file name or numeric id.
        Images without a code are dropped with a warning.

    The split is :func:`default_splits` (COCO files carry none).
    """
    if codes is None:
        raise UserError("%s: COCO photos need codes: pass --codes FILE.npy --names FILE.txt "
                        "(encoding COCO photos is not supported yet)" % json_path)
    with _Output(out_dir, force, [json_path, codes, names]) as output:
        ids, files, captions = read_coco(json_path)
        code_array = read_codes(codes)
        if names is None:
            with open(json_path, encoding="utf-8") as f:
                all_ids = [img["id"] for img in json.load(f)["images"]]
            if len(all_ids) != len(code_array):
                raise UserError("%s: %d rows but %s has %d images (pass --names)"
                                % (codes, len(code_array), json_path, len(all_ids)))
            code_keys = [str(i) for i in all_ids]
        else:
            code_keys = [line for _, line in read_lines(names)]
            if len(code_keys) != len(code_array):
                raise UserError("%s: %d names for %d rows of %s" % (names, len(code_keys), len(code_array), codes))
        row_of = {k: i for i, k in enumerate(code_keys)}
        if len(row_of) != len(code_keys):
            raise UserError("%s: repeated image names" % (names or json_path))
        rows = [row_of.get(f, row_of.get(str(i))) for i, f in zip(ids, files)]
        keep = [j for j, r in enumerate(rows) if r is not None]
        if not keep:
            raise UserError("%s: none of its image ids match the names of %s" % (json_path, codes))
        if len(keep) < len(ids):
            _warn("%s: dropped %d images without codes" % (json_path, len(ids) - len(keep)))
        return _write_dataset(output, code_array[[rows[j] for j in keep]],
                              [captions[j] for j in keep], [files[j] for j in keep],
                              default_splits(len(keep)), "coco", str(codes),
                              "%s (%d images with codes)" % (json_path, len(keep)))


def _copy_stream(src, dst, size, desc):
    with open(dst, "wb") as out, tqdm(total=size, unit="B", unit_scale=True, desc=desc,
                                      disable=None, leave=False) as bar:
        for chunk in iter(lambda: src.read(1 << 20), b""):
            out.write(chunk)
            bar.update(len(chunk))


def prepare_seminar(source, out_dir, force=False):
    """Make a dataset from the seminar's ``data.tar.gz`` or its unpacked folder.

    Only the two data files are taken from an archive, streamed to names we
    choose; an archive with absolute or ``..`` member names is refused.
    The split is the folder's ``splits.json`` or :func:`default_splits`.
    """
    source = pathlib.Path(source)
    with _Output(out_dir, force, [source]) as output:
        if source.is_dir():
            dataset = load_dataset(source)  # check first, so errors name the user's files
            _check_splits(dataset.splits, source)
        with output.staging() as tmp:
            if source.is_dir():
                for name in (CODES, CAPTIONS, NAMES):
                    if (source / name).exists():
                        with open(source / name, "rb") as f:
                            _copy_stream(f, tmp / name, (source / name).stat().st_size, name)
            else:
                _extract_seminar(source, tmp)
                try:
                    dataset = load_dataset(tmp)
                except UserError as exc:  # name the archive, not our temporary folder
                    raise UserError(str(exc).replace(str(tmp), str(source))) from None
                _check_splits(dataset.splits, source)
            _write_meta(tmp, dataset.splits, "seminar", "googlenet", len(dataset.codes),
                        sum(map(len, dataset.captions)), dataset.code_size)
        return pathlib.Path(output.given)


def _extract_seminar(archive, tmp):
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            bad = [m.name for m in members if not is_safe_archive_member(m.name)]
            if bad:
                raise UserError("%s: refused, unsafe member path %r" % (archive, bad[0]))
            wanted = {pathlib.PurePosixPath(m.name).name: m for m in members
                      if m.isfile() and pathlib.PurePosixPath(m.name).name in (CODES, CAPTIONS)}
            for name in (CODES, CAPTIONS):
                if name not in wanted:
                    raise UserError("%s: no %s in the archive" % (archive, name))
                _copy_stream(tar.extractfile(wanted[name]), tmp / name, wanted[name].size, name)
    except OSError as exc:  # also tarfile.ReadError's cousins: gzip/zlib/EOF
        raise UserError("%s: cannot read archive (%s)" % (archive, exc.strerror or exc))
    except (tarfile.TarError, EOFError) as exc:
        raise UserError("%s: truncated or not a tar archive (%s)" % (archive, exc))


# ---------------------------------------------------------------- batches

def generate_batch(codes, captions, vocab, batch_size, rng, max_caption_len=None):
    """A random training batch, as in the seminar: random images, one random caption each.

    Parameters
    ----------
    codes : numpy.ndarray
        [N, D] codes of one split.
    captions : list of list of list of str
        The N images' tokenized captions.
    vocab : Vocabulary
    batch_size : int
    rng : numpy.random.Generator or numpy.random.RandomState
        Seed it for a reproducible stream of batches.
    max_caption_len : int, optional

    Returns
    -------
    images : float32 [batch_size, D]
    matrix : int32 [batch_size, T]
    """
    draw = getattr(rng, "integers", None) or rng.randint
    images = draw(0, len(codes), size=batch_size)
    chosen = [captions[i][draw(0, len(captions[i]))] for i in images]
    return (np.asarray(codes[images], dtype="float32"),
            vocab.as_matrix(chosen, max_len=max_caption_len))


def iterate_captions(codes, captions, vocab, batch_size, max_caption_len=None):
    """Every (image, caption) pair exactly once, in order, in batches.

    Yields
    ------
    images : float32 [B, D]
        One row per caption (an image repeats for each of its captions).
    matrix : int32 [B, T]
        B = batch_size except for the last batch.
    """
    pairs = [(i, c) for i, entry in enumerate(captions) for c in entry]
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        yield (np.asarray(codes[[i for i, _ in chunk]], dtype="float32"),
               vocab.as_matrix([c for _, c in chunk], max_len=max_caption_len))


# ---------------------------------------------------------------- command line

def _parser():
    parser = argparse.ArgumentParser(
        prog="python -m lasagne_caption.data",
        description="Prepare caption datasets into data/NAME/ and inspect them.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    prepare = commands.add_parser("prepare", help="make a dataset folder from a source",
                                  description="Make a dataset folder (default data/<source>) from a source.")
    kinds = prepare.add_subparsers(dest="kind", required=True, metavar="SOURCE")
    helps = {"flickr8k": ("Flickr8k with its official split (dev -> val)",
                          "Flickr8k folder: Flickr8k.token.txt, Flickr_8k.*Images.txt, codes/"),
             "coco": ("MS-COCO captions with precomputed codes, seeded 90/5/5 split",
                      "captions JSON (images, annotations)"),
             "seminar": ("the seminar archive, seeded 90/5/5 split",
                         "data.tar.gz or the folder holding image_codes.npy, caption_tokens.pcl")}
    for kind, (text, source_help) in helps.items():
        sub = kinds.add_parser(kind, help=text, description="Prepare " + text + ".")
        sub.add_argument("--source", required=True, help=source_help)
        sub.add_argument("--out", help="dataset folder to write (default: data/%s)" % kind)
        sub.add_argument("--force", action="store_true",
                         help="replace an existing dataset folder that this command made "
                              "(other folders are never replaced)")
        if kind == "flickr8k":
            sub.add_argument("--features", choices=sorted(FLICKR_FEATURES), default="logits",
                             help="which precomputed MobileNetV2 codes to use (default: logits)")
            sub.add_argument("--model", help="MobileNetV2 .tflite file, to encode photos when "
                                             "the source has no codes/")
        if kind == "coco":
            sub.add_argument("--codes", help="float .npy, one row per image (required)")
            sub.add_argument("--names", help="text file naming the image of each row "
                                             "(COCO file name or id); without it rows follow the JSON")

    info = commands.add_parser("info", help="print counts, splits, code and vocabulary size",
                               description="Load a dataset folder and print its summary.")
    info.add_argument("path", help="dataset folder, e.g. data/flickr8k")
    info.add_argument("--min-count", type=int, default=5,
                      help="vocabulary threshold on the train split (default: 5)")

    download = commands.add_parser(
        "download", help="download a source and prepare it",
        description="Download Flickr8k (resumable), check its text files, and prepare it.")
    download.add_argument("kind", choices=["flickr8k"])
    download.add_argument("--dest", default="data/downloads", help="where the zips go (default: data/downloads)")
    download.add_argument("--out", help="dataset folder to write (default: data/flickr8k)")
    download.add_argument("--force", action="store_true",
                          help="replace an existing dataset folder that this command made "
                               "(other folders are never replaced)")
    download.add_argument("--model", help="MobileNetV2 .tflite file to encode the photos")
    download.add_argument("--base-url", default=None, help="mirror holding Flickr8k_text.zip and "
                          "Flickr8k_Dataset.zip (default: the jbrownlee/Datasets GitHub release)")
    return parser


def main(argv=None):
    """Entry point of ``python -m lasagne_caption.data``."""
    args = _parser().parse_args(argv)
    with warnings.catch_warnings():  # one "warning: ..." line, not a source excerpt
        warnings.simplefilter("always", DataWarning)
        warnings.showwarning = lambda msg, *a, **k: print("warning: %s" % msg, file=sys.stderr)
        return _run(args)


def _run(args):
    if args.command == "info":
        if args.min_count < 1:
            raise UserError("--min-count must be at least 1, not %d" % args.min_count)
        ds = load_dataset(args.path)
        print("%s: %d images, %d captions, code size %d, source %s"
              % (ds.path, len(ds.codes), sum(map(len, ds.captions)), ds.code_size,
                 ds.meta.get("source", "unknown")))
        for name, ix in ds.splits.items():
            print("  %-5s %6d images %7d captions" % (name, len(ix), sum(len(ds.captions[i]) for i in ix)))
        if "train" in ds.splits:
            print("vocabulary (train, min_count=%d): %d words" % (args.min_count, len(ds.vocabulary(args.min_count))))
        return 0
    out = args.out or os.path.join("data", args.kind)
    if args.command == "download":
        from .download import BASE_URL, fetch_flickr8k
        # refuse a bad --out before downloading a gigabyte
        _Output(out, args.force, [args.dest, args.model])
        source = fetch_flickr8k(args.dest, args.base_url or BASE_URL)
        path = prepare_flickr8k(source, out, force=args.force, model_path=args.model)
    elif args.kind == "flickr8k":
        path = prepare_flickr8k(args.source, out, args.features, args.force, args.model)
    elif args.kind == "coco":
        path = prepare_coco(args.source, out, args.codes, args.names, args.force)
    else:
        path = prepare_seminar(args.source, out, args.force)
    print("wrote %s" % path)
    return 0


if __name__ == "__main__":
    run_cli(main)
