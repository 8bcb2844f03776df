import numpy as np
import pytest
import theano
import theano.tensor as T
from lasagne.layers import DenseLayer, InputLayer, get_output
from lasagne.nonlinearities import softmax

from lasagne_caption.layers import BroadcastLayer, UnbroadcastLayer


def test_dense_applies_at_every_time_step():
    x = T.tensor3()
    l_in = InputLayer((None, None, 4), x)
    l_flat = BroadcastLayer(l_in, (0, 1))
    l_dense = DenseLayer(l_flat, 6, nonlinearity=softmax)
    l_out = UnbroadcastLayer(l_dense, l_flat)
    assert l_flat.output_shape == (None, 4)
    assert l_out.output_shape == (None, None, 6)
    data = np.random.RandomState(0).randn(2, 3, 4).astype("float32")
    out = theano.function([x], get_output(l_out))(data)
    W, b = l_dense.W.get_value(), l_dense.b.get_value()
    logits = data @ W + b
    expected = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    assert out.shape == (2, 3, 6)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_other_axes_restore_order_and_sizes():
    x = T.tensor3()
    l_in = InputLayer((2, 3, 4), x)
    l_flat = BroadcastLayer(l_in, (2, 0))   # fold units and batch, keep time
    assert l_flat.output_shape == (8, 3)
    l_out = UnbroadcastLayer(l_flat, l_flat)
    assert l_out.output_shape == (2, 3, 4)
    data = np.arange(24, dtype="float32").reshape(2, 3, 4)
    flat, back = theano.function([x], [get_output(l_flat), get_output(l_out)])(data)
    np.testing.assert_array_equal(flat, data.transpose(2, 0, 1).reshape(8, 3))
    np.testing.assert_array_equal(back, data)


def test_axis_zero_is_required():
    with pytest.raises(ValueError, match="axis 0"):
        BroadcastLayer(InputLayer((2, 3, 4)), (1, 2))
