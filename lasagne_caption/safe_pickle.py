"""Unpickling that builds data, never runs code.

A pickle names the functions it calls to rebuild objects, so loading one
runs whatever its author chose. :func:`load` looks up only the globals in
``allow``; anything else raises :class:`Refused` before it is called.

Memory: numpy's own pickles rebuild an array from an empty one
(``_reconstruct(ndarray, (0,), ...)``) and then its bytes, whose length the
file bounds. A hand-made pickle could ask ``_reconstruct`` for a huge empty
array instead; that is refused, so what a file can allocate stays in
proportion to its size. So do the memo indices: :func:`loads` walks the
opcodes first (:func:`check_opcodes`).
"""
import io
import pickle
import pickletools

import numpy as np

# what a list of numpy arrays needs (numpy 2 spells the module numpy._core)
NUMPY_ARRAYS = frozenset({
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
})


class Refused(pickle.UnpicklingError):
    """The pickle names a global that is not allowed."""


class Corrupt(pickle.UnpicklingError):
    """The pickle is truncated, has unknown opcodes or memo indices no pickler writes."""


def check_opcodes(data):
    """Walk the opcodes of the pickle ``data`` (bytes) before it is loaded.

    The C unpickler sizes its memo by the largest index it is told to use,
    so a 9-byte pickle with ``LONG_BINPUT 300000000`` would take gigabytes.
    Picklers number memo entries 0, 1, 2, ..., at most one per opcode:
    anything larger raises :class:`Corrupt`, as do truncated streams and
    unknown opcodes.
    """
    ops = 0
    try:
        for op, arg, _ in pickletools.genops(io.BytesIO(data)):
            ops += 1
            if op.name in ("PUT", "BINPUT", "LONG_BINPUT") and not 0 <= arg <= ops:
                raise Corrupt("memo index %d at opcode %d" % (arg, ops))
    except Corrupt:
        raise
    except Exception as exc:   # ValueError (truncated, unknown opcode), digit limits, ...
        raise Corrupt(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)


def _latin1_bytes(text, encoding):
    # Python 3 writes bytes at protocol 2 as _codecs.encode(str, "latin1")
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise Refused("_codecs.encode(%r)" % (encoding,))
    return text.encode("latin1")


def _small_reconstruct(subtype, shape, dtype):
    # numpy pickles pass shape (0,): anything else is a hand-made request
    if np.prod(shape, dtype=np.float64) > 1:
        raise Refused("numpy _reconstruct of shape %r" % (shape,))
    from numpy.core.multiarray import _reconstruct
    return _reconstruct(subtype, shape, dtype)


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, allow):
        # latin1: Python 2 pickles (the seminar's) store str and arrays as bytes
        super(_Unpickler, self).__init__(file, encoding="latin1")
        self.allow = allow

    def find_class(self, module, name):
        if (module, name) == ("_codecs", "encode"):
            return _latin1_bytes
        if (module, name) in self.allow:
            if name == "_reconstruct":
                return _small_reconstruct
            return super(_Unpickler, self).find_class(module.replace("numpy._core", "numpy.core"),
                                                      name)
        raise Refused("%s.%s" % (module, name))


def load(file, allow=frozenset()):
    """Unpickle from an open binary ``file``, looking up only the globals in ``allow``."""
    return _Unpickler(file, allow).load()


def loads(data, allow=frozenset()):
    """:func:`check_opcodes`, then unpickle ``data`` (bytes) like :func:`load`."""
    check_opcodes(data)
    return _Unpickler(io.BytesIO(data), allow).load()
