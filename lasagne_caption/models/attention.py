"""Show, Attend and Tell with a visual/language gate, over a grid of image regions.

Network (defaults: Xu et al.'s recipe at Flickr8k size)::

    regions (batch, L=49, D=1280) ── mean ─► Dense(U, tanh) = h0, Dense(U, tanh) = c0
        │
        └──────────────────────────────────────────────┐
    words (batch, time) ─► Embedding(n_tokens → E) ─► AttentionLSTM(U, attention A, gate)
                                      │                    │ h_t, ctx_t, alpha_t, gate_t
                                      └──► DeepOutput: tanh(h W + ctx W + E y + b) (E)
                                             ► Dropout ► Dense(n_tokens, softmax)

Loss: the masked next-word cross-entropy (per word) plus ``lambda`` times the
doubly stochastic attention term, summed over captions and divided by the
number of words, which is Xu et al.'s balance (their loss sums over words).
See :mod:`lasagne_caption.layers.attention` for the step and the gate.

Generation: ``feed_image`` gives ``[h0, c0, regions, projected regions]``;
``inference_step`` reports ``{"attention": (N, L), "gate": (N,)}`` for every
word: the weights over the regions and the visual share.
"""
import dataclasses

import lasagne
import numpy as np
import theano
import theano.tensor as T
from lasagne.layers import (DenseLayer, DimshuffleLayer, DropoutLayer, EmbeddingLayer,
                            GlobalPoolLayer, InputLayer)
from lasagne.nonlinearities import softmax, tanh

from ..errors import UserError
from ..layers import BroadcastLayer, SliceLayer, UnbroadcastLayer
from ..layers.attention import GATES, AttentionLSTMLayer, DeepOutputLayer, attention_penalty
from ..vocab import PAD_IX
from .base import CaptionNetwork
from .config import (MAX_CODE_SIZE, MAX_TOKENS, MAX_UNITS, ConfigFromDict, check_choice,
                     check_real, check_whole)
from .losses import real_target_cross_entropy
from .updates import training_mode

MAX_REGIONS = 100000


@dataclasses.dataclass
class AttentionConfig(ConfigFromDict):
    """Everything needed to rebuild the attention network; stored in checkpoint metadata.

    ``image_shape`` is ``[L, D]``: L regions of D features (MobileNetV2's
    7x7x1280 grid is ``[49, 1280]``).
    """
    n_tokens: int
    image_shape: list
    embed_size: int = 256
    units: int = 512
    attention_size: int = 256
    gate: str = "selector"
    dropout: float = 0.5
    doubly_stochastic: float = 1.0

    def __post_init__(self):
        shape = self.image_shape
        if not isinstance(shape, (list, tuple)) or len(shape) != 2 or not all(
                isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in shape):
            raise UserError("image_shape must be [regions, features], not %r" % (shape,))
        if not (1 <= shape[0] <= MAX_REGIONS and 1 <= shape[1] <= MAX_CODE_SIZE):
            raise UserError("image_shape %r is out of range" % (shape,))
        self.image_shape = [int(s) for s in shape]
        for name, top in (("n_tokens", MAX_TOKENS), ("embed_size", MAX_UNITS),
                          ("units", MAX_UNITS), ("attention_size", MAX_UNITS)):
            check_whole(self, name, top)
        check_real(self, "dropout", 0.0, 1.0)
        if self.dropout >= 1.0:
            raise UserError("dropout must be below 1, not %r" % self.dropout)
        check_real(self, "doubly_stochastic", 0.0, 1e6)
        check_choice(self, "gate", GATES)


def param_shapes(config):
    """The parameter shapes of :func:`build_network`, in ``get_all_params`` order."""
    n, D = config.n_tokens, config.image_shape[1]
    E, U, A = config.embed_size, config.units, config.attention_size
    shapes = [(n, E), (D, U), (U,), (D, U), (U,),                       # embedding, h0, c0
              (E, 4 * U), (U, 4 * U), (D, 4 * U), (4 * U,),             # LSTM
              (D, A), (A,), (U, A), (A,)]                               # attention
    if config.gate == "selector":
        shapes += [(U,), ()]
    elif config.gate == "sentinel":
        shapes += [(E, U), (U, U), (U,), (U, A), (U, D)]
    return shapes + [(U, E), (D, E), (E,), (E, n), (n,)]                # deep output, softmax


