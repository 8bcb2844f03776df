"""LSTM/GRU layers: Lasagne 0.1's math, Lasagne master's Layer-valued initial state."""
import lasagne
import numpy as np
import pytest
import theano
import theano.tensor as T
from lasagne.layers import DenseLayer, DropoutLayer, InputLayer, get_all_params, get_output

from lasagne_caption.layers import GRULayer, LSTMLayer

RNG = np.random.RandomState(42)
X = RNG.randn(3, 5, 4).astype("float32")
MASK = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], "float32")
IMG = RNG.randn(3, 6).astype("float32")


def _copy_params(src, dst):
    by_name = {p.name: p for p in dst.get_params()}
    for p in src.get_params():
        if p.name in by_name:
            by_name[p.name].set_value(p.get_value())


@pytest.mark.parametrize("ours,theirs", [(LSTMLayer, lasagne.layers.LSTMLayer),
                                         (GRULayer, lasagne.layers.GRULayer)])
def test_same_math_and_param_order_as_lasagne(ours, theirs):
    x, m, h0 = T.tensor3(), T.matrix(), T.matrix()
    l_in, l_mask = InputLayer((None, None, 4), x), InputLayer((None, None), m)
    ref = theirs(l_in, 7, mask_input=l_mask, hid_init=h0, grad_clipping=5.0)
    mine = ours(l_in, 7, mask_input=l_mask, hid_init=h0, grad_clipping=5.0)
    assert [p.name for p in mine.get_params()] == [p.name for p in ref.get_params()]
    _copy_params(ref, mine)
    f = theano.function([x, m, h0], [get_output(ref), get_output(mine)])
    a, b = f(X, MASK, RNG.randn(3, 7).astype("float32"))
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def _seminar_like():
    x, img = T.tensor3(), T.matrix()
    l_in = InputLayer((None, None, 4), x)
    l_img = InputLayer((None, 6), img)
    l_drop = DropoutLayer(l_img, p=0.5)
    l_proj = DenseLayer(l_drop, 8)
    l_lstm = LSTMLayer(l_in, 8, cell_init=l_proj, grad_clipping=5.0)
    return x, img, l_proj, l_lstm


def test_layer_cell_init_params_are_found_and_ordered_like_master():
    _, _, l_proj, l_lstm = _seminar_like()
    params = get_all_params(l_lstm)
    assert params[:2] == [l_proj.W, l_proj.b]
    names = [p.name for p in l_lstm.get_params()]
    assert names[-1] == "hid_init" and "cell_init" not in names
    assert names[:3] == ["W_in_to_ingate", "W_hid_to_ingate", "b_ingate"]


def test_deterministic_reaches_the_image_dropout():
    x, img, _, l_lstm = _seminar_like()
    f_det = theano.function([x, img], get_output(l_lstm, deterministic=True))
    f_rand = theano.function([x, img], get_output(l_lstm))
    assert np.array_equal(f_det(X, IMG), f_det(X, IMG))
    assert not np.allclose(f_rand(X, IMG), f_rand(X, IMG))


def test_trains_and_gradient_reaches_the_image_projection():
    x, img, l_proj, l_lstm = _seminar_like()
    target = np.tanh(RNG.randn(3, 5, 8)).astype("float32")
    loss = T.mean((get_output(l_lstm, deterministic=True) - target) ** 2)
    params = get_all_params(l_lstm, trainable=True)
    grad_proj = T.grad(loss, l_proj.W)
    step = theano.function([x, img], [loss, grad_proj],
                           updates=lasagne.updates.adam(loss, params, 0.01))
    first, g = step(X, IMG)
    assert np.abs(g).max() > 1e-4
    for _ in range(60):
        last, _ = step(X, IMG)
    assert last < 0.5 * first
