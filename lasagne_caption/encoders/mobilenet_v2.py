"""MobileNetV2 1.0/224 in Lasagne, with the weights of an int8 TFLite model.

:func:`build_model` makes the network (a dict of Lasagne layers named after
the TensorFlow scopes: ``Conv``, ``expanded_conv_3/expand``, ...,
``Logits/AvgPool``, ``Logits/Conv2d_1c_1x1``); :func:`load_weights` reads
``mobilenet_v2_1.0_224_quant.tflite``, dequantises its uint8/int8 weights
and int32 biases to float32 and sets them; :class:`MobileNetV2Encoder`
compiles one Theano forward function per process and maps batches of uint8
RGB images to its feature taps (:data:`TAP_SHAPES`; the first two are the
codes of the shared Flickr8k files):

* ``logits`` -- 1001 pre-softmax ImageNet logits (``MobilenetV2/Logits/Squeeze1``,
  class 0 = background);
* ``pool``   -- 1280 global-average-pooled features (``MobilenetV2/Logits/AvgPool``);
* ``grid``   -- the 7x7x1280 map of ``Conv_1`` (after ReLU6; NHWC, the TFLite
  tensor layout), the region features an attention decoder reads (``pool`` is
  its mean over the 49 positions, then quantised);
* ``block16`` -- the 7x7x320 output of the last inverted-residual block
  (``expanded_conv_16/project``, the input of ``Conv_1``).

A new tap is one entry in :data:`TAP_SHAPES` plus its output in
:func:`tap_outputs`.

Input: uint8 RGB, 224x224. The model's input quantisation
(``real = 0.0078125 * (q - 128)``) is read from the file and applied by the
first layer.

``fake_quant=True`` (the default) rounds each layer's output to the uint8
grid of that tensor in the file (its scale / zero point), as the int8 runtime
does, so the codes match the reference runtime's closely; ``fake_quant=False``
runs plain float math with the dequantised weights (ReLU6 clamps only).

:func:`head_weights` gives the float weights of the head after ``block16``
(``Conv_1`` and the logits layer) in the dense layout of
:mod:`lasagne_caption.layers.encoder_head`, to train it with a captioner.
"""
import os
import threading

import numpy as np

from ..errors import UserError
from .base import ImageEncoder
from .model_files import MODEL_FILES, missing_model_message
from .tflite import load_tflite, dequantize

__all__ = ["build_model", "load_weights", "tap_outputs", "MobileNetV2Encoder", "BLOCKS",
           "MODEL_FILENAME", "MODEL_URL", "INPUT_SIZE", "TAP_SHAPES", "head_weights",
           "head_quantization", "HEAD_TAPS"]

MODEL_FILENAME = MODEL_FILES["mobilenet_v2"].file_name
MODEL_URL = MODEL_FILES["mobilenet_v2"].url
INPUT_SIZE = 224
NUM_CLASSES = 1001
#: ``conv_impl`` values of :func:`build_model` (the first is the default)
CONV_IMPLS = ("gemm", "corrmm")
#: ``depthwise_impl`` values (``layers.DEPTHWISE_IMPLS``, named here without importing Theano)
DEPTHWISE_IMPLS = ("fused", "groups", "shift")

#: feature tap -> per-image shape, in the order of the compiled function's outputs
TAP_SHAPES = {"logits": (NUM_CLASSES,), "pool": (1280,), "grid": (7, 7, 1280),
              "block16": (7, 7, 320)}

