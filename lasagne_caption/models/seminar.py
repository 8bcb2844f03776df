"""The seminar's captioning network: image code -> LSTM cell state -> words.

Network (defaults are the seminar's)::

    words (batch, time) int32 ──► EmbeddingLayer(n_tokens → 128) ─┐
    image codes (batch, D) ──► Dropout(0.5) ► Dense(200) ── cell_init ─► LSTM(200, mask)
        ► BroadcastLayer(0, 1) ► Dense(n_tokens, softmax) ► UnbroadcastLayer
        = next-word probabilities (batch, time, n_tokens)

Training unrolls the LSTM for batches up to ``UNROLL_MAX`` steps (padded to
a multiple of ``UNROLL_MULTIPLE``; one compiled train step per length) and
computes the output layer on real targets only; validation and generation
use scan. Same loss and gradients either way (tests/models/test_seminar.py).

Options (off by default): embedding / LSTM sizes, the image fed as the
first input step instead of the cell state (Show and Tell), a GRU instead of
the LSTM, embeddings initialised from a GloVe file (frozen or trainable).

Generation drives the network through :meth:`SeminarModel.feed_image` (the
recurrent state before ``#START#``) and :meth:`SeminarModel.inference_step`
(one word in, next-word log-probabilities and the new state out), compiled
once each; see :mod:`lasagne_caption.models.base`.
"""
import functools

import lasagne
import numpy as np
import theano
import theano.tensor as T
from lasagne.layers import (DenseLayer, DropoutLayer, EmbeddingLayer,
                            InputLayer, ReshapeLayer)
from lasagne.nonlinearities import softmax

from ..layers import (BroadcastLayer, ConcatLayer, GRULayer, LSTMLayer, SliceLayer,
                      UnbroadcastLayer)
from ..layers.recurrent import keep_state_where_padded
from ..ops import LASAGNE_01
from ..vocab import PAD_IX
from .base import CaptionNetwork
from .config import NetworkConfig
from .losses import real_target_cross_entropy
from .updates import training_mode


