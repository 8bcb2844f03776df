"""Small Lasagne 0.1 layers the encoders need and Lasagne 0.1 lacks.

* :class:`ScaleShiftLayer` -- ``scale * (x - shift)`` with constants (input
  normalisation, e.g. uint8 -> [-1, 1]);
* :class:`TFSamePadLayer` -- TensorFlow's ``SAME`` padding, which for an even
  input and stride 2 pads one more row/column at the bottom/right than at the
  top/left (Lasagne's ``pad`` is symmetric);
* :class:`DepthwiseConv2DLayer` -- a depthwise (one filter per channel)
  convolution with TF ``SAME`` padding, computed as a grouped convolution
  (``theano.tensor.nnet.conv2d(num_groups=C)``) or as a sum of shifted
  elementwise products (faster on CPU for 3x3 kernels);
* :class:`FakeQuantLayer` -- rounds activations to a uint8 grid and back,
  ``s * (clip(round(x / s) + z, 0, 255) - z)``, to simulate an int8 model;
* :func:`conv2d_noflip` -- cross-correlation (what TFLite, Caffe and TF do)
  for Lasagne 0.1's ``Conv2DLayer``, which has no ``flip_filters`` option.
"""
import numpy as np
import theano
import theano.tensor as T
from lasagne import init, nonlinearities
from lasagne.layers import Layer

__all__ = ["conv2d_noflip", "relu6", "ScaleShiftLayer", "TFSamePadLayer",
           "DepthwiseConv2DLayer", "FakeQuantLayer", "tf_same_padding"]


def conv2d_noflip(input, filters, image_shape=None, filter_shape=None, **kwargs):
    """``theano.tensor.nnet.conv2d`` without flipping the filters (correlation)."""
    kwargs.pop("filter_flip", None)
    return T.nnet.conv2d(input, filters, input_shape=image_shape,
                         filter_shape=filter_shape, filter_flip=False, **kwargs)


def relu6(x):
    """``min(max(x, 0), 6)``: MobileNet's clipped ReLU (a Theano expression).

    >>> [float(relu6(x).eval()) for x in (-1.0, 2.5, 7.0)]
    [0.0, 2.5, 6.0]
    """
    return T.clip(x, 0, 6)


def tf_same_padding(size, kernel, stride):
    """(before, after) padding of TensorFlow ``SAME`` for one spatial axis.

    >>> tf_same_padding(224, 3, 2)     # even input, stride 2: the extra row at the end
    (0, 1)
    >>> tf_same_padding(7, 3, 1)
    (1, 1)
    """
    out = (size + stride - 1) // stride
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class ScaleShiftLayer(Layer):
    """``scale * (input - shift)`` with Python-number constants."""

    def __init__(self, incoming, scale=1.0, shift=0.0, **kwargs):
        super(ScaleShiftLayer, self).__init__(incoming, **kwargs)
        self.scale = float(scale)
        self.shift = float(shift)

    def get_output_shape_for(self, input_shape):
        return input_shape

    def get_output_for(self, input, **kwargs):
        return (input - np.float32(self.shift)) * np.float32(self.scale)


class TFSamePadLayer(Layer):
    """Zero padding as TensorFlow's ``SAME`` for a given kernel and stride."""

    def __init__(self, incoming, kernel, stride, **kwargs):
        super(TFSamePadLayer, self).__init__(incoming, **kwargs)
        self.kernel = int(kernel)
        self.stride = int(stride)
        h, w = self.input_shape[2], self.input_shape[3]
        if h is None or w is None:
            raise ValueError("TFSamePadLayer needs a known spatial input size")
        self.pads = (tf_same_padding(h, self.kernel, self.stride),
                     tf_same_padding(w, self.kernel, self.stride))

    def get_output_shape_for(self, input_shape):
        (t, b), (l, r) = self.pads
        return input_shape[:2] + (input_shape[2] + t + b, input_shape[3] + l + r)

    def get_output_for(self, input, **kwargs):
        (t, b), (l, r) = self.pads
        if not (t or b or l or r):
            return input
        n, c, h, w = input.shape
        out = T.zeros((n, c, h + t + b, w + l + r), dtype=input.dtype)
        return T.set_subtensor(out[:, :, t:t + h, l:l + w], input)


