"""The attention LSTM's scan over time with a hand-written backward pass.

Theano differentiates a ``scan`` by building a second scan from the
gradient of the step, and that step recomputes every intermediate the
gradient needs: the gate pre-activations (two matrix products with
``W_hid`` and ``W_ctx``), the context ``sum_l alpha_l a_l`` (a pass over
all the region features) and the gate non-linearities. Measured on the
Flickr8k grid (``benchmarks/attention_speed.py``), that recomputation and
the generated scan's bookkeeping were about a fifth of a train step.

:func:`attention_scan` runs the forward as an ordinary scan of
:meth:`AttentionLSTMLayer.attend` and the toolkit's fused LSTM step
(:class:`~lasagne_caption.ops.LSTMCell` with its peepholes at zero), which
also returns what the backward needs: the gate activations, the projected
state, the ungated context and the previous states. Its public outputs
then pass through an identity op whose gradient is the backward pass
written out below (an ``OpFromGraph`` with ``lop_overrides``): one reverse
scan that does only the per-step work, and the parameter gradients as
single matrix products over all steps afterwards. Theano never
differentiates the forward scan itself. For the gates ``"none"`` and
``"selector"``; the sentinel keeps Theano's own gradient.

The identity op is not inlined (its gradient is): inlining an
``OpFromGraph`` clones the graph of its inputs, and Theano's optimiser
then kept two or three copies of the forward scan in the train step.

The equations (forward, one step; ``m`` the step's mask)::

    s = h W_ha;  e = AttentionScores(P, s, w);  alpha = softmax(e)
    r = sum_l alpha_l a_l;  g = sigmoid(h w_g + b_g) (selector) or 1;  ctx = g r
    G = x + h W_hid + ctx W_ctx;  i, f, u, o = sig, sig, tanh, sig (G)
    c' = f c + i u;  h' = o tanh(c');  (h, c) <- (h', c') where m else (h, c)

and backward, from ``dh``, ``dc`` (carried) plus the outputs' gradients::

    dh' = m dh;  dc~ = m (dc + dh o (1 - tanh(c')^2))
    dG = [dc~ u i(1-i), dc~ c f(1-f), dc~ i (1-u^2), dh' tanh(c') o(1-o)]
    dctx = dG W_ctx^T (+ the output's);  dr = g dctx;  dg = dctx . r (+ the output's)
    dalpha = a dr (+ the output's);  de = alpha (dalpha - alpha . dalpha)
    dP <- AttentionScoresGrad(P, s, w, de, dP)[0] (it adds);  ds = ...[1]
    dh <- (1-m) dh + dG W_hid^T + ds W_ha^T + dg g(1-g) w_g;  dc <- (1-m) dc + dc~ f
"""
import theano
import theano.tensor as T
from theano.compile.builders import OpFromGraph
from theano.gradient import DisconnectedType

from ..ops import AttentionScoresGrad, LSTMCell, LSTMCellGrad, RegionDot
from .recurrent import keep_state_where_padded

__all__ = ["attention_scan", "EXPLICIT_BACKWARD_GATES"]

EXPLICIT_BACKWARD_GATES = ("none", "selector")


class _ZeroFilledGraphOp(OpFromGraph):
    """An OpFromGraph whose gradient override is inlined, and works when the
    cost ignores some outputs: their gradients arrive as zeros instead of
    Theano's DisconnectedType, which OpFromGraph cannot take as an input."""

    def L_op(self, inputs, outputs, output_grads):
        output_grads = [T.zeros_like(o) if isinstance(g.type, DisconnectedType) else g
                        for o, g in zip(outputs, output_grads)]
        return super(_ZeroFilledGraphOp, self).L_op(inputs, outputs, output_grads)

    def _recompute_lop_op(self):
        super(_ZeroFilledGraphOp, self)._recompute_lop_op()
        # the backward joins the train step's graph: unused gradients (the
        # regions', when they are data) are pruned, the rest optimised with it
        self._lop_op.is_inline = True


