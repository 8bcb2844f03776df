"""The encoder's last layers, trained with the captioner (the second exercise's bonus).

On a CPU, fine-tuning a CNN is practical when its frozen part runs once: the
dataset holds MobileNetV2's ``block16`` map for every photo (7x7x320, the
output of the last inverted-residual block, ``prepare flickr8k --features
block16``), and the network starts with the float layers after it::

    block16 (N, 49, 320) ─► Conv_1: 1x1 conv 320→1280 + bias, ReLU6 ─► grid (N, 49, 1280)
                                                  └─► average pool ─► Dense 1280→1001 ─► logits

initialised from the int8 model's weights, dequantised (no fake quantisation
while training). The attention network reads the grid, the seminar network
the logits. ``train_layers`` says how many of the last layers train: the
logits layer first, then ``Conv_1`` (the pooling has no weights); 0 keeps
them all frozen, which is the baseline a fine-tuned run is compared with.

The head is not part of the captioner's Lasagne graph: its output is the
expression the captioner's image input layer reads. So the captioner's
parameters (``wrote_net.params``) keep the seminar's format and order, and
the head's travel beside them (:mod:`lasagne_caption.checkpoint`).
"""
import dataclasses

import lasagne
import numpy as np
import theano
import theano.tensor as T
from lasagne.layers import DenseLayer, InputLayer

from ..errors import UserError
from ..layers.encoder_head import RegionDenseLayer, RegionMeanLayer, relu6
from .config import ConfigFromDict, check_choice

#: what the head gives the captioner: layer names, last first
HEAD_LAYERS = {"grid": ("Conv_1",), "logits": ("Logits", "Conv_1")}
BLOCK16_SHAPE = (49, 320)


@dataclasses.dataclass
class HeadConfig(ConfigFromDict):
    """The head a fine-tuned checkpoint was trained with; stored in its metadata.

    ``output``: ``"grid"`` (for the attention network) or ``"logits"`` (the
    seminar network); ``train_layers``: how many of the last layers train
    (0 .. 1 for the grid, 0 .. 2 for the logits); ``learning_rate_scale``:
    the encoder's step size as a fraction of the captioner's.
    """
    output: str = "logits"
    train_layers: int = 1
    learning_rate_scale: float = 0.1

    def __post_init__(self):
        check_choice(self, "output", tuple(HEAD_LAYERS))
        most = len(HEAD_LAYERS[self.output])
        if isinstance(self.train_layers, bool) or not isinstance(self.train_layers, int) \
                or not 0 <= self.train_layers <= most:
            raise UserError("the encoder's %s head has %d trainable layer%s: train_layers "
                            "must be 0..%d, not %r" % (self.output, most, "s" * (most > 1),
                                                       most, self.train_layers))
        scale = self.learning_rate_scale
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) \
                or not 0 < scale <= 100 or not np.isfinite(scale):
            raise UserError("learning_rate_scale must be in (0, 100], not %r" % (scale,))
        self.learning_rate_scale = float(scale)

    @property
    def trained(self):
        """Names of the layers that train, e.g. ``("Logits",)``."""
        return HEAD_LAYERS[self.output][:self.train_layers]


class EncoderHead(object):
    """MobileNetV2's layers after ``block16``, in float, some of them trainable.

    Parameters
    ----------
    config : HeadConfig
    weights : dict
        ``{"Conv_1": (W (320, 1280), b (1280,)), "Logits": (W (1280, 1001), b (1001,))}``
        (``Logits`` only for the logits output), e.g. the int8 model's
        dequantised weights or a fine-tuned checkpoint's.

    Attributes
    ----------
    input_var : T.tensor3, the block16 codes (N, 49, 320)
    output : the expression the captioner reads: (N, 49, 1280) or (N, 1001)
    params : every parameter, in :attr:`names` order
    trainable : the parameters that train
    """

    input_shape = BLOCK16_SHAPE

    def __init__(self, config, weights):
        self.config = config
        self.input_var = T.tensor3("block16")
        layer = InputLayer((None,) + BLOCK16_SHAPE, self.input_var, name="block16")
        W, b = _checked(weights, "Conv_1", (BLOCK16_SHAPE[1], 1280))
        self.layers = {"Conv_1": RegionDenseLayer(layer, 1280, W=W, b=b, nonlinearity=relu6,
                                                  name="Conv_1")}
        top = self.layers["Conv_1"]
        if config.output == "logits":
            W, b = _checked(weights, "Logits", (1280, 1001))
            pooled = RegionMeanLayer(top, name="pool")
            top = self.layers["Logits"] = DenseLayer(pooled, 1001, W=W, b=b, nonlinearity=None,
                                                     name="Logits")
        self.top = top
        self.output = lasagne.layers.get_output(top)
        for name, layer in self.layers.items():
            if name not in config.trained:
                for p in layer.get_params():
                    layer.params[p].discard("trainable")
        self.params = lasagne.layers.get_all_params(top)
        self.trainable = lasagne.layers.get_all_params(top, trainable=True)

    @property
    def output_shape(self):
        return (49, 1280) if self.config.output == "grid" else (1001,)

    @property
    def names(self):
        """``"Conv_1/W"``, ... in :attr:`params` order."""
        # each layer's get_params() is [W, b]
        return ["%s/%s" % (name, which) for name in self.layers for which in ("W", "b")]

    def get_values(self):
        """``{"Conv_1/W": array, ...}``: the head's weights, float32."""
        return {n: p.get_value() for n, p in zip(self.names, self.params)}

    def set_values(self, values, source="encoder weights"):
        for n, p in zip(self.names, self.params):
            if n not in values:
                raise UserError("%s: %s is missing" % (source, n))
            value = np.asarray(values[n])
            if value.shape != p.get_value(borrow=True).shape or value.dtype.kind != "f" \
                    or not np.all(np.isfinite(value)):
                raise UserError("%s: %s must be finite floats of shape %s, not %s %s"
                                % (source, n, p.get_value(borrow=True).shape, value.dtype,
                                   value.shape))
            p.set_value(value.astype(theano.config.floatX))


def _checked(weights, name, shape):
    try:
        W, b = weights[name]
    except (KeyError, TypeError, ValueError):
        raise UserError("the encoder weights lack %s" % name)
    W, b = np.asarray(W, np.float32), np.asarray(b, np.float32)
    if W.shape != shape or b.shape != shape[1:]:
        raise UserError("encoder layer %s: weights %s and bias %s, expected %s and %s"
                        % (name, W.shape, b.shape, shape, shape[1:]))
    return W, b