def build_network(config, sentences=None, regions=None):
    """Build the Lasagne layers; returns a dict of them (``net["probabilities"]`` on top).

    Parameters
    ----------
    config : AttentionConfig
    sentences : int32 matrix (batch, time), padding -1; a new ``T.imatrix`` if None.
    regions : float32 tensor3 (batch, L, D); a new ``T.tensor3`` if None.
    """
    sentences = T.imatrix("sentences") if sentences is None else sentences
    regions = T.tensor3("regions") if regions is None else regions
    L, D = config.image_shape
    net = {"sentences": sentences, "regions": regions}
    net["words"] = InputLayer((None, None), sentences, name="words")
    net["mask"] = InputLayer((None, None), T.neq(sentences, PAD_IX), name="mask")
    net["image"] = InputLayer((None, L, D), regions, name="image")
    net["embedding"] = EmbeddingLayer(net["words"], config.n_tokens, config.embed_size,
                                      W=lasagne.init.Uniform(0.1), name="embedding")
    mean = GlobalPoolLayer(DimshuffleLayer(net["image"], (0, 2, 1)), name="mean_region")
    net["hid_init"] = DenseLayer(mean, config.units, nonlinearity=tanh, name="hid_init")
    net["cell_init"] = DenseLayer(mean, config.units, nonlinearity=tanh, name="cell_init")
    net["decoder"] = AttentionLSTMLayer(
        net["embedding"], net["image"], config.units, net["mask"], net["hid_init"],
        net["cell_init"], attention_size=config.attention_size, gate=config.gate,
        name="decoder")
    U, end = config.units, config.units + D
    net["hid"] = SliceLayer(net["decoder"], slice(0, U), axis=2)
    net["context"] = SliceLayer(net["decoder"], slice(U, end), axis=2)
    net["attention"] = SliceLayer(net["decoder"], slice(end, end + L), axis=2)
    net["gate"] = SliceLayer(net["decoder"], -1, axis=2)
    net["deep_output"] = DeepOutputLayer([net["hid"], net["context"], net["embedding"]],
                                         name="deep_output")
    net["dropout"] = DropoutLayer(net["deep_output"], p=config.dropout, name="dropout")
    net["broadcast"] = BroadcastLayer(net["dropout"], (0, 1), name="broadcast")
    net["output"] = DenseLayer(net["broadcast"], config.n_tokens, nonlinearity=softmax,
                               name="output")
    net["probabilities"] = UnbroadcastLayer(net["output"], net["broadcast"],
                                            name="probabilities")
    return net


def training_loss(net, config, deterministic=False):
    """``(loss, cross-entropy)``: per-word cross-entropy plus the attention term.

    The penalty is summed over captions and divided by the number of target
    words, so ``doubly_stochastic`` weighs it against the cross-entropy as
    Xu et al.'s lambda does against their loss summed over words.
    """
    layers = [net["dropout"], net["attention"]]
    hidden, alpha = lasagne.layers.get_output(layers, deterministic=deterministic)
    sentences = net["sentences"]
    cross_entropy = real_target_cross_entropy(hidden, net["output"].W, net["output"].b,
                                              sentences)
    if not config.doubly_stochastic:
        return cross_entropy, cross_entropy
    mask = T.neq(sentences, PAD_IX)
    n_words = T.maximum(T.sum(mask[:, 1:]), 1)
    # alpha at step t is the attention while predicting word t+1: count the
    # steps that have a real target
    steps = T.cast(mask[:, 1:], theano.config.floatX)
    penalty = T.sum(attention_penalty(alpha[:, :-1], steps)) / n_words
    return cross_entropy + config.doubly_stochastic * penalty, cross_entropy


