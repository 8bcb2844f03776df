"""AttentionLSTMLayer: weights over regions, the gate, padding, rows kept apart, scan = unrolled.

One tiny layer per gate (E=3, L=4 regions of D=5, U=6 units, A=3), compiled
once per module, with random parameters large enough that the attention is
far from uniform. The doctests of the module are run by ``make test``
(``--doctest-modules``) and are not repeated here.
"""
import numpy as np
import pytest
import theano
import theano.tensor as T
from lasagne.layers import InputLayer, get_output

from lasagne_caption.layers.attention import GATES, AttentionLSTMLayer

E, L, D, U, A = 3, 4, 5, 6, 3
N, STEPS = 3, 5
RNG = np.random.RandomState(7)
WORDS = RNG.randn(N, STEPS, E).astype("float32")
REGIONS = (2 * RNG.randn(N, L, D)).astype("float32")
H0 = (0.5 * RNG.randn(N, U)).astype("float32")
C0 = (0.5 * RNG.randn(N, U)).astype("float32")
FULL = np.ones((N, STEPS), "float32")
# row 0 real throughout, row 1 padded at the end, row 2 padded in the middle
MASK = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 0, 1, 1]], "float32")


def _build(gate, seed=0):
    x, regions, mask, h0, c0 = T.tensor3(), T.tensor3(), T.matrix(), T.matrix(), T.matrix()
    layer = AttentionLSTMLayer(
        InputLayer((None, None, E), x), InputLayer((None, L, D), regions), U,
        InputLayer((None, None), mask), InputLayer((None, U), h0), InputLayer((None, U), c0),
        attention_size=A, gate=gate)
    rng = np.random.RandomState(seed)
    for p in layer.get_params():
        p.set_value(np.asarray(rng.randn(*p.get_value().shape) * 0.7, dtype="float32"))
    inputs = [x, regions, mask, h0, c0]
    scan = theano.function(inputs, get_output(layer))
    unrolled = theano.function(inputs, layer.get_output_for(inputs, unroll=STEPS))
    return layer, scan, unrolled


@pytest.fixture(scope="module")
def layers():
    """gate -> (layer, scan function, function unrolled over STEPS steps)."""
    return {gate: _build(gate) for gate in GATES}


def _split(layer, out):
    return [np.asarray(part) for part in layer.split_output(out)]


@pytest.mark.parametrize("gate", GATES)
def test_output_shape_and_parts(layers, gate):
    layer, scan, _ = layers[gate]
    out = scan(WORDS, REGIONS, MASK, H0, C0)
    assert out.shape == (N, STEPS, U + D + L + 1)
    h, ctx, alpha, g = _split(layer, out)
    assert h.shape == (N, STEPS, U) and ctx.shape == (N, STEPS, D)
    assert alpha.shape == (N, STEPS, L) and g.shape == (N, STEPS)
    assert np.isfinite(out).all()


@pytest.mark.parametrize("gate", GATES)
def test_weights_are_a_distribution_and_the_gate_a_share(layers, gate):
    layer, scan, _ = layers[gate]
    _, _, alpha, g = _split(layer, scan(WORDS, REGIONS, MASK, H0, C0))
    assert (alpha >= 0).all()
    assert ((g >= 0) & (g <= 1)).all()
    if gate == "sentinel":
        # the sentinel takes the rest: alpha sums to the visual share
        np.testing.assert_allclose(alpha.sum(-1), g, rtol=1e-5, atol=1e-6)
        assert (g < 1 - 1e-4).all() and (g > 1e-4).all()   # a real choice, not a constant
    else:
        np.testing.assert_allclose(alpha.sum(-1), 1, rtol=1e-5)
    if gate == "none":
        assert (g == 1).all()
    if gate == "selector":
        assert g.std() > 1e-3       # depends on the state
    # not uniform: the scores do discriminate between regions
    assert np.abs(alpha / alpha.sum(-1, keepdims=True) - 1.0 / L).max() > 0.05


