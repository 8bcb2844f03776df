"""BVLC GoogLeNet as in the seminar (Lasagne Recipes ``modelzoo/googlenet.py``).

:func:`build_model` returns a dict of Lasagne layers with the recipe's names
(``conv1/7x7_s2``, ``inception_3a/1x1``, ..., ``pool5/7x7_s1``,
``loss3/classifier``, ``prob``); its parameters, in the order of
``lasagne.layers.get_all_params(net["prob"])``, are exactly the list stored
as ``'param values'`` in ``blvc_googlenet.pkl``. Lasagne 0.1 has every layer
the recipe uses except ``flip_filters`` on ``Conv2DLayer``; Caffe weights
need cross-correlation, so the convolutions use
:func:`~lasagne_caption.encoders.layers.conv2d_noflip`.

Input: BGR, mean-subtracted (``'mean value'`` of the pickle, Caffe's
``[104, 117, 123]`` if absent), ``(N, 3, 224, 224)`` float32. Feature taps
(:data:`TAP_SHAPES`): ``logits`` = ``loss3/classifier`` (1000) and ``pool`` =
``pool5/7x7_s1`` (1024); a new tap is one entry there plus its output in
:func:`tap_outputs`.

:func:`load_pickle` reads the pickle with a restricted unpickler that builds
only numpy arrays and plain containers; anything else is refused.
"""
import os

import numpy as np

from .. import safe_pickle
from ..errors import UserError
from .base import ImageEncoder
from .model_files import MODEL_FILES, missing_model_message

__all__ = ["build_model", "load_pickle", "set_weights", "tap_outputs", "GoogLeNetEncoder",
           "INCEPTION_FILTERS", "expected_param_shapes", "MODEL_FILENAME", "MODEL_URL",
           "TAP_SHAPES"]

MODEL_FILENAME = MODEL_FILES["googlenet"].file_name
MODEL_URL = MODEL_FILES["googlenet"].url

#: feature tap -> per-image shape, in the order of the compiled function's outputs
TAP_SHAPES = {"logits": (1000,), "pool": (1024,)}
CAFFE_MEAN_BGR = np.array([104.0, 117.0, 123.0], np.float32)

# name, input channels, (pool_proj, 1x1, 3x3_reduce, 3x3, 5x5_reduce, 5x5)
INCEPTION_FILTERS = [
    ("inception_3a", 192, (32, 64, 96, 128, 16, 32)),
    ("inception_3b", 256, (64, 128, 128, 192, 32, 96)),
    ("inception_4a", 480, (64, 192, 96, 208, 16, 48)),
    ("inception_4b", 512, (64, 160, 112, 224, 24, 64)),
    ("inception_4c", 512, (64, 128, 128, 256, 24, 64)),
    ("inception_4d", 512, (64, 112, 144, 288, 32, 64)),
    ("inception_4e", 528, (128, 256, 160, 320, 32, 128)),
    ("inception_5a", 832, (128, 256, 160, 320, 32, 128)),
    ("inception_5b", 832, (128, 384, 192, 384, 48, 128)),
]


def _conv(incoming, num_filters, filter_size, stride=1, pad=0, name=None):
    from lasagne.layers import Conv2DLayer
    from .layers import conv2d_noflip
    return Conv2DLayer(incoming, num_filters, filter_size, stride=stride, pad=pad,
                       convolution=conv2d_noflip, name=name)


def build_inception_module(name, input_layer, nfilters):
    """One inception module; nfilters = (pool_proj, 1x1, 3x3_reduce, 3x3, 5x5_reduce, 5x5)."""
    from lasagne.layers import MaxPool2DLayer, ConcatLayer
    net = {}
    net["pool"] = MaxPool2DLayer(input_layer, pool_size=3, stride=1, pad=1,
                                 name=name + "/pool")
    net["pool_proj"] = _conv(net["pool"], nfilters[0], 1, name=name + "/pool_proj")
    net["1x1"] = _conv(input_layer, nfilters[1], 1, name=name + "/1x1")
    net["3x3_reduce"] = _conv(input_layer, nfilters[2], 1, name=name + "/3x3_reduce")
    net["3x3"] = _conv(net["3x3_reduce"], nfilters[3], 3, pad=1, name=name + "/3x3")
    net["5x5_reduce"] = _conv(input_layer, nfilters[4], 1, name=name + "/5x5_reduce")
    net["5x5"] = _conv(net["5x5_reduce"], nfilters[5], 5, pad=2, name=name + "/5x5")
    net["output"] = ConcatLayer([net["1x1"], net["3x3"], net["5x5"], net["pool_proj"]],
                                name=name + "/output")
    return {"{}/{}".format(name, k): v for k, v in net.items()}


