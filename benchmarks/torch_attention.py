"""The attention network of :mod:`lasagne_caption.models.attention` re-written in PyTorch (CPU).

Only for the attention speed benchmark and its tests
(tests/benchmarks/test_torch_attention.py): torch is an optional extra
(``pip install -e .[bench]``), never a toolkit dependency. Not a command:
``python benchmarks/attention_speed.py`` runs it (one subprocess per round),
and from the repository root ``from benchmarks.torch_attention import
TorchAttentionNet, TorchAttentionTrainer`` imports it. The math is the
toolkit's (:class:`lasagne_caption.models.AttentionModel` with
:class:`~lasagne_caption.layers.attention.AttentionLSTMLayer`), step for step:

* initial states from the mean region ``a_bar`` (mean over the L regions):
  ``h0 = tanh(a_bar W_h0 + b_h0)``, ``c0 = tanh(a_bar W_c0 + b_c0)``;
* ``EmbeddingLayer`` lookup of the input words (a padding index -1 reads the
  last row, as Theano's indexing does; padded steps are masked anyway);
* the regions projected once, ``P = a W_a + b_a`` (N, L, A); then at every
  step, from the previous ``h``, ``c``:

  - ``s = h W_hid_att``; scores ``e_l = w_att . tanh(P_l + s)``;
  - gate ``"none"``: ``alpha = softmax(e)``, ``ctx = sum_l alpha_l a_l``;
  - ``"selector"``: the same, ``ctx`` times ``sigmoid(h w_gate + b_gate)``;
  - ``"sentinel"``: ``v = sigmoid(x W_sx + b_s + h W_sh) * tanh(c)``, scored
    ``w_att . tanh(v W_satt + s)`` as an (L+1)-th candidate of the softmax;
    ``alpha`` = the first L weights, ``ctx = sum_l alpha_l a_l + beta v W_sctx``
    (``beta`` the sentinel's weight);
  - the LSTM without peepholes, gates in Lasagne's order i, f, c, o in the
    4U blocks of ``x W_in + b + h W_hid + ctx W_ctx``; ``c' = f c + i tanh(c~)``,
    ``h' = o tanh(c')``; padded steps keep ``h`` and ``c``;

* the deep output ``tanh(h W_dh + ctx W_dctx + E y + b_d)`` (E y: the step's
  input word), then dropout (Lasagne's: Bernoulli, kept values scaled by
  ``1 / (1 - p)``; torch's own RNG, so masks differ from Theano's) when
  training, then ``softmax(. W_out + b_out)``;
* loss: ``losses.real_target_cross_entropy`` (the state at step t predicts
  word t+1; the mean over the real, non-padding, targets; the output layer
  applied only to those rows), plus ``doubly_stochastic`` (lambda) times
  ``sum_captions sum_l (1 - sum_t alpha_tl)^2 / n_words``, where t runs over
  the steps that have a real target and n_words counts the real targets
  (no penalty term at all when lambda is 0, as in ``training_loss``);
* Lasagne 0.1's Adam (:class:`benchmarks.torch_peer.LasagneAdam`), learning
  rate 4e-4 by default (``AttentionModel``'s), so parameters match after
  every step when dropout is 0.

Weights are copied from (and back to) the Theano model's
``get_param_values()`` list, whose order is ``models.attention.param_shapes``.
"""
import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.torch_peer import LasagneAdam

PAD_IX = -1
GATES = ("none", "selector", "sentinel")


def param_names(gate):
    """The Theano network's parameter labels, in ``get_param_values()`` order."""
    if gate not in GATES:
        raise ValueError("gate must be one of %s, not %r" % (", ".join(GATES), gate))
    names = ["embedding.W", "hid_init.W", "hid_init.b", "cell_init.W", "cell_init.b",
             "decoder.W_in", "decoder.W_hid", "decoder.W_ctx", "decoder.b",
             "decoder.W_region_att", "decoder.b_att", "decoder.W_hid_att", "decoder.w_att"]
    if gate == "selector":
        names += ["decoder.w_gate", "decoder.b_gate"]
    elif gate == "sentinel":
        names += ["decoder.W_sentinel_in", "decoder.W_sentinel_hid", "decoder.b_sentinel",
                  "decoder.W_sentinel_att", "decoder.W_sentinel_ctx"]
    return names + ["deep_output.W_hid", "deep_output.W_ctx", "deep_output.b",
                    "output.W", "output.b"]


