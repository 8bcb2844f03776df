"""LSTM/GRU layers: Lasagne master's equations and arguments, Layer-valued initial states.

Every output is held against the numpy reference in tests/reference.py
(float64), to what float32 keeps.
"""
import lasagne
import numpy as np
import pytest
import theano
import theano.tensor as T
from lasagne.layers import DenseLayer, DropoutLayer, InputLayer, get_all_params, get_output

from tests import reference
from lasagne_caption.compat import LASAGNE_01_RECURRENT
from lasagne_caption.layers import GRULayer, LSTMLayer

RNG = np.random.RandomState(42)
X = RNG.randn(3, 5, 4).astype("float32")
MASK = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], "float32")
IMG = RNG.randn(3, 6).astype("float32")
TOL = dict(rtol=1e-5, atol=1e-5)


def _randomise(layer, seed=0):
    """Non-trivial values for every parameter (peepholes and inits are zero/small by default)."""
    rng = np.random.RandomState(seed)
    for p in layer.get_params():
        p.set_value((rng.randn(*p.get_value().shape) * 0.5).astype("float32"))
    return {p.name: p.get_value() for p in layer.get_params()}


def _lstm(variant="master", **kwargs):
    x, m, c0 = T.tensor3(), T.matrix(), T.matrix()
    l_in, l_mask = InputLayer((None, None, 4), x), InputLayer((None, None), m)
    l_c0 = InputLayer((None, 7), c0)
    layer = LSTMLayer(l_in, 7, mask_input=l_mask, cell_init=l_c0, grad_clipping=10,
                      variant=variant, **kwargs)
    params = _randomise(layer)
    f = theano.function([x, m, c0], get_output(layer))
    return f, params


def _reference_lstm(params, c0, variant="master", backwards=False):
    hid0 = np.repeat(params["hid_init"], len(X), axis=0)
    return reference.lstm(X, MASK, params, c0, hid0, variant, backwards)


@pytest.mark.parametrize("variant", ["master", "lasagne-0.1"])
def test_lstm_matches_the_numpy_equations(variant):
    c0 = RNG.randn(3, 7).astype("float32")
    f, params = _lstm(variant)
    np.testing.assert_allclose(f(X, MASK, c0), _reference_lstm(params, c0, variant), **TOL)


def test_master_and_0_1_differ_where_the_output_gate_peephole_goes():
    c0 = RNG.randn(3, 7).astype("float32")
    f, params = _lstm("master")
    ref_01 = _reference_lstm(params, c0, "lasagne-0.1")
    assert np.abs(f(X, MASK, c0) - ref_01).max() > 1e-2


@pytest.mark.parametrize("options", [
    dict(precompute_input=False), dict(unroll_scan=True), dict(nonlinearity=T.tanh),
    dict(precompute_input=False, unroll_scan=True)])
def test_master_arguments_give_the_same_numbers(options):
    # nonlinearity=T.tanh (not lasagne's tanh) takes the unfused path
    x, m, c0 = T.tensor3(), T.matrix(), T.matrix()
    l_in = InputLayer((None, 5 if options.get("unroll_scan") else None, 4), x)
    layer = LSTMLayer(l_in, 7, mask_input=InputLayer((None, None), m),
                      cell_init=InputLayer((None, 7), c0), **options)
    params = _randomise(layer)
    c0_val = RNG.randn(3, 7).astype("float32")
    out = theano.function([x, m, c0], get_output(layer))(X, MASK, c0_val)
    np.testing.assert_allclose(out, _reference_lstm(params, c0_val), **TOL)


def test_backwards_and_only_return_final():
    x, c0 = T.tensor3(), T.matrix()
    l_in, l_c0 = InputLayer((None, None, 4), x), InputLayer((None, 7), c0)
    back = LSTMLayer(l_in, 7, cell_init=l_c0, backwards=True)
    params = _randomise(back)
    final = LSTMLayer(l_in, 7, cell_init=l_c0, backwards=True, only_return_final=True)
    for p in final.get_params():
        p.set_value(params[p.name])
    assert final.output_shape == (None, 7)
    c0_val = RNG.randn(3, 7).astype("float32")
    out, last = theano.function([x, c0], [get_output(back), get_output(final)])(X, c0_val)
    hid0 = np.repeat(params["hid_init"], 3, axis=0)
    expected = reference.lstm(X, None, params, c0_val, hid0, backwards=True)
    np.testing.assert_allclose(out, expected, **TOL)
    # master: the last step processed, which for backwards is the first position
    np.testing.assert_allclose(last, expected[:, 0], **TOL)