# (expansion t, output channels c, repeats n, first stride s) of MobileNetV2.
BLOCKS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
          (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


def _block_names():
    """[(scope, expansion, in_ch, out_ch, stride, residual)] for the 17 blocks."""
    out, in_ch, idx = [], 32, 0
    for t, c, n, s in BLOCKS:
        for r in range(n):
            stride = s if r == 0 else 1
            scope = "expanded_conv" if idx == 0 else "expanded_conv_%d" % idx
            out.append((scope, t, in_ch, c, stride, stride == 1 and in_ch == c))
            in_ch = c
            idx += 1
    return out


def build_model(fake_quant=None, depthwise_impl="fused", input_var=None, conv_impl="gemm"):
    """The MobileNetV2 1.0/224 graph as a dict of Lasagne layers.

    ``depthwise_impl`` (``"fused"``, ``"groups"``, ``"shift"``: see
    :class:`~lasagne_caption.encoders.layers.DepthwiseConv2DLayer`) and
    ``conv_impl`` (``"gemm"``: :class:`~lasagne_caption.encoders.layers.GemmConv2DLayer`,
    NHWC; ``"corrmm"``: Lasagne's ``Conv2DLayer``, Theano's ``CorrMM``) choose
    how the depthwise and the other convolutions run. The defaults are the fast
    path (NHWC arrays under NCHW views, see :mod:`~lasagne_caption.encoders.layers`);
    ``depthwise_impl="groups", conv_impl="corrmm"`` is the reference (the
    toolkit's network before version 0.3, plain NCHW). Same layers, names,
    parameters and output shapes either way.

    ``fake_quant``: None (float math with ReLU6) or a dict ``scope -> (scale,
    zero_point)`` of output quantisation (from :func:`quant_params`); then a
    :class:`FakeQuantLayer` named ``scope + "/quant"`` follows each layer.
    The input layer takes float32 ``(N, 3, 224, 224)`` holding uint8 values
    0..255; ``net["input_norm"]`` maps them to the model's real input range
    (set by :func:`load_weights` from the file; default ``(q - 128) / 128``).
    Outputs: ``net["logits"]`` (N, 1001) and ``net["pool"]`` (N, 1280).
    """
    import lasagne
    from lasagne.layers import InputLayer, Conv2DLayer, DenseLayer
    from .layers import (ScaleShiftLayer, TFSamePadLayer, DepthwiseConv2DLayer,
                         FakeQuantLayer, GemmConv2DLayer, ElemwiseSumLayer, GlobalPoolLayer,
                         conv2d_noflip, relu6)
    if conv_impl not in CONV_IMPLS:
        raise ValueError("conv_impl must be one of %s, not %r" % (", ".join(CONV_IMPLS),
                                                                  conv_impl))
    identity = lasagne.nonlinearities.identity
    net = {}

    def quant(layer, scope):
        net[scope] = layer
        if fake_quant is None:
            return layer
        if scope not in fake_quant:
            raise KeyError("no output quantisation for %s" % scope)
        s, z = fake_quant[scope]
        net[scope + "/quant"] = FakeQuantLayer(layer, s, z, name=scope + "/quant")
        return net[scope + "/quant"]

    def conv(layer, channels, size, stride, act, name):
        if conv_impl == "gemm":
            return GemmConv2DLayer(layer, channels, size, stride=stride, nonlinearity=act,
                                   name=name)
        return Conv2DLayer(layer, channels, size, stride=stride, pad=0, nonlinearity=act,
                           convolution=conv2d_noflip, name=name)

    def conv1x1(layer, scope, channels, act):
        return quant(conv(layer, channels, 1, 1, act, scope), scope)

    net["input"] = InputLayer((None, 3, INPUT_SIZE, INPUT_SIZE), input_var=input_var,
                              name="input")
    net["input_norm"] = ScaleShiftLayer(net["input"], 1.0 / 128, 128.0, name="input_norm",
                                        nhwc=conv_impl == "gemm")
    x = TFSamePadLayer(net["input_norm"], 3, 2, name="Conv/pad")
    x = quant(conv(x, 32, 3, 2, relu6, "Conv"), "Conv")
    for scope, t, in_ch, out_ch, stride, residual in _block_names():
        inp = x
        if t != 1:
            x = conv1x1(x, scope + "/expand", in_ch * t, relu6)
        x = quant(DepthwiseConv2DLayer(x, 3, stride, nonlinearity=relu6,
                                       impl=depthwise_impl, name=scope + "/depthwise"),
                  scope + "/depthwise")
        x = conv1x1(x, scope + "/project", out_ch, identity)
        if residual:
            x = quant(ElemwiseSumLayer([x, inp], name=scope + "/add"), scope + "/add")
    x = conv1x1(x, "Conv_1", 1280, relu6)
    x = quant(GlobalPoolLayer(x, name="Logits/AvgPool"), "Logits/AvgPool")
    net["pool"] = x
    x = quant(DenseLayer(x, NUM_CLASSES, nonlinearity=identity,
                         name="Logits/Conv2d_1c_1x1"), "Logits/Conv2d_1c_1x1")
    net["logits"] = x
    return net


_PREFIX = "MobilenetV2/"


def _scope_of(tensor):
    """'MobilenetV2/expanded_conv_3/expand/Conv2D_Fold;...' -> 'expanded_conv_3/expand'."""
    name = tensor.scope
    if name.startswith(_PREFIX):
        name = name[len(_PREFIX):]
    return name


def _weight_scope(tensor):
    return _scope_of(tensor).rsplit("/", 1)[0]


def read_tflite_weights(path):
    """Weights and quantisation of a MobileNetV2 .tflite file.

    Returns ``(params, out_quant, input_quant)``: ``params`` maps a scope to
    ``(W, b)`` float32 in Lasagne layout, ``out_quant`` maps a scope to the
    ``(scale, zero_point)`` of its output tensor, ``input_quant`` is the
    input tensor's ``(scale, zero_point)``.
    """
    model = load_tflite(path)
    params, out_quant = {}, {}
    for op in model.operators:
        out = model.tensors[op.outputs[0]]
        if op.op in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            wt, bt = model.tensors[op.inputs[1]], model.tensors[op.inputs[2]]
            scope = _weight_scope(wt)
            if wt.data is None or bt.data is None:
                raise UserError("%s: operator %d (%s) has no constant weights"
                                % (path, op.index, scope))
            w, b = dequantize(wt), dequantize(bt)
            if op.op == "CONV_2D":
                if scope == "Logits/Conv2d_1c_1x1":       # (1001, 1, 1, 1280) -> dense
                    w = w.reshape(w.shape[0], -1).T
                else:                                      # OHWI -> OIHW
                    w = w.transpose(0, 3, 1, 2)
            else:                                          # 1HWC -> C1HW
                w = w.transpose(3, 0, 1, 2)
            params[scope] = (np.ascontiguousarray(w), b)
            key = scope
        elif op.op == "ADD":
            key = _scope_of(out)
        elif op.op == "AVERAGE_POOL_2D":
            key = _scope_of(out)
        else:
            continue
        if out.is_quantized:
            out_quant[key] = (float(out.scale[0]), int(out.zero_point[0]))
    inp = model.tensors[model.inputs[0]]
    if inp.shape[1:] != (INPUT_SIZE, INPUT_SIZE, 3):
        raise UserError("%s: input is %s, expected (1, 224, 224, 3): not a MobileNetV2 "
                        "1.0/224 model" % (path, inp.shape))
    input_quant = ((float(inp.scale[0]), int(inp.zero_point[0])) if inp.is_quantized
                   else (1.0 / 127.5, 127.5))
    return params, out_quant, input_quant


def load_weights(net, params, input_quant, path="model"):
    """Set the Lasagne parameters of ``net`` from :func:`read_tflite_weights`."""
    from .layers import ScaleShiftLayer
    seen = set()
    for name, layer in net.items():
        if name != layer.name or name.endswith("/quant") or not hasattr(layer, "W"):
            continue
        if name not in params:
            raise UserError("%s is not a MobileNetV2 1.0/224 model: no weights for %s"
                            % (path, name))
        w, b = params[name]
        if layer.W.get_value().shape != w.shape or layer.b.get_value().shape != b.shape:
            raise UserError("%s is not a MobileNetV2 1.0/224 model: %s has weights %s, "
                            "expected %s" % (path, name, w.shape, layer.W.get_value().shape))
        layer.W.set_value(w.astype(np.float32))
        layer.b.set_value(b.astype(np.float32))
        seen.add(name)
    extra = sorted(set(params) - seen)
    if extra:
        raise UserError("%s is not a MobileNetV2 1.0/224 model: unexpected layers %s"
                        % (path, ", ".join(extra[:3])))
    norm = net["input_norm"]
    assert isinstance(norm, ScaleShiftLayer)
    norm.scale, norm.shift = input_quant


def tap_outputs(net):
    """Symbolic outputs of every tap of :data:`TAP_SHAPES` (same order), deterministic.

    ``grid`` and ``block16`` are the outputs of ``Conv_1`` (after ReLU6) and of
    ``expanded_conv_16/project`` (Conv_1's input), after their fake
    quantisation when the net has it, in NHWC order as in the TFLite tensors.
    """
    import lasagne

    def quantised(scope):
        return net.get(scope + "/quant", net[scope])

    logits, pool, grid, block16 = lasagne.layers.get_output(
        [net["logits"], net["pool"], quantised("Conv_1"), quantised("expanded_conv_16/project")],
        deterministic=True)
    return {"logits": logits, "pool": pool, "grid": grid.dimshuffle(0, 2, 3, 1),
            "block16": block16.dimshuffle(0, 2, 3, 1)}


_CACHE = {}
_CACHE_LOCK = threading.Lock()


def _compiled(path, fake_quant, depthwise_impl, conv_impl="gemm"):
    """(forward function -> [one array per tap of TAP_SHAPES], net), once per process and key."""
    path = os.path.abspath(os.fspath(path))
    try:
        stamp = os.stat(path).st_mtime_ns
    except OSError:
        stamp = None
    key = (path, stamp, bool(fake_quant), depthwise_impl, conv_impl)
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key]
        import theano
        params, out_quant, input_quant = read_tflite_weights(path)
        net = build_model(fake_quant=out_quant if fake_quant else None,
                          depthwise_impl=depthwise_impl, conv_impl=conv_impl)
        load_weights(net, params, input_quant, path)
        outputs = tap_outputs(net)
        fn = theano.function([net["input"].input_var], [outputs[t] for t in TAP_SHAPES],
                             name="mobilenet_v2_forward")
        _CACHE[key] = (fn, net)
        return _CACHE[key]


