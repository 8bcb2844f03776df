"""The fused depthwise op (C code) against its numpy reference and Theano's grouped convolution.

Float32 tolerances (rtol 1e-4, atol 1e-5) leave room for another CPU's
rounding (the C code may use FMA, numpy does not); a fake-quantised output
may differ by one quantisation step where the value sits on a rounding
boundary, so those tests bound the difference by the step and count the
elements that differ.
"""
import numpy as np
import pytest
import theano
import theano.tensor as T
from theano.compile.mode import Mode

from lasagne_caption.encoders.layers import tf_same_padding
from lasagne_caption.encoders.ops import ConvNHWC, DepthwiseConv2DNHWC

PY_MODE = Mode(linker="py", optimizer="fast_compile")   # perform(), the numpy reference
RTOL, ATOL = 1e-4, 1e-5


def _data(n, h, w, c, k=3, seed=0):
    rng = np.random.RandomState(seed)
    x = rng.randn(n, h, w, c).astype("float32")
    wt = (rng.randn(c, 1, k, k) * 0.5).astype("float32")
    b = rng.randn(c).astype("float32")
    return x, wt, b


def _same_pads(h, w, k, s):
    return tf_same_padding(h, k, s) + tf_same_padding(w, k, s)


def _compile(op, mode=None):
    x, w, b = T.tensor4(), T.tensor4(), T.vector()
    return theano.function([x, w, b], op(x, w, b), mode=mode)


def _groups_reference(x_nhwc, w, b, stride, pads, activation):
    """Theano's conv2d(num_groups=C) on the padded NCHW input (the toolkit's reference path)."""
    t, bo, l, r = pads
    x = np.pad(x_nhwc.transpose(0, 3, 1, 2), ((0, 0), (0, 0), (t, bo), (l, r)))
    xv, wv = T.tensor4(), T.tensor4()
    c = x.shape[1]
    out = T.nnet.conv2d(xv, wv, filter_flip=False, subsample=(stride, stride), num_groups=c,
                        filter_shape=(c, 1) + w.shape[2:])
    y = theano.function([xv, wv], out)(x, w) + b[None, :, None, None]
    if activation == "relu6":
        y = np.clip(y, 0, 6)
    return y.transpose(0, 2, 3, 1)


CASES = [  # (n, h, w, c, stride): odd and even sizes, channels around the 8- and 32-lane blocks
    (2, 7, 9, 1, 1), (1, 8, 8, 3, 2), (3, 5, 5, 8, 1), (2, 9, 7, 13, 2), (1, 6, 10, 32, 1),
    (2, 11, 11, 40, 2), (1, 14, 14, 96, 2), (1, 4, 4, 72, 1), (1, 1, 1, 16, 1), (1, 2, 3, 9, 2)]


