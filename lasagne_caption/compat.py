"""Make PyPI Lasagne 0.1 run on theano-pymc 1.1.2 under a modern CPython.

Import this module before anything imports ``theano`` or ``lasagne``
(``import lasagne_caption`` does it for you). It

* checks the interpreter and numpy against the versions the pins support and
  raises :class:`UnsupportedEnvironment` with a one-line message otherwise;
* fills in the Theano flags the user did not set: ``floatX=float32``, a BLAS
  to link (Debian's OpenBLAS when present, else none), and a persistent
  compile directory under the user's cache dir, so the minutes of first-time
  C compilation are paid once per machine;
* repairs the places where Lasagne 0.1 (its code and its own test suite) and
  theano-pymc disagree:

  1. ``blas__ldflags`` unset -> theano probes ``numpy.distutils`` for
     ``blas_opt_info``, which numpy 1.23 lacks (AttributeError at import);
  2. ``MRG_RandomStreams`` was renamed ``MRG_RandomStream``;
  3. ``theano.tensor.signal.downsample`` is gone (pool layers need
     ``max_pool_2d``);
  4. ``theano.gof`` is now ``theano.graph``;
  5. the Cython scan extension does not compile on Python >= 3.11; blocking
     it makes Scan use its Python loop, which is as fast here once its check
     for reused output buffers compares data pointers, not every element
     (:func:`_patch_scan_reuse_checks`);
  6. ``theano.Variable``, ``theano.gof.graph`` (with ``is_same_graph``) and
     ``theano.scan_module.scan_utils``, the Theano 1.0 names Lasagne 0.1's
     tests use;

* and, through :func:`install_master_recurrent_layers` (called by
  ``import lasagne_caption``), makes ``lasagne.layers.LSTMLayer``/``GRULayer``
  Lasagne master's, the seminar's.
"""
import configparser
import ctypes.util
import inspect
import os
import sys
import types
import warnings

SUPPORTED_PYTHON = ((3, 9), (3, 11))   # inclusive range of (major, minor)
SUPPORTED_NUMPY = ("1.22", "1.23", "1.24", "1.25")


class UnsupportedEnvironment(RuntimeError):
    """The interpreter or a pinned library is a version the pins do not cover."""


def check_versions(python=None, numpy_version=None):
    """Raise :class:`UnsupportedEnvironment` unless Python and numpy fit the pins."""
    python = tuple(python or sys.version_info[:2])
    lo, hi = SUPPORTED_PYTHON
    if not lo <= python <= hi:
        raise UnsupportedEnvironment(
            "lasagne-caption needs CPython %d.%d to %d.%d (theano-pymc 1.1.2 and "
            "numpy 1.23 have no builds for others); this is %d.%d"
            % (lo + hi + python))
    if numpy_version is None:
        import numpy
        numpy_version = numpy.__version__
    if not numpy_version.startswith(tuple(v + "." for v in SUPPORTED_NUMPY)):
        raise UnsupportedEnvironment(
            "lasagne-caption needs numpy 1.23 (theano-pymc 1.1.2 breaks on numpy "
            "%s); run: pip install numpy==1.23.5" % numpy_version)


def _user_flags():
    """Theano flags the user set, from THEANO_FLAGS and the .theanorc files."""
    names = set()
    for item in os.environ.get("THEANO_FLAGS", "").split(","):
        if "=" in item:
            names.add(item.split("=", 1)[0].strip().replace(".", "__"))
    rc_files = os.environ.get("THEANORC", "~/.theanorc:~/.theanorc.txt")
    parser = configparser.ConfigParser()
    parser.read([os.path.expanduser(p) for p in rc_files.split(os.pathsep)])
    for section in parser.sections():
        for key in parser[section]:
            names.add(key if section == "global" else section + "__" + key)
    return names


