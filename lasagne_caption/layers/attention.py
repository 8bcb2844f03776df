"""Soft attention over image regions with a visual/language gate (Show, Attend and Tell).

:class:`AttentionLSTMLayer` is an LSTM that, before every step, looks at the
image: it scores each of the L regions ``a_i`` (D-d features) against the
previous hidden state, takes the softmax ``alpha`` over regions, and feeds
the weighted sum ``ctx = sum_i alpha_i a_i`` to its gates together with the
word (Xu et al. 2015, kelvinxu/arctic-captions' ``lstm_cond_layer``)::

    e_i   = w . tanh(a_i W_a + b_a + h_{t-1} W_d)        (scores, L of them)
    alpha = softmax(e)                                   (sums to 1 over regions)
    ctx   = gate * sum_i alpha_i a_i
    i, f, c~, o = x_t W_x + h_{t-1} W_h + ctx W_c + b
    c_t = f c_{t-1} + i tanh(c~);  h_t = o tanh(c_t)

The gate weighs visual against language context (CAM-RNN's balancing gate):

``"none"``
    no gate (``gate = 1``);
``"selector"``
    Show, Attend and Tell's selector, a scalar ``gate = sigmoid(h_{t-1} w_g + b_g)``;
``"sentinel"``
    Knowing When to Look's visual sentinel: a vector
    ``s = sigmoid(x_t W_sx + h_{t-1} W_sh + b_s) * tanh(c_{t-1})`` that the
    softmax may choose instead of the regions (an (L+1)-th candidate scored
    like them); ``ctx = sum_i alpha_i a_i + alpha_s s W_sc``, and the gate
    reported is the visual share ``1 - alpha_s``. (Lu et al. attend after the
    LSTM step with ``c_t``; here attention precedes the step, as in Xu et
    al., so the sentinel is made from ``c_{t-1}``.)

:class:`DeepOutputLayer` is the "deep output" of both papers:
``tanh(h W_lh + ctx W_lz + E y_{t-1} + b)``, the input of the word softmax.
"""
import numpy as np
import theano
import theano.tensor as T
from lasagne import init
from lasagne.layers import MergeLayer

from ..ops import AttentionScores, WeightedSum
from .attention_scan import EXPLICIT_BACKWARD_GATES, attention_scan
from .recurrent import keep_state_where_padded

__all__ = ["AttentionLSTMLayer", "DeepOutputLayer", "GATES", "attention_penalty"]

GATES = ("none", "selector", "sentinel")