def param_shapes(config):
    """Shapes in the same order (``lasagne_caption.models.attention.param_shapes``)."""
    n, D = config.n_tokens, config.image_shape[1]
    E, U, A = config.embed_size, config.units, config.attention_size
    shapes = [(n, E), (D, U), (U,), (D, U), (U,),
              (E, 4 * U), (U, 4 * U), (D, 4 * U), (4 * U,),
              (D, A), (A,), (U, A), (A,)]
    if config.gate == "selector":
        shapes += [(U,), ()]
    elif config.gate == "sentinel":
        shapes += [(E, U), (U, U), (U,), (U, A), (U, D)]
    return shapes + [(U, E), (D, E), (E,), (E, n), (n,)]


class TorchAttentionNet(torch.nn.Module):
    """Show, Attend and Tell with the toolkit's gate, in PyTorch.

    Parameters
    ----------
    config : lasagne_caption.models.AttentionConfig (or anything with its fields)
    param_values : list of arrays, optional
        ``AttentionModel.get_param_values()``; zeros if None.
    """

    def __init__(self, config, param_values=None):
        super().__init__()
        if config.gate not in GATES:
            raise ValueError("gate must be one of %s, not %r" % (", ".join(GATES), config.gate))
        self.config = config
        self.n_tokens = config.n_tokens
        self.n_regions, self.region_size = config.image_shape
        self.embed_size, self.units = config.embed_size, config.units
        self.attention_size, self.gate = config.attention_size, config.gate
        self.dropout = float(config.dropout)
        self.doubly_stochastic = float(config.doubly_stochastic)
        self._names = param_names(config.gate)
        for name, shape in zip(self._names, param_shapes(config)):
            self.register_parameter(name.replace(".", "__"),
                                    torch.nn.Parameter(torch.zeros(shape, dtype=torch.float32)))
        if param_values is not None:
            self.set_param_values(param_values)

    # -- parameters ---------------------------------------------------------
    def p(self, name):
        return getattr(self, name.replace(".", "__"))

    def ordered_params(self):
        """Parameters in the Theano model's ``get_param_values()`` order."""
        return [self.p(n) for n in self._names]

    def trainable_params(self):
        return self.ordered_params()      # every parameter of the Theano network is trained

    def set_param_values(self, values):
        """Copy the Theano model's ``get_param_values()`` list in."""
        values = list(values)
        if len(values) != len(self._names):
            raise ValueError("%d arrays for %d parameters" % (len(values), len(self._names)))
        with torch.no_grad():
            for name, v in zip(self._names, values):
                target = self.p(name)
                v = np.array(v, dtype="float32", order="C")   # keeps 0-d (b_gate) 0-d
                if tuple(v.shape) != tuple(target.shape):
                    raise ValueError("%s: shape %s, expected %s"
                                     % (name, v.shape, tuple(target.shape)))
                target.copy_(torch.from_numpy(v))

    def param_values(self):
        """Copies of the parameters as numpy arrays, in ``get_param_values()`` order."""
        return [p.detach().numpy().copy() for p in self.ordered_params()]

    get_param_values = param_values

    @classmethod
    def from_theano(cls, model, dropout=None):
        """A peer of an :class:`~lasagne_caption.models.AttentionModel` with its current weights."""
        config = model.config
        if dropout is not None:
            import dataclasses
            config = dataclasses.replace(config, dropout=dropout)
        return cls(config, model.get_param_values())

    # -- forward --------------------------------------------------------------
    def decode(self, regions, sentences):
        """Teacher-forced decoder: ``(hid (B, T, U), ctx (B, T, D), alpha (B, T, L), words
        (B, T, E))``, ``words`` the embeddings of the inputs."""
        p = self.p
        U = self.units
        batch, steps = sentences.shape
        mean = regions.mean(1)
        hid = torch.tanh(torch.addmm(p("hid_init.b"), mean, p("hid_init.W")))
        cell = torch.tanh(torch.addmm(p("cell_init.b"), mean, p("cell_init.W")))
        # -1 (padding) reads the last row, as in Theano; those steps are masked
        words = F.embedding(sentences % self.n_tokens, p("embedding.W"))      # (B, T, E)
        words_t = words.transpose(0, 1)                                        # (T, B, E)
        x = torch.matmul(words_t, p("decoder.W_in")) + p("decoder.b")          # (T, B, 4U)
        if self.gate == "sentinel":
            xs = torch.matmul(words_t, p("decoder.W_sentinel_in")) + p("decoder.b_sentinel")
        projected = torch.matmul(regions, p("decoder.W_region_att")) + p("decoder.b_att")
        mask = (sentences != PAD_IX).t().unsqueeze(-1)                         # (T, B, 1)
        W_hid_att, w_att = p("decoder.W_hid_att"), p("decoder.w_att")
        W_hid, W_ctx = p("decoder.W_hid"), p("decoder.W_ctx")
        hids, ctxs, alphas = [], [], []
        for t in range(steps):
            state = hid.mm(W_hid_att)                                          # (B, A)
            scores = torch.tanh(projected + state.unsqueeze(1)).matmul(w_att)  # (B, L)
            if self.gate == "sentinel":
                sentinel = (torch.sigmoid(xs[t] + hid.mm(p("decoder.W_sentinel_hid")))
                            * torch.tanh(cell))
                s_score = torch.tanh(sentinel.mm(p("decoder.W_sentinel_att")) + state).matmul(w_att)
                weights = torch.softmax(torch.cat([scores, s_score.unsqueeze(1)], 1), 1)
                alpha = weights[:, :-1]
                ctx = (torch.bmm(alpha.unsqueeze(1), regions).squeeze(1)
                       + weights[:, -1:] * sentinel.mm(p("decoder.W_sentinel_ctx")))
            else:
                alpha = torch.softmax(scores, 1)
                ctx = torch.bmm(alpha.unsqueeze(1), regions).squeeze(1)        # (B, D)
                if self.gate == "selector":
                    gate = torch.sigmoid(hid.matmul(p("decoder.w_gate")) + p("decoder.b_gate"))
                    ctx = gate.unsqueeze(1) * ctx
            gates = x[t] + hid.mm(W_hid) + ctx.mm(W_ctx)
            i, f, c, o = gates.split(U, 1)
            new_cell = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(c)
            new_hid = torch.sigmoid(o) * torch.tanh(new_cell)
            m = mask[t]
            cell = torch.where(m, new_cell, cell)
            hid = torch.where(m, new_hid, hid)
            hids.append(hid)
            ctxs.append(ctx)
            alphas.append(alpha)
        return torch.stack(hids, 1), torch.stack(ctxs, 1), torch.stack(alphas, 1), words

    def loss(self, regions, sentences, train=False):
        """Cross-entropy per real target word plus lambda times the attention term
        (``training_loss``); dropout on the deep output only with ``train=True``."""
        p = self.p
        regions = torch.as_tensor(np.asarray(regions, dtype="float32"))
        sentences = torch.as_tensor(np.asarray(sentences, dtype="int64"))
        hid, ctx, alpha, words = self.decode(regions, sentences)
        # the state at step t predicts word t+1: keep the rows with a real target
        targets = sentences[:, 1:].reshape(-1)
        real = (targets != PAD_IX).nonzero().squeeze(1)

        def rows(a):
            return a[:, :-1].reshape(-1, a.shape[-1])[real]
        # the deep output of those rows only (the others never reach the loss)
        deep = torch.tanh(rows(hid).mm(p("deep_output.W_hid"))
                          + rows(ctx).mm(p("deep_output.W_ctx")) + rows(words)
                          + p("deep_output.b"))
        if train and self.dropout:
            deep = F.dropout(deep, self.dropout, training=True)
        logits = torch.addmm(p("output.b"), deep, p("output.W"))
        n_words = max(int(real.shape[0]), 1)
        loss = F.cross_entropy(logits, targets[real], reduction="sum") / n_words
        if not self.doubly_stochastic:
            return loss
        steps = (sentences[:, 1:] != PAD_IX).to(alpha.dtype)                   # (B, T-1)
        seen = (alpha[:, :-1] * steps.unsqueeze(-1)).sum(1)                     # (B, L)
        penalty = ((1 - seen) ** 2).sum() / n_words
        return loss + self.doubly_stochastic * penalty


class TorchAttentionTrainer(object):
    """``train_step(regions, sentences) -> loss``: one Adam step, as
    ``AttentionModel.train_step``."""

    def __init__(self, net, learning_rate=4e-4):
        self.net = net
        self.optimizer = LasagneAdam(net.trainable_params(), learning_rate)

    def train_step(self, regions, sentences, train=True):
        self.optimizer.zero_grad()
        loss = self.net.loss(regions, sentences, train=train)
        loss.backward()
        self.optimizer.step()
        return loss.item()

    def loss(self, regions, sentences):
        """The loss with dropout off (``AttentionModel.loss``)."""
        with torch.no_grad():
            return float(self.net.loss(regions, sentences, train=False))
