"""Small Lasagne 0.1 layers the encoders need and Lasagne 0.1 lacks.

* :class:`ScaleShiftLayer` -- ``scale * (x - shift)`` with constants (input
  normalisation, e.g. uint8 -> [-1, 1]);
* :class:`TFSamePadLayer` -- TensorFlow's ``SAME`` padding, which for an even
  input and stride 2 pads one more row/column at the bottom/right than at the
  top/left (Lasagne's ``pad`` is symmetric);
* :class:`DepthwiseConv2DLayer` -- a depthwise (one filter per channel)
  convolution with TF ``SAME`` padding, computed by the fused C op
  :class:`~lasagne_caption.encoders.ops.DepthwiseConv2DNHWC` (``impl="fused"``,
  bias and activation included), as a grouped convolution
  (``theano.tensor.nnet.conv2d(num_groups=C)``, the reference) or as a sum of
  shifted elementwise products;
* :class:`GemmConv2DLayer` -- Lasagne's ``Conv2DLayer`` (no flip, no padding)
  computed by the C op :class:`~lasagne_caption.encoders.ops.ConvNHWC` (BLAS
  ``sgemm`` on NHWC, bias and activation in the same pass);
* :class:`FakeQuantLayer` -- rounds activations to a uint8 grid and back,
  ``s * (clip(round(x / s) + z, 0, 255) - z)``, to simulate an int8 model;
* :class:`ElemwiseSumLayer`, :class:`GlobalPoolLayer` -- Lasagne's, keeping
  the NHWC layout (below);
* :func:`conv2d_noflip` -- cross-correlation (what TFLite, Caffe and TF do)
  for Lasagne 0.1's ``Conv2DLayer``, which has no ``flip_filters`` option.

**Layout.** Every layer here takes and returns NCHW tensors (Lasagne's
shapes), but the fast layers (``impl="fused"``, :class:`GemmConv2DLayer`)
compute on NHWC arrays, where a 1x1 convolution is one GEMM and a depthwise
one reads channels contiguously, and return ``nhwc.dimshuffle(0, 3, 1, 2)``,
an NCHW *view* (:func:`nchw_view`). The layers of this module recognise such
a view in their input (:func:`nhwc_of`) and compute on the NHWC array under
it, so a network of them never copies between layouts; any other input is
plain NCHW, computed as before.

**Folding.** Theano's elementwise loops are slow next to the C ops (about
10 ns per element here), so a layer whose input is a fused op's output
folds itself into that op while the graph is built: a
:class:`FakeQuantLayer` becomes the op's output quantisation, an
:class:`ElemwiseSumLayer` of a convolution and a residual becomes the
convolution's residual input, a :class:`ScaleShiftLayer` and a
:class:`TFSamePadLayer` below a :class:`GemmConv2DLayer` become its input
normalisation and padding. The layers keep their own outputs (asking for one
computes it separately), names and parameters.
"""
import numpy as np
import theano
import theano.tensor as T
from lasagne import init, nonlinearities
from lasagne.layers import Layer, Conv2DLayer
from lasagne.layers import ElemwiseSumLayer as _LasagneElemwiseSumLayer
from lasagne.layers import GlobalPoolLayer as _LasagneGlobalPoolLayer
from theano.tensor.elemwise import DimShuffle

from ..layers.encoder_head import relu6  # MobileNet's clipped ReLU, one definition
from .ops import AffinePadNHWC, ConvNHWC, DepthwiseConv2DNHWC

__all__ = ["conv2d_noflip", "relu6", "ScaleShiftLayer", "TFSamePadLayer",
           "DepthwiseConv2DLayer", "DEPTHWISE_IMPLS", "GemmConv2DLayer", "FakeQuantLayer",
           "ElemwiseSumLayer", "GlobalPoolLayer", "tf_same_padding", "nhwc_of", "as_nhwc",
           "nchw_view"]

_NHWC_TO_NCHW = (0, 3, 1, 2)


def nhwc_of(x):
    """The NHWC tensor ``y`` if ``x`` is ``y.dimshuffle(0, 3, 1, 2)``, else None."""
    owner = getattr(x, "owner", None)
    if owner is not None and isinstance(owner.op, DimShuffle) \
            and tuple(owner.op.new_order) == _NHWC_TO_NCHW:
        return owner.inputs[0]
    return None


def as_nhwc(x):
    """``x`` (NCHW) as NHWC: the array under an NCHW view, or a transposed view of ``x``."""
    y = nhwc_of(x)
    return x.dimshuffle(0, 2, 3, 1) if y is None else y


def nchw_view(y):
    """The NCHW view of an NHWC tensor (what the fast layers return)."""
    return y.dimshuffle(*_NHWC_TO_NCHW)


def _keep_layout(f, *inputs):
    """``f(*inputs)`` for an elementwise ``f``, on the NHWC arrays when every input is a view."""
    under = [nhwc_of(x) for x in inputs]
    if inputs and all(y is not None for y in under):
        return nchw_view(f(*under))
    return f(*inputs)


