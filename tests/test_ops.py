"""The toolkit's Theano ops compute what Theano's own expressions compute.

SoftmaxNLL against Theano's softmax cross-entropy; LSTMCell (C code for
float32, numpy for float64), both output-gate variants, against the LSTM
step written in Theano expressions, values and gradients; the attention ops
against the same written with Theano expressions.
"""
import numpy as np
import pytest
import theano
import theano.tensor as T

from lasagne_caption.ops import LASAGNE_01, LSTM_VARIANTS, MASTER, LSTMCell, SoftmaxNLL


def test_values_and_gradients_match_theano():
    rng = np.random.RandomState(0)
    x_val = (rng.randn(7, 11) * 5).astype("float32")
    b_val = rng.randn(11).astype("float32")
    y_val = rng.randint(0, 11, 7).astype("int32")
    x, b, y = T.matrix(), T.vector(), T.ivector()
    w = T.vector()                       # weights make the upstream gradient non-trivial
    ours = T.sum(w * SoftmaxNLL()(x, b, y)[0])
    theirs = T.sum(w * T.nnet.categorical_crossentropy(T.nnet.softmax(x + b), y))
    f = theano.function([x, b, y, w], [ours, theirs] + T.grad(ours, [x, b]) + T.grad(theirs, [x, b]))
    weights = rng.rand(7).astype("float32")
    loss_a, loss_b, gx_a, gb_a, gx_b, gb_b = f(x_val, b_val, y_val, weights)
    np.testing.assert_allclose(loss_a, loss_b, rtol=1e-5)
    np.testing.assert_allclose(gx_a, gx_b, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(gb_a, gb_b, rtol=1e-4, atol=1e-6)


def test_large_logits_do_not_overflow():
    x = T.matrix()
    f = theano.function([x], SoftmaxNLL()(x, T.zeros((3,)), T.constant([0], dtype="int32"))[0])
    out = f(np.array([[1000.0, 0.0, -1000.0]], "float32"))
    np.testing.assert_allclose(out, [0.0], atol=1e-6)


def _lstm_cell_and_grads(dtype, fused, units, upstream, variant):
    """cell, hid and the gradients of sum(cell * dc + hid * dh) w.r.t. every input."""
    gates, c_prev = T.matrix(dtype=dtype), T.matrix(dtype=dtype)
    w_ci, w_cf, w_co = [T.vector(dtype=dtype) for _ in range(3)]
    inputs = [gates, c_prev, w_ci, w_cf, w_co]
    if fused:
        cell, hid = LSTMCell(variant)(*inputs)[:2]
    else:
        u = units
        ingate = T.nnet.sigmoid(gates[:, :u] + c_prev * w_ci)
        forgetgate = T.nnet.sigmoid(gates[:, u:2 * u] + c_prev * w_cf)
        cell = forgetgate * c_prev + ingate * T.tanh(gates[:, 2 * u:3 * u])
        if variant == MASTER:   # the peephole inside the sigmoid
            hid = T.nnet.sigmoid(gates[:, 3 * u:] + cell * w_co) * T.tanh(cell)
        else:                   # Lasagne 0.1: after it
            hid = (T.nnet.sigmoid(gates[:, 3 * u:]) + cell * w_co) * T.tanh(cell)
    d_cell, d_hid = (T.constant(g.astype(dtype)) for g in upstream)
    cost = T.sum(cell * d_cell) + T.sum(hid * d_hid)
    return theano.function(inputs, [cell, hid] + T.grad(cost, inputs))


@pytest.mark.parametrize("variant", LSTM_VARIANTS)
@pytest.mark.parametrize("dtype, rtol", [("float32", 1e-5), ("float64", 1e-12)])
def test_lstm_cell_matches_the_theano_expression(dtype, rtol, variant):
    rng = np.random.RandomState(0)
    batch, units = 7, 13
    values = [3 * rng.randn(batch, 4 * units), rng.randn(batch, units),
              rng.randn(units), rng.randn(units), rng.randn(units)]
    upstream = rng.randn(batch, units), rng.randn(batch, units)
    reference = _lstm_cell_and_grads("float64", False, units, upstream, variant)(*values)
    ours = _lstm_cell_and_grads(dtype, True, units, upstream, variant)(
        *[v.astype(dtype) for v in values])
    names = ["cell", "hid", "d gates", "d cell", "d w_ci", "d w_cf", "d w_co"]
    for name, a, b in zip(names, ours, reference):
        assert a.dtype == dtype
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol, err_msg=name)


