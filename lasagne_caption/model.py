"""The seminar's captioning network, its masked loss and compiled functions.

Network (defaults are the seminar's)::

    words (batch, time) int32 ──► EmbeddingLayer(n_tokens → 128) ─┐
    image codes (batch, D) ──► Dropout(0.5) ► Dense(200) ── cell_init ─► LSTM(200, mask)
        ► BroadcastLayer(0, 1) ► Dense(n_tokens, softmax) ► UnbroadcastLayer
        = next-word probabilities (batch, time, n_tokens)

Training unrolls the LSTM for batches up to ``UNROLL_MAX`` steps (padded to
a multiple of ``UNROLL_MULTIPLE``; one compiled train step per length) and
computes the output layer on real targets only; validation and generation
use scan. Same loss and gradients either way (tests/test_model.py).

Options (off by default): embedding / LSTM sizes, the image fed as the
first input step instead of the cell state (Show and Tell), a GRU instead of
the LSTM, embeddings initialised from a GloVe file (frozen or trainable).
"""
import dataclasses
import functools
import json
from collections import OrderedDict

import lasagne
import numpy as np
import theano
import theano.tensor as T
from lasagne.layers import (DenseLayer, DropoutLayer, EmbeddingLayer,
                            InputLayer, ReshapeLayer)
from lasagne.nonlinearities import softmax

from .errors import UserError
from .ops import LASAGNE_01, LSTM_VARIANTS, MASTER, SoftmaxNLL
from .layers import (BroadcastLayer, ConcatLayer, GRULayer, LSTMLayer, SliceLayer,
                     UnbroadcastLayer)
from .layers.recurrent import keep_state_where_padded
from .vocab import PAD_IX


# sizes past these are not a captioning network but a typo (or a hostile
# file): refused before any memory is allocated for them
MAX_TOKENS = 1000000
MAX_CODE_SIZE = 1000000
MAX_UNITS = 8192


@dataclasses.dataclass
class NetworkConfig:
    """Everything needed to rebuild the network; stored in checkpoint metadata.

    The defaults are the seminar notebook's (``grad_clipping=10``, Lasagne
    master's LSTM). Every field is checked on construction: a wrong type or
    size raises :class:`UserError`.
    """
    n_tokens: int
    code_size: int
    embed_size: int = 128
    units: int = 200
    image_inject: str = "cell_init"   # or "first_input" (Show and Tell)
    cell: str = "lstm"                # or "gru"
    dropout: float = 0.5
    grad_clipping: float = 10.0
    freeze_embeddings: bool = False
    # which Lasagne the recurrent layer follows: master (the seminar's) or
    # LASAGNE_01 (this toolkit's 0.1 checkpoints): the LSTM's output gate,
    # and whether a GRU learns its hid_init
    lstm_variant: str = MASTER

    def __post_init__(self):
        for name, top in (("n_tokens", MAX_TOKENS), ("code_size", MAX_CODE_SIZE),
                          ("embed_size", MAX_UNITS), ("units", MAX_UNITS)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise UserError("%s must be a whole number, not %r" % (name, value))
            if not 1 <= value <= top:
                raise UserError("%s must be between 1 and %d, not %d" % (name, top, value))
            setattr(self, name, int(value))
        for name, low, high in (("dropout", 0.0, 1.0), ("grad_clipping", 0.0, 1e30)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) \
                    or not np.isfinite(value) or not low <= value <= high:
                raise UserError("%s must be a number in [%g, %g], not %r" % (name, low, high, value))
            setattr(self, name, float(value))
        if self.dropout >= 1.0:
            raise UserError("dropout must be below 1, not %r" % self.dropout)
        if not isinstance(self.freeze_embeddings, bool):
            raise UserError("freeze_embeddings must be true or false, not %r"
                            % (self.freeze_embeddings,))
        for name, allowed in (("image_inject", ("cell_init", "first_input")),
                              ("cell", ("lstm", "gru")), ("lstm_variant", LSTM_VARIANTS)):
            if getattr(self, name) not in allowed:
                raise UserError("%s must be one of %s, not %r"
                                % (name, ", ".join(allowed), getattr(self, name)))

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, options):
        """The config a metadata dict describes; unknown or missing options are refused.

        An option this version does not know means the file was written by
        a newer version for a network this one would build differently.
        """
        if not isinstance(options, dict):
            raise UserError("the network options must be a mapping, not %s"
                            % type(options).__name__)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - set(fields))
        if unknown:
            raise UserError("unknown network option%s %s: written by a newer lasagne-caption? "
                            "(this version knows %s)" % ("s" if len(unknown) > 1 else "",
                                                         ", ".join(map(str, unknown)),
                                                         ", ".join(fields)))
        required = [n for n, f in fields.items() if f.default is dataclasses.MISSING]
        missing = [n for n in required if n not in options]
        if missing:
            raise UserError("network options lack %s" % ", ".join(missing))
        return cls(**options)