def build_model(input_var=None, input_size=None):
    """The recipe's ``build_model()``: a dict of layers, ``net["prob"]`` on top.

    ``input_size=None`` keeps the recipe's ``(None, 3, None, None)`` input;
    the encoder passes ``(224, 224)``: known shapes make Theano's graph
    optimisation far faster.
    """
    from lasagne.layers import (InputLayer, DenseLayer, NonlinearityLayer,
                                GlobalPoolLayer, MaxPool2DLayer,
                                LocalResponseNormalization2DLayer as LRNLayer)
    from lasagne.nonlinearities import softmax, linear
    net = {}
    h, w = input_size if input_size is not None else (None, None)
    net["input"] = InputLayer((None, 3, h, w), input_var=input_var, name="input")
    net["conv1/7x7_s2"] = _conv(net["input"], 64, 7, stride=2, pad=3, name="conv1/7x7_s2")
    net["pool1/3x3_s2"] = MaxPool2DLayer(net["conv1/7x7_s2"], pool_size=3, stride=2,
                                         ignore_border=False, name="pool1/3x3_s2")
    net["pool1/norm1"] = LRNLayer(net["pool1/3x3_s2"], alpha=0.00002, k=1, name="pool1/norm1")
    net["conv2/3x3_reduce"] = _conv(net["pool1/norm1"], 64, 1, name="conv2/3x3_reduce")
    net["conv2/3x3"] = _conv(net["conv2/3x3_reduce"], 192, 3, pad=1, name="conv2/3x3")
    net["conv2/norm2"] = LRNLayer(net["conv2/3x3"], alpha=0.00002, k=1, name="conv2/norm2")
    net["pool2/3x3_s2"] = MaxPool2DLayer(net["conv2/norm2"], pool_size=3, stride=2,
                                         ignore_border=False, name="pool2/3x3_s2")
    prev = net["pool2/3x3_s2"]
    for name, _, nfilters in INCEPTION_FILTERS:
        net.update(build_inception_module(name, prev, nfilters))
        prev = net[name + "/output"]
        if name == "inception_3b":
            net["pool3/3x3_s2"] = prev = MaxPool2DLayer(prev, pool_size=3, stride=2,
                                                        ignore_border=False,
                                                        name="pool3/3x3_s2")
        elif name == "inception_4e":
            net["pool4/3x3_s2"] = prev = MaxPool2DLayer(prev, pool_size=3, stride=2,
                                                        ignore_border=False,
                                                        name="pool4/3x3_s2")
    net["pool5/7x7_s1"] = GlobalPoolLayer(prev, name="pool5/7x7_s1")
    net["loss3/classifier"] = DenseLayer(net["pool5/7x7_s1"], num_units=1000,
                                         nonlinearity=linear, name="loss3/classifier")
    net["prob"] = NonlinearityLayer(net["loss3/classifier"], nonlinearity=softmax,
                                    name="prob")
    return net


def expected_param_shapes():
    """The known layout of ``'param values'`` in ``blvc_googlenet.pkl``."""
    shapes = [(64, 3, 7, 7), (64,), (64, 64, 1, 1), (64,), (192, 64, 3, 3), (192,)]
    for _, cin, (pp, c1, r3, c3, r5, c5) in INCEPTION_FILTERS:
        shapes += [(c1, cin, 1, 1), (c1,), (r3, cin, 1, 1), (r3,), (c3, r3, 3, 3), (c3,),
                   (r5, cin, 1, 1), (r5,), (c5, r5, 5, 5), (c5,), (pp, cin, 1, 1), (pp,)]
    shapes += [(1024, 1000), (1000,)]
    return shapes


