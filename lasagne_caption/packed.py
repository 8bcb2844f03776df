"""Compact parameter files: the weights of a shipped model in a few MB.

A checkpoint written by training holds float32 arrays in the seminar's pickle
(``wrote_net.params``), which for the attention network is 46 MB. A packed
file holds the same list of arrays in a numpy ``.npz`` (no pickle: read with
``allow_pickle=False``), each matrix stored one of two ways:

* ``"float16"``: half precision, half the size;
* ``"int8"``: symmetric 8-bit integers with one float32 scale per column
  (``w[:, j] ~= q[:, j] * scale[j]``), a quarter of the size.

Vectors and scalars (biases, peepholes, initial states) stay float32: they are
small, and a bias error shifts every output. :func:`unpack` gives float32
arrays back, so a packed file loads into the same network as the checkpoint it
came from. Which storage keeps a model's scores is measured, not assumed: the
README compares them on the dev split.

>>> w = np.array([[0.5, -2.0], [-0.25, 1.0]], np.float32)
>>> arrays = pack([w, np.ones(2, np.float32)], "int8")
>>> sorted(arrays), arrays["param_000_q"].dtype.name
(['param_000_q', 'param_000_scale', 'param_001', 'storage'], 'int8')
>>> [np.round(v.astype(float), 3).tolist() for v in unpack(arrays, "example.npz")]
[[[0.5, -2.0], [-0.252, 1.008]], [1.0, 1.0]]
"""
import re
import zipfile

import numpy as np

from .errors import UserError

STORAGES = ("float16", "int8")
ZIP_MAGIC = b"PK\x03\x04"


def is_packed(path):
    """Whether the file at ``path`` is a packed (``.npz``, zip) parameter file."""
    with open(path, "rb") as f:
        return f.read(4) == ZIP_MAGIC


def pack(values, storage="int8"):
    """The ``.npz`` members holding ``values`` (a list of float arrays) in ``storage``."""
    if storage not in STORAGES:
        raise UserError("unknown storage %r (choose from %s)" % (storage, ", ".join(STORAGES)))
    arrays = {"storage": np.array(storage)}
    for i, value in enumerate(values):
        value = np.asarray(value, np.float32)
        key = "param_%03d" % i
        if value.ndim < 2:
            arrays[key] = value
        elif storage == "float16":
            arrays[key] = value.astype(np.float16)
        else:
            # one scale per column: a column feeds one output unit, whose
            # weights share a range; a zero column keeps scale 1 (q is 0 anyway)
            peak = np.abs(value).max(axis=tuple(range(value.ndim - 1)))
            scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
            arrays[key + "_q"] = np.clip(np.rint(value / scale), -127, 127).astype(np.int8)
            arrays[key + "_scale"] = scale
    return arrays


def unpack(arrays, path):
    """Float32 arrays, in order, from the members of a packed file (``path``: for errors)."""
    storage = str(arrays.get("storage", ""))
    if storage not in STORAGES:
        raise UserError("%s: not a packed parameter file (storage %r)" % (path, storage))
    indices = sorted({int(m.group(1)) for m in map(re.compile(r"param_(\d{3})").match, arrays)
                      if m})
    if indices != list(range(len(indices))):
        raise UserError("%s: parameters %s are missing" % (
            path, sorted(set(range(max(indices, default=-1) + 1)) - set(indices))))
    values = []
    for i in indices:
        key = "param_%03d" % i
        if key in arrays:
            value = arrays[key]
            if value.dtype.kind != "f":
                raise UserError("%s: %s holds %s values, not floats" % (path, key, value.dtype))
        else:
            q, scale = arrays.get(key + "_q"), arrays.get(key + "_scale")
            if q is None or scale is None or q.dtype != np.int8 or scale.dtype != np.float32 \
                    or q.ndim < 2 or scale.shape != q.shape[-1:]:
                raise UserError("%s: %s is not int8 values with a float32 scale per column"
                                % (path, key))
            value = q * scale
        values.append(np.asarray(value, np.float32))
    return values


def save_packed(file, values, storage="int8"):
    """Write ``values`` packed to ``file`` (a path or a binary file object)."""
    np.savez_compressed(file, **pack(values, storage))


def load_packed(path):
    """Float32 arrays from a packed file; one-line :class:`UserError` for a bad file."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise UserError("%s: unreadable packed parameter file (%s)" % (path, exc))
    return unpack(arrays, path)