def test_lstm_cell_nonlinearities_are_accurate_over_the_whole_range():
    # gates = (0, 0, x, 0), zero cell and peepholes: saved = (1/2, 1/2, tanh x, 1/2, tanh(tanh(x) / 2))
    x = np.concatenate([np.linspace(-30, 30, 20001), [-1e-6, 1e-6, -100, 100]]).astype("float32")
    gates = np.zeros((len(x), 4), "float32")
    gates[:, 2] = x
    zeros = np.zeros(1, "float32")
    f = theano.function([], LSTMCell()(gates, np.zeros((len(x), 1), "float32"),
                                       zeros, zeros, zeros)[2])
    saved = f()
    np.testing.assert_allclose(saved[:, [0, 1, 3]], 0.5, rtol=1e-7)
    np.testing.assert_allclose(saved[:, 2], np.tanh(x.astype("float64")), rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(saved[:, 4], np.tanh(np.tanh(x.astype("float64")) / 2), rtol=2e-6,
                               atol=1e-7)


@pytest.mark.parametrize("variant", LSTM_VARIANTS)
def test_lstm_cell_gradient_is_verified_numerically(variant):
    rng = np.random.RandomState(1)
    values = [rng.randn(3, 8), rng.randn(3, 2), rng.randn(2), rng.randn(2), rng.randn(2)]
    op = LSTMCell(variant)
    theano.gradient.verify_grad(lambda *a: T.sum(op(*a)[1]) + T.sum(op(*a)[0]), values, rng=rng)


def test_the_two_variants_differ_and_an_unknown_one_is_refused():
    rng = np.random.RandomState(2)
    values = [rng.randn(4, 12).astype("float32"), rng.randn(4, 3).astype("float32")] + \
        [rng.randn(3).astype("float32") for _ in range(3)]
    hid = {v: theano.function([], LSTMCell(v)(*values)[1])() for v in LSTM_VARIANTS}
    assert np.abs(hid[MASTER] - hid[LASAGNE_01]).max() > 1e-2
    with pytest.raises(ValueError, match="variant"):
        LSTMCell("0.2")


def test_lstm_cell_rejects_mismatched_shapes():
    gates, c_prev = T.matrix(), T.matrix()
    w = T.vector()
    f = theano.function([gates, c_prev, w], LSTMCell()(gates, c_prev, w, w, w)[1])
    with pytest.raises(ValueError, match="LSTMCell"):
        f(np.zeros((2, 12), "float32"), np.zeros((2, 4), "float32"), np.zeros(4, "float32"))


# -- AttentionScores: sum_a w_a tanh(P + s) over regions ------------------------
def _attention_inputs(seed=3, scale=5.0, shape=(3, 4, 7)):
    rng = np.random.RandomState(seed)
    n, regions, size = shape
    return [(scale * rng.randn(n, regions, size)).astype("float32"),
            (scale * rng.randn(n, size)).astype("float32"),
            rng.randn(size).astype("float32")]


def _attention_reference(P, s, w):
    return np.tanh(P.astype("float64") + s[:, None, :]).dot(w.astype("float64"))


@pytest.fixture(scope="module")
def attention_functions():
    """Scores and the gradients of ``sum(g * scores)``, by the op (float32, C code) and
    by Theano's own expression (float64)."""
    from lasagne_caption.ops import AttentionScores
    out = {}
    for name, dtype in (("op", "float32"), ("theano", "float64")):
        P, s, w = T.tensor3(dtype=dtype), T.matrix(dtype=dtype), T.vector(dtype=dtype)
        g = T.matrix(dtype=dtype)
        scores = (AttentionScores()(P, s, w) if name == "op"
                  else T.dot(T.tanh(P + s.dimshuffle(0, 'x', 1)), w))
        out[name] = theano.function([P, s, w, g], [scores] + T.grad(T.sum(g * scores), [P, s, w]))
    return out


def test_attention_scores_equal_the_reference_with_their_gradients(attention_functions):
    from lasagne_caption.ops import AttentionScores, AttentionScoresGrad
    f = attention_functions["op"]
    ops = {type(node.op) for node in f.maker.fgraph.toposort()}
    assert {AttentionScores, AttentionScoresGrad} <= ops      # not optimised away
    P, s, w = _attention_inputs()
    g = np.random.RandomState(4).randn(3, 4).astype("float32")
    ours = f(P, s, w, g)
    theirs = attention_functions["theano"](P, s, w, g)
    assert all(a.dtype == np.float32 for a in ours)
    np.testing.assert_allclose(ours[0], _attention_reference(P, s, w), rtol=1e-5, atol=1e-5)
    for name, a, b in zip(["scores", "dP", "ds", "dw"], ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=name)
    # not all saturated: the values of size ~5 leave gradients to check
    assert np.abs(ours[1]).max() > 0.1


@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 5, 3), (3, 2, 17)])
def test_attention_scores_any_shape_and_a_reused_output(attention_functions, shape):
    f = attention_functions["op"]
    for seed in (0, 1):   # a second call of the same shape reuses the previous output
        P, s, w = _attention_inputs(seed, shape=shape)
        g = np.ones(shape[:2], "float32")
        scores, dP, ds, dw = f(P, s, w, g)
        assert scores.shape == shape[:2] and dP.shape == shape and ds.shape == shape[::2]
        np.testing.assert_allclose(scores, _attention_reference(P, s, w), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(ds, dP.sum(axis=1), rtol=1e-5, atol=1e-5)


def test_attention_scores_gradient_adds_to_a_given_accumulator():
    from lasagne_caption.ops import AttentionScoresGrad
    P, s, w = _attention_inputs(8, scale=1.0, shape=(3, 5, 6))
    rng = np.random.RandomState(9)
    g, acc = rng.randn(3, 5).astype("float32"), rng.randn(3, 5, 6).astype("float32")
    functions = {}
    for dtype in ("float64", "float32"):     # perform() and the C code
        ins = [T.tensor3(dtype=dtype), T.matrix(dtype=dtype), T.vector(dtype=dtype),
               T.matrix(dtype=dtype), T.tensor3(dtype=dtype)]
        f = functions[dtype] = theano.function(ins, list(AttentionScoresGrad()(*ins))
                                               + list(AttentionScoresGrad()(*ins[:4])))
        added, ds, dw, plain, ds_plain, dw_plain = f(*[x.astype(dtype) for x in (P, s, w, g, acc)])
        np.testing.assert_allclose(added, acc + plain, rtol=1e-6, atol=1e-6)
        # (equal up to rounding: gcc may fuse the add into a multiply-add)
        np.testing.assert_allclose(ds, ds_plain, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(dw, dw_plain, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="dP_in must be"):
        functions["float32"](P, s, w, g, acc[:, :4])


def test_attention_scores_gradient_is_verified_numerically():
    from lasagne_caption.ops import AttentionScores
    rng = np.random.RandomState(5)
    # float32 (the C code): sizes ~5 with some values near 0, where tanh is not flat
    P, s, w = _attention_inputs(6, scale=1.0, shape=(2, 3, 4))
    P[0] *= 5
    theano.gradient.verify_grad(lambda *a: AttentionScores()(*a), [P, s, w], rng=rng)
    # float64 runs perform(): the same gradient, at float64 precision
    theano.gradient.verify_grad(lambda *a: AttentionScores()(*a),
                                [v.astype("float64") for v in (5 * P, s, w)], rng=rng)


def test_attention_scores_saturate_without_overflow(attention_functions):
    f = attention_functions["op"]
    w = np.array([0.5, -1.0, 2.0, 0.25, -0.75], "float32")
    P = np.zeros((2, 3, 5), "float32")
    P[0], P[1] = 50, -50
    P[1, 2, :2] = 1e4                 # mixed signs inside one region
    s = np.zeros((2, 5), "float32")
    s[1, 3:] = -1e4
    scores, dP, ds, dw = f(P, s, w, np.ones((2, 3), "float32"))
    assert all(np.isfinite(a).all() for a in (scores, dP, ds, dw))
    np.testing.assert_allclose(scores[0], w.sum(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scores[1, :2], -w.sum(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scores[1, 2], w[:2].sum() - w[2:].sum(), rtol=1e-5, atol=1e-6)
    assert np.abs(dP).max() < 1e-5 and np.abs(ds).max() < 1e-5
    # dw = the sum over images and regions of tanh = +-1: 3 - 2 + region (1, 2)'s signs
    np.testing.assert_allclose(dw, [2, 2, 0, 0, 0], rtol=1e-5, atol=1e-5)


def test_attention_scores_reject_mismatched_shapes(attention_functions):
    f = attention_functions["op"]
    P, s, w = _attention_inputs(shape=(2, 3, 4))
    with pytest.raises(ValueError, match="AttentionScores: P must be"):
        f(P, s[:, :3], w, np.ones((2, 3), "float32"))


# -- WeightedSum and RegionDot: one pass over the regions ------------------------
@pytest.fixture(scope="module")
def region_functions():
    """WeightedSum, RegionDot and the gradients of ``sum(g * out)``, by the ops
    (float32, C code) and by ``T.batched_dot`` (float64)."""
    from lasagne_caption.ops import RegionDot, WeightedSum
    out = {}
    for name, dtype in (("op", "float32"), ("theano", "float64")):
        alpha, a, v = T.matrix(dtype=dtype), T.tensor3(dtype=dtype), T.matrix(dtype=dtype)
        g_sum, g_dot = T.matrix(dtype=dtype), T.matrix(dtype=dtype)
        if name == "op":
            weighted, dots = WeightedSum()(alpha, a), RegionDot()(a, v)
        else:
            weighted, dots = T.batched_dot(alpha, a), T.batched_dot(a, v)
        cost = T.sum(g_sum * weighted) + T.sum(g_dot * dots)
        out[name] = theano.function([alpha, a, v, g_sum, g_dot],
                                    [weighted, dots] + T.grad(cost, [alpha, a, v]))
    return out


@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 4, 7), (2, 49, 37)])
def test_weighted_sum_and_region_dot_equal_batched_dot(region_functions, shape):
    from lasagne_caption.ops import RegionDot, WeightedSum
    f = region_functions["op"]
    assert {WeightedSum, RegionDot} <= {type(node.op) for node in f.maker.fgraph.toposort()}
    n, regions, size = shape
    rng = np.random.RandomState(sum(shape))
    for _ in range(2):     # the second call reuses the first one's outputs
        args = [rng.rand(n, regions), rng.randn(n, regions, size), rng.randn(n, size),
                rng.randn(n, size), rng.randn(n, regions)]
        ours = f(*[x.astype("float32") for x in args])
        theirs = region_functions["theano"](*args)
        assert all(x.dtype == np.float32 for x in ours)
        for what, x, y in zip(["sum", "dots", "d alpha", "d a", "d v"], ours, theirs):
            assert x.shape == y.shape, what
            np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-4, err_msg=what)