def param_shapes(config):
    """The parameter shapes of :func:`build_network`, in ``get_all_params`` order.

    Computed without building anything, so that a checkpoint's arrays can be
    checked against its metadata before a (possibly huge) network is
    allocated. tests/models/test_seminar.py checks it against the built networks.
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
    """The loss of :func:`~lasagne_caption.models.losses.masked_cross_entropy`, on real tokens only.

    See :func:`~lasagne_caption.models.losses.real_target_cross_entropy`.
    With ``n_steps`` the graph is for sentences of exactly that length, with
    the LSTM unrolled (:func:`unrolled_decoder_steps`).
    """
    if n_steps:
        hidden = unrolled_decoder_steps(net, n_steps, deterministic)
    else:
        hidden = lasagne.layers.get_output(net["decoder_steps"], deterministic=deterministic)
    output = net["output"]
    return real_target_cross_entropy(hidden, output.W, output.b, net["sentences"])


class SeminarModel(CaptionNetwork):
    """The seminar network with its compiled Theano functions.

    ``train_step(image_codes, sentences) -> loss`` (one Adam step) and
    ``val_step(image_codes, sentences) -> loss`` (dropout off), named as in
    the seminar's notebook; ``feed_image`` / ``inference_step`` for
    generation. Functions are compiled on first use.

    Parameters
    ----------
    config : NetworkConfig
    vocab : Vocabulary
        ``len(vocab) == config.n_tokens``.
    learning_rate : float
        Adam's step size.
    embeddings : array (n_tokens, E), optional
        Initial word vectors (e.g. from
        :func:`~lasagne_caption.models.embeddings.read_glove`).
    head : :class:`~lasagne_caption.models.finetune.EncoderHead`, optional
        The encoder's last layers (``block16`` → logits), trained with the
        network; its input becomes the network's (``image_shape``).
    """

    kind = "seminar"
    Config = NetworkConfig

    def __init__(self, config, vocab, learning_rate=1e-3, embeddings=None, head=None):
        super().__init__(config, vocab, learning_rate, head)
        image, self.image_shape = self._image_input(self.image_shape_of(config))
        self.net = build_network(config, embeddings=embeddings, image_codes=image)
        if head is not None:
            self.net["image_codes"] = head.input_var   # what the compiled functions take
        self._set_top(self.net["probabilities"])

    @staticmethod
    def param_shapes(config):
        return param_shapes(config)

    @staticmethod
    def image_shape_of(config):
        return (config.code_size,)

    # -- training -----------------------------------------------------------
    def train_function_key(self, n_steps):
        """Which compiled train step a batch of ``n_steps`` uses (see :meth:`train_step`)."""
        padded = unrolled_length(n_steps)
        return "train_step" if padded is None else "train_step_%d" % padded

    def build_function(self, name):
        """``train_step_N`` (LSTM unrolled for N steps), ``train_step`` (scan, any
        length), ``val_step``, ``probabilities``, ``initial_states`` or ``step``."""
        codes, sentences = self.net["image_codes"], self.net["sentences"]
        if name.startswith("train_step"):
            n_steps = int(name.rsplit("_", 1)[1]) if name != "train_step" else None
            loss = fast_masked_cross_entropy(self.net, n_steps=n_steps)
            updates = self.adam_updates(loss, self.learning_rate)
            return theano.function([codes, sentences], loss, updates=updates,
                                   allow_input_downcast=True, name=name, mode=training_mode())
        if name == "val_step":
            loss = fast_masked_cross_entropy(self.net, deterministic=True)
            return theano.function([codes, sentences], loss, allow_input_downcast=True,
                                   name="val_step")
        if name == "probabilities":
            probs = lasagne.layers.get_output(self.top, deterministic=True)
            return theano.function([codes, sentences], probs, allow_input_downcast=True,
                                   name="probabilities")
        if name in ("initial_states", "step"):
            init_fn, step_fn = _inference_functions(self.net)
            self._functions["initial_states"], self._functions["step"] = init_fn, step_fn
            return self._functions[name]
        raise KeyError(name)

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

    # -- inference -----------------------------------------------------------
    def feed_image(self, images):
        """Recurrent states (list of float32 (N, units)) before ``#START#`` is fed."""
        return self.compile("initial_states")(np.asarray(images, dtype="float32"))

    def inference_step(self, words, states):
        """Feed ``words`` (int (N,)): ``(log_probs (N, n_tokens), new states, {})``."""
        out = self.compile("step")(np.asarray(words, dtype="int32"), *states)
        return out[0], out[1:], {}


def _inference_functions(net):
    """``init(codes) -> states`` and ``step(words, *states) -> [log_probs] + states``."""
    decoder, embedding, output = net["decoder"], net["embedding"], net["output"]
    codes = net["image_codes"]
    # the outputs of the layers that give the decoder its initial state
    # (the image projection for cell_init); dropout off
    inputs = [None] * len(decoder.input_layers)
    for index in decoder.init_incoming_index.values():
        inputs[index] = lasagne.layers.get_output(decoder.input_layers[index], deterministic=True)
    states = decoder.initial_states(inputs, codes.shape[0])
    if not decoder.init_incoming_index:
        # Show and Tell (image_inject="first_input"): the projected image is
        # the first input step, before #START#
        image = lasagne.layers.get_output(net["image_projection"], deterministic=True)
        states = decoder.step(decoder.input_products(image), *states)
    init_fn = theano.function([codes], states, allow_input_downcast=True,
                              name="caption_initial_states")

    words = T.ivector("words")
    previous = [T.matrix("state_%d" % i) for i in range(len(states))]
    new = decoder.step(decoder.input_products(embedding.get_output_for(words)), *previous)
    logits = T.dot(new[-1], output.W) + output.b
    log_probs = T.nnet.logsoftmax(logits)
    step_fn = theano.function([words] + previous, [log_probs] + list(new),
                              allow_input_downcast=True, name="caption_step")
    return init_fn, step_fn
