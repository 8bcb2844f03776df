"""The toolkit's Theano ops compute what Theano's own expressions compute.

SoftmaxNLL against Theano's softmax cross-entropy; LSTMCell (C code for
float32, numpy for float64), both output-gate variants, against the LSTM
step written in Theano expressions, values and gradients.
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
