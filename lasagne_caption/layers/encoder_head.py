"""MobileNetV2's head as float Lasagne layers on image regions, to train with a captioner.

The int8 encoder (:mod:`lasagne_caption.encoders.mobilenet_v2`) ends, after
its last inverted-residual block (``expanded_conv_16/project``, the
``block16`` tap: 7x7x320 per photo, stored by ``prepare flickr8k --features
block16`` as (N, 49, 320) regions in row-major 7x7 order), with three layers,
here in float32 and trainable:

* :class:`RegionDenseLayer` with :func:`relu6` -- ``Conv_1``, a 1x1
  convolution 320 -> 1280 (its batch norm folded into W and b), i.e. one
  dense layer applied to every region: (N, 49, 320) -> (N, 49, 1280);
* :class:`RegionMeanLayer` -- ``Logits/AvgPool``, the mean over the regions:
  (N, 49, 1280) -> (N, 1280);
* a plain :class:`lasagne.layers.DenseLayer` without nonlinearity --
  ``Logits/Conv2d_1c_1x1``: (N, 1280) -> (N, 1001) ImageNet logits.

They compose into::

    block16 (N, 49, 320) -> RegionDenseLayer(1280, relu6)               = grid   (N, 49, 1280)
    block16 (N, 49, 320) -> RegionDenseLayer(1280, relu6)
                         -> RegionMeanLayer -> DenseLayer(1001, None)   = logits (N, 1001)

(the ``pool`` tap is the RegionMeanLayer's output). :func:`mobilenet_v2_head`
builds the three at once; with the weights of
:func:`lasagne_caption.encoders.mobilenet_v2.head_weights` (the int8 model's
dequantised weights, float32) it reproduces the encoder's ``grid`` and
``logits`` taps up to the int8 model's rounding of each output::

    w = head_weights(model_path)
    head = mobilenet_v2_head(InputLayer((None, 49, 320)), w["Conv_1"], w["Logits"])
    head["grid"], head["pool"], head["logits"]

The encoder's own taps round every layer's output to its uint8 grid (fake
quantisation); these layers do not, so their outputs differ from the taps by
about a quantisation step of the tap (``tests/layers/test_encoder_head.py``
measures it on real photos).
"""
import lasagne
import theano.tensor as T
from lasagne import init
from lasagne.layers import DenseLayer, Layer

__all__ = ["RegionDenseLayer", "RegionMeanLayer", "mobilenet_v2_head", "relu6"]


def relu6(x):
    """``min(max(x, 0), 6)``: MobileNet's clipped ReLU (a Theano expression).

    >>> import numpy as np
    >>> relu6(T.constant(np.array([-1.0, 2.5, 7.0]))).eval().tolist()
    [0.0, 2.5, 6.0]
    """
    return T.clip(x, 0, 6)


class RegionDenseLayer(Layer):
    """A dense layer applied to every image region: a 1x1 convolution.

    Parameters
    ----------
    incoming : Layer or tuple, (N, L, C)
        L regions of C features each (C must be known).
    num_units : int
        U, the features of each output region.
    W : initializer or array, (C, U)
    b : initializer, array or None, (U,)
        None: no bias.
    nonlinearity : callable or None
        Applied to every output value (None: identity); :func:`relu6` for
        MobileNetV2's ``Conv_1``.

    Output
    ------
    (N, L, U): ``nonlinearity(x_l W + b)`` for each region ``x_l``, computed as
    one (N * L, C) x (C, U) product.

    Examples
    --------
    >>> import numpy as np
    >>> from lasagne.layers import InputLayer, get_output
    >>> regions = InputLayer((None, 49, 320))
    >>> layer = RegionDenseLayer(regions, 1280, nonlinearity=relu6, name="Conv_1")
    >>> layer.output_shape
    (None, 49, 1280)
    >>> [(p.name, p.get_value().shape) for p in layer.get_params()]
    [('Conv_1.W', (320, 1280)), ('Conv_1.b', (1280,))]
    >>> tiny = RegionDenseLayer(InputLayer((None, 2, 2)), 1,
    ...                         W=np.array([[1.], [-1.]], "float32"), b=np.array([0.5], "float32"))
    >>> x = np.array([[[3., 1.], [1., 3.]]], dtype="float32")
    >>> get_output(tiny, x).eval().tolist()      # 3 - 1 + 0.5, 1 - 3 + 0.5
    [[[2.5], [-1.5]]]
    """

    def __init__(self, incoming, num_units, W=init.GlorotUniform(), b=init.Constant(0.),
                 nonlinearity=None, **kwargs):
        super(RegionDenseLayer, self).__init__(incoming, **kwargs)
        if len(self.input_shape) != 3 or self.input_shape[2] is None:
            raise ValueError("RegionDenseLayer needs input (N, L, C) with C known, not %s"
                             % (self.input_shape,))
        self.num_units = int(num_units)
        self.nonlinearity = (lasagne.nonlinearities.identity if nonlinearity is None
                             else nonlinearity)
        self.W = self.add_param(W, (self.input_shape[2], self.num_units), name="W")
        self.b = (None if b is None else
                  self.add_param(b, (self.num_units,), name="b", regularizable=False))

    def get_output_shape_for(self, input_shape):
        return input_shape[0], input_shape[1], self.num_units

    def get_output_for(self, input, **kwargs):
        activation = T.dot(input.reshape((-1, input.shape[2])), self.W)
        if self.b is not None:
            activation = activation + self.b.dimshuffle('x', 0)
        return self.nonlinearity(activation).reshape(
            (input.shape[0], input.shape[1], self.num_units))