def test_weighted_sum_and_region_dot_gradients_are_verified_numerically():
    from lasagne_caption.ops import RegionDot, WeightedSum
    rng = np.random.RandomState(7)
    alpha, a, v = rng.rand(2, 3), rng.randn(2, 3, 4), rng.randn(2, 4)
    for x in ((alpha, a), (alpha.astype("float64"), a.astype("float64"))):
        theano.gradient.verify_grad(lambda *i: WeightedSum()(*i),
                                    [y.astype("float32") for y in x], rng=rng)
    theano.gradient.verify_grad(lambda *i: RegionDot()(*i),
                                [a.astype("float32"), v.astype("float32")], rng=rng)
    theano.gradient.verify_grad(lambda *i: RegionDot()(*i), [a, v], rng=rng)


def test_weighted_sum_and_region_dot_reject_mismatched_shapes(region_functions):
    f = region_functions["op"]
    alpha, a, v = np.ones((2, 3), "float32"), np.ones((2, 3, 4), "float32"), np.ones((2, 4), "float32")
    with pytest.raises(ValueError, match="WeightedSum: alpha must be"):
        f(alpha[:, :2], a, v, v, alpha)
    with pytest.raises(ValueError, match="RegionDot: a must be"):
        f(alpha, a, v[:, :3], v, alpha)


# -- the rewrite of leading-axis sums ------------------------------------------
def test_leading_sums_become_a_matrix_vector_product_only_when_asked():
    from lasagne_caption.models.updates import training_mode
    from theano.tensor.elemwise import Sum
    x = T.tensor3()
    outs = [x[::-1].sum(axis=(0, 1)), x.sum(axis=0), x.sum(axis=2), x.sum()]
    a = np.random.RandomState(0).rand(5, 6, 7).astype("float32")
    theirs = theano.function([x], outs, mode=training_mode())
    ours = theano.function([x], outs, mode=training_mode(sums_as_dot=True))

    def sums(f):
        return sorted(tuple(n.op.axis or ()) for n in f.maker.fgraph.toposort()
                      if isinstance(n.op, Sum))
    assert sums(theirs) == [(), (0,), (0, 1), (2,)]
    assert sums(ours) == [(), (2,)]     # the whole sum and a trailing axis stay Theano's
    for got, expected in zip(ours(a), [a.sum(axis=(0, 1)), a.sum(axis=0), a.sum(axis=2),
                                       a.sum()]):
        assert got.dtype == np.float32 and got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=1e-6)