@pytest.mark.parametrize("gate", GATES)
def test_context_is_the_weighted_sum_of_regions(layers, gate):
    layer, scan, _ = layers[gate]
    _, ctx, alpha, g = _split(layer, scan(WORDS, REGIONS, FULL, H0, C0))
    expected = np.einsum("ntl,nld->ntd", alpha, REGIONS)
    if gate == "selector":
        np.testing.assert_allclose(ctx, g[..., None] * expected, rtol=1e-4, atol=1e-5)
    elif gate == "none":
        np.testing.assert_allclose(ctx, expected, rtol=1e-4, atol=1e-5)
    else:   # plus the sentinel's share of its own vector: not the regions' sum alone
        assert np.abs(ctx - expected).max() > 1e-4


@pytest.mark.parametrize("gate", GATES)
def test_padded_steps_keep_the_state(layers, gate):
    layer, scan, _ = layers[gate]
    h, _, _, _ = _split(layer, scan(WORDS, REGIONS, MASK, H0, C0))
    # row 1: steps 3 and 4 are padding, h stays at step 2's
    np.testing.assert_array_equal(h[1, 3], h[1, 2])
    np.testing.assert_array_equal(h[1, 4], h[1, 2])
    # each row equals the same words without the padding (h and c both kept:
    # row 2 continues after its padded step as if it had not been there)
    for row, real in ((1, [0, 1, 2]), (2, [0, 1, 3, 4])):
        alone = scan(WORDS[row:row + 1, real], REGIONS[row:row + 1],
                     np.ones((1, len(real)), "float32"), H0[row:row + 1], C0[row:row + 1])
        np.testing.assert_allclose(scan(WORDS, REGIONS, MASK, H0, C0)[row, real], alone[0],
                                   rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("gate", GATES)
def test_every_region_matters_and_rows_do_not_leak(layers, gate):
    layer, scan, _ = layers[gate]
    base = scan(WORDS, REGIONS, MASK, H0, C0)
    _, _, alpha, _ = _split(layer, base)
    for region in range(L):
        changed = REGIONS.copy()
        changed[0, region] += 1.5
        out = scan(WORDS, changed, MASK, H0, C0)
        _, _, alpha2, _ = _split(layer, out)
        # this image's weights move at every step...
        assert (np.abs(alpha2[0] - alpha[0]).max(axis=-1) > 1e-5).all(), region
        # ... the other images' outputs do not move at all
        np.testing.assert_array_equal(out[1:], base[1:])
    # nor do a row's words, mask or initial state reach another row
    words, h0 = WORDS.copy(), H0.copy()
    words[2] += 1
    h0[2] -= 1
    out = scan(words, REGIONS, MASK, h0, C0)
    np.testing.assert_array_equal(out[:2], base[:2])
    assert np.abs(out[2] - base[2]).max() > 1e-3


@pytest.mark.parametrize("gate", GATES)
def test_unrolled_graph_equals_the_scan(layers, gate):
    _, scan, unrolled = layers[gate]
    for mask in (FULL, MASK):
        np.testing.assert_allclose(unrolled(WORDS, REGIONS, mask, H0, C0),
                                   scan(WORDS, REGIONS, mask, H0, C0), rtol=1e-5, atol=1e-6)


def test_the_gates_have_their_own_parameters_and_an_unknown_one_is_refused(layers):
    names = {gate: {p.name for p in layers[gate][0].get_params()} for gate in GATES}
    common = {"W_in", "W_hid", "W_ctx", "b", "W_region_att", "b_att", "W_hid_att", "w_att"}
    assert names["none"] == common
    assert names["selector"] == common | {"w_gate", "b_gate"}
    assert names["sentinel"] == common | {"W_sentinel_in", "W_sentinel_hid", "b_sentinel",
                                          "W_sentinel_att", "W_sentinel_ctx"}
    with pytest.raises(ValueError, match="gate must be one of none, selector, sentinel"):
        AttentionLSTMLayer(InputLayer((None, None, E)), InputLayer((None, L, D)), U,
                           InputLayer((None, None)), InputLayer((None, U)),
                           InputLayer((None, U)), gate="spotlight")


def test_the_module_keeps_its_doctests():
    """``make test`` runs them (--doctest-modules); here only that they are still there."""
    import doctest

    import lasagne_caption.layers.attention as module
    found = {t.name.rsplit(".", 1)[-1]: len(t.examples)
             for t in doctest.DocTestFinder().find(module) if t.examples}
    assert {"AttentionLSTMLayer", "DeepOutputLayer", "attention_penalty"} <= set(found)
    assert all(n >= 2 for n in found.values())
