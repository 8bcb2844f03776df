"""The seminar network of :mod:`lasagne_caption.models` re-written in PyTorch (CPU).

Only for the speed benchmark and its tests (tests/benchmarks/test_bench.py):
torch is an optional extra (``pip install -e .[bench]``), never a toolkit
dependency. Not a command: ``python benchmarks/bench.py`` runs it (its
``torch`` worker, one subprocess per round), and from the repository root
``from benchmarks.torch_peer import TorchCaptionNet, TorchTrainer`` imports it.
The math is the toolkit's (:class:`lasagne_caption.models.SeminarModel`),
step for step:

* ``EmbeddingLayer`` lookup (a padding index -1 reads the last row, as
  Theano's indexing does; padded steps are masked anyway);
* image codes -> dropout -> ``Dense(units, rectify)`` = the LSTM's cell_init;
  ``hid_init`` is the (1, units) zero parameter of the Theano model (not trained);
* Lasagne's peephole LSTM: gate pre-activations ``x_t W_in + b + h W_hid``
  whose *gradient* is clipped to [-c, c] (Theano's ``grad_clip``), the
  peepholes added before their sigmoid (Lasagne master's output gate,
  ``sigmoid(o + c_t * w_co)``; Lasagne 0.1's ``sigmoid(o) + c_t * w_co``
  with ``variant="lasagne-0.1"``), and padded steps keeping the previous
  cell and hidden state;
* ``models.seminar.fast_masked_cross_entropy``: next-word softmax cross-entropy, mean over
  the real (non-padding) targets, the output layer applied only there;
* Lasagne 0.1's Adam (``epsilon`` added to ``sqrt(v_t)``, the bias correction
  folded into the step size), so parameters match after every step.

Weights are copied from (and back to) the Theano model's
``get_param_values()`` list, so both implementations start from the same
numbers.
"""
import numpy as np
import torch
import torch.nn.functional as F

PAD_IX = -1
GATES = ("ingate", "forgetgate", "cell", "outgate")


class _GradClip(torch.autograd.Function):
    """Identity forward; the gradient flowing back is clipped to [lo, hi]."""

    @staticmethod
    def forward(ctx, x, lo, hi):
        ctx.bounds = (lo, hi)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        lo, hi = ctx.bounds
        return grad.clamp(lo, hi), None, None


def grad_clip(x, bound):
    """Theano's ``theano.gradient.grad_clip(x, -bound, bound)``; identity if bound is 0."""
    return _GradClip.apply(x, -bound, bound) if bound else x


def param_names():
    """Parameter names of the Theano network in ``get_all_param_values`` order."""
    names = ["embedding.W", "image_projection.W", "image_projection.b"]
    for gate in GATES:
        names += ["decoder.W_in_to_" + gate, "decoder.W_hid_to_" + gate, "decoder.b_" + gate]
    names += ["decoder.W_cell_to_ingate", "decoder.W_cell_to_forgetgate",
              "decoder.W_cell_to_outgate", "decoder.hid_init", "output.W", "output.b"]
    return names


