"""What every captioning network provides: parameters, compiled functions, one inference interface.

A network is a Lasagne graph plus a few compiled Theano functions. Training
calls ``train_step`` / ``val_step``; everything that writes captions
(greedy, sampling and beam search in :mod:`lasagne_caption.generate`, and so
``caption``, ``evaluate`` and the notebooks) drives the network through two
calls only, in the manner of im2txt's inference wrapper:

* ``feed_image(images) -> states``: encode the images once; ``states`` is a
  list of arrays whose first axis is the row (one row per image);
* ``inference_step(words, states) -> (log_probs, states, extras)``: feed one
  word per row and get the next-word log-probabilities ``(rows, n_tokens)``,
  the new states (same layout) and ``extras``, a dict of per-row arrays the
  network wants to report about this step (attention weights over image
  regions, a gate value; ``{}`` for the seminar network).

Decoders may reorder, repeat or drop rows between steps (beam search does):
every state array is indexed by row and nothing else, so ``[s[rows] for s in
states]`` is again a valid state.
"""
import json

import lasagne
import numpy as np
import theano

from ..errors import UserError
from .updates import adam, adam_state


def seed_initial_weights(seed):
    """Seed Lasagne's global RNG, which draws initial weights and dropout streams.

    Called before a network is built, it makes the run repeatable.
    """
    lasagne.random.set_rng(np.random.RandomState(seed))


class CaptionNetwork(object):
    """Base of the caption networks; a subclass builds ``self.top`` and its functions.

    Subclasses set the class attributes ``kind`` (the name in checkpoint
    metadata) and ``Config``, and implement ``build_function(name)``,
    ``feed_image`` and ``inference_step``.

    Attributes
    ----------
    config : the network's configuration (``self.Config``)
    vocab : Vocabulary
    top : Lasagne layer whose ``get_all_params`` are the network's parameters,
        in the order the checkpoint stores them
    image_shape : tuple
        The shape of one image's input: ``(code_size,)`` for a flat code;
        with an encoder head, the head's input (``block16``, ``(49, 320)``).
    head : :class:`~lasagne_caption.models.finetune.EncoderHead` or None
        The encoder's last layers, trained with the captioner: their output
        is what the captioner's image input reads. Its parameters are not in
        :attr:`params` (the checkpoint's order); its trainable ones are
        optimised with the network's, at their own step size.
    """

    kind = None
    Config = None
    image_shape = ()

    def __init__(self, config, vocab, learning_rate=1e-3, head=None):
        if len(vocab) != config.n_tokens:
            raise UserError("the vocabulary has %d words, the network %d"
                            % (len(vocab), config.n_tokens))
        self.config = config
        self.vocab = vocab
        self.learning_rate = learning_rate
        self.head = head
        self._functions = {}
        self._optimizer_state = None

    def _image_input(self, own_shape):
        """``(expression the image layer reads or None, input shape)``: the head's, if any."""
        if self.head is None:
            return None, tuple(own_shape)
        if tuple(self.head.output_shape) != tuple(own_shape):
            raise UserError("the encoder head gives %s codes, the network reads %s"
                            % ("x".join(map(str, self.head.output_shape)),
                               "x".join(map(str, own_shape))))
        return self.head.output, tuple(self.head.input_shape)

    def _set_top(self, top):
        self.top = top
        self.params = lasagne.layers.get_all_params(top)
        self.trainable = lasagne.layers.get_all_params(top, trainable=True)

    @staticmethod
    def param_shapes(config):
        """Parameter shapes in checkpoint order, computed without building the network."""
        raise NotImplementedError

    @staticmethod
    def image_shape_of(config):
        """The shape of one image's input for ``config``."""
        raise NotImplementedError

    # -- parameters -------------------------------------------------------
    def param_labels(self):
        """``layer.param`` names in ``get_all_param_values`` order, for error messages."""
        labels = []
        for layer in lasagne.layers.get_all_layers(self.top):
            # Lasagne already prefixes a named layer's parameters with its name
            labels += [p.name if layer.name else "%s.%s" % (type(layer).__name__, p.name)
                       for p in layer.get_params()]
        return labels

    def get_param_values(self):
        """Arrays in ``lasagne.layers.get_all_param_values`` order (the seminar's format)."""
        return lasagne.layers.get_all_param_values(self.top)

    def set_param_values(self, values, source="parameters"):
        """Set all parameters; a mismatch names the first offending parameter."""
        labels = self.param_labels()
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
    def optimized(self):
        """The parameters training updates: the network's, then the encoder head's."""
        return self.trainable + (self.head.trainable if self.head is not None else [])

    @property
    def optimizer_state(self):
        """Adam's shared variables ``[m_0, v_0, ..., t]`` (Lasagne 0.1's order) of :attr:`optimized`."""
        if self._optimizer_state is None:
            self._optimizer_state = adam_state(self.optimized)
        return self._optimizer_state

    def adam_updates(self, loss, learning_rate):
        """Adam's updates of :attr:`optimized`; the head's at its own fraction of the step."""
        scales = [1.0] * len(self.trainable)
        if self.head is not None:
            scales += [self.head.config.learning_rate_scale] * len(self.head.trainable)
        return adam(loss, self.optimized, self.optimizer_state, learning_rate, scales=scales)

    def seed_dropout(self, seed):
        """Seed every dropout layer's random stream (a repeatable epoch)."""
        for layer in lasagne.layers.get_all_layers(self.top):
            if isinstance(layer, lasagne.layers.DropoutLayer):
                layer._srng.seed(seed)

    def describe(self):
        n = sum(int(np.prod(p.get_value(borrow=True).shape)) for p in self.params)
        return "%s %s, %d parameters" % (self.kind, json.dumps(self.config.to_dict()), n)

    # -- compiled functions -----------------------------------------------
    def is_compiled(self, name):
        return name in self._functions

    def compile(self, name):
        """The named compiled function, built by ``build_function`` on first use."""
        if name not in self._functions:
            self._functions[name] = self.build_function(name)
        return self._functions[name]

    def build_function(self, name):
        raise NotImplementedError

    # -- inference ---------------------------------------------------------
    def check_images(self, images):
        """``images`` as float32 ``(N,) + image_shape``, or a one-line error."""
        images = np.asarray(images, dtype="float32")
        if images.ndim == 0 or images.shape[1:] != tuple(self.image_shape):
            raise UserError("expected image codes (N, %s), got shape %s"
                            % (", ".join(map(str, self.image_shape)), images.shape))
        bad = ~np.isfinite(images).reshape(len(images), -1 if len(images) else 0).all(axis=1)
        if bad.any():
            raise UserError("image codes contain NaN or inf (row %d)" % bad.argmax())
        return images

    def feed_image(self, images):
        """States before ``#START#`` is fed, one row per image (list of arrays)."""
        raise NotImplementedError

    def inference_step(self, words, states):
        """``(log_probs (N, n_tokens), new states, extras dict)`` after feeding ``words``."""
        raise NotImplementedError