def conv2d_noflip(input, filters, image_shape=None, filter_shape=None, **kwargs):
    """``theano.tensor.nnet.conv2d`` without flipping the filters (correlation)."""
    kwargs.pop("filter_flip", None)
    return T.nnet.conv2d(input, filters, input_shape=image_shape,
                         filter_shape=filter_shape, filter_flip=False, **kwargs)




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
    """``scale * (input - shift)`` with Python-number constants.

    ``nhwc=True`` (or an NCHW view as input, see Layout) computes it on NHWC
    as an :class:`~lasagne_caption.encoders.ops.AffinePadNHWC`, which a
    :class:`TFSamePadLayer` and a :class:`GemmConv2DLayer` above fold into the
    convolution (MobileNetV2's input normalisation, padding and first layer
    in one op). The input is then best NHWC in memory, given as its NCHW view.
    """

    def __init__(self, incoming, scale=1.0, shift=0.0, nhwc=False, **kwargs):
        super(ScaleShiftLayer, self).__init__(incoming, **kwargs)
        self.scale = float(scale)
        self.shift = float(shift)
        self.nhwc = bool(nhwc)

    def get_output_shape_for(self, input_shape):
        return input_shape

    def get_output_for(self, input, **kwargs):
        if self.nhwc or nhwc_of(input) is not None:
            op = AffinePadNHWC((0, 0, 0, 0), (self.scale, self.shift))
            return nchw_view(op(as_nhwc(input)))
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
        nhwc = nhwc_of(input)
        if nhwc is not None:
            # a padding op the convolution above folds in (with a normalisation below it)
            below = nhwc.owner
            if below is not None and isinstance(below.op, AffinePadNHWC) \
                    and not any(below.op.pads):
                return nchw_view(AffinePadNHWC((t, b, l, r), below.op.affine)(below.inputs[0]))
            return nchw_view(AffinePadNHWC((t, b, l, r))(nhwc))
        n, c, h, w = input.shape
        out = T.zeros((n, c, h + t + b, w + l + r), dtype=input.dtype)
        return T.set_subtensor(out[:, :, t:t + h, l:l + w], input)


#: the implementations of :class:`DepthwiseConv2DLayer`
DEPTHWISE_IMPLS = ("fused", "groups", "shift")

# nonlinearities the fused ops apply themselves
_FUSED_ACTIVATIONS = ((nonlinearities.identity, "linear"), (nonlinearities.rectify, "relu"),
                      (relu6, "relu6"))


def _fused_activation(nonlinearity):
    """The fused ops' name of ``nonlinearity``, or None (then applied as a Theano expression)."""
    names = [name for f, name in _FUSED_ACTIVATIONS if f is nonlinearity]
    return names[0] if names else None


def _fused_node(x, op_class):
    """The apply node of ``op_class`` whose output ``x`` is the NCHW view of, or None."""
    node = getattr(nhwc_of(x), "owner", None)
    return node if node is not None and isinstance(node.op, op_class) else None


class DepthwiseConv2DLayer(Layer):
    """Depthwise convolution (depth multiplier 1), TF ``SAME`` padding, no flip.

    ``W`` has shape ``(channels, 1, k, k)`` and ``b`` ``(channels,)``.
    ``impl="fused"`` runs the C op
    :class:`~lasagne_caption.encoders.ops.DepthwiseConv2DNHWC` (padding, bias
    and an identity / rectify / :func:`relu6` nonlinearity in one pass, on
    NHWC; a :class:`FakeQuantLayer` right above it is folded into it too);
    ``impl="groups"`` uses ``conv2d(num_groups=channels)`` (Theano's
    ``CorrMM``: one tiny GEMM per channel and image; the reference);
    ``impl="shift"`` sums ``k*k`` shifted, strided slices times per-channel
    weights (Theano fuses them into one elementwise loop). All give the same
    numbers up to float32 rounding.
    """

    def __init__(self, incoming, filter_size=3, stride=1, W=init.GlorotUniform(),
                 b=init.Constant(0.), nonlinearity=nonlinearities.rectify,
                 impl="shift", **kwargs):
        super(DepthwiseConv2DLayer, self).__init__(incoming, **kwargs)
        if impl not in DEPTHWISE_IMPLS:
            raise ValueError("impl must be one of %s, not %r" % (", ".join(DEPTHWISE_IMPLS), impl))
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
        if self.impl == "fused":
            return self._fused_output(input)
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

    def _fused_output(self, input):
        (t, b), (l, r) = self.pads
        activation = _fused_activation(self.nonlinearity)
        bias = self.b if self.b is not None else T.zeros((self.input_shape[1],), input.dtype)
        op = DepthwiseConv2DNHWC(self.stride, (t, b, l, r), activation or "linear")
        out = op(as_nhwc(input), self.W, bias)
        if activation is None:
            out = self.nonlinearity(out)
        return nchw_view(out)


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
        # fold into a fused op right below (the same float32 steps, one pass less)
        quant = (self.scale, self.zero_point, self.qmin, self.qmax)
        node = _fused_node(input, (DepthwiseConv2DNHWC, ConvNHWC))
        if node is not None:
            if len(node.inputs) > 3:                         # ConvNHWC with its residual sum
                if node.op.residual_quant is None:
                    return nchw_view(node.op.replace(residual_quant=quant)(*node.inputs))
            elif node.op.quant is None:
                return nchw_view(node.op.replace(quant=quant)(*node.inputs))
        return _keep_layout(self._fake_quant, input)

    def _fake_quant(self, input):
        s = np.float32(self.scale)
        z = np.float32(self.zero_point)
        q = T.round(input / s, mode="half_away_from_zero") + z
        q = T.clip(q, np.float32(self.qmin), np.float32(self.qmax))
        return (q - z) * s