class TorchCaptionNet(torch.nn.Module):
    """The seminar network (cell_init image injection, LSTM with peepholes).

    Parameters
    ----------
    n_tokens, code_size, embed_size, units : int
    dropout : float
        Dropout on the image codes during :meth:`loss` with ``train=True``
        (Lasagne rescales by 1 / (1 - p)).
    grad_clipping : float
        Bound of the gate pre-activation gradients (0: none).
    """

    def __init__(self, n_tokens, code_size, embed_size=128, units=200, dropout=0.5,
                 grad_clipping=10.0, variant="master"):
        super().__init__()
        self.n_tokens, self.code_size = n_tokens, code_size
        self.embed_size, self.units = embed_size, units
        self.dropout, self.grad_clipping = dropout, grad_clipping
        self.variant = variant
        shapes = self.param_shapes()
        self._names = list(shapes)
        for name, shape in shapes.items():
            p = torch.nn.Parameter(torch.zeros(shape, dtype=torch.float32))
            if name == "decoder.hid_init":
                p.requires_grad_(False)   # Lasagne: learn_init=False
            self.register_parameter(name.replace(".", "__"), p)

    def param_shapes(self):
        E, U = self.embed_size, self.units
        shapes = {"embedding.W": (self.n_tokens, E),
                  "image_projection.W": (self.code_size, U), "image_projection.b": (U,)}
        for gate in GATES:
            shapes["decoder.W_in_to_" + gate] = (E, U)
            shapes["decoder.W_hid_to_" + gate] = (U, U)
            shapes["decoder.b_" + gate] = (U,)
        for gate in ("ingate", "forgetgate", "outgate"):
            shapes["decoder.W_cell_to_" + gate] = (U,)
        shapes["decoder.hid_init"] = (1, U)
        shapes["output.W"] = (U, self.n_tokens)
        shapes["output.b"] = (self.n_tokens,)
        return shapes

    # -- parameters ---------------------------------------------------------
    def p(self, name):
        return getattr(self, name.replace(".", "__"))

    def ordered_params(self):
        """Parameters in the Theano model's ``get_param_values()`` order."""
        return [self.p(n) for n in self._names]

    def trainable_params(self):
        return [p for p in self.ordered_params() if p.requires_grad]

    def set_param_values(self, values):
        """Copy the Theano model's ``get_param_values()`` list in."""
        if len(values) != len(self._names):
            raise ValueError("%d arrays for %d parameters" % (len(values), len(self._names)))
        with torch.no_grad():
            for name, v in zip(self._names, values):
                target = self.p(name)
                v = np.asarray(v, dtype="float32")
                if tuple(v.shape) != tuple(target.shape):
                    raise ValueError("%s: shape %s, expected %s"
                                     % (name, v.shape, tuple(target.shape)))
                target.copy_(torch.from_numpy(v))

    def get_param_values(self):
        return [p.detach().numpy().copy() for p in self.ordered_params()]

    @classmethod
    def from_theano(cls, model, dropout=None):
        """A peer of a :class:`lasagne_caption.models.SeminarModel` with its current weights."""
        c = model.config
        if c.cell != "lstm" or c.image_inject != "cell_init":
            raise ValueError("the PyTorch peer implements the default network only "
                             "(cell=lstm, image_inject=cell_init)")
        net = cls(c.n_tokens, c.code_size, c.embed_size, c.units,
                  c.dropout if dropout is None else dropout, c.grad_clipping, c.lstm_variant)
        net.set_param_values(model.get_param_values())
        return net

    # -- forward --------------------------------------------------------------
    def hidden_states(self, codes, sentences, train=True):
        """LSTM hidden states (batch, time, units)."""
        p = self.p
        codes = torch.as_tensor(codes, dtype=torch.float32)
        sentences = torch.as_tensor(sentences, dtype=torch.long)
        batch, steps = sentences.shape
        if train and self.dropout:
            codes = F.dropout(codes, self.dropout, training=True)
        cell = torch.relu(torch.addmm(p("image_projection.b"), codes, p("image_projection.W")))
        hid = p("decoder.hid_init").expand(batch, self.units)
        # -1 (padding) reads the last row, as in Theano; those steps are masked
        words = F.embedding(sentences % self.n_tokens, p("embedding.W"))
        W_in = torch.cat([p("decoder.W_in_to_" + g) for g in GATES], 1)
        W_hid = torch.cat([p("decoder.W_hid_to_" + g) for g in GATES], 1)
        b = torch.cat([p("decoder.b_" + g) for g in GATES], 0)
        # input-to-gates for every step at once, time first: (T, B, 4U)
        x = torch.addmm(b, words.transpose(0, 1).reshape(-1, self.embed_size), W_in)
        x = x.view(steps, batch, 4 * self.units)
        mask = (sentences != PAD_IX).t().unsqueeze(-1)    # (T, B, 1)
        w_ci, w_cf, w_co = (p("decoder.W_cell_to_" + g) for g in ("ingate", "forgetgate", "outgate"))
        U = self.units
        outputs = []
        for t in range(steps):
            gates = grad_clip(torch.addmm(x[t], hid, W_hid), self.grad_clipping)
            i_pre, f_pre, c_pre, o_pre = gates.split(U, 1)
            ingate = torch.sigmoid(i_pre + cell * w_ci)
            forgetgate = torch.sigmoid(f_pre + cell * w_cf)
            new_cell = forgetgate * cell + ingate * torch.tanh(c_pre)
            if self.variant == "master":
                outgate = torch.sigmoid(o_pre + new_cell * w_co)
            else:   # Lasagne 0.1: after the sigmoid
                outgate = torch.sigmoid(o_pre) + new_cell * w_co
            new_hid = outgate * torch.tanh(new_cell)
            m = mask[t]
            cell = torch.where(m, new_cell, cell)
            hid = torch.where(m, new_hid, hid)
            outputs.append(hid)
        return torch.stack(outputs, 1)

    def loss(self, codes, sentences, train=True):
        """``fast_masked_cross_entropy``: mean next-word NLL over the real targets."""
        sentences = torch.as_tensor(sentences, dtype=torch.long)
        hidden = self.hidden_states(codes, sentences, train=train)
        hidden = hidden[:, :-1].reshape(-1, self.units)
        targets = sentences[:, 1:].reshape(-1)
        real = (targets != PAD_IX).nonzero().squeeze(1)
        logits = torch.addmm(self.p("output.b"), hidden[real], self.p("output.W"))
        nll = F.cross_entropy(logits, targets[real], reduction="sum")
        return nll / max(int(real.shape[0]), 1)