class MobileNetV2Encoder(ImageEncoder):
    """Encode photos with MobileNetV2 (weights from the int8 TFLite file).

    Taps: ``logits`` float32 (N, 1001), ``pool`` float32 (N, 1280), ``grid``
    float32 (N, 7, 7, 1280), ``block16`` float32 (N, 7, 7, 320). See
    :class:`~lasagne_caption.encoders.base.ImageEncoder` for ``encode``
    (paths or uint8 RGB arrays ``(N, 224, 224, 3)`` / a list of
    ``(224, 224, 3)``) and ``forward``.

    ``depthwise_impl`` and ``conv_impl``: see :func:`build_model` (the
    defaults are the fast path; ``depthwise_impl="groups", conv_impl="corrmm"``
    the reference).
    """

    name = "mobilenet_v2"
    tap_shapes = TAP_SHAPES
    input_size = (INPUT_SIZE, INPUT_SIZE)
    default_batch_size = 32

    def __init__(self, model_path, fake_quant=True, depthwise_impl="fused", conv_impl="gemm"):
        if depthwise_impl not in DEPTHWISE_IMPLS or conv_impl not in CONV_IMPLS:
            raise ValueError("depthwise_impl must be one of %s and conv_impl one of %s, not "
                             "%r, %r" % (DEPTHWISE_IMPLS, CONV_IMPLS, depthwise_impl, conv_impl))
        self.model_path = os.fspath(model_path)
        self.fake_quant = bool(fake_quant)
        self.depthwise_impl = depthwise_impl
        self.conv_impl = conv_impl
        # Check the file now (clear error early); parse and compile lazily.
        if not os.path.isfile(self.model_path):
            raise UserError(missing_model_message(self.model_path, self.name))
        self._fn = None

    def _forward(self):
        if self._fn is None:
            self._fn, self.net = _compiled(self.model_path, self.fake_quant,
                                           self.depthwise_impl, self.conv_impl)
        return self._fn

    def compile(self):
        """Build and compile the Theano forward function now (cached per process)."""
        self._forward()
        return self

    def forward(self, batch, taps=None):
        """Codes of one batch of uint8 RGB images ``(N, 224, 224, 3)``: ``{tap: array}``."""
        taps = self.check_taps(taps)
        batch = self.check_batch(batch)
        # NCHW view of NHWC float32: the fast path's layout, no transposing copy
        x = np.asarray(batch, dtype=np.float32).transpose(0, 3, 1, 2)
        outputs = dict(zip(TAP_SHAPES, self._forward()(x)))
        return {t: np.asarray(outputs[t], np.float32) for t in taps}