def param_shapes(config):
    """The parameter shapes of :func:`build_network`, in ``get_all_params`` order.

    Computed without building anything, so that a checkpoint's arrays can be
    checked against its metadata before a (possibly huge) network is
    allocated. tests/test_model.py checks it against the built networks.
    """
    n, d, e, u = config.n_tokens, config.code_size, config.embed_size, config.units
    gates = 4 if config.cell == "lstm" else 3
    if config.image_inject == "cell_init":
        shapes = [(n, e), (d, u), (u,)]
        inits = [(1, u)] if config.cell == "lstm" else []   # hid_init; the image is the other
    else:
        # the image step comes first in the decoder's input, so its layers do too
        shapes = [(d, e), (e,), (n, e)]
        inits = [(1, u), (1, u)] if config.cell == "lstm" else [(1, u)]
    shapes += [(e, u), (u, u), (u,)] * gates
    if config.cell == "lstm":
        shapes += [(u,)] * 3   # peepholes
    return shapes + inits + [(u, n), (n,)]


def read_glove(path, vocab, dim=None):
    """Embedding matrix (len(vocab), dim) from a GloVe text file.

    Words missing from the file keep a small random vector. Returns the
    matrix and the number of vocabulary words found in the file.
    """
    vectors = {}
    try:
        with open(path, encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                parts = line.rstrip().split(" ")
                if len(parts) < 2:
                    continue
                try:
                    vec = np.asarray(parts[1:], dtype="float32")
                except ValueError:
                    raise UserError("%s: line %d is not 'word float float ...'" % (path, line_no))
                if dim is None:
                    dim = len(vec)
                if len(vec) != dim:
                    raise UserError("%s: line %d has %d numbers, expected %d"
                                    % (path, line_no, len(vec), dim))
                if parts[0] in vocab.index:
                    vectors[parts[0]] = vec
    except FileNotFoundError:
        raise UserError("%s: GloVe file not found" % path)
    except UnicodeDecodeError as exc:
        raise UserError("%s: not UTF-8 text (%s)" % (path, exc.reason))
    if dim is None:
        raise UserError("%s: no word vectors in the file" % path)
    rng = np.random.RandomState(0)
    matrix = rng.normal(0, 0.1, (len(vocab), dim)).astype("float32")
    for word, vec in vectors.items():
        matrix[vocab.index[word]] = vec
    return matrix, len(vectors)


def build_network(config, sentences=None, image_codes=None, embeddings=None):
    """Build the Lasagne layers; returns a dict of them (``net["probabilities"]`` on top).

    Parameters
    ----------
    config : NetworkConfig
    sentences : int32 matrix (batch, time), padding -1; a new ``T.imatrix`` if None.
    image_codes : float32 matrix (batch, D); a new ``T.matrix`` if None.
    embeddings : array (n_tokens, E) or None
        Initial word vectors (e.g. from :func:`read_glove`); sets the embedding size.
    """
    sentences = T.imatrix("sentences") if sentences is None else sentences
    image_codes = T.matrix("image_codes") if image_codes is None else image_codes
    mask = T.neq(sentences, PAD_IX)
    net = {"sentences": sentences, "image_codes": image_codes}
    net["words"] = InputLayer((None, None), sentences, name="words")
    net["mask"] = InputLayer((None, None), mask, name="mask")
    net["image"] = InputLayer((None, config.code_size), image_codes, name="image")
    embed_size = config.embed_size if embeddings is None else embeddings.shape[1]
    net["embedding"] = EmbeddingLayer(
        net["words"], config.n_tokens, embed_size, name="embedding",
        **({} if embeddings is None else {"W": embeddings.astype("float32")}))
    if config.freeze_embeddings:
        net["embedding"].params[net["embedding"].W].discard("trainable")
    net["image_dropout"] = DropoutLayer(net["image"], p=config.dropout, name="image_dropout")
    if config.cell == "lstm":
        Recurrent = functools.partial(LSTMLayer, variant=config.lstm_variant)
        state = "cell_init"
    else:
        # Lasagne 0.1's GRU learned its hid_init by default, master's does not
        Recurrent = functools.partial(GRULayer, learn_init=config.lstm_variant == LASAGNE_01)
        state = "hid_init"
    if config.image_inject == "cell_init":
        net["image_projection"] = DenseLayer(net["image_dropout"], config.units,
                                             name="image_projection")
        net["decoder"] = Recurrent(net["embedding"], config.units, mask_input=net["mask"],
                                   grad_clipping=config.grad_clipping, name="decoder",
                                   **{state: net["image_projection"]})
        net["decoder_steps"] = net["decoder"]
    else:
        # Show and Tell: the projected image is the step before #START#
        net["image_projection"] = DenseLayer(net["image_dropout"], embed_size,
                                             nonlinearity=None, name="image_projection")
        image_step = ReshapeLayer(net["image_projection"], ([0], 1, embed_size))
        steps = ConcatLayer([image_step, net["embedding"]], axis=1)
        ones = InputLayer((None, None), T.ones_like(sentences[:, :1], dtype="int8"))
        step_mask = ConcatLayer([ones, net["mask"]], axis=1)
        net["decoder"] = Recurrent(steps, config.units, mask_input=step_mask,
                                   grad_clipping=config.grad_clipping, name="decoder")
        net["decoder_steps"] = SliceLayer(net["decoder"], slice(1, None), axis=1)
    net["broadcast"] = BroadcastLayer(net["decoder_steps"], (0, 1), name="broadcast")
    net["output"] = DenseLayer(net["broadcast"], config.n_tokens, nonlinearity=softmax,
                               name="output")
    net["probabilities"] = UnbroadcastLayer(net["output"], net["broadcast"],
                                            name="probabilities")
    return net


def param_labels(net):
    """``layer.param`` names in ``get_all_param_values`` order, for error messages."""
    labels = []
    for layer in lasagne.layers.get_all_layers(net["probabilities"]):
        # Lasagne already prefixes a named layer's parameters with its name
        labels += [p.name if layer.name else "%s.%s" % (type(layer).__name__, p.name)
                   for p in layer.get_params()]
    return labels


def masked_cross_entropy(probabilities, sentences):
    """Next-word cross-entropy, mean over the non-padding target tokens.

    ``probabilities`` (batch, time, n_tokens) at step t predicts word t+1 of
    ``sentences`` (batch, time). This is the seminar's loss, except that the
    seminar averaged over padding positions too.
    """
    n_tokens = probabilities.shape[-1]
    predicted = probabilities[:, :-1].reshape((-1, n_tokens))
    targets = sentences[:, 1:].flatten()
    mask = T.neq(targets, PAD_IX)
    # padding targets (-1) index a real column; their terms are masked out
    nll = T.nnet.categorical_crossentropy(predicted, T.maximum(targets, 0))
    return T.sum(nll * mask) / T.maximum(T.sum(mask), 1)


UNROLL_MULTIPLE = 8   # train batches are padded to a multiple of this many steps
UNROLL_MAX = 48       # longer batches use scan: longer graphs take minutes to optimise


def unrolled_length(n_steps):
    """The padded length a batch of ``n_steps`` trains with, or None for scan."""
    padded = -(-n_steps // UNROLL_MULTIPLE) * UNROLL_MULTIPLE
    return padded if padded <= UNROLL_MAX else None


def unrolled_decoder_steps(net, n_steps, deterministic=False):
    """``net["decoder_steps"]`` for sentences of exactly ``n_steps``, without scan.

    The same step function and masking as the decoder's scan, written out
    step by step in the graph: Theano then compiles the whole sequence into
    one C program, where scan runs a Python loop with an inner function
    call (and its own gradient scan) per step.
    """
    decoder = net["decoder"]
    inputs = lasagne.layers.get_output(decoder.input_layers, deterministic=deterministic)
    steps = decoder.input_products(inputs[0].dimshuffle(1, 0, 2))
    states = decoder.initial_states(inputs, steps.shape[1])
    mask = inputs[decoder.mask_incoming_index].dimshuffle(1, 0, 'x')
    skip = 1 if net["decoder_steps"] is not decoder else 0   # Show and Tell's image step
    hidden = []
    for t in range(n_steps + skip):
        new = decoder.step(steps[t], *states)
        # a padded step keeps the previous state, as in the scan
        states = [keep_state_where_padded(n, p, mask[t]) for n, p in zip(new, states)]
        hidden.append(states[-1])
    return T.stack(hidden[skip:], axis=1)


def fast_masked_cross_entropy(net, deterministic=False, n_steps=None):
    """The same loss as :func:`masked_cross_entropy`, computed on real tokens only.

    The output layer (hidden → n_tokens softmax) is most of a training step.
    Padding positions are masked out of the loss anyway, so this applies it
    only to the rows whose target is a real word, and computes the softmax
    cross-entropy with :class:`~lasagne_caption.ops.SoftmaxNLL`: the same
    loss and the same gradients, with less work. With ``n_steps`` the graph
    is for sentences of exactly that length, with the LSTM unrolled
    (:func:`unrolled_decoder_steps`).
    """
    sentences = net["sentences"]
    if n_steps:
        hidden = unrolled_decoder_steps(net, n_steps, deterministic)
    else:
        hidden = lasagne.layers.get_output(net["decoder_steps"], deterministic=deterministic)
    hidden = hidden[:, :-1].reshape((-1, hidden.shape[-1]))
    targets = sentences[:, 1:].flatten()
    real = T.neq(targets, PAD_IX).nonzero()[0]
    output = net["output"]
    nll = SoftmaxNLL()(T.dot(hidden[real], output.W), output.b, targets[real])[0]
    return T.sum(nll) / T.maximum(real.shape[0], 1)


def adam_state(params):
    """Zero Adam state for ``params``: ``[m_0, v_0, m_1, v_1, ..., t]`` as in Lasagne 0.1."""
    state = []
    for p in params:
        value = p.get_value(borrow=True)
        state += [theano.shared(np.zeros(value.shape, dtype=value.dtype),
                                broadcastable=p.broadcastable) for _ in range(2)]
    return state + [theano.shared(lasagne.utils.floatX(0.))]


def adam(loss, params, state, learning_rate=1e-3, beta1=0.9, beta2=0.999, epsilon=1e-8):
    """``lasagne.updates.adam`` (0.1) on a given :func:`adam_state`.

    Several compiled train steps (one per unrolled length) then update the
    same moments, as one optimiser would.
    """
    grads = theano.grad(loss, params)
    t_prev = state[-1]
    t = t_prev + 1
    a_t = learning_rate * T.sqrt(1 - beta2 ** t) / (1 - beta1 ** t)
    updates = OrderedDict()
    for param, g_t, m_prev, v_prev in zip(params, grads, state[0::2], state[1::2]):
        m_t = beta1 * m_prev + (1 - beta1) * g_t
        v_t = beta2 * v_prev + (1 - beta2) * g_t ** 2
        updates[m_prev] = m_t
        updates[v_prev] = v_t
        updates[param] = param - a_t * m_t / (T.sqrt(v_t) + epsilon)
    updates[t_prev] = t
    return updates


def training_mode():
    """Theano's default mode without ``local_dot22_to_dot22scalar``.

    That rewrite folds Adam's ``(1 - beta1) * grad`` into a second copy of the
    output layer's largest matrix product (about 60 ms of a 300 ms step at the
    seminar's shapes, measured with ``python -m lasagne_caption.bench``).
    """
    return theano.compile.mode.get_default_mode().excluding("local_dot22_to_dot22scalar")


class CaptionModel(object):
    """The network with its compiled Theano functions.

    Attributes ``train_step(image_codes, sentences) -> loss`` (one Adam step)
    and ``val_step(image_codes, sentences) -> loss`` (dropout off), named as in
    the seminar's notebook. Functions are compiled on first use.
    """

    def __init__(self, config, vocab, learning_rate=1e-3, embeddings=None):
        if len(vocab) != config.n_tokens:
            raise UserError("the vocabulary has %d words, the network %d"
                            % (len(vocab), config.n_tokens))
        self.config = config
        self.vocab = vocab
        self.learning_rate = learning_rate
        self.net = build_network(config, embeddings=embeddings)
        self.top = self.net["probabilities"]
        self.params = lasagne.layers.get_all_params(self.top)
        self.trainable = lasagne.layers.get_all_params(self.top, trainable=True)
        self._functions = {}
        self._optimizer_state = None

    # -- parameters -------------------------------------------------------
    def get_param_values(self):
        """Arrays in ``lasagne.layers.get_all_param_values`` order (the seminar's format)."""
        return lasagne.layers.get_all_param_values(self.top)

    def set_param_values(self, values, source="parameters"):
        """Set all parameters; a mismatch names the first offending parameter."""
        labels = param_labels(self.net)
        if len(values) != len(self.params):
            raise UserError("%s: %d parameter arrays, the network has %d (%s ... %s)"
                            % (source, len(values), len(self.params), labels[0], labels[-1]))
        for i, (p, v, label) in enumerate(zip(self.params, values, labels)):
            expected = p.get_value(borrow=True).shape
            if tuple(np.shape(v)) != expected:
                raise UserError("%s: parameter %d (%s) has shape %s, the network expects %s"
                                % (source, i, label, tuple(np.shape(v)), expected))
        lasagne.layers.set_all_param_values(self.top, [np.asarray(v, dtype=theano.config.floatX)
                                                       for v in values])

    @property
    def optimizer_state(self):
        """Adam's shared variables ``[m_0, v_0, ..., t]`` (Lasagne 0.1's order)."""
        if self._optimizer_state is None:
            self._optimizer_state = adam_state(self.trainable)
        return self._optimizer_state

    # -- compiled functions -----------------------------------------------
    def train_function_key(self, n_steps):
        """Which compiled train step a batch of ``n_steps`` uses (see :meth:`train_step`)."""
        padded = unrolled_length(n_steps)
        return "train_step" if padded is None else "train_step_%d" % padded

    def is_compiled(self, name):
        return name in self._functions

    def compile(self, name):
        """The named compiled function, compiled on first use.

        ``train_step_N`` (LSTM unrolled for N steps), ``train_step`` (scan,
        any length), ``val_step`` or ``probabilities``.
        """
        if name in self._functions:
            return self._functions[name]
        codes, sentences = self.net["image_codes"], self.net["sentences"]
        if name.startswith("train_step"):
            n_steps = int(name.rsplit("_", 1)[1]) if name != "train_step" else None
            loss = fast_masked_cross_entropy(self.net, n_steps=n_steps)
            updates = adam(loss, self.trainable, self.optimizer_state, self.learning_rate)
            fn = theano.function([codes, sentences], loss, updates=updates,
                                 allow_input_downcast=True, name=name, mode=training_mode())
        elif name == "val_step":
            loss = fast_masked_cross_entropy(self.net, deterministic=True)
            fn = theano.function([codes, sentences], loss, allow_input_downcast=True,
                                 name="val_step")
        elif name == "probabilities":
            probs = lasagne.layers.get_output(self.top, deterministic=True)
            fn = theano.function([codes, sentences], probs, allow_input_downcast=True,
                                 name="probabilities")
        else:
            raise KeyError(name)
        self._functions[name] = fn
        return fn

    def train_step(self, image_codes, sentences):
        """One Adam step on a batch; returns its loss.

        Batches up to ``UNROLL_MAX`` steps are padded to a multiple of
        ``UNROLL_MULTIPLE`` and run an unrolled LSTM compiled for that
        length (compiled on first use); padded steps have no target and keep
        the state, so the loss and gradients are those of the batch as given.
        """
        sentences = np.asarray(sentences, dtype="int32")
        padded = unrolled_length(sentences.shape[1])
        if padded is not None and padded != sentences.shape[1]:
            sentences = np.pad(sentences, ((0, 0), (0, padded - sentences.shape[1])),
                               constant_values=PAD_IX)
        fn = self.compile(self.train_function_key(sentences.shape[1]))
        return float(fn(image_codes, sentences))

    def val_step(self, image_codes, sentences):
        return float(self.compile("val_step")(image_codes, sentences))

    def probabilities(self, image_codes, sentences):
        """Next-word probabilities (batch, time, n_tokens), dropout off."""
        return self.compile("probabilities")(image_codes, sentences)

    def describe(self):
        n = sum(int(np.prod(p.get_value(borrow=True).shape)) for p in self.params)
        return "%s, %d parameters" % (json.dumps(self.config.to_dict()), n)