def cache_dir():
    """The user's cache folder for lasagne-caption (XDG_CACHE_HOME aware)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(base, "lasagne-caption")


def blas_ldflags():
    """Linker flags for a real BLAS, or "" (Theano then uses its own C loops).

    numpy's wheel bundles OpenBLAS with renamed (``*_64_``) symbols, so Theano
    cannot link it; Debian's ``libopenblas-dev`` can be linked.
    """
    return "-lopenblas" if ctypes.util.find_library("openblas") else ""


def default_flags():
    """The flags this layer fills in when the user left them unset."""
    return {
        "floatX": "float32",
        "blas__ldflags": blas_ldflags(),
        "base_compiledir": os.path.join(cache_dir(), "theano"),
    }


def configure_flags():
    """Append to THEANO_FLAGS every default flag the user did not set."""
    user = _user_flags()
    missing = {k: v for k, v in default_flags().items()
               if k not in user and k.replace("__", ".") not in user
               and not (k == "base_compiledir" and "compiledir" in user)}
    if missing:
        extra = ",".join("%s=%s" % kv for kv in missing.items())
        current = os.environ.get("THEANO_FLAGS", "")
        os.environ["THEANO_FLAGS"] = (current + "," + extra) if current else extra
    return missing


def _block_cython_scan():
    # A None entry in sys.modules makes `from . import scan_perform_ext` raise
    # ImportError, and Scan then falls back to its pure-Python inner loop.
    sys.modules.setdefault("theano.scan.scan_perform_ext", None)


# After each step, Theano's Python scan loop checks whether the inner function
# wrote into the output buffers it was handed, by comparing ``ndarray.data``
# memoryviews taken before and after. ``==`` on memoryviews compares every
# element, so each check is a pass over the output: 2.5 ms a step for the
# attention backward's 64x49x256 region gradient, the largest cost left in
# its scan. The comment beside the check says it means the data pointers;
# these rewrites compare those. Same decisions: the check runs only when the
# output is the very array handed in, and its memory cannot have moved.
_SCAN_REUSE_CHECKS = (("= var.data\n", "= _data_pointer(var)\n", 2),
                      ("new_var.data == old_data", "_data_pointer(new_var) == old_data", 3))


def _data_pointer(array):
    return array.__array_interface__["data"][0]


def _patch_scan_reuse_checks():
    """Rewrite the two expressions in ``Scan.perform``; True if it was done.

    Only when theano's source holds them exactly as theano-pymc 1.1.2 has
    them; any other Theano keeps its own method.
    """
    from theano.scan import op as scan_op
    perform = scan_op.Scan.perform
    if getattr(perform, "pointer_reuse_checks", False):
        return True
    lines, first_line = inspect.getsourcelines(perform)
    source = "".join(line[4:] if line.startswith("    ") else line for line in lines)
    if any(source.count(old) != n for old, _, n in _SCAN_REUSE_CHECKS):
        return False
    for old, new, _ in _SCAN_REUSE_CHECKS:
        source = source.replace(old, new)
    # Theano's own method, two expressions changed, compiled against its
    # module's names; the padding keeps tracebacks at theano's line numbers
    namespace = dict(vars(scan_op), _data_pointer=_data_pointer)
    exec(compile("\n" * (first_line - 1) + source, scan_op.__file__, "exec"), namespace)
    patched = namespace["perform"]
    patched.pointer_reuse_checks = True
    patched.__qualname__ = perform.__qualname__
    patched.theano_perform = perform
    scan_op.Scan.perform = patched
    return True


def _quiet_lasagne_import():
    # Lasagne 0.1 imports pkg_resources (kept by the setuptools<81 pin), which
    # warns on every start; the warning is about Lasagne, not the user's code
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated",
                            category=UserWarning)


def _patch_theano():
    import theano
    import theano.graph
    import theano.sandbox.rng_mrg as rng_mrg
    import theano.tensor.signal as signal
    from theano.tensor.signal import pool

    if not hasattr(rng_mrg, "MRG_RandomStreams"):
        rng_mrg.MRG_RandomStreams = rng_mrg.MRG_RandomStream

    if "theano.gof" not in sys.modules:
        sys.modules["theano.gof"] = theano.graph
    if not hasattr(theano, "gof"):
        theano.gof = theano.graph
    if not hasattr(theano.graph, "Variable"):
        theano.graph.Variable = theano.graph.basic.Variable

    # Theano 1.0 exported the graph's Variable at the top level (Lasagne 0.1's
    # test_helper uses theano.Variable)
    if not hasattr(theano, "Variable"):
        theano.Variable = theano.graph.basic.Variable

    # `theano.gof.graph` (Lasagne 0.1's tests: `is_same_graph` on objectives'
    # aggregate) became theano.graph.basic, and is_same_graph moved to
    # theano.graph.toolbox: one module with both, as Theano 1.0 had it
    if "theano.gof.graph" not in sys.modules:
        import theano.graph.basic
        import theano.graph.toolbox
        gof_graph = types.ModuleType("theano.gof.graph")
        gof_graph.__doc__ = "Theano 1.0's theano.gof.graph (is_same_graph included)."
        gof_graph.__dict__.update((k, v) for k, v in vars(theano.graph.basic).items()
                                  if not k.startswith("__"))
        gof_graph.is_same_graph = theano.graph.toolbox.is_same_graph
        sys.modules[gof_graph.__name__] = gof_graph
        theano.graph.graph = gof_graph      # theano.gof is theano.graph

    # `theano.scan_module.scan_utils` is now theano.scan.utils (Lasagne 0.1's
    # test_regularization imports equal_computations from it); the theano.scan
    # attribute is the scan function, so the package is taken from sys.modules
    if "theano.scan_module" not in sys.modules:
        import theano.scan.utils
        scan_utils = sys.modules["theano.scan.utils"]
        scan_module = types.ModuleType("theano.scan_module")
        scan_module.__doc__ = "Theano 1.0's name for the theano.scan package."
        scan_module.scan, scan_module.scan_utils = theano.scan, scan_utils
        sys.modules[scan_module.__name__] = scan_module
        sys.modules["theano.scan_module.scan_utils"] = scan_utils
        theano.scan_module = scan_module

    if "theano.tensor.signal.downsample" not in sys.modules:
        downsample = types.ModuleType("theano.tensor.signal.downsample")
        downsample.__doc__ = "Lasagne 0.1's name for theano.tensor.signal.pool."

        def max_pool_2d(input, ds, ignore_border=None, st=None, padding=(0, 0),
                        mode="max"):
            return pool.pool_2d(input, ws=ds, ignore_border=ignore_border,
                                stride=st, pad=padding, mode=mode)

        downsample.max_pool_2d = max_pool_2d
        sys.modules[downsample.__name__] = downsample
        signal.downsample = downsample


_applied = False


def apply():
    """Check versions, set flags and patch theano; safe to call many times."""
    global _applied
    if _applied:
        return
    check_versions()
    if "theano" not in sys.modules:
        configure_flags()
    _block_cython_scan()
    _quiet_lasagne_import()
    _patch_theano()
    _patch_scan_reuse_checks()
    _applied = True


apply()


# Lasagne 0.1's own recurrent classes, kept for comparison and for code that
# asks for 0.1's behaviour by name (see install_master_recurrent_layers)
LASAGNE_01_RECURRENT = {}


def install_master_recurrent_layers():
    """Make ``lasagne.layers.LSTMLayer``/``GRULayer`` Lasagne master's.

    The seminar's notebook builds ``LSTMLayer(..., cell_init=<a Layer>)``,
    which only Lasagne master accepts, and its weights were trained with
    master's equations (output-gate peephole inside the sigmoid). PyPI has
    only 0.1, so ``import lasagne_caption`` puts the toolkit's master-faithful
    classes (:mod:`lasagne_caption.layers.recurrent`) where the notebook looks
    for them: ``lasagne.layers`` (so ``from lasagne.layers import *`` and
    ``lasagne.layers.LSTMLayer`` give them). The module
    ``lasagne.layers.recurrent`` keeps 0.1's classes (their ``super()`` calls
    look themselves up there); they are also in :data:`LASAGNE_01_RECURRENT`.
    Safe to call many times.
    """
    import lasagne.layers
    import lasagne.layers.recurrent as recurrent
    from .layers import recurrent as ours
    for name in ("LSTMLayer", "GRULayer"):
        LASAGNE_01_RECURRENT.setdefault(name, getattr(recurrent, name))
        setattr(lasagne.layers, name, getattr(ours, name))