def attention_scan(layer, words, mask, hid, cell, regions, projected):
    """``(hids, ctxs, alphas, gates)`` over time, each (time, batch, ...).

    Parameters
    ----------
    layer : AttentionLSTMLayer with gate "none" or "selector"
    words : (time, batch, 4U), ``x W_in + b`` of every step
    mask : (time, batch, 1), nonzero at real words
    hid, cell : (batch, U), the initial states
    regions : (batch, L, D);  projected : (batch, L, A), ``a W_a + b_a``

    The values are those of a ``theano.scan`` over
    :meth:`~AttentionLSTMLayer.step` up to float32 rounding (the fused LSTM
    step computes exp with its own polynomial); the gradient is the backward
    pass of this module's docstring.
    """
    if layer.gate not in EXPLICIT_BACKWARD_GATES:
        raise ValueError("the explicit backward covers the gates %s, not %r"
                         % (", ".join(EXPLICIT_BACKWARD_GATES), layer.gate))
    inputs = [words, mask, hid, cell, regions, projected]
    forward = _forward(layer, *inputs)
    params = [layer.W_hid, layer.W_ctx, layer.W_hid_att, layer.w_att]
    if layer.gate == "selector":
        params += [layer.w_gate, layer.b_gate]
    # The forward is an ordinary scan. Its public outputs pass through an
    # identity op whose gradient is the backward pass: Theano never
    # differentiates the scan itself (the op says the scan's outputs get no
    # gradient), and the op's other inputs (the scan's inputs and the
    # parameters it reads) get theirs from _backward.
    every = inputs + forward + params
    local = [v.type() for v in every]
    n_in, n_out = len(inputs), len(forward)

    def backward(op_inputs, op_outputs, output_grads):
        local_params = dict(zip(PARAM_NAMES, op_inputs[n_in + n_out:]))
        grads = _backward(layer.gate, layer.num_units, op_inputs[:n_in],
                          op_inputs[n_in:n_in + n_out], output_grads, local_params)
        return ([grads[name] for name in INPUT_NAMES]
                + [DisconnectedType()() for _ in forward]
                + [grads[name] for name in PARAM_NAMES[:len(params)]])

    public = [T.tensor_copy(v) for v in local[n_in:n_in + 5]]
    # what the gradient flows through (Theano would read the identity's)
    connected = [i != 1 and not n_in <= i < n_in + n_out for i in range(len(every))]
    op = _ZeroFilledGraphOp(local, public, inline=False, lop_overrides=backward,
                            connection_pattern=[[c] * len(public) for c in connected],
                            on_unused_input="ignore", name="attention_scan")
    hids, _, ctxs, alphas, gates = op(*every)
    return hids, ctxs, alphas, gates


INPUT_NAMES = ("words", "mask", "hid", "cell", "regions", "projected")
PARAM_NAMES = ("W_hid", "W_ctx", "W_hid_att", "w_att", "w_gate", "b_gate")


def _forward(layer, words, mask, hid, cell, regions, projected):
    """The scan: the step's outputs, and what the backward keeps (the LSTM's
    activations, the projected state, the ungated context, the previous states)."""
    no_peepholes = T.zeros((layer.num_units,), dtype=theano.config.floatX)

    def step(words_t, mask_t, hid, cell, regions, projected):
        parts = layer.attend([words_t], hid, cell, regions, projected)
        # the fused C step of the toolkit's LSTM, its peepholes at zero
        new_cell, new_hid, saved = LSTMCell()(parts["gates"], cell, *[no_peepholes] * 3)
        return (keep_state_where_padded(new_hid, hid, mask_t),
                keep_state_where_padded(new_cell, cell, mask_t),
                parts["ctx"], parts["alpha"], parts["gate"], saved, parts["state"],
                parts["visual"], hid, cell)

    outputs, _ = theano.scan(step, sequences=[words, mask],
                             outputs_info=[hid, cell] + [None] * 8,
                             non_sequences=[regions, projected], strict=False)
    return list(outputs)