class AttentionModel(CaptionNetwork):
    """The attention network with its compiled Theano functions.

    ``train_step(regions, sentences) -> loss`` (one Adam step; the loss
    includes the attention term), ``val_step(regions, sentences) ->
    cross-entropy per word`` (dropout off); ``feed_image`` / ``inference_step``
    for generation, which report the attention and the gate of each word.

    The learning rate is a shared variable (``set_learning_rate``), so that
    training can decay it without recompiling. ``head``: the encoder's
    ``Conv_1`` (``block16`` → grid, :mod:`lasagne_caption.models.finetune`),
    trained with the network; its input becomes the network's.
    """

    kind = "attention"
    Config = AttentionConfig

    def __init__(self, config, vocab, learning_rate=4e-4, head=None):
        super().__init__(config, vocab, learning_rate, head)
        image, self.image_shape = self._image_input(self.image_shape_of(config))
        self._learning_rate = theano.shared(np.float32(learning_rate), name="learning_rate")
        self.net = build_network(config, regions=image)
        if head is not None:
            self.net["regions"] = head.input_var   # what the compiled functions take
        self._set_top(self.net["probabilities"])

    @staticmethod
    def param_shapes(config):
        return param_shapes(config)

    @staticmethod
    def image_shape_of(config):
        return tuple(config.image_shape)

    def set_learning_rate(self, value):
        """Change the step size of the compiled train steps (for decay)."""
        self._learning_rate.set_value(np.float32(value))

    @property
    def current_learning_rate(self):
        return float(self._learning_rate.get_value())

    # -- training -----------------------------------------------------------
    def train_function_key(self, n_steps):
        """One compiled train step serves every length (scan): measured, an
        unrolled graph ran no faster per word here and took minutes per
        length to compile."""
        return "train_step"

    def build_function(self, name):
        """``train_step``, ``loss``, ``val_step``, ``probabilities``, ``attention``,
        ``initial_states`` or ``step``."""
        regions, sentences = self.net["regions"], self.net["sentences"]
        if name == "train_step":
            loss, _ = training_loss(self.net, self.config)
            updates = self.adam_updates(loss, self._learning_rate)
            return theano.function([regions, sentences], loss, updates=updates,
                                   allow_input_downcast=True, name=name,
                                   mode=training_mode(sums_as_dot=True))
        if name == "loss":
            loss, _ = training_loss(self.net, self.config, deterministic=True)
            return theano.function([regions, sentences], loss, allow_input_downcast=True,
                                   name="loss")
        if name == "val_step":
            _, cross_entropy = training_loss(self.net, self.config, deterministic=True)
            return theano.function([regions, sentences], cross_entropy,
                                   allow_input_downcast=True, name="val_step")
        if name == "probabilities":
            probs = lasagne.layers.get_output(self.top, deterministic=True)
            return theano.function([regions, sentences], probs, allow_input_downcast=True,
                                   name="probabilities")
        if name == "attention":
            out = lasagne.layers.get_output([self.net["attention"], self.net["gate"]],
                                            deterministic=True)
            return theano.function([regions, sentences], out, allow_input_downcast=True,
                                   name="attention")
        if name in ("initial_states", "step"):
            init_fn, step_fn = _inference_functions(self.net)
            self._functions["initial_states"], self._functions["step"] = init_fn, step_fn
            return self._functions[name]
        raise KeyError(name)

    def train_step(self, regions, sentences):
        """One Adam step on a batch; returns its loss (cross-entropy plus attention term)."""
        return float(self.compile("train_step")(regions, np.asarray(sentences, dtype="int32")))

    def val_step(self, regions, sentences):
        return float(self.compile("val_step")(regions, sentences))

    def loss(self, regions, sentences):
        """The training loss (cross-entropy plus attention term) with dropout off."""
        return float(self.compile("loss")(regions, np.asarray(sentences, dtype="int32")))

    def probabilities(self, regions, sentences):
        """Next-word probabilities (batch, time, n_tokens), dropout off."""
        return self.compile("probabilities")(regions, sentences)

    def attention(self, regions, sentences):
        """Teacher-forced ``(alpha (batch, time, L), gate (batch, time))``, dropout off."""
        return self.compile("attention")(regions, sentences)

    # -- inference -----------------------------------------------------------
    def feed_image(self, images):
        """``[h0, c0, regions, projected regions]``, one row per image."""
        return self.compile("initial_states")(np.asarray(images, dtype="float32"))

    def inference_step(self, words, states):
        """``(log_probs (N, n_tokens), new states, {"attention": (N, L), "gate": (N,)})``."""
        log_probs, hid, cell, alpha, gate = self.compile("step")(
            np.asarray(words, dtype="int32"), *states[:2], *states[2:])
        return log_probs, [hid, cell] + list(states[2:]), {"attention": alpha, "gate": gate}


def _inference_functions(net):
    """``init(regions) -> [h0, c0, regions, projected]`` and
    ``step(words, h, c, regions, projected) -> [log_probs, h, c, alpha, gate]``."""
    decoder, regions = net["decoder"], net["regions"]
    # the regions the decoder reads: the input itself, or an encoder head's output
    read = lasagne.layers.get_output(net["image"])
    h0, c0 = lasagne.layers.get_output([net["hid_init"], net["cell_init"]], deterministic=True)
    init_fn = theano.function([regions], [h0, c0, read, decoder.project_regions(read)],
                              allow_input_downcast=True, name="caption_initial_states")

    words = T.ivector("words")
    hid, cell = T.matrix("hid"), T.matrix("cell")
    image, projected = T.tensor3("regions"), T.tensor3("projected")
    embedded = net["embedding"].get_output_for(words)
    new_hid, new_cell, ctx, alpha, gate = decoder.step(decoder.word_products(embedded), hid,
                                                       cell, image, projected)
    deep = net["deep_output"].get_output_for([new_hid, ctx, embedded])
    log_probs = T.nnet.logsoftmax(T.dot(deep, net["output"].W) + net["output"].b)
    step_fn = theano.function([words, hid, cell, image, projected],
                              [log_probs, new_hid, new_cell, alpha, gate],
                              allow_input_downcast=True, name="caption_step")
    return init_fn, step_fn