class AttentionLSTMLayer(MergeLayer):
    """An LSTM with soft attention over image regions and a visual/language gate.

    Parameters
    ----------
    incoming : Layer, (batch, time, E)
        The word embeddings fed at each step.
    regions : Layer, (batch, L, D)
        The image's region features (e.g. MobileNetV2's 7x7 grid, L = 49).
    num_units : int
        LSTM units U.
    mask_input : Layer, (batch, time)
        1 for real words, 0 for padding; padded steps keep the state.
    hid_init, cell_init : Layer, (batch, U)
        The initial states (e.g. MLPs of the mean region).
    attention_size : int
        A, the size of the space regions and the state are compared in.
    gate : "none", "selector" or "sentinel"
    explicit_backward : bool
        For the gates "none" and "selector", differentiate the scan with the
        hand-written backward pass of :mod:`.attention_scan` (the same
        gradient, without recomputing the forward step); False: Theano's own.

    Output
    ------
    (batch, time, U + D + L + 1): at every step ``[h_t, ctx_t, alpha_t, gate_t]``;
    :meth:`split_output` names the parts. ``alpha_t`` (L) sums to 1 over the
    regions (to ``gate_t`` with the sentinel); ``gate_t`` is in [0, 1].

    Examples
    --------
    >>> from lasagne.layers import InputLayer, get_output
    >>> words = InputLayer((None, None, 8))
    >>> regions = InputLayer((None, 4, 6))
    >>> mask = InputLayer((None, None))
    >>> h0, c0 = InputLayer((None, 5)), InputLayer((None, 5))
    >>> layer = AttentionLSTMLayer(words, regions, 5, mask, h0, c0, attention_size=3)
    >>> layer.output_shape    # U + D + L + 1 = 5 + 6 + 4 + 1
    (None, None, 16)
    >>> [p.name for p in layer.get_params()][:4]
    ['W_in', 'W_hid', 'W_ctx', 'b']
    """

    def __init__(self, incoming, regions, num_units, mask_input, hid_init, cell_init,
                 attention_size=256, gate="selector", W=init.Normal(0.01),
                 W_hid=init.Orthogonal(), explicit_backward=True, **kwargs):
        if gate not in GATES:
            raise ValueError("gate must be one of %s, not %r" % (", ".join(GATES), gate))
        super(AttentionLSTMLayer, self).__init__(
            [incoming, regions, mask_input, hid_init, cell_init], **kwargs)
        embed = self.input_shapes[0][2]
        self.n_regions, self.region_size = self.input_shapes[1][1:]
        U, D, A = num_units, self.region_size, attention_size
        self.num_units, self.attention_size, self.gate = U, A, gate
        self.explicit_backward = explicit_backward
        # the LSTM (gates in Lasagne's order: in, forget, cell, out)
        self.W_in = self.add_param(W, (embed, 4 * U), name="W_in")
        self.W_hid = self.add_param(_stacked(W_hid, U, 4), (U, 4 * U), name="W_hid")
        self.W_ctx = self.add_param(W, (D, 4 * U), name="W_ctx")
        self.b = self.add_param(init.Constant(0.), (4 * U,), name="b", regularizable=False)
        # attention
        self.W_region_att = self.add_param(W, (D, A), name="W_region_att")
        self.b_att = self.add_param(init.Constant(0.), (A,), name="b_att", regularizable=False)
        self.W_hid_att = self.add_param(W, (U, A), name="W_hid_att")
        self.w_att = self.add_param(W, (A,), name="w_att")
        if gate == "selector":
            self.w_gate = self.add_param(W, (U,), name="w_gate")
            self.b_gate = self.add_param(init.Constant(0.), (), name="b_gate",
                                         regularizable=False)
        elif gate == "sentinel":
            self.W_sentinel_in = self.add_param(W, (embed, U), name="W_sentinel_in")
            self.W_sentinel_hid = self.add_param(W, (U, U), name="W_sentinel_hid")
            self.b_sentinel = self.add_param(init.Constant(0.), (U,), name="b_sentinel",
                                             regularizable=False)
            self.W_sentinel_att = self.add_param(W, (U, A), name="W_sentinel_att")
            self.W_sentinel_ctx = self.add_param(W, (U, D), name="W_sentinel_ctx")

    def get_output_shape_for(self, input_shapes):
        batch, time = input_shapes[0][:2]
        return batch, time, self.num_units + self.region_size + self.n_regions + 1

    def split_output(self, output):
        """``(h, ctx, alpha, gate)`` of an output ``(..., U + D + L + 1)``; gate without its axis."""
        U, D, L = self.num_units, self.region_size, self.n_regions
        return (output[..., :U], output[..., U:U + D], output[..., U + D:U + D + L],
                output[..., -1])

    # -- the step ------------------------------------------------------------
    def word_products(self, embeddings):
        """The per-step inputs of ``embeddings`` (..., E): ``[x W_x + b]``, and
        for the sentinel also ``x W_sx + b_s``; computed for all steps at once."""
        words = [T.dot(embeddings, self.W_in) + self.b]
        if self.gate == "sentinel":
            words.append(T.dot(embeddings, self.W_sentinel_in) + self.b_sentinel)
        return words

    def project_regions(self, regions):
        """``a W_a + b_a`` (N, L, A): computed once per image, as arctic-captions
        does before its scan, since it does not change between steps."""
        return T.dot(regions, self.W_region_att) + self.b_att

    def step(self, words, hid, cell, regions, projected):
        """One step: ``words`` from :meth:`word_products` for this step (list);
        returns ``(hid, cell, ctx, alpha, gate)``, each (N, ...)."""
        parts = self.attend(words, hid, cell, regions, projected)
        gates, U = parts["gates"], self.num_units
        i, f = T.nnet.sigmoid(gates[:, :U]), T.nnet.sigmoid(gates[:, U:2 * U])
        c, o = T.tanh(gates[:, 2 * U:3 * U]), T.nnet.sigmoid(gates[:, 3 * U:])
        cell = f * cell + i * c
        return o * T.tanh(cell), cell, parts["ctx"], parts["alpha"], parts["gate"]

    def attend(self, words, hid, cell, regions, projected):
        """A step up to the LSTM's non-linearities, by name: ``"ctx"``,
        ``"alpha"``, ``"gate"`` as :meth:`step` returns them; ``"gates"`` (N, 4U),
        the pre-activations of i, f, c~, o; and what a backward pass keeps:
        ``"state"`` (N, A), ``h W_d``, and ``"visual"`` (N, D), the context
        before the gate (``sum_i alpha_i a_i``, plus the sentinel's share)."""
        state = T.dot(hid, self.W_hid_att)
        scores = AttentionScores()(projected, state, self.w_att)   # (N, L)
        if self.gate == "sentinel":
            sentinel = T.nnet.sigmoid(words[1] + T.dot(hid, self.W_sentinel_hid)) * T.tanh(cell)
            sentinel_score = T.dot(T.tanh(T.dot(sentinel, self.W_sentinel_att) + state),
                                   self.w_att)
            weights = T.nnet.softmax(T.concatenate([scores, sentinel_score[:, None]], axis=1))
            alpha, gate = weights[:, :-1], 1 - weights[:, -1]
            ctx = visual = (WeightedSum()(alpha, regions)
                            + weights[:, -1].dimshuffle(0, 'x') * T.dot(sentinel,
                                                                       self.W_sentinel_ctx))
        else:
            alpha = T.nnet.softmax(scores)
            ctx = visual = WeightedSum()(alpha, regions)
            if self.gate == "selector":
                gate = T.nnet.sigmoid(T.dot(hid, self.w_gate) + self.b_gate)
                ctx = gate.dimshuffle(0, 'x') * visual
            else:
                gate = T.ones_like(alpha[:, 0])
        gates = words[0] + T.dot(hid, self.W_hid) + T.dot(ctx, self.W_ctx)
        return dict(ctx=ctx, alpha=alpha, gate=gate, gates=gates, state=state, visual=visual)

    def get_output_for(self, inputs, unroll=None, **kwargs):
        """Scan over time; with ``unroll=N`` (the sequences' exact length) the
        N steps are written out in the graph instead, which Theano compiles
        into one C program (faster to run, slower to compile)."""
        embeddings, regions, mask, hid, cell = inputs
        words = self.word_products(embeddings.dimshuffle(1, 0, 2))
        projected = self.project_regions(regions)
        mask = mask.dimshuffle(1, 0, 'x')

        def step(*args):
            n = len(words)
            words_t, mask_t, (hid, cell) = args[:n], args[n], args[n + 1:n + 3]
            new_hid, new_cell, ctx, alpha, gate = self.step(list(words_t), hid, cell,
                                                            regions, projected)
            new_hid = keep_state_where_padded(new_hid, hid, mask_t)
            new_cell = keep_state_where_padded(new_cell, cell, mask_t)
            return new_hid, new_cell, ctx, alpha, gate

        if unroll:
            outputs, state = [], (hid, cell)
            for t in range(unroll):
                out = step(*([w[t] for w in words] + [mask[t]] + list(state)))
                state = out[:2]
                outputs.append(out)
            hids, _, ctxs, alphas, gates = [T.stack(o, axis=0) for o in zip(*outputs)]
        elif self.explicit_backward and self.gate in EXPLICIT_BACKWARD_GATES:
            hids, ctxs, alphas, gates = attention_scan(self, words[0], mask, hid, cell,
                                                       regions, projected)
        else:
            (hids, _, ctxs, alphas, gates), _ = theano.scan(
                step, sequences=words + [mask], outputs_info=[hid, cell, None, None, None],
                non_sequences=[regions, projected], strict=False)
        out = T.concatenate([hids, ctxs, alphas, gates.dimshuffle(0, 1, 'x')], axis=2)
        return out.dimshuffle(1, 0, 2)