class GemmConv2DLayer(Conv2DLayer):
    """Lasagne's ``Conv2DLayer`` (correlation, no padding) as matrix products on NHWC.

    Same parameters (``W`` (out, in, kh, kw), ``b`` (out,)) and output as
    ``Conv2DLayer(..., pad=0, convolution=conv2d_noflip)``, computed by
    :class:`~lasagne_caption.encoders.ops.ConvNHWC` on the NHWC input
    (:func:`as_nhwc`): BLAS ``sgemm`` on blocks of output pixels (taps
    gathered first for kernels > 1x1), bias and an identity / rectify /
    :func:`relu6` nonlinearity in the same pass; the output is the NCHW view
    of the NHWC result. Padding: put a :class:`TFSamePadLayer` below (folded
    in, with a :class:`ScaleShiftLayer` below it). A :class:`FakeQuantLayer`
    and an :class:`ElemwiseSumLayer` (residual) right above are folded in too.
    """

    def __init__(self, incoming, num_filters, filter_size, stride=(1, 1), pad=0, **kwargs):
        if pad not in (0, (0, 0), "valid"):
            raise ValueError("GemmConv2DLayer does not pad (use TFSamePadLayer), got pad=%r"
                             % (pad,))
        if kwargs.get("untie_biases"):
            raise ValueError("GemmConv2DLayer has no untied biases")
        kwargs.pop("convolution", None)
        super(GemmConv2DLayer, self).__init__(incoming, num_filters, filter_size,
                                              stride=stride, pad=0, **kwargs)

    def get_output_for(self, input, **kwargs):
        if self.stride[0] != self.stride[1]:
            raise ValueError("GemmConv2DLayer needs equal strides, got %s" % (self.stride,))
        x = as_nhwc(input)
        pads, affine = (0, 0, 0, 0), None
        below = x.owner
        if below is not None and isinstance(below.op, AffinePadNHWC):
            pads, affine, x = below.op.pads, below.op.affine, below.inputs[0]
        activation = _fused_activation(self.nonlinearity)
        bias = self.b if self.b is not None else T.zeros((self.num_filters,), input.dtype)
        op = ConvNHWC(self.stride[0], pads, activation or "linear", input_affine=affine)
        out = op(x, self.W, bias)
        if activation is None:
            out = self.nonlinearity(out)
        return nchw_view(out)


class ElemwiseSumLayer(_LasagneElemwiseSumLayer):
    """Lasagne's ``ElemwiseSumLayer``, summing the NHWC arrays under NCHW views (see Layout).

    The sum of two inputs, one the output of a :class:`GemmConv2DLayer`
    (possibly fake-quantised) and the other an NCHW view, is folded into the
    convolution's op (its ``residual`` input): a residual block's
    ``project`` and ``add`` in one pass.
    """

    def get_output_for(self, inputs, **kwargs):
        if len(inputs) == 2 and all(c == 1 for c in self.coeffs):
            for k in (0, 1):
                node = _fused_node(inputs[k], ConvNHWC)
                other = nhwc_of(inputs[1 - k])
                if node is not None and len(node.inputs) == 3 and other is not None:
                    return nchw_view(node.op(*(list(node.inputs) + [other])))
        parent = super(ElemwiseSumLayer, self).get_output_for
        return _keep_layout(lambda *xs: parent(list(xs), **kwargs), *inputs)


class GlobalPoolLayer(_LasagneGlobalPoolLayer):
    """Lasagne's ``GlobalPoolLayer``; on an NCHW view it pools the NHWC array's (H, W) axes."""

    def get_output_for(self, input, **kwargs):
        nhwc = nhwc_of(input)
        if nhwc is None:
            return super(GlobalPoolLayer, self).get_output_for(input, **kwargs)
        flat = nhwc.reshape((nhwc.shape[0], nhwc.shape[1] * nhwc.shape[2], nhwc.shape[3]))
        return self.pool_function(flat, axis=1)


def floatx(array):
    return np.asarray(array, dtype=theano.config.floatX)