def read_labels(path):
    """Class names, one a line (``background`` first for this model)."""
    try:
        with open(path, encoding="utf-8") as f:
            return [line.strip() for line in f if line.strip()]
    except OSError as exc:
        raise UserError("cannot read labels file %s: %s" % (path, exc.strerror or exc))


# ---- the head after block16 (Conv_1, the average pool, the logits), as float weights

#: tap -> the scope of the tensor it is: the head's input and its three outputs
HEAD_TAPS = {"block16": "expanded_conv_16/project", "grid": "Conv_1", "pool": "Logits/AvgPool",
             "logits": "Logits/Conv2d_1c_1x1"}


def _head_model_path(model_path):
    from .model_files import default_model_path
    path = os.path.expanduser(os.fspath(model_path if model_path is not None
                                        else default_model_path("mobilenet_v2")))
    if not os.path.isfile(path):
        raise UserError(missing_model_message(path, "mobilenet_v2"))
    return path


def head_weights(model_path=None):
    """The dequantised float32 weights of MobileNetV2's ``Conv_1`` and logits layer.

    The head after the last inverted-residual block (``block16``, 7x7x320):
    ``Conv_1``, a 1x1 convolution 320 -> 1280 whose batch norm the file has
    folded into its weights and bias (``Conv_1/Conv2D_Fold``,
    ``Conv_1/BatchNorm_Fold/bias``), ReLU6 fused into the operator; the 7x7
    average pool; ``Logits/Conv2d_1c_1x1``, a 1x1 convolution 1280 -> 1001 of
    the pooled map, i.e. a dense layer, with a plain bias.

    These are the real values the int8 model represents. This file (TF1
    quantisation-aware training) quantises every weight tensor per tensor:
    uint8 with one scale and zero point, ``W = scale * (q - zero_point)``;
    every bias is int32 with zero point 0 in the unit TFLite defines for it,
    the accumulator's ``input_scale * weight_scale``: ``b = q * input_scale *
    weight_scale`` (the file's bias scale is that product to float32
    rounding). They are the arrays :func:`read_tflite_weights` gives the
    encoder's own layers, in the dense layout ``y = x W + b``.

    Parameters
    ----------
    model_path : path, optional
        ``mobilenet_v2_1.0_224_quant.tflite`` (default: the encoders' cache location).

    Returns
    -------
    dict
        ``{"Conv_1": (W (320, 1280), b (1280,)), "Logits": (W (1280, 1001), b (1001,))}``,
        float32 (class 0 of the logits = background): the ``weights`` of
        :func:`lasagne_caption.layers.encoder_head.mobilenet_v2_head`
        (``conv_1=w["Conv_1"], logits=w["Logits"]``).

    Raises
    ------
    UserError
        A missing or damaged file, or one that is not MobileNetV2 1.0/224.
    """
    path = _head_model_path(model_path)
    params, _out_quant, _input_quant = read_tflite_weights(path)
    expected = {"Conv_1": ((1280, 320, 1, 1), (1280,)),       # OIHW, as the encoder's layer
                "Logits/Conv2d_1c_1x1": ((1280, NUM_CLASSES), (NUM_CLASSES,))}
    for scope, shapes in expected.items():
        got = tuple(a.shape for a in params[scope]) if scope in params else None
        if got != shapes:
            raise UserError("%s is not a MobileNetV2 1.0/224 model: %s has weights %s, "
                            "expected %s" % (path, scope, got, shapes))
    w, b = params["Conv_1"]
    conv_1 = (np.ascontiguousarray(w[:, :, 0, 0].T, dtype=np.float32), b.astype(np.float32))
    w, b = params["Logits/Conv2d_1c_1x1"]
    logits = (np.ascontiguousarray(w, dtype=np.float32), b.astype(np.float32))
    return {"Conv_1": conv_1, "Logits": logits}


def head_quantization(model_path=None):
    """``{tap: (scale, zero_point)}`` of the int8 model's uint8 tensors around the head:
    ``block16`` (its input), ``grid`` (Conv_1's output), ``pool``, ``logits``
    (:data:`HEAD_TAPS`); a float head differs from the encoder's taps by about
    one such step (``tests/layers/test_encoder_head.py``)."""
    path = _head_model_path(model_path)
    _params, out_quant, _input_quant = read_tflite_weights(path)
    missing = [scope for scope in HEAD_TAPS.values() if scope not in out_quant]
    if missing:
        raise UserError("%s: the output of %s is not quantised; not an int8 MobileNetV2 model"
                        % (path, missing[0]))
    return {tap: out_quant[scope] for tap, scope in HEAD_TAPS.items()}