class RegionMeanLayer(Layer):
    """The mean over image regions: global average pooling.

    Parameters
    ----------
    incoming : Layer or tuple, (N, L, C)

    Output
    ------
    (N, C): the mean of the L regions; MobileNetV2's ``Logits/AvgPool`` on
    its 7x7 map (L = 49).

    Examples
    --------
    >>> import numpy as np
    >>> from lasagne.layers import InputLayer, get_output
    >>> layer = RegionMeanLayer(InputLayer((None, 49, 1280)))
    >>> layer.output_shape
    (None, 1280)
    >>> x = np.array([[[1., 2.], [3., 6.]]], dtype="float32")
    >>> get_output(RegionMeanLayer(InputLayer((None, 2, 2))), x).eval().tolist()
    [[2.0, 4.0]]
    """

    def __init__(self, incoming, **kwargs):
        super(RegionMeanLayer, self).__init__(incoming, **kwargs)
        if len(self.input_shape) != 3:
            raise ValueError("RegionMeanLayer needs input (N, L, C), not %s"
                             % (self.input_shape,))

    def get_output_shape_for(self, input_shape):
        return input_shape[0], input_shape[2]

    def get_output_for(self, input, **kwargs):
        return T.mean(input, axis=1)


def mobilenet_v2_head(incoming, conv_1=None, logits=None, num_units=1280, num_classes=1001,
                      prefix=""):
    """MobileNetV2's float head on ``block16`` regions: ``{"grid", "pool", "logits"}`` layers.

    Parameters
    ----------
    incoming : Layer or tuple, (N, L, C)
        The ``block16`` regions (N, 49, 320).
    conv_1, logits : (W, b) or None
        The weights of ``Conv_1`` (W (C, num_units), b (num_units,)) and of the
        logits layer (W (num_units, num_classes), b (num_classes,)), e.g.
        ``head_weights(path)["Conv_1"]`` and ``["Logits"]``; None: Lasagne's default
        initialisation (GlorotUniform, zero bias) with the sizes given.
    prefix : str
        Put before the layer names (``Conv_1``, ``Logits/AvgPool``,
        ``Logits/Conv2d_1c_1x1``, the encoder's), and so before their
        parameters' names.

    Returns
    -------
    dict
        ``"grid"``: :class:`RegionDenseLayer` with :func:`relu6`, (N, L, 1280);
        ``"pool"``: :class:`RegionMeanLayer`, (N, 1280); ``"logits"``:
        :class:`~lasagne.layers.DenseLayer`, linear, (N, 1001).

    Examples
    --------
    >>> from lasagne.layers import InputLayer, get_all_params
    >>> head = mobilenet_v2_head(InputLayer((None, 49, 320)), prefix="encoder/")
    >>> [head[k].output_shape for k in ("grid", "pool", "logits")]
    [(None, 49, 1280), (None, 1280), (None, 1001)]
    >>> for p in get_all_params(head["logits"]):
    ...     print(p.name, p.get_value().shape)
    encoder/Conv_1.W (320, 1280)
    encoder/Conv_1.b (1280,)
    encoder/Logits/Conv2d_1c_1x1.W (1280, 1001)
    encoder/Logits/Conv2d_1c_1x1.b (1001,)
    """
    if conv_1 is not None:
        num_units = conv_1[0].shape[1]
    if logits is not None:
        num_classes = logits[0].shape[1]
    grid = RegionDenseLayer(incoming, num_units, *(conv_1 or ()), nonlinearity=relu6,
                            name=prefix + "Conv_1")
    pool = RegionMeanLayer(grid, name=prefix + "Logits/AvgPool")
    out = DenseLayer(pool, num_classes, *(logits or ()), nonlinearity=None,
                     name=prefix + "Logits/Conv2d_1c_1x1")
    return {"grid": grid, "pool": pool, "logits": out}