def load_pickle(path):
    """Read ``blvc_googlenet.pkl`` safely; returns its dict.

    Raises :class:`UserError` if the file is missing (with where to get it),
    is not a pickle, holds anything but arrays/containers, or lacks
    ``'param values'``.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserError(missing_model_message(path, "googlenet"))
    try:
        with open(path, "rb") as f:
            obj = safe_pickle.load(f, allow=safe_pickle.NUMPY_ARRAYS)
    except safe_pickle.Refused as exc:
        raise UserError("%s: refusing to load %s from the pickle (only numpy arrays and "
                        "plain containers are allowed)" % (path, exc))
    except Exception as exc:
        raise UserError("%s is not a GoogLeNet weights pickle (%s: %s)"
                        % (path, type(exc).__name__, str(exc).splitlines()[0] if str(exc) else ""))
    if isinstance(obj, (list, tuple)):
        obj = {"param values": list(obj)}
    if not isinstance(obj, dict) or "param values" not in obj:
        raise UserError("%s is not a GoogLeNet weights pickle: no 'param values'" % path)
    return obj


def set_weights(net, param_values, path="model"):
    """Set ``param_values`` (pickle order) on ``net``, checking every shape."""
    import lasagne
    params = lasagne.layers.get_all_params(net["prob"])
    if len(param_values) != len(params):
        raise UserError("%s: %d parameter arrays, GoogLeNet needs %d"
                        % (path, len(param_values), len(params)))
    for i, (p, v) in enumerate(zip(params, param_values)):
        v = np.asarray(v)
        if v.shape != p.get_value().shape:
            raise UserError("%s: parameter %d has shape %s, expected %s"
                            % (path, i, v.shape, p.get_value().shape))
        p.set_value(v.astype(p.dtype))


def tap_outputs(net):
    """Symbolic outputs of every tap of :data:`TAP_SHAPES` (same order), deterministic."""
    import lasagne
    logits, pool = lasagne.layers.get_output(
        [net["loss3/classifier"], net["pool5/7x7_s1"]], deterministic=True)
    return {"logits": logits, "pool": pool}


class GoogLeNetEncoder(ImageEncoder):
    """Encode photos with BVLC GoogLeNet (the seminar's image codes).

    Taps: ``logits`` (N, 1000) ``loss3/classifier``, ``pool`` (N, 1024)
    ``pool5/7x7_s1``; ``encode`` batches 16 images by default. Images: paths
    or uint8 RGB (N, 224, 224, 3); converted to BGR minus mean.
    """

    name = "googlenet"
    tap_shapes = TAP_SHAPES
    input_size = (224, 224)
    default_batch_size = 16

    def __init__(self, model_path=None, param_values=None, mean_value=None):
        """``model_path``: the pickle; or ``param_values`` directly (tests)."""
        self.model_path = None if model_path is None else os.fspath(model_path)
        if param_values is None:
            blob = load_pickle(self.model_path)
            param_values = blob["param values"]
            mean_value = blob.get("mean value", mean_value)
            self.synset_words = blob.get("synset words")
        else:
            self.synset_words = None
        mean = CAFFE_MEAN_BGR if mean_value is None else np.asarray(mean_value, np.float32)
        if mean.ndim == 3:          # a full mean image (3, H, W): use its channel means
            mean = mean.reshape(3, -1).mean(1)
        self.mean_bgr = mean.reshape(3).astype(np.float32)
        self.net = build_model(input_size=self.input_size)
        set_weights(self.net, param_values, self.model_path or "param_values")
        self._fn = None

    def _forward(self):
        if self._fn is None:
            import theano
            outputs = tap_outputs(self.net)
            # Theano's full graph optimizer needs more than 4 minutes on this
            # 150-layer graph; the cheap one with the C VM takes about one
            self._fn = theano.function(
                [self.net["input"].input_var], [outputs[t] for t in TAP_SHAPES],
                name="googlenet_forward",
                mode=theano.compile.mode.Mode(linker="cvm", optimizer="fast_compile"))
        return self._fn

    def preprocess(self, batch):
        """uint8 RGB (N, H, W, 3) -> float32 BGR mean-subtracted (N, 3, H, W)."""
        x = np.asarray(batch, np.float32)[..., ::-1] - self.mean_bgr
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    def compile(self):
        """Compile the Theano forward function now (about a minute); returns self."""
        self._forward()
        return self

    def forward(self, batch, taps=None):
        """Codes of one batch of uint8 RGB images ``(N, 224, 224, 3)``: ``{tap: array}``."""
        taps = self.check_taps(taps)
        outputs = dict(zip(TAP_SHAPES, self._forward()(self.preprocess(self.check_batch(batch)))))
        return {t: np.asarray(outputs[t], np.float32) for t in taps}
