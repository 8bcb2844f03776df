"""The encoder layers' fast path (NHWC C ops, folded layers) against the reference layers.

``DepthwiseConv2DLayer(impl="fused")`` against ``impl="groups"`` (Theano's
grouped ``conv2d``), :class:`GemmConv2DLayer` against Lasagne's
``Conv2DLayer`` (``CorrMM``), the folding of fake quantisation, residual
sums, input normalisation and padding into the C ops, and the whole
MobileNetV2 encoder (the default, fast path) against its reference
implementation (``depthwise_impl="groups", conv_impl="corrmm"``) on real
photos. Float32 tolerances: rtol 1e-4 / atol 1e-5 for plain float math; a
fake-quantised value may move by a quantisation step where a different
summation order crosses a rounding boundary (see each test).
"""
import numpy as np
import pytest
import theano
import lasagne
from lasagne.layers import InputLayer, Conv2DLayer, get_output
from lasagne.layers import ElemwiseSumLayer as LasagneSumLayer

from lasagne_caption.encoders import get_encoder
from lasagne_caption.encoders.layers import (DepthwiseConv2DLayer, ElemwiseSumLayer,
                                             FakeQuantLayer, GemmConv2DLayer, GlobalPoolLayer,
                                             ScaleShiftLayer, TFSamePadLayer, conv2d_noflip,
                                             relu6, nchw_view, as_nhwc)
from lasagne_caption.encoders.ops import ConvNHWC, DepthwiseConv2DNHWC
from lasagne_caption.encoders.preprocess import load_image

RTOL, ATOL = 1e-4, 1e-5
N_FLICKR = 24


def _ops(f):
    return [node.op for node in f.maker.fgraph.toposort()]


def _randn(*shape, seed=0, scale=1.0):
    return (np.random.RandomState(seed).randn(*shape) * scale).astype("float32")


@pytest.mark.parametrize("shape, stride", [((2, 8, 7, 9), 1), ((1, 16, 8, 8), 2),
                                           ((2, 40, 11, 11), 2), ((1, 3, 5, 6), 1)])
@pytest.mark.parametrize("nonlinearity", [relu6, lasagne.nonlinearities.identity,
                                          lasagne.nonlinearities.rectify,
                                          lasagne.nonlinearities.tanh])