@pytest.mark.parametrize("n, h, w, c, stride", CASES)
@pytest.mark.parametrize("activation", ["linear", "relu6"])
def test_c_code_matches_numpy_and_grouped_conv(n, h, w, c, stride, activation):
    x, wt, b = _data(n, h, w, c, seed=h * 100 + c)
    pads = _same_pads(h, w, 3, stride)
    op = DepthwiseConv2DNHWC(stride, pads, activation)
    got = _compile(op)(x, wt, b)
    numpy_ref = _compile(op, PY_MODE)(x, wt, b)
    groups = _groups_reference(x, wt, b, stride, pads, activation)
    oh, ow = (h + stride - 1) // stride, (w + stride - 1) // stride
    assert got.shape == numpy_ref.shape == groups.shape == (n, oh, ow, c)
    np.testing.assert_allclose(got, numpy_ref, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(got, groups, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("pads, k", [((0, 0, 0, 0), 3), ((2, 0, 1, 3), 3), ((1, 1, 1, 1), 5),
                                     ((0, 1, 0, 1), 2)])
def test_other_kernels_and_asymmetric_padding(pads, k):
    x, wt, b = _data(2, 9, 8, 24, k=k, seed=k)
    for stride in (1, 2, 3):
        op = DepthwiseConv2DNHWC(stride, pads, "relu")
        got = _compile(op)(x, wt, b)
        np.testing.assert_allclose(got, _compile(op, PY_MODE)(x, wt, b), rtol=RTOL, atol=ATOL)
        assert got.shape[1:3] == op.output_size(9, 8, k, k)
        assert got.min() >= 0


def test_non_contiguous_inputs():
    x, wt, b = _data(2, 8, 8, 16, seed=3)
    xv, wv, bv = T.tensor4(), T.tensor4(), T.vector()
    op = DepthwiseConv2DNHWC(1, (1, 1, 1, 1), "relu6")
    # NCHW input viewed as NHWC, weights and bias from strided views
    f = theano.function([xv, wv, bv], op(xv.dimshuffle(0, 2, 3, 1), wv.dimshuffle(1, 0, 2, 3),
                                         bv[::2]))
    got = f(np.ascontiguousarray(x.transpose(0, 3, 1, 2)),
            np.ascontiguousarray(wt.transpose(1, 0, 2, 3)), np.repeat(b, 2))
    np.testing.assert_allclose(got, _compile(op, PY_MODE)(x, wt, b), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("scale, zero_point", [(0.0235294, 0), (0.05, 128), (0.3, 17)])
def test_fake_quantisation_matches_the_layer_formula(scale, zero_point):
    from lasagne_caption.encoders.layers import FakeQuantLayer
    from lasagne.layers import InputLayer, get_output
    x, wt, b = _data(2, 9, 9, 48, seed=7)
    x *= 3
    op = DepthwiseConv2DNHWC(2, _same_pads(9, 9, 3, 2), "relu6", (scale, zero_point, 0, 255))
    got = _compile(op)(x, wt, b)
    plain = _compile(DepthwiseConv2DNHWC(2, _same_pads(9, 9, 3, 2), "relu6"))(x, wt, b)
    inp = InputLayer((None, 5, 5, 48))
    layer_quant = theano.function([inp.input_var],
                                  get_output(FakeQuantLayer(inp, scale, zero_point)))(plain)
    numpy_ref = _compile(op, PY_MODE)(x, wt, b)
    grid = (got / np.float32(scale)) + zero_point
    assert np.abs(grid - np.round(grid)).max() < 1e-3          # on the uint8 grid
    assert grid.min() >= -1e-3 and grid.max() <= 255 + 1e-3
    for ref in (layer_quant, numpy_ref):
        diff = np.abs(got - ref)
        assert diff.max() <= scale * 1.001                      # at most one step
        assert (diff > ATOL).mean() < 0.01                      # and rarely


def test_float64_uses_numpy():
    x, wt, b = (a.astype("float64") for a in _data(1, 5, 5, 4))
    xv, wv, bv = T.dtensor4(), T.dtensor4(), T.dvector()
    op = DepthwiseConv2DNHWC(1, (1, 1, 1, 1), "linear")
    got = theano.function([xv, wv, bv], op(xv, wv, bv))(x, wt, b)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, _groups_reference(x.astype("float32"), wt.astype("float32"),
                                                      b.astype("float32"), 1, (1, 1, 1, 1),
                                                      "linear"), rtol=RTOL, atol=ATOL)


def test_bad_shapes_and_options():
    x, wt, b = _data(1, 5, 5, 4)
    f = _compile(DepthwiseConv2DNHWC(1, (1, 1, 1, 1)))
    with pytest.raises(ValueError, match="channels"):
        f(x, wt[:3], b[:3])
    with pytest.raises(ValueError, match="does not fit"):
        f(x[:, :1, :1], np.ones((4, 1, 5, 5), "float32"), b)
    with pytest.raises(ValueError):
        DepthwiseConv2DNHWC(0)
    with pytest.raises(ValueError):
        DepthwiseConv2DNHWC(1, activation="tanh")
    with pytest.raises(TypeError):
        DepthwiseConv2DNHWC(1)(T.matrix(), T.tensor4(), T.vector())


def test_no_gradient_through_the_op_but_above_it():
    x, w, b = T.tensor4(), T.tensor4(), T.vector()
    y = DepthwiseConv2DNHWC(1, (1, 1, 1, 1))(x, w, b)
    with pytest.raises(Exception, match="forward only|not implemented"):
        theano.function([x, w, b], T.grad(y.sum(), w))
    # a layer above the frozen op still gets its gradient (fine-tuning the last layers)
    v = theano.shared(np.ones(4, "float32"))
    g = theano.function([x, w, b], T.grad((y * v).sum(), v))
    xv, wt, bv = _data(1, 5, 5, 4)
    expected = _compile(DepthwiseConv2DNHWC(1, (1, 1, 1, 1)))(xv, wt, bv).sum(axis=(0, 1, 2))
    np.testing.assert_allclose(g(xv, wt, bv), expected, rtol=RTOL, atol=1e-4)


def test_props_make_ops_equal_and_merge():
    a = DepthwiseConv2DNHWC(2, (0, 1, 0, 1), "relu6", (0.1, 3, 0, 255))
    b = DepthwiseConv2DNHWC(2, [0, 1, 0, 1], "relu6", (0.1, 3.0, 0.0, 255.0))
    assert a == b and hash(a) == hash(b)
    assert a != DepthwiseConv2DNHWC(2, (0, 1, 0, 1), "relu6")
    assert "stride=2" in str(a)


# ---- ConvNHWC: sgemm (or the small-K loop) with the fused epilogue

def _conv_data(n, h, w, ci, co, k, seed=0):
    rng = np.random.RandomState(seed)
    return (rng.randn(n, h, w, ci).astype("float32"),
            (rng.randn(co, ci, k, k) / np.sqrt(ci * k * k)).astype("float32"),
            rng.randn(co).astype("float32"))


def _corrmm_reference(x_nhwc, w, b, stride, pads):
    """Theano's conv2d (CorrMM, no flip) on the padded NCHW input, + bias, as NHWC."""
    t, bo, l, r = pads
    x = np.pad(x_nhwc.transpose(0, 3, 1, 2), ((0, 0), (0, 0), (t, bo), (l, r)))
    xv, wv = T.tensor4(), T.tensor4()
    out = T.nnet.conv2d(xv, wv, filter_flip=False, subsample=(stride, stride))
    y = theano.function([xv, wv], out)(x, w) + b[None, :, None, None]
    return y.transpose(0, 2, 3, 1)


def _compile_conv(op, residual=False, mode=None):
    x, w, b, r = T.tensor4(), T.tensor4(), T.vector(), T.tensor4()
    if residual:
        return theano.function([x, w, b, r], op(x, w, b, r), mode=mode)
    f = theano.function([x, w, b], op(x, w, b), mode=mode)
    return lambda x, w, b, r=None: f(x, w, b)


CONV_CASES = [  # (n, h, w, ci, co): K = ci below and above SMALL_K, co around the 8/24 tiles
    (2, 5, 7, 16, 96), (1, 6, 6, 24, 144), (2, 3, 5, 3, 5), (1, 7, 7, 32, 13), (3, 4, 4, 144, 24),
    (1, 5, 5, 320, 100), (1, 1, 1, 8, 8), (2, 9, 3, 1, 40)]


@pytest.mark.parametrize("n, h, w, ci, co", CONV_CASES)
@pytest.mark.parametrize("activation", ["linear", "relu6"])
def test_1x1_conv_matches_numpy_and_corrmm(n, h, w, ci, co, activation):
    from lasagne_caption.encoders import ops
    x, wt, b = _conv_data(n, h, w, ci, co, 1, seed=ci + co)
    op = ConvNHWC(1, (0, 0, 0, 0), activation)
    got = _compile_conv(op)(x, wt, b)
    ref = _corrmm_reference(x, wt, b, 1, (0, 0, 0, 0))
    if activation == "relu6":
        ref = np.clip(ref, 0, 6)
    assert got.shape == (n, h, w, co)
    np.testing.assert_allclose(got, ref, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(got, _compile_conv(op, mode=PY_MODE)(x, wt, b), rtol=RTOL,
                               atol=ATOL)
    assert ops.SMALL_K >= 16     # both the small-K loop and sgemm are among the cases


@pytest.mark.parametrize("n, h, w, ci, co, k, stride", [
    (2, 224, 224, 3, 32, 3, 2), (1, 9, 8, 5, 12, 3, 1), (2, 7, 7, 4, 9, 2, 2),
    (1, 6, 5, 2, 3, 5, 3)])
def test_kxk_conv_with_same_padding_and_input_affine(n, h, w, ci, co, k, stride):
    rng = np.random.RandomState(k)
    x = rng.randint(0, 256, (n, h, w, ci)).astype("float32")      # uint8 values, as the photos
    _, wt, b = _conv_data(n, h, w, ci, co, k, seed=k)
    pads = _same_pads(h, w, k, stride)
    op = ConvNHWC(stride, pads, "relu6", input_affine=(1.0 / 128, 128.0))
    got = _compile_conv(op)(x, wt, b)
    ref = np.clip(_corrmm_reference((x - 128) / np.float32(128), wt, b, stride, pads), 0, 6)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(got, _compile_conv(op, mode=PY_MODE)(x, wt, b), rtol=RTOL,
                               atol=ATOL)


@pytest.mark.parametrize("ci", [16, 96])
def test_residual_sum_and_both_quantisations(ci):
    x, wt, b = _conv_data(2, 6, 5, ci, 24, 1, seed=ci)
    res = np.random.RandomState(1).randn(2, 6, 5, 24).astype("float32")
    q1, q2 = (0.05, 128, 0, 255), (0.07, 120, 0, 255)
    op = ConvNHWC(1, (0, 0, 0, 0), "linear", q1, q2)
    got = _compile_conv(op, residual=True)(x, wt, b, res)
    numpy_ref = _compile_conv(op, residual=True, mode=PY_MODE)(x, wt, b, res)
    from lasagne_caption.encoders.ops import fake_quant_numpy
    plain = _corrmm_reference(x, wt, b, 1, (0, 0, 0, 0))
    layer_ref = fake_quant_numpy(fake_quant_numpy(plain, q1) + res, q2)
    for ref in (numpy_ref, layer_ref):
        diff = np.abs(got - ref)
        assert diff.max() <= 2 * 0.07 * 1.001       # a flipped rounding: a step or two
        assert (diff > ATOL).mean() < 0.01
    unquantised = _compile_conv(ConvNHWC(1), residual=True)(x, wt, b, res)
    np.testing.assert_allclose(unquantised, plain + res, rtol=RTOL, atol=ATOL)


def test_threads_and_batches_do_not_change_the_numbers():
    """Bit for bit: OpenMP on or off, OpenBLAS on 1 or 2 threads, one image or a batch."""
    import ctypes
    import ctypes.util
    x, wt, b = _conv_data(3, 10, 10, 48, 40, 1, seed=5)
    x3, w3, b3 = _conv_data(3, 12, 12, 3, 16, 3, seed=6)
    xd, wd, bd = _data(3, 9, 9, 40)
    cases = [((x, wt, b), ConvNHWC(1, activation="relu6"), _compile_conv),
             ((x3, w3, b3), ConvNHWC(2, (0, 1, 0, 1), "relu6"), _compile_conv),
             ((xd, wd, bd), DepthwiseConv2DNHWC(2, (0, 1, 0, 1), "relu6"), _compile)]
    name = ctypes.util.find_library("openblas")
    blas = ctypes.CDLL(name) if name else None      # the library Theano's modules link
    for args, op, compile_ in cases:
        props = {k: getattr(op, k) for k in op.__props__}
        f, f_omp = compile_(type(op)(openmp=False, **props)), compile_(type(op)(openmp=True,
                                                                                  **props))
        ref = f(*args)
        np.testing.assert_array_equal(f_omp(*args), ref)
        np.testing.assert_array_equal(f(args[0][1:2], *args[1:])[0], ref[1])
        if blas is not None:
            saved = blas.openblas_get_num_threads()
            try:
                blas.openblas_set_num_threads(2)
                np.testing.assert_array_equal(f(*args), ref)
                assert blas.openblas_get_num_threads() == 2       # restored after the op
            finally:
                blas.openblas_set_num_threads(saved)


def test_conv_bad_inputs():
    f = _compile_conv(ConvNHWC())
    x, wt, b = _conv_data(1, 4, 4, 8, 6, 1)
    with pytest.raises(ValueError, match="channels"):
        f(x, wt[:, :5], b)
    with pytest.raises(ValueError, match="residual"):
        _compile_conv(ConvNHWC(), residual=True)(x, wt, b, np.zeros((1, 4, 4, 5), "float32"))
    with pytest.raises(ValueError):
        ConvNHWC(1, residual_quant=(0.1, 0, 0, 255))(T.tensor4(), T.tensor4(), T.vector())
    with pytest.raises(ValueError):
        ConvNHWC(1, quant=(0, 0, 0, 255))
    with pytest.raises(TypeError):
        ConvNHWC()(T.matrix(), T.tensor4(), T.vector())


def test_affine_pad_op_alone():
    from lasagne_caption.encoders.ops import AffinePadNHWC
    x = np.arange(2 * 3 * 2 * 1, dtype="float32").reshape(2, 3, 2, 1)
    xv = T.tensor4()
    y = theano.function([xv], AffinePadNHWC((0, 1, 2, 0), (0.5, 1.0))(xv))(x)
    assert y.shape == (2, 4, 4, 1)
    np.testing.assert_array_equal(y[:, :3, 2:], (x - 1) * 0.5)
    assert not y[:, 3].any() and not y[:, :, :2].any()
