"""The places where PyPI Lasagne 0.1 and theano-pymc disagree, and the version guard.

1-5 are what the toolkit needs; 6-8 are what Lasagne 0.1's own test suite needs
(`make lasagne-suite`).
"""
import os
import subprocess
import sys

import numpy as np
import pytest
import theano
import theano.tensor as T
from lasagne.layers import DropoutLayer, InputLayer, MaxPool2DLayer, DenseLayer, get_output

from lasagne_caption import compat
from lasagne_caption.errors import run_cli


def _python(code, **env):
    environ = dict(os.environ, **env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=environ, timeout=300)


def test_1_blas_flags_filled_in_and_theano_imports():
    # without the layer, theano-pymc dies probing numpy.distutils for BLAS
    bare = _python("import theano", THEANO_FLAGS="")
    assert bare.returncode != 0 and "blas_opt_info" in bare.stderr
    fixed = _python("import lasagne_caption, theano; print(theano.config.blas__ldflags)",
                    THEANO_FLAGS="")
    assert fixed.returncode == 0, fixed.stderr
    assert fixed.stdout.strip() == compat.blas_ldflags()


def test_user_flags_are_kept():
    out = _python("import lasagne_caption, theano; print(theano.config.floatX)",
                  THEANO_FLAGS="floatX=float64")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "float64"


def test_defaults_float32_and_persistent_compile_dir():
    assert theano.config.floatX == "float32"
    assert theano.config.compiledir.startswith(compat.cache_dir()) or \
        "base_compiledir" in os.environ.get("THEANO_FLAGS", "")


def test_2_dropout_uses_renamed_random_streams():
    x = T.matrix()
    out = get_output(DropoutLayer(InputLayer((None, 1000), x), p=0.5))
    dropped = theano.function([x], out)(np.ones((4, 1000), "float32"))
    assert 0.4 < (dropped == 0).mean() < 0.6
    assert set(np.unique(dropped)) <= {0.0, 2.0}


def test_3_max_pool_through_downsample_shim():
    x = T.tensor4()
    pooled = theano.function([x], get_output(MaxPool2DLayer(InputLayer((None, 1, 4, 4), x), 2)))
    image = np.arange(16, dtype="float32").reshape(1, 1, 4, 4)
    assert pooled(image)[0, 0].tolist() == [[5, 7], [13, 15]]


def test_4_get_output_with_expression_for_a_layer():
    l_in = InputLayer((None, 3))
    l_dense = DenseLayer(l_in, 2)
    x = T.matrix()
    out = get_output(l_dense, {l_in: x * 2})   # uses theano.gof.Variable inside Lasagne
    value = theano.function([x], out)(np.ones((1, 3), "float32"))
    expected = np.maximum(2 * np.ones((1, 3)) @ l_dense.W.get_value() + l_dense.b.get_value(), 0)
    np.testing.assert_allclose(value, expected, rtol=1e-5)


def test_5_scan_compiles_without_the_cython_extension():
    assert sys.modules["theano.scan.scan_perform_ext"] is None
    x = T.vector()
    total, _ = theano.scan(lambda v, acc: acc + v, sequences=x, outputs_info=T.constant(0.0))
    cumsum = theano.function([x], total)
    np.testing.assert_allclose(cumsum(np.arange(5, dtype="float32")), [0, 1, 3, 6, 10])


def test_5_scan_checks_reused_buffers_by_pointer_with_the_same_results():
    from theano.scan.op import Scan
    perform = Scan.perform
    assert perform.pointer_reuse_checks and compat._patch_scan_reuse_checks()
    # a scan whose carried state and per-step outputs are written into the
    # buffers scan hands the inner function (the case the check is for), and
    # whose carry is only read at the end
    x, init = T.matrix(), T.tensor3()

    def step(row, acc):
        new = acc + row.dimshuffle('x', 'x', 0)
        return new, T.tanh(new).sum(axis=2)

    (accs, sums), _ = theano.scan(step, sequences=x, outputs_info=[init, None])
    ours_f = theano.function([x, init], [accs[-1], sums])
    try:
        Scan.perform = perform.theano_perform     # theano's own method, bound at compile
        theirs_f = theano.function([x, init], [accs[-1], sums])
    finally:
        Scan.perform = perform
    for f, method in ((ours_f, perform), (theirs_f, perform.theano_perform)):
        assert [t.perform.__func__ for t in f.fn.thunks
                if isinstance(getattr(getattr(t, "perform", None), "__self__", None), Scan)
                ] == [method]
    rng = np.random.RandomState(0)
    args = rng.randn(6, 7).astype("float32"), rng.randn(4, 5, 7).astype("float32")
    ours, theirs = ours_f(*args), theirs_f(*args)
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(ours[0], args[1] + args[0].sum(axis=0), rtol=1e-5)


def test_6_theano_variable_is_the_graph_variable():
    assert theano.Variable is theano.graph.basic.Variable
    assert isinstance(T.matrix(), theano.Variable)
    variable = theano.Variable(T.matrix().type)
    assert get_output(InputLayer((3, 2)), variable) is variable   # passes through
    typed = T.matrix()                                # types still check test values
    with pytest.raises(TypeError):
        typed.tag.test_value = np.zeros(3, "float32")


def test_7_gof_graph_is_same_graph_on_lasagne_aggregate():
    import theano.gof.graph
    from lasagne.objectives import aggregate

    assert theano.gof.graph.Variable is theano.graph.basic.Variable
    x, w = T.matrix("x"), T.matrix("w")
    assert theano.gof.graph.is_same_graph(aggregate(x, w, mode="sum"), (x * w).sum())
    assert not theano.gof.graph.is_same_graph(aggregate(x, w, mode="sum"), (x * w).mean())


def test_8_scan_module_scan_utils_for_lasagne_regularization():
    from lasagne.regularization import apply_penalty, l2
    from theano.scan_module.scan_utils import equal_computations

    a, b = T.vector(), T.matrix()
    assert equal_computations([apply_penalty([a, b], l2)], [sum([l2(a), l2(b)])])
    assert not equal_computations([apply_penalty(a, l2)], [(a ** 3).sum()])
    assert theano.scan_module.scan is theano.scan


@pytest.mark.parametrize("python,numpy_version,fragment", [
    ((3, 12), "1.23.5", "CPython 3.9 to 3.11"),
    ((3, 8), "1.23.5", "CPython 3.9 to 3.11"),
    ((3, 11), "2.1.0", "numpy 1.23"),
])
def test_unsupported_versions_get_one_line(python, numpy_version, fragment):
    with pytest.raises(compat.UnsupportedEnvironment) as info:
        compat.check_versions(python, numpy_version)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_supported_versions_pass():
    compat.check_versions((3, 11), "1.23.5")


def test_cli_prints_the_version_error_as_one_line(capsys):
    def main(argv):
        compat.check_versions((3, 12), "1.23.5")

    with pytest.raises(SystemExit) as info:
        run_cli(main)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: lasagne-caption needs CPython") and err.count("\n") == 1