def _backward(gate, U, inputs, outputs, output_grads, p):
    """Gradients of the inputs (dict by name) and of the parameters in ``p``."""
    words, mask, hid0, cell0, regions, projected = inputs
    _, _, ctxs, alphas, gates, saved, states, visual, hid_prev, cell_prev = outputs
    no_peepholes = T.zeros((U,), dtype=theano.config.floatX)
    d_hids, d_cells, d_ctxs, d_alphas, d_gate_values = output_grads[:5]
    selector = gate == "selector"

    def step(mask_t, d_hid_t, d_cell_t, d_ctx_t, d_alpha_t, d_gate_t, saved_t,
             cell_prev_t, state_t, visual_t, alpha_t, gate_t, d_hid, d_cell, d_projected,
             regions, projected, *params):
        d_hid = d_hid + d_hid_t
        d_cell = d_cell + d_cell_t
        # padded steps pass the state through: no gradient reaches their gates
        d_gates, d_cell_through = LSTMCellGrad()(
            saved_t, cell_prev_t, *[no_peepholes] * 3,
            T.switch(mask_t, d_cell, 0), T.switch(mask_t, d_hid, 0))[:2]
        d_ctx = T.dot(d_gates, p["W_ctx"].T) + d_ctx_t
        if selector:
            d_visual = gate_t.dimshuffle(0, 'x') * d_ctx
            d_gate = T.sum(d_ctx * visual_t, axis=1) + d_gate_t
            d_gate_logit = d_gate * gate_t * (1 - gate_t)
        else:
            d_visual = d_ctx
            d_gate_logit = T.zeros_like(gate_t)
        d_alpha = RegionDot()(regions, d_visual) + d_alpha_t
        d_scores = alpha_t * (d_alpha - T.sum(alpha_t * d_alpha, axis=1, keepdims=True))
        # the regions' gradient accumulates over the steps inside the op
        d_projected, d_state, d_w_att = AttentionScoresGrad()(projected, state_t, p["w_att"],
                                                             d_scores, d_projected)
        d_hid_prev = (T.switch(mask_t, 0, d_hid) + T.dot(d_gates, p["W_hid"].T)
                      + T.dot(d_state, p["W_hid_att"].T))
        if selector:
            d_hid_prev = d_hid_prev + d_gate_logit.dimshuffle(0, 'x') * p["w_gate"]
        d_cell_prev = T.switch(mask_t, d_cell_through, d_cell)
        return (d_hid_prev, d_cell_prev, d_projected,
                d_gates, d_state, d_gate_logit, d_visual, d_w_att)

    sequences = [mask, d_hids, d_cells, d_ctxs, d_alphas, d_gate_values, saved, cell_prev, states,
                 visual, alphas, gates]
    (d_hid0, d_cell0, d_projected, d_gates_all, d_states, d_gate_logits, d_visuals,
     d_w_atts), _ = theano.scan(
        step, sequences=sequences, go_backwards=True,
        outputs_info=[T.zeros_like(hid0), T.zeros_like(cell0), T.zeros_like(projected)]
        + [None] * 5, non_sequences=[regions, projected] + list(p.values()), strict=True)
    # the per-step outputs come in reverse time; the parameter gradients are
    # sums over every (step, caption) pair: one matrix product each
    d_gates_all, d_states = d_gates_all[::-1], d_states[::-1]
    d_gate_logits, d_visuals = d_gate_logits[::-1], d_visuals[::-1]

    def flat(x):
        return x.reshape((-1, x.shape[-1]))

    grads = {
        "words": d_gates_all,
        "mask": DisconnectedType()(),
        "hid": d_hid0[-1], "cell": d_cell0[-1], "projected": d_projected[-1],
        # d regions through the context r = sum_l alpha_l a_l, for every caption
        "regions": T.batched_dot(alphas.dimshuffle(1, 2, 0), d_visuals.dimshuffle(1, 0, 2)),
        "W_hid": T.dot(flat(hid_prev).T, flat(d_gates_all)),
        "W_ctx": T.dot(flat(ctxs).T, flat(d_gates_all)),
        "W_hid_att": T.dot(flat(hid_prev).T, flat(d_states)),
        "w_att": T.sum(d_w_atts, axis=0),
    }
    if selector:
        grads["w_gate"] = T.dot(flat(hid_prev).T, d_gate_logits.flatten())
        grads["b_gate"] = T.sum(d_gate_logits)
    return grads