class LasagneAdam(object):
    """``lasagne.updates.adam`` (Lasagne 0.1) on a list of torch parameters.

    ``a_t = lr * sqrt(1 - beta2^t) / (1 - beta1^t)``;
    ``param -= a_t * m_t / (sqrt(v_t) + epsilon)``.
    """

    def __init__(self, params, learning_rate=1e-3, beta1=0.9, beta2=0.999, epsilon=1e-8):
        self.params = list(params)
        self.lr, self.beta1, self.beta2, self.epsilon = learning_rate, beta1, beta2, epsilon
        self.t = 0
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]

    @torch.no_grad()
    def step(self):
        self.t += 1
        # Theano computes a_t in float32
        t = np.float32(self.t)
        a_t = float(np.float32(self.lr) * np.sqrt(np.float32(1) - np.float32(self.beta2) ** t)
                    / (np.float32(1) - np.float32(self.beta1) ** t))
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        torch._foreach_mul_(self.m, self.beta1)
        torch._foreach_add_(self.m, grads, alpha=1 - self.beta1)
        torch._foreach_mul_(self.v, self.beta2)
        torch._foreach_addcmul_(self.v, grads, grads, value=1 - self.beta2)
        denom = torch._foreach_sqrt(self.v)
        torch._foreach_add_(denom, self.epsilon)
        torch._foreach_addcdiv_(self.params, self.m, denom, value=-a_t)

    def zero_grad(self):
        for p in self.params:
            p.grad = None


class TorchTrainer(object):
    """``train_step(codes, sentences) -> loss``: one Adam step, as ``SeminarModel.train_step``."""

    def __init__(self, net, learning_rate=1e-3):
        self.net = net
        self.optimizer = LasagneAdam(net.trainable_params(), learning_rate)

    def train_step(self, codes, sentences, train=True):
        self.optimizer.zero_grad()
        loss = self.net.loss(codes, sentences, train=train)
        loss.backward()
        self.optimizer.step()
        return loss.item()

    def val_step(self, codes, sentences):
        with torch.no_grad():
            return float(self.net.loss(codes, sentences, train=False))