def test_gradient_steps_and_unroll_scan_errors_are_masters():
    l_in = InputLayer((None, None, 4))
    with pytest.raises(ValueError, match="Gradient steps must be -1"):
        LSTMLayer(l_in, 3, unroll_scan=True, gradient_steps=2)
    with pytest.raises(ValueError, match="cannot be specified as None"):
        LSTMLayer(l_in, 3, unroll_scan=True)
    layer = LSTMLayer(l_in, 3, gradient_steps=2)
    loss = T.sum(get_output(layer))
    assert T.grad(loss, layer.W_in_to_ingate) is not None


def test_gru_matches_the_numpy_equations_and_masters_learn_init():
    x, m, h0 = T.tensor3(), T.matrix(), T.matrix()
    l_in, l_mask = InputLayer((None, None, 4), x), InputLayer((None, None), m)
    layer = GRULayer(l_in, 7, mask_input=l_mask, hid_init=InputLayer((None, 7), h0),
                     grad_clipping=10)
    params = _randomise(layer)
    h0_val = RNG.randn(3, 7).astype("float32")
    out = theano.function([x, m, h0], get_output(layer))(X, MASK, h0_val)
    np.testing.assert_allclose(out, reference.gru(X, MASK, params, h0_val), **TOL)
    # master's GRU does not learn its initial state unless asked (0.1's did)
    own_init = GRULayer(l_in, 7)
    assert own_init.hid_init not in own_init.get_params(trainable=True)
    assert GRULayer(l_in, 7, learn_init=True).get_params(trainable=True)[-1].name == "hid_init"


@pytest.mark.parametrize("name", ["LSTMLayer", "GRULayer"])
def test_param_names_and_order_are_lasagnes(name):
    ours, theirs = getattr(lasagne.layers, name), LASAGNE_01_RECURRENT[name]
    l_in = InputLayer((None, None, 4))
    assert ours.__module__ == "lasagne_caption.layers.recurrent"
    assert [p.name for p in ours(l_in, 3).get_params()] == \
        [p.name for p in theirs(l_in, 3).get_params()]


def test_a_batch_matrix_init_is_used_as_is_and_a_row_is_repeated():
    x, h0 = T.tensor3(), T.matrix()
    l_in = InputLayer((None, None, 4), x)
    per_sequence = LSTMLayer(l_in, 7, hid_init=h0)
    params = _randomise(per_sequence)
    h0_val = RNG.randn(3, 7).astype("float32")
    row = T.row()
    shared_row = LSTMLayer(l_in, 7, hid_init=row)
    for p in shared_row.get_params():
        p.set_value(params[p.name])
    f = theano.function([x, h0, row], [get_output(per_sequence), get_output(shared_row)])
    a, b = f(X, h0_val, h0_val[:1])
    c0 = np.repeat(params["cell_init"], 3, axis=0)
    np.testing.assert_allclose(a, reference.lstm(X, None, params, c0, h0_val), **TOL)
    np.testing.assert_allclose(b, reference.lstm(X, None, params, c0,
                                                 np.repeat(h0_val[:1], 3, axis=0)), **TOL)


def test_one_unit_works():
    x = T.tensor3()
    layer = LSTMLayer(InputLayer((None, None, 4), x), 1)
    assert theano.function([x], get_output(layer))(X).shape == (3, 5, 1)


def _seminar_like():
    x, img = T.tensor3(), T.matrix()
    l_in = InputLayer((None, None, 4), x)
    l_img = InputLayer((None, 6), img)
    l_drop = DropoutLayer(l_img, p=0.5)
    l_proj = DenseLayer(l_drop, 8)
    l_lstm = lasagne.layers.LSTMLayer(l_in, 8, cell_init=l_proj, grad_clipping=10)
    return x, img, l_proj, l_lstm


def test_layer_cell_init_params_are_counted_once_and_ordered_like_master():
    _, _, l_proj, l_lstm = _seminar_like()
    params = get_all_params(l_lstm)
    assert params[:2] == [l_proj.W, l_proj.b]
    assert len(params) == len(set(params)) == 2 + 12 + 3 + 1
    names = [p.name for p in l_lstm.get_params()]
    assert names[-1] == "hid_init" and "cell_init" not in names
    assert names[:3] == ["W_in_to_ingate", "W_hid_to_ingate", "b_ingate"]


def test_hid_and_cell_init_layers_are_incomings_in_masters_order():
    l_in = InputLayer((None, None, 4))
    l_h, l_c = InputLayer((None, 3)), InputLayer((None, 3))
    layer = LSTMLayer(l_in, 3, hid_init=l_h, cell_init=l_c, mask_input=InputLayer((None, None)))
    assert (layer.mask_incoming_index, layer.hid_init_incoming_index,
            layer.cell_init_incoming_index) == (1, 2, 3)
    assert layer.input_layers[2:] == [l_h, l_c]


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
