"""attention_scan: the hand-written backward pass equals Theano's own gradient of the scan.

A tiny AttentionLSTMLayer per gate (E=3, L=4 regions of D=5, U=6 units,
A=3), built twice with the same parameters: with the explicit backward
(the default) and with ``explicit_backward=False`` (Theano differentiates
the scan). A cost that reads every output (the states, the context, the
weights and the gate) with padding at the end and in the middle of rows;
the gradients of every parameter and every input must agree.
"""
import numpy as np
import pytest
import theano
import theano.tensor as T
from lasagne.layers import InputLayer, get_output
from theano.scan.op import Scan

from lasagne_caption.layers.attention import AttentionLSTMLayer
from lasagne_caption.layers.attention_scan import EXPLICIT_BACKWARD_GATES, attention_scan

E, L, D, U, A = 3, 4, 5, 6, 3
N, STEPS = 3, 5
RNG = np.random.RandomState(7)
VALUES = [RNG.randn(N, STEPS, E).astype("float32"), (2 * RNG.randn(N, L, D)).astype("float32"),
          np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 0, 1, 1]], "float32"),
          (0.5 * RNG.randn(N, U)).astype("float32"), (0.5 * RNG.randn(N, U)).astype("float32")]
WEIGHTS = np.random.RandomState(1)
W_HID = WEIGHTS.randn(N, STEPS, U).astype("float32")
W_ALPHA = WEIGHTS.randn(N, STEPS, L).astype("float32")


def _gradients(gate, explicit):
    x, regions, mask, h0, c0 = inputs = [T.tensor3(), T.tensor3(), T.matrix(), T.matrix(),
                                         T.matrix()]
    layer = AttentionLSTMLayer(
        InputLayer((None, None, E), x), InputLayer((None, L, D), regions), U,
        InputLayer((None, None), mask), InputLayer((None, U), h0), InputLayer((None, U), c0),
        attention_size=A, gate=gate, explicit_backward=explicit)
    rng = np.random.RandomState(0)
    for p in layer.get_params():
        p.set_value(np.asarray(rng.randn(*p.get_value().shape) * 0.7, dtype="float32"))
    h, ctx, alpha, g = layer.split_output(get_output(layer))
    cost = (T.sum(h * W_HID) + 0.3 * T.sum(ctx ** 2) + T.sum(alpha * W_ALPHA)
            + 0.7 * T.sum(g))
    wrt = layer.get_params() + [x, regions, h0, c0]
    f = theano.function(inputs, [cost] + theano.grad(cost, wrt))
    scans = [n for n in f.maker.fgraph.apply_nodes if isinstance(n.op, Scan)]
    return f(*VALUES), [v.name or "input" for v in wrt], len(scans)


@pytest.mark.parametrize("gate", EXPLICIT_BACKWARD_GATES)
def test_the_explicit_backward_gives_theanos_gradient(gate):
    explicit, names, n_scans = _gradients(gate, True)
    derived, _, _ = _gradients(gate, False)
    assert n_scans == 2      # one forward, one backward: the forward is not run twice
    np.testing.assert_allclose(explicit[0], derived[0], rtol=1e-6)     # the same cost
    for name, a, b in zip(["cost"] + names, explicit, derived):
        assert np.abs(b).max() > 0, name                     # every gradient is used
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * np.abs(b).max(),
                                   err_msg=name)


def test_the_sentinel_keeps_theanos_gradient():
    layer = AttentionLSTMLayer(InputLayer((None, None, E)), InputLayer((None, L, D)), U,
                               InputLayer((None, None)), InputLayer((None, U)),
                               InputLayer((None, U)), attention_size=A, gate="sentinel")
    with pytest.raises(ValueError, match="sentinel"):
        attention_scan(layer, *[T.tensor3()] * 2 + [T.matrix()] * 2 + [T.tensor3()] * 2)