def _stacked(initializer, units, n):
    """``n`` independent (units, units) draws of ``initializer`` side by side."""
    class Stacked(init.Initializer):
        def sample(self, shape):
            return np.concatenate([initializer((units, units)) for _ in range(n)], axis=1)
    return Stacked()


class DeepOutputLayer(MergeLayer):
    """``tanh(h W_hid + ctx W_ctx + word + b)``: the input of the word softmax.

    Xu et al.'s deep output (arctic-captions' ``prev2out`` and ``ctx2out``):
    the next word depends on the state, the image context and the previous
    word's embedding, not on the state alone.

    Parameters
    ----------
    incomings : [hid (..., U), ctx (..., D), words (..., E)]

    Output
    ------
    (..., E), the embedding size.

    Examples
    --------
    >>> from lasagne.layers import InputLayer
    >>> layer = DeepOutputLayer([InputLayer((None, None, 5)), InputLayer((None, None, 6)),
    ...                          InputLayer((None, None, 8))])
    >>> layer.output_shape
    (None, None, 8)
    """

    def __init__(self, incomings, W=init.Normal(0.01), **kwargs):
        super(DeepOutputLayer, self).__init__(incomings, **kwargs)
        (U, D, E) = (s[-1] for s in self.input_shapes)
        self.W_hid = self.add_param(W, (U, E), name="W_hid")
        self.W_ctx = self.add_param(W, (D, E), name="W_ctx")
        self.b = self.add_param(init.Constant(0.), (E,), name="b", regularizable=False)

    def get_output_shape_for(self, input_shapes):
        return input_shapes[2]

    def get_output_for(self, inputs, **kwargs):
        hid, ctx, words = inputs
        return T.tanh(T.dot(hid, self.W_hid) + T.dot(ctx, self.W_ctx) + words + self.b)


def attention_penalty(alpha, mask):
    """Show, Attend and Tell's doubly stochastic term, per caption.

    ``sum_i (1 - sum_t alpha_ti)^2`` over the regions i, with the sum over a
    caption's real steps t (``mask`` (batch, time) is 1 there): it pushes
    the decoder to look at every region over the course of a caption.
    ``alpha`` is (batch, time, L); returns (batch,).

    >>> import numpy as np
    >>> alpha = T.tensor3(); mask = T.matrix()
    >>> f = theano.function([alpha, mask], attention_penalty(alpha, mask))
    >>> a = np.full((1, 2, 2), 0.5, dtype=theano.config.floatX)   # two steps, two regions
    >>> f(a, np.ones((1, 2), dtype=theano.config.floatX)).tolist()    # each region's sum is 1
    [0.0]
    >>> f(a, np.array([[1, 0]], dtype=theano.config.floatX)).tolist()   # one real step: 2 x 0.5**2
    [0.5]
    """
    seen = T.sum(alpha * mask.dimshuffle(0, 1, 'x'), axis=1)
    return T.sum((1 - seen) ** 2, axis=1)