def test_fused_depthwise_layer_matches_groups(shape, stride, nonlinearity):
    inp = InputLayer((None,) + shape[1:])
    w, b = _randn(shape[1], 1, 3, 3, seed=1, scale=0.5), _randn(shape[1], seed=2)
    outs = [get_output(DepthwiseConv2DLayer(inp, 3, stride, W=w, b=b, nonlinearity=nonlinearity,
                                            impl=impl)) for impl in ("fused", "groups")]
    x = _randn(*shape, seed=3)
    fused, groups = theano.function([inp.input_var], outs)(x)
    assert fused.shape == groups.shape == (shape[0], shape[1], -(-shape[2] // stride),
                                           -(-shape[3] // stride))
    np.testing.assert_allclose(fused, groups, rtol=RTOL, atol=ATOL)


def test_fake_quant_folds_into_the_fused_depthwise_op():
    inp = InputLayer((None, 24, 9, 9))
    w, b = _randn(24, 1, 3, 3, seed=1), _randn(24, seed=2)
    scale, zero = 0.0235294, 0
    outs = [get_output(FakeQuantLayer(DepthwiseConv2DLayer(inp, 3, 2, W=w, b=b, nonlinearity=relu6,
                                                           impl=impl), scale, zero))
            for impl in ("fused", "groups")]
    f_fused = theano.function([inp.input_var], outs[0])
    ops = _ops(f_fused)
    dw = [op for op in ops if isinstance(op, DepthwiseConv2DNHWC)]
    assert len(dw) == 1 and dw[0].quant[:2] == (scale, zero)
    assert not any(isinstance(op, theano.tensor.Elemwise) for op in ops)   # no separate pass
    x = _randn(2, 24, 9, 9, seed=3, scale=2)
    fused, groups = f_fused(x), theano.function([inp.input_var], outs[1])(x)
    diff = np.abs(fused - groups)
    assert diff.max() <= scale * 1.001 and (diff > ATOL).mean() < 0.01   # a step, rarely


def test_gemm_conv_layer_folds_normalisation_and_padding():
    inp = InputLayer((None, 3, 32, 32))
    w, b = _randn(8, 3, 3, 3, seed=1, scale=0.3), _randn(8, seed=2)

    def first_conv(fast):
        norm = ScaleShiftLayer(inp, 1.0 / 128, 128.0, nhwc=fast)
        pad = TFSamePadLayer(norm, 3, 2)
        if fast:
            return GemmConv2DLayer(pad, 8, 3, stride=2, W=w, b=b, nonlinearity=relu6)
        return Conv2DLayer(pad, 8, 3, stride=2, pad=0, W=w, b=b, nonlinearity=relu6,
                           convolution=conv2d_noflip)

    f_fast = theano.function([inp.input_var], get_output(first_conv(True)))
    convs = [op for op in _ops(f_fast) if isinstance(op, ConvNHWC)]
    assert len(convs) == 1 and convs[0].pads == (0, 1, 0, 1)
    assert convs[0].input_affine == (1.0 / 128, 128.0)
    x = np.random.RandomState(0).randint(0, 256, (2, 3, 32, 32)).astype("float32")
    ref = theano.function([inp.input_var], get_output(first_conv(False)))(x)
    got = f_fast(x)
    assert got.shape == ref.shape == (2, 8, 16, 16)
    np.testing.assert_allclose(got, ref, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("channels_in", [16, 96])
def test_residual_block_folds_into_one_conv_op(channels_in):
    """project (1x1, linear) -> quant -> add(residual) -> quant, as MobileNetV2's blocks."""
    inp = InputLayer((None, channels_in, 6, 6))
    res_in = InputLayer((None, 24, 6, 6))
    w, b = _randn(24, channels_in, 1, 1, seed=1, scale=0.2), _randn(24, seed=2)
    q1, q2 = (0.05, 128), (0.07, 120)

    def block(fast):
        conv_class = GemmConv2DLayer if fast else Conv2DLayer
        kwargs = {} if fast else dict(convolution=conv2d_noflip)
        sum_class = ElemwiseSumLayer if fast else LasagneSumLayer
        conv = conv_class(inp, 24, 1, W=w, b=b, nonlinearity=None, **kwargs)
        return FakeQuantLayer(sum_class([FakeQuantLayer(conv, *q1), res_in]), *q2)

    x = _randn(2, channels_in, 6, 6, seed=3)
    r = _randn(2, 24, 6, 6, seed=4)
    # the residual arrives as the NCHW view of an NHWC array, as inside the network
    res_var = res_in.input_var
    fast_out = get_output(block(True), {res_in: nchw_view(as_nhwc(res_var))})
    f_fast = theano.function([inp.input_var, res_var], fast_out)
    convs = [op for op in _ops(f_fast) if isinstance(op, ConvNHWC)]
    assert len(convs) == 1 and convs[0].quant[:2] == q1 and convs[0].residual_quant[:2] == q2
    ref = theano.function([inp.input_var, res_var], get_output(block(False)))(x, r)
    diff = np.abs(f_fast(x, r) - ref)
    assert diff.max() <= 2 * q2[0] * 1.001 and (diff > ATOL).mean() < 0.01


def test_global_pool_of_a_view_and_of_nchw():
    inp = InputLayer((None, 5, 3, 4))
    x = _randn(2, 5, 3, 4, seed=1)
    ref = x.mean(axis=(2, 3))
    view = get_output(GlobalPoolLayer(inp), {inp: nchw_view(as_nhwc(inp.input_var))})
    plain = get_output(GlobalPoolLayer(inp))
    for expr in (view, plain):
        np.testing.assert_allclose(theano.function([inp.input_var], expr)(x), ref, rtol=RTOL,
                                   atol=ATOL)


def test_fast_network_is_the_c_ops_and_has_the_same_layers(mobilenet_path):
    from lasagne_caption.encoders import mobilenet_v2 as m
    fast, ref = m.build_model(), m.build_model(depthwise_impl="groups", conv_impl="corrmm")
    assert list(fast) == list(ref)
    for name in fast:
        assert fast[name].output_shape == ref[name].output_shape, name
        assert [p.get_value().shape for p in fast[name].get_params()] == \
            [p.get_value().shape for p in ref[name].get_params()], name
    params, quant, input_quant = m.read_tflite_weights(mobilenet_path)
    net = m.build_model(fake_quant=quant)
    m.load_weights(net, params, input_quant)
    outputs = m.tap_outputs(net)
    f = theano.function([net["input"].input_var], [outputs[t] for t in m.TAP_SHAPES])
    names = [type(op).__name__ for op in _ops(f)]
    assert names.count("ConvNHWC") == 35 and names.count("DepthwiseConv2DNHWC") == 17
    assert not {"CorrMM", "Alloc", "IncSubtensor", "AffinePadNHWC"} & set(names)


def test_unknown_implementations_are_refused(mobilenet_path):
    from lasagne_caption.encoders import layers, mobilenet_v2 as m
    assert m.DEPTHWISE_IMPLS == layers.DEPTHWISE_IMPLS
    with pytest.raises(ValueError, match="conv_impl"):
        m.build_model(conv_impl="fft")
    with pytest.raises(ValueError, match="impl"):
        m.build_model(depthwise_impl="fft")
    with pytest.raises(ValueError, match="depthwise_impl"):
        get_encoder("mobilenet_v2", mobilenet_path, depthwise_impl="fft")


@pytest.fixture(scope="module")
def photos(flickr8k_dir, sample_paths):
    names = (flickr8k_dir / "codes" / "image_names.txt").read_text().split()[:N_FLICKR]
    return np.stack([load_image(flickr8k_dir / "images" / n) for n in names]
                    + [load_image(p) for p in sample_paths])


def _rows(a):
    return a.reshape(len(a), -1)


def _corr(a, b):
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    return (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))


def test_fast_encoder_matches_the_reference_implementation(mobilenet, mobilenet_reference,
                                                          photos):
    """Fake-quantised codes, 24 Flickr8k photos and the samples.

    Measured on 2026-11-27 (this machine): identical for most photos, the
    worst logits 3.3 % of the photo's largest logit apart (r 0.9988), top-1
    equal for all 55 checked and 200/200 Flickr8k photos
    (``benchmarks/encode_throughput.py``). The bounds leave room for another
    CPU's rounding, which moves values by quantisation steps.
    """
    assert mobilenet.depthwise_impl == "fused" and mobilenet.conv_impl == "gemm"
    fast = mobilenet.encode(photos, progress=False)
    ref = mobilenet_reference.encode(photos, progress=False)
    assert list(fast) == list(ref)
    np.testing.assert_array_equal(fast["logits"].argmax(1), ref["logits"].argmax(1))
    for tap in ("logits", "pool"):
        a, b = _rows(fast[tap]), _rows(ref[tap])
        rel = np.abs(a - b).max(1) / np.abs(b).max(1)
        assert rel.max() < 0.1 and np.median(rel) < 0.01, (tap, rel.max(), np.median(rel))
        assert _corr(a, b).min() > 0.995, tap
    for tap in fast:
        assert fast[tap].shape == ref[tap].shape and fast[tap].dtype == np.float32
        assert _corr(_rows(fast[tap]), _rows(ref[tap])).min() > 0.98, tap


def test_fast_float_encoder_matches_the_reference(mobilenet_path, photos):
    """Without fake quantisation only the summation order differs: measured < 1e-5 relative."""
    images = photos[::4]
    fast = get_encoder("mobilenet_v2", mobilenet_path, fake_quant=False).encode(
        images, progress=False)
    ref = get_encoder("mobilenet_v2", mobilenet_path, fake_quant=False, depthwise_impl="groups",
                      conv_impl="corrmm").encode(images, progress=False)
    np.testing.assert_array_equal(fast["logits"].argmax(1), ref["logits"].argmax(1))
    for tap in fast:
        a, b = _rows(fast[tap]), _rows(ref[tap])
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=1e-4 * np.abs(b).max(), err_msg=tap)


@pytest.mark.parametrize("nonlinearity, residual", [(relu6, False), (None, True),
                                                     (lasagne.nonlinearities.rectify, False)])
def test_gemm_conv_gradients_match_conv2d(nonlinearity, residual):
    """The 1x1 layers stay trainable: gradients w.r.t. W, b, the input and the residual."""
    inp = InputLayer((None, 12, 5, 6))
    res_in = InputLayer((None, 10, 5, 6))
    w, b = _randn(10, 12, 1, 1, seed=1, scale=0.5), _randn(10, seed=2)

    def layer(fast):
        if fast:
            conv = GemmConv2DLayer(inp, 10, 1, W=w.copy(), b=b.copy(), nonlinearity=nonlinearity)
        else:
            conv = Conv2DLayer(inp, 10, 1, W=w.copy(), b=b.copy(), nonlinearity=nonlinearity,
                               convolution=conv2d_noflip)
        if residual:
            conv = (ElemwiseSumLayer if fast else LasagneSumLayer)([conv, res_in])
        return conv

    x, r = _randn(2, 12, 5, 6, seed=3, scale=3), _randn(2, 10, 5, 6, seed=4)
    weights = _randn(2, 10, 5, 6, seed=5)
    res_view = nchw_view(as_nhwc(res_in.input_var))
    results = []
    for fast in (True, False):
        top = layer(fast)
        out = get_output(top, {res_in: res_view} if fast else {})
        loss = (out * weights).sum()
        params = top.input_layers[0].get_params() if residual else top.get_params()
        wrt = params + [inp.input_var] + ([res_in.input_var] if residual else [])
        f = theano.function([inp.input_var, res_in.input_var], theano.grad(loss, wrt),
                            on_unused_input="ignore")
        results.append(f(x, r))
    for got, ref in zip(*results):
        np.testing.assert_allclose(got, ref, rtol=RTOL, atol=1e-4)


def test_last_layers_of_the_fast_network_can_be_fine_tuned(mobilenet_path, photos):
    """Gradients w.r.t. Conv_1 and the logits layer (float network), fast path vs reference."""
    import theano.tensor as T
    from lasagne_caption.encoders import mobilenet_v2 as m
    params, _, input_quant = m.read_tflite_weights(mobilenet_path)
    x = np.asarray(photos[:2], np.float32).transpose(0, 3, 1, 2)
    labels = np.array([3, 500], "int32")
    grads = []
    for impls in ({}, dict(depthwise_impl="groups", conv_impl="corrmm")):
        net = m.build_model(**impls)
        m.load_weights(net, params, input_quant)
        logits = get_output(net["logits"], deterministic=True)
        loss = T.nnet.categorical_crossentropy(T.nnet.softmax(logits), labels).mean()
        wrt = net["Conv_1"].get_params() + net["Logits/Conv2d_1c_1x1"].get_params()
        grads.append(theano.function([net["input"].input_var], theano.grad(loss, wrt))(x))
    for got, ref in zip(*grads):
        assert np.abs(ref).max() > 0
        np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-4 * np.abs(ref).max())