class DepthwiseConv2DLayer(Layer):
    """Depthwise convolution (depth multiplier 1), TF ``SAME`` padding, no flip.

    ``W`` has shape ``(channels, 1, k, k)`` and ``b`` ``(channels,)``.
    ``impl="shift"`` sums ``k*k`` shifted, strided slices times per-channel
    weights (Theano fuses them into one elementwise loop); ``impl="groups"``
    uses ``conv2d(num_groups=channels)``. Both give the same numbers.
    """

    def __init__(self, incoming, filter_size=3, stride=1, W=init.GlorotUniform(),
                 b=init.Constant(0.), nonlinearity=nonlinearities.rectify,
                 impl="shift", **kwargs):
        super(DepthwiseConv2DLayer, self).__init__(incoming, **kwargs)
        if impl not in ("shift", "groups"):
            raise ValueError("impl must be 'shift' or 'groups', not %r" % impl)
        self.filter_size = int(filter_size)
        self.stride = int(stride)
        self.impl = impl
        self.nonlinearity = nonlinearity or nonlinearities.identity
        channels = self.input_shape[1]
        h, w = self.input_shape[2], self.input_shape[3]
        if channels is None or h is None or w is None:
            raise ValueError("DepthwiseConv2DLayer needs a known input shape")
        self.pads = (tf_same_padding(h, self.filter_size, self.stride),
                     tf_same_padding(w, self.filter_size, self.stride))
        self.W = self.add_param(W, (channels, 1, self.filter_size, self.filter_size),
                                name="W")
        self.b = None if b is None else self.add_param(b, (channels,), name="b",
                                                        regularizable=False)

    def get_output_shape_for(self, input_shape):
        s = self.stride
        h, w = input_shape[2], input_shape[3]
        return (input_shape[0], input_shape[1],
                None if h is None else (h + s - 1) // s,
                None if w is None else (w + s - 1) // s)

    def get_output_for(self, input, **kwargs):
        (t, b), (l, r) = self.pads
        n, c, h, w = self.input_shape
        k, s = self.filter_size, self.stride
        if t or b or l or r:
            padded = T.zeros((input.shape[0], c, h + t + b, w + l + r), dtype=input.dtype)
            padded = T.set_subtensor(padded[:, :, t:t + h, l:l + w], input)
        else:
            padded = input
        oh, ow = self.output_shape[2], self.output_shape[3]
        if self.impl == "groups":
            out = T.nnet.conv2d(padded, self.W, filter_flip=False, subsample=(s, s),
                                num_groups=c,
                                filter_shape=(c, 1, k, k))
        else:
            out = 0
            for i in range(k):
                for j in range(k):
                    tap = padded[:, :, i:i + (oh - 1) * s + 1:s, j:j + (ow - 1) * s + 1:s]
                    out = out + tap * self.W[:, 0, i, j].dimshuffle("x", 0, "x", "x")
        if self.b is not None:
            out = out + self.b.dimshuffle("x", 0, "x", "x")
        return self.nonlinearity(out)


class FakeQuantLayer(Layer):
    """Round to the uint8 grid of (scale, zero_point) and back to float."""

    def __init__(self, incoming, scale, zero_point, qmin=0, qmax=255, **kwargs):
        super(FakeQuantLayer, self).__init__(incoming, **kwargs)
        self.scale = float(scale)
        self.zero_point = int(zero_point)
        self.qmin, self.qmax = qmin, qmax

    def get_output_shape_for(self, input_shape):
        return input_shape

    def get_output_for(self, input, **kwargs):
        s = np.float32(self.scale)
        z = np.float32(self.zero_point)
        q = T.round(input / s, mode="half_away_from_zero") + z
        q = T.clip(q, np.float32(self.qmin), np.float32(self.qmax))
        return (q - z) * s


def floatx(array):
    return np.asarray(array, dtype=theano.config.floatX)
