"""Theano ops with C code for the image encoders, where Theano has nothing fast.

Both work on NHWC tensors (channels last: a pixel's channels are contiguous)
and end with the same fused *epilogue*, computed while the output block is
still in cache: bias, an optional ReLU / ReLU6, an optional fake quantisation
to a uint8 grid (what :class:`~lasagne_caption.encoders.layers.FakeQuantLayer`
computes), and for :class:`ConvNHWC` an optional residual sum with its own
fake quantisation (MobileNetV2's ``project`` -> ``add``):

* :class:`DepthwiseConv2DNHWC`: a depthwise convolution (one k x k filter per
  channel, depth multiplier 1), explicit zero padding (TensorFlow's
  asymmetric ``SAME`` included). Theano's ``conv2d(num_groups=C)`` runs one
  tiny GEMM per channel and image (``CorrMM``); this op computes each output
  pixel's channels as 8-wide vectors, reading every input row from cache.
* :class:`ConvNHWC`: a dense convolution on blocks of output pixels: a 1x1
  convolution reads its input as the (pixels, Cin) matrix it already is and
  multiplies it by BLAS ``sgemm``, or for up to :data:`SMALL_K` input
  channels by a register-tiled loop (BLAS spends more time packing than
  multiplying there); a larger kernel gathers its taps (im2col) and calls
  ``sgemm`` as Theano's ``CorrMM`` does, one image at a time.

Why (MobileNetV2 1.0/224, 96 Flickr8k photos in batches of 32, one thread,
Theano's profiler; ``python benchmarks/encode_throughput.py`` for the whole
encoder; 2026-11-27): in the reference graph (``conv2d(num_groups=C)``,
``CorrMM``, Theano's elementwise ops), 7.2 images/s, Theano's elementwise
loops (bias + ReLU6 + fake quantisation, residual sums, input
normalisation) took 41 % of the time (about 9 ns per element), the
zero-padding ``Alloc`` 23 %, the grouped depthwise and first-layer
``CorrMM`` 21 % and the 1x1 ``CorrMM`` 14 %.

Numbers: the fake quantisation is computed as Theano compiles
``FakeQuantLayer`` (``x / s`` becomes ``x * (1 / s)``, the reciprocal rounded
to float32); sums run in the order of the reference graph where this machine
showed it to matter (the im2col taps ordered and multiplied as ``CorrMM``
does; the small-K loop and the depthwise loop sum the taps in order), so the
fused network gives the reference's numbers but for a few roundings.
An image's codes depend neither on its batch nor on the number of threads.

Gradients: the frozen encoder needs none; :class:`ConvNHWC` has the
gradient of its 1x1 convolutions (in Theano expressions), so MobileNetV2's
last 1x1 layers can be fine-tuned; the depthwise op and the first, im2col
convolution are forward only (``grad_not_implemented``). ``perform`` is the
numpy reference (also used for dtypes other than float32).
"""
import os

import numpy as np
import theano.tensor as T
from theano import config
from theano.gradient import grad_not_implemented
from theano.graph.basic import Apply
from theano.graph.op import Op, OpenMPOp
from theano.graph.utils import MethodNotDefined
from theano.tensor import blas_headers
from theano.tensor.blas import blas_header_version, ldflags

__all__ = ["DepthwiseConv2DNHWC", "ConvNHWC", "AffinePadNHWC", "ACTIVATIONS",
           "fake_quant_numpy", "default_openmp"]

#: ConvNHWC's block of output pixels: this many floats of taps or outputs (256 KB)
BLOCK_FLOATS = 65536

#: ConvNHWC multiplies with its own register-tiled loop up to this many input taps
#: (K = kh * kw * Cin), with BLAS sgemm above
SMALL_K = 24

#: activation name -> (clip min, clip max); "linear": none
ACTIVATIONS = {"linear": None, "relu": (0.0, float("inf")), "relu6": (0.0, 6.0)}

_SUPPORT_C = r"""
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifndef LC_ENCODER_OPS
#define LC_ENCODER_OPS
/* 8 float32 lanes: one AVX register (gcc splits it where there is none) */
typedef float lc_v8 __attribute__((vector_size(32)));
typedef float lc_v8u __attribute__((vector_size(32), aligned(4), may_alias));
#define LC_LOAD(p) (*(const lc_v8u*)(p))
#define LC_STORE(p, v) (*(lc_v8u*)(p) = (v))
#define LC_MAX_TAPS 64

/* fake quantisation as Theano compiles FakeQuantLayer: round half away from zero of
   v * (1/s) (inv = the float32 reciprocal), + z, clipped to [qmin, qmax], - z, * s */
static inline float lc_fq(float v, float inv, float s, float z, float qmin, float qmax) {
    float t = v * inv;
    float r = truncf(t);
    float d = t - r;                                   /* exact */
    r += d >= 0.5f ? 1.0f : (d <= -0.5f ? -1.0f : 0.0f);
    float q = z + r;
    q = q < qmin ? qmin : (q > qmax ? qmax : q);
    return s * (q - z);
}

struct lc_epi {
    float lo, hi;                      /* activation clip */
    float inv, s, z, qmin, qmax;       /* output fake quantisation */
    float inv2, s2, z2, qmin2, qmax2;  /* after the residual sum */
};

/* Y[p, c] = fq2(fq(act(Y[p, c] + B[c])) + R[p, c]) over P pixels of C channels, in
   place; each step only if its flag is set (compile-time: one vectorised loop each) */
template <int CLIP, int QUANT, int RES, int RQUANT>
static void lc_epilogue(float* __restrict Y, npy_intp P, npy_intp C, const float* __restrict B,
                        const float* __restrict R, const lc_epi e) {
    for (npy_intp p = 0; p < P; ++p) {
        float* __restrict y = Y + p * C;
        const float* __restrict r = R + (RES ? p * C : 0);
        for (npy_intp c = 0; c < C; ++c) {
            float v = y[c] + B[c];
            if (CLIP) v = v < e.lo ? e.lo : (v > e.hi ? e.hi : v);
            if (QUANT) v = lc_fq(v, e.inv, e.s, e.z, e.qmin, e.qmax);
            if (RES) v = v + r[c];
            if (RQUANT) v = lc_fq(v, e.inv2, e.s2, e.z2, e.qmin2, e.qmax2);
            y[c] = v;
        }
    }
}

/* one output row (OW pixels x C channels) of the depthwise convolution, no bias:
   y[ox, c] = sum over the valid taps (ky, kx), in that order, of x[iy, ix, c] * w[ky, kx, c] */
static void lc_dw_row(const float* __restrict X, npy_intp H, npy_intp W, npy_intp C,
                      const float* __restrict WT, npy_intp KH, npy_intp KW, npy_intp S,
                      npy_intp PT, npy_intp PL, npy_intp oy, npy_intp OW,
                      float* __restrict Y) {
    const float* xp[LC_MAX_TAPS];
    const float* wp[LC_MAX_TAPS];
    for (npy_intp ox = 0; ox < OW; ++ox) {
        int nt = 0;
        for (npy_intp ky = 0; ky < KH; ++ky) {
            npy_intp iy = oy * S + ky - PT;
            if (iy < 0 || iy >= H) continue;
            for (npy_intp kx = 0; kx < KW; ++kx) {
                npy_intp ix = ox * S + kx - PL;
                if (ix < 0 || ix >= W) continue;
                xp[nt] = X + (iy * W + ix) * C;
                wp[nt] = WT + (ky * KW + kx) * C;
                ++nt;
            }
        }
        float* y = Y + ox * C;
        npy_intp c = 0;
        for (; c + 32 <= C; c += 32) {      /* 4 independent accumulators */
            lc_v8 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
            for (int t = 0; t < nt; ++t) {
                const float *xx = xp[t] + c, *ww = wp[t] + c;
                a0 += LC_LOAD(xx) * LC_LOAD(ww);
                a1 += LC_LOAD(xx + 8) * LC_LOAD(ww + 8);
                a2 += LC_LOAD(xx + 16) * LC_LOAD(ww + 16);
                a3 += LC_LOAD(xx + 24) * LC_LOAD(ww + 24);
            }
            LC_STORE(y + c, a0); LC_STORE(y + c + 8, a1);
            LC_STORE(y + c + 16, a2); LC_STORE(y + c + 24, a3);
        }
        for (; c + 8 <= C; c += 8) {
            lc_v8 a0 = {0};
            for (int t = 0; t < nt; ++t) a0 += LC_LOAD(xp[t] + c) * LC_LOAD(wp[t] + c);
            LC_STORE(y + c, a0);
        }
        for (; c < C; ++c) {
            float a = 0.0f;
            for (int t = 0; t < nt; ++t) a += xp[t][c] * wp[t][c];
            y[c] = a;
        }
    }
}

/* Y (rows x CO) = A (rows x K) . WM (K x CO), all row-major and contiguous, for a small K
   (where BLAS spends more time packing than multiplying): tiles of P pixels x 8V
   channels accumulated in registers over k, in order */
template <int P, int V>
static inline void lc_tile(const float* __restrict A, npy_intp K,
                           const float* __restrict WM, npy_intp CO, npy_intp co,
                           float* __restrict Y) {
    lc_v8 acc[P][V];
    for (int p = 0; p < P; ++p)
        for (int v = 0; v < V; ++v) acc[p][v] = (lc_v8){0, 0, 0, 0, 0, 0, 0, 0};
    for (npy_intp k = 0; k < K; ++k) {
        lc_v8 w[V];
        for (int v = 0; v < V; ++v) w[v] = LC_LOAD(WM + k * CO + co + 8 * v);
        for (int p = 0; p < P; ++p) {
            float a = A[p * K + k];
            lc_v8 xb = {a, a, a, a, a, a, a, a};
            for (int v = 0; v < V; ++v) acc[p][v] += xb * w[v];
        }
    }
    for (int p = 0; p < P; ++p)
        for (int v = 0; v < V; ++v) LC_STORE(Y + p * CO + co + 8 * v, acc[p][v]);
}

template <int P>
static inline void lc_tile_row(const float* __restrict A, npy_intp K,
                               const float* __restrict WM, npy_intp CO, float* __restrict Y) {
    npy_intp co = 0;
    for (; co + 24 <= CO; co += 24) lc_tile<P, 3>(A, K, WM, CO, co, Y);
    for (; co + 8 <= CO; co += 8) lc_tile<P, 1>(A, K, WM, CO, co, Y);
    for (; co < CO; ++co)
        for (int p = 0; p < P; ++p) {
            float a = 0.0f;
            for (npy_intp k = 0; k < K; ++k) a += A[p * K + k] * WM[k * CO + co];
            Y[p * CO + co] = a;
        }
}

static void lc_small_gemm(const float* __restrict A, npy_intp rows, npy_intp K,
                          const float* __restrict WM, npy_intp CO, float* __restrict Y) {
    npy_intp p = 0;
    for (; p + 4 <= rows; p += 4) lc_tile_row<4>(A + p * K, K, WM, CO, Y + p * CO);
    for (; p < rows; ++p) lc_tile_row<1>(A + p * K, K, WM, CO, Y + p * CO);
}

/* the taps of output pixels m0 .. m0 + rows - 1 (flattened n, oy, ox) as the rows of a
   (rows, K) matrix P, K = KH * KW * C ordered (c, i, j) as in Theano's CorrMM, whose
   sgemm call ConvNHWC repeats (same products, same sums); zeros outside the input; with
   affine != 0 the input values are (x - shift) * scale first (an input normalisation
   before the padding) */
static void lc_im2col(const float* __restrict X, npy_intp H, npy_intp W, npy_intp C,
                      npy_intp KH, npy_intp KW, npy_intp S, npy_intp PT, npy_intp PL,
                      npy_intp OH, npy_intp OW, npy_intp m0, npy_intp rows,
                      int affine, float scale, float shift, float* __restrict P) {
    for (npy_intp r = 0; r < rows; ++r) {
        npy_intp m = m0 + r, n = m / (OH * OW), rem = m % (OH * OW);
        npy_intp oy = rem / OW, ox = rem % OW;
        for (npy_intp i = 0; i < KH; ++i) {
            npy_intp iy = oy * S + i - PT;
            for (npy_intp j = 0; j < KW; ++j) {
                npy_intp ix = ox * S + j - PL;
                float* dst = P + r * KH * KW * C + i * KW + j;
                npy_intp step = KH * KW;
                if (iy < 0 || iy >= H || ix < 0 || ix >= W) {
                    for (npy_intp c = 0; c < C; ++c) dst[c * step] = 0.0f;
                } else if (affine) {           /* (x - shift) * scale, then the zero padding */
                    const float* src = X + ((n * H + iy) * W + ix) * C;
                    for (npy_intp c = 0; c < C; ++c) dst[c * step] = (src[c] - shift) * scale;
                } else {
                    const float* src = X + ((n * H + iy) * W + ix) * C;
                    for (npy_intp c = 0; c < C; ++c) dst[c * step] = src[c];
                }
            }
        }
    }
}

/* reuse the previous call's output when it fits (as Theano's own ops do) */
static int lc_output4(PyArrayObject** out, npy_intp* dims) {
    if (*out && PyArray_NDIM(*out) == 4 && PyArray_ISCARRAY(*out)
            && PyArray_TYPE(*out) == NPY_FLOAT32 && PyArray_DIMS(*out)[0] == dims[0]
            && PyArray_DIMS(*out)[1] == dims[1] && PyArray_DIMS(*out)[2] == dims[2]
            && PyArray_DIMS(*out)[3] == dims[3])
        return 0;
    Py_XDECREF(*out);
    *out = (PyArrayObject*)PyArray_EMPTY(4, dims, NPY_FLOAT32, 0);
    return *out ? 0 : -1;
}
#endif
"""


def default_openmp():
    """Whether the ops use OpenMP when not told: ``theano.config.openmp``, or
    ``OMP_NUM_THREADS`` set above 1.

    (Theano's own ``openmp`` flag also turns on OpenMP in its elementwise ops,
    whose C template does not compile in theano-pymc 1.1.2 -- a missing
    f-string prefix in ``tensor/elemwise.py`` -- so asking for threads through
    ``OMP_NUM_THREADS`` is the way that works.)
    """
    if config.openmp:
        return True
    try:
        return int(os.environ.get("OMP_NUM_THREADS", "1")) > 1
    except ValueError:
        return False


def _f32(value):
    """A float32 C literal of ``value`` (its float32 rounding, printed exactly)."""
    if value == float("inf"):
        return "INFINITY"
    return "%.9ef" % float(np.float32(value))


def _check_quant(quant):
    if quant is None:
        return None
    scale, zero_point, qmin, qmax = quant
    quant = (float(scale), float(zero_point), float(qmin), float(qmax))
    if not quant[0] > 0 or not quant[2] <= quant[3]:
        raise ValueError("quantisation (scale, zero_point, qmin, qmax) needs scale > 0 and "
                         "qmin <= qmax, got %r" % (quant,))
    return quant


def fake_quant_numpy(y, quant):
    """``FakeQuantLayer``'s rounding in numpy, float32 step by step as Theano compiles it."""
    dtype = y.dtype
    scale, z, qmin, qmax = (np.asarray(v, dtype) for v in quant)
    inv = np.asarray(1, dtype) / scale
    t = y * inv
    r = np.trunc(t)
    d = t - r
    r = r + (d >= 0.5).astype(dtype) - (d <= -0.5).astype(dtype)
    return (scale * (np.clip(z + r, qmin, qmax) - z)).astype(dtype)


class AffinePadNHWC(Op):
    """``y = zero-pad((x - shift) * scale)`` on NHWC (numpy only): what ``ConvNHWC`` folds in.

    ``pads = (top, bottom, left, right)``; ``affine = (scale, shift)`` or None.
    The layers emit it for an input normalisation and TensorFlow ``SAME``
    padding on NHWC (:class:`~lasagne_caption.encoders.layers.ScaleShiftLayer`,
    :class:`~lasagne_caption.encoders.layers.TFSamePadLayer`), and the
    convolution above takes over both (``ConvNHWC(pads=..., input_affine=...)``);
    evaluated on its own (a network output asked for the padded input) it
    runs in numpy.
    """
    __props__ = ("pads", "affine")

    def __init__(self, pads=(0, 0, 0, 0), affine=None):
        self.pads = tuple(int(p) for p in pads)
        if len(self.pads) != 4 or min(self.pads) < 0:
            raise ValueError("pads must be 4 numbers >= 0, got %r" % (pads,))
        self.affine = None if affine is None else tuple(float(v) for v in affine)

    def make_node(self, x):
        x = T.as_tensor_variable(x)
        if x.ndim != 4:
            raise TypeError("AffinePadNHWC takes x (N, H, W, C), got %d dimensions" % x.ndim)
        return Apply(self, [x], [T.TensorType(x.dtype, (x.broadcastable[0], False, False,
                                                        x.broadcastable[3]))()])

    def infer_shape(self, fgraph, node, shapes):
        n, h, w, c = shapes[0]
        t, b, l, r = self.pads
        return [(n, h + t + b, w + l + r, c)]

    def perform(self, node, inputs, outputs):
        x, = inputs
        if self.affine is not None:
            scale, shift = (np.asarray(v, x.dtype) for v in self.affine)
            x = (x - shift) * scale
        t, b, l, r = self.pads
        outputs[0][0] = np.pad(x, ((0, 0), (t, b), (l, r), (0, 0))).astype(node.outputs[0].dtype)

    def grad(self, inputs, output_grads):
        return [grad_not_implemented(self, 0, inputs[0])]


class _EpilogueOp(OpenMPOp):
    """Shared plumbing: stride, pads, activation, quantisation, the epilogue's C call."""

    def __init__(self, stride=1, pads=(0, 0, 0, 0), activation="linear", quant=None,
                 openmp=None):
        super(_EpilogueOp, self).__init__(openmp=default_openmp() if openmp is None else openmp)
        self.stride = int(stride)
        self.pads = tuple(int(p) for p in pads)
        if self.stride < 1 or len(self.pads) != 4 or min(self.pads) < 0:
            raise ValueError("stride must be >= 1 and pads 4 numbers >= 0, got %r, %r"
                             % (stride, pads))
        if activation not in ACTIVATIONS:
            raise ValueError("activation must be one of %s, not %r"
                             % (", ".join(ACTIVATIONS), activation))
        self.activation = activation
        self.quant = _check_quant(quant)

    def replace(self, **props):
        """The same op with some properties changed (``quant=...``, ``pads=...``, ...)."""
        values = {k: getattr(self, k) for k in self.__props__}
        values.update(props)
        return type(self)(openmp=self.openmp, **values)

    def output_size(self, h, w, kh, kw):
        """(OH, OW) for an input of h x w and a kh x kw kernel."""
        t, b, l, r = self.pads
        return (h + t + b - kh) // self.stride + 1, (w + l + r - kw) // self.stride + 1

    def _pad(self, x):
        t, b, l, r = self.pads
        n, h, w, c = x.shape
        xp = np.zeros((n, h + t + b, w + l + r, c), x.dtype)
        xp[:, t:t + h, l:l + w] = x
        return xp

    def _epilogue_numpy(self, y, b, residual=None, residual_quant=None):
        y = y + b
        clip = ACTIVATIONS[self.activation]
        if clip is not None:
            y = np.clip(y, *clip).astype(y.dtype)
        if self.quant is not None:
            y = fake_quant_numpy(y, self.quant)
        if residual is not None:
            y = y + residual
            if residual_quant is not None:
                y = fake_quant_numpy(y, residual_quant)
        return y

    def _epilogue_c(self, residual_quant=None, residual=False):
        """(template arguments, lc_epi initialiser) of the C epilogue."""
        clip = ACTIVATIONS[self.activation] or (0.0, 0.0)
        q = self.quant or (1.0, 0.0, 0.0, 0.0)
        q2 = residual_quant or (1.0, 0.0, 0.0, 0.0)
        inv, inv2 = (np.float32(1) / np.float32(v[0]) for v in (q, q2))
        flags = "%d, %d, %d, %d" % (ACTIVATIONS[self.activation] is not None,
                                    self.quant is not None, residual, residual_quant is not None)
        values = [clip[0], clip[1], inv, q[0], q[1], q[2], q[3], inv2] + list(q2)
        return flags, "{%s}" % ", ".join(_f32(v) for v in values)

    def grad(self, inputs, output_grads):
        return [grad_not_implemented(self, i, v, "%s is forward only (frozen encoder)"
                                     % type(self).__name__) for i, v in enumerate(inputs)]

    def c_compile_args(self, **kwargs):
        # no-trapping-math lets gcc vectorise the epilogue's compare-and-select
        # (the values are the same; only floating-point exception flags could differ)
        return ["-fno-trapping-math"] + super(_EpilogueOp, self).c_compile_args(**kwargs)

    def c_support_code(self, **kwargs):
        return [_SUPPORT_C]

    def _check_c(self, node):
        if any(v.dtype != "float32" for v in list(node.inputs) + node.outputs):
            raise MethodNotDefined("float32 only")   # Theano then uses perform


class DepthwiseConv2DNHWC(_EpilogueOp):
    """Depthwise convolution on NHWC, fused with bias, activation and fake quantisation.

    ``op(x, w, b)`` with ``x`` (N, H, W, C), ``w`` (C, 1, kh, kw) -- the
    layout of :class:`~lasagne_caption.encoders.layers.DepthwiseConv2DLayer`'s
    ``W`` -- and ``b`` (C,) gives ``y`` (N, OH, OW, C)::

        y[n, oy, ox, c] = b[c] + sum_{i, j} xpad[n, oy * s + i, ox * s + j, c] * w[c, 0, i, j]

    (a correlation: the filter is not flipped), ``xpad`` being ``x`` with
    ``pads = (top, bottom, left, right)`` zero rows/columns, ``OH = (H + top +
    bottom - kh) // s + 1``. Then ``activation`` ("linear", "relu",
    "relu6") and, if ``quant = (scale, zero_point, qmin, qmax)``, the fake
    quantisation ``scale * (clip(round_half_away(y / scale) + zero_point,
    qmin, qmax) - zero_point)``.

    Uses OpenMP over output rows when :func:`default_openmp` says so (or
    ``openmp=True``). Forward only.

    Examples
    --------
    >>> import theano
    >>> x = T.tensor4()
    >>> w, b = T.tensor4(), T.vector()
    >>> y = DepthwiseConv2DNHWC(stride=2, pads=(0, 1, 0, 1), activation="relu6")(x, w, b)
    >>> f = theano.function([x, w, b], y)
    >>> out = f(np.ones((1, 4, 4, 2), "float32"), np.ones((2, 1, 3, 3), "float32"),
    ...         np.zeros(2, "float32"))
    >>> out.shape, out[0, :, :, 0].tolist()
    ((1, 2, 2, 2), [[6.0, 6.0], [6.0, 4.0]])
    """
    __props__ = ("stride", "pads", "activation", "quant")

    def __str__(self):
        return "%s{stride=%d, pads=%s, %s%s}" % (
            type(self).__name__, self.stride, self.pads, self.activation,
            "" if self.quant is None else ", quant=%g/%g" % self.quant[:2])

    def make_node(self, x, w, b):
        x, w, b = map(T.as_tensor_variable, (x, w, b))
        if x.ndim != 4 or w.ndim != 4 or b.ndim != 1:
            raise TypeError("DepthwiseConv2DNHWC takes x (N, H, W, C), w (C, 1, kh, kw), "
                            "b (C,); got %d, %d and %d dimensions" % (x.ndim, w.ndim, b.ndim))
        if x.dtype != w.dtype or x.dtype != b.dtype or "float" not in x.dtype:
            raise TypeError("DepthwiseConv2DNHWC: x, w and b must have one float dtype, got "
                            "%s, %s, %s" % (x.dtype, w.dtype, b.dtype))
        out = T.TensorType(x.dtype, (x.broadcastable[0], False, False, x.broadcastable[3]))()
        return Apply(self, [x, w, b], [out])

    def infer_shape(self, fgraph, node, shapes):
        (n, h, w, c), (_, _, kh, kw), _ = shapes
        t, b, l, r = self.pads
        s = self.stride
        return [(n, (h + t + b - kh) // s + 1, (w + l + r - kw) // s + 1, c)]

    def perform(self, node, inputs, outputs):
        x, w, b = inputs
        n, h, wd, c = x.shape
        kh, kw = w.shape[2:]
        if w.shape[:2] != (c, 1) or b.shape != (c,):
            raise ValueError("DepthwiseConv2DNHWC: x has %d channels, w must be (C, 1, kh, "
                             "kw) and b (C,), got %s and %s" % (c, w.shape, b.shape))
        if h + self.pads[0] + self.pads[1] < kh or wd + self.pads[2] + self.pads[3] < kw \
                or kh * kw > 64:
            raise ValueError("DepthwiseConv2DNHWC: the kernel %dx%d does not fit the padded "
                             "input %s (or has more than 64 taps)" % (kh, kw, x.shape))
        s = self.stride
        oh, ow = self.output_size(h, wd, kh, kw)
        xp = self._pad(x)
        y = np.zeros((n, oh, ow, c), x.dtype)
        for i in range(kh):
            for j in range(kw):
                tap = xp[:, i:i + (oh - 1) * s + 1:s, j:j + (ow - 1) * s + 1:s]
                y += tap * w[:, 0, i, j]
        outputs[0][0] = np.asarray(self._epilogue_numpy(y, b), x.dtype)

    def c_code_cache_version(self):
        return (2, self.openmp)

    def c_code(self, node, name, inp, out, sub):
        self._check_c(node)
        x, w, b = inp
        y, = out
        fail = sub["fail"]
        pt, pb, pl, pr = self.pads
        s = self.stride
        flags, epi = self._epilogue_c()
        omp = "#pragma omp parallel for schedule(static)" if self.openmp else ""
        return r"""
        {
        npy_intp N = PyArray_DIMS(%(x)s)[0], H = PyArray_DIMS(%(x)s)[1];
        npy_intp W = PyArray_DIMS(%(x)s)[2], C = PyArray_DIMS(%(x)s)[3];
        npy_intp KH = PyArray_DIMS(%(w)s)[2], KW = PyArray_DIMS(%(w)s)[3];
        if (PyArray_DIMS(%(w)s)[0] != C || PyArray_DIMS(%(w)s)[1] != 1
                || PyArray_DIMS(%(b)s)[0] != C) {
            PyErr_Format(PyExc_ValueError, "DepthwiseConv2DNHWC: x has %%ld channels, w must "
                         "be (C, 1, kh, kw) and b (C,)", (long)C);
            %(fail)s
        }
        if (H + %(pt)d + %(pb)d < KH || W + %(pl)d + %(pr)d < KW || KH * KW > LC_MAX_TAPS) {
            PyErr_SetString(PyExc_ValueError, "DepthwiseConv2DNHWC: the kernel does not fit "
                            "the padded input (or has more than 64 taps)");
            %(fail)s
        }
        npy_intp OH = (H + %(pt)d + %(pb)d - KH) / %(s)d + 1;
        npy_intp OW = (W + %(pl)d + %(pr)d - KW) / %(s)d + 1;
        npy_intp dims[4] = {N, OH, OW, C};
        if (lc_output4(&%(y)s, dims)) { %(fail)s }
        /* weights as (KH * KW, C) and the bias, contiguous */
        float* WT = (float*)malloc(sizeof(float) * (KH * KW + 1) * (C > 0 ? C : 1));
        if (!WT) { PyErr_NoMemory(); %(fail)s }
        float* BC = WT + KH * KW * C;
        for (npy_intp c = 0; c < C; ++c) {
            for (npy_intp i = 0; i < KH; ++i)
                for (npy_intp j = 0; j < KW; ++j)
                    WT[(i * KW + j) * C + c] = *(float*)PyArray_GETPTR4(%(w)s, c, 0, i, j);
            BC[c] = *(float*)PyArray_GETPTR1(%(b)s, c);
        }
        PyArrayObject* xc = PyArray_GETCONTIGUOUS(%(x)s);
        if (!xc) { free(WT); %(fail)s }
        const float* X = (const float*)PyArray_DATA(xc);
        float* Y = (float*)PyArray_DATA(%(y)s);
        const lc_epi epi = %(epi)s;
        npy_intp rows = N * OH;
        %(omp)s
        for (npy_intp r = 0; r < rows; ++r) {
            npy_intp n = r / OH, oy = r %% OH;
            float* yrow = Y + r * OW * C;
            lc_dw_row(X + n * H * W * C, H, W, C, WT, KH, KW, %(s)d, %(pt)d, %(pl)d, oy, OW,
                      yrow);
            lc_epilogue<%(flags)s>(yrow, OW, C, BC, NULL, epi);
        }
        Py_DECREF(xc);
        free(WT);
        }
        """ % dict(locals(), fail=fail)


class ConvNHWC(_EpilogueOp):
    """Convolution on NHWC as BLAS ``sgemm``, fused with bias, activation, fake
    quantisation and an optional residual sum.

    ``op(x, w, b)`` or ``op(x, w, b, residual)`` with ``x`` (N, H, W, Cin),
    ``w`` (Cout, Cin, kh, kw) -- Lasagne's ``Conv2DLayer`` layout -- ``b``
    (Cout,) and ``residual`` (N, OH, OW, Cout) gives ``y`` (N, OH, OW, Cout)::

        y[n, oy, ox, o] = b[o] + sum_{i, j, c} xpad[n, oy * s + i, ox * s + j, c] * w[o, c, i, j]

    (correlation, zero padding ``pads = (top, bottom, left, right)``), then
    ``activation``, the fake quantisation ``quant`` (see
    :class:`DepthwiseConv2DNHWC`), ``+ residual`` and the fake quantisation
    ``residual_quant`` of the sum (``residual_quant`` needs ``residual``).
    ``input_affine = (scale, shift)`` first maps the input to ``(x - shift) *
    scale`` (an input normalisation, before the zero padding).

    The output pixels are processed in blocks that fit in L2 cache: gather the
    block's taps (im2col; nothing to gather for a 1x1 stride-1 convolution,
    whose input already is the matrix), one ``sgemm`` with the ``(kh * kw *
    Cin, Cout)`` weights, then the epilogue on the block. Blocks never span
    two images and split every image alike, and the BLAS runs on one thread
    (OpenBLAS's thread count is set to 1 during the op and restored), so an
    image's codes depend neither on its batch nor on the number of threads;
    with OpenMP (:func:`default_openmp`, or ``openmp=True``) the blocks are
    shared among the threads. Gradient: for 1x1, stride-1, unpadded
    convolutions (:meth:`grad`).

    Examples
    --------
    >>> import theano
    >>> x, w, b = T.tensor4(), T.tensor4(), T.vector()
    >>> f = theano.function([x, w, b], ConvNHWC(activation="relu6")(x, w, b))
    >>> out = f(np.ones((1, 2, 2, 3), "float32"), np.ones((4, 3, 1, 1), "float32"),
    ...         np.arange(4, dtype="float32"))
    >>> out.shape, out[0, 0, 0].tolist()
    ((1, 2, 2, 4), [3.0, 4.0, 5.0, 6.0])
    """
    __props__ = ("stride", "pads", "activation", "quant", "residual_quant", "input_affine")

    def __init__(self, stride=1, pads=(0, 0, 0, 0), activation="linear", quant=None,
                 residual_quant=None, input_affine=None, openmp=None):
        super(ConvNHWC, self).__init__(stride, pads, activation, quant, openmp)
        self.residual_quant = _check_quant(residual_quant)
        self.input_affine = None if input_affine is None else tuple(float(v) for v in
                                                                     input_affine)
        if self.input_affine is not None and len(self.input_affine) != 2:
            raise ValueError("input_affine must be (scale, shift), got %r" % (input_affine,))

    def __str__(self):
        return "%s{stride=%d, pads=%s, %s%s%s%s}" % (
            type(self).__name__, self.stride, self.pads, self.activation,
            "" if self.quant is None else ", quant=%g/%g" % self.quant[:2],
            "" if self.residual_quant is None else
            ", residual quant=%g/%g" % self.residual_quant[:2],
            "" if self.input_affine is None else ", input (x - %g) * %g"
            % self.input_affine[::-1])


    def make_node(self, x, w, b, residual=None):
        inputs = [x, w, b] + ([] if residual is None else [residual])
        inputs = [T.as_tensor_variable(v) for v in inputs]
        if [v.ndim for v in inputs] != [4, 4, 1, 4][:len(inputs)]:
            raise TypeError("ConvNHWC takes x (N, H, W, Cin), w (Cout, Cin, kh, kw), b (Cout,) "
                            "[, residual (N, OH, OW, Cout)]; got %s dimensions"
                            % [v.ndim for v in inputs])
        if len({v.dtype for v in inputs}) != 1 or "float" not in inputs[0].dtype:
            raise TypeError("ConvNHWC: the inputs must have one float dtype, got %s"
                            % [v.dtype for v in inputs])
        if self.residual_quant is not None and residual is None:
            raise ValueError("ConvNHWC: residual_quant without a residual input")
        x = inputs[0]
        out = T.TensorType(x.dtype, (x.broadcastable[0], False, False, False))()
        return Apply(self, inputs, [out])

    def infer_shape(self, fgraph, node, shapes):
        (n, h, w, _), (co, _, kh, kw) = shapes[:2]
        t, b, l, r = self.pads
        s = self.stride
        return [(n, (h + t + b - kh) // s + 1, (w + l + r - kw) // s + 1, co)]

    def grad(self, inputs, output_grads):
        """Gradients of a 1x1, stride-1, unpadded convolution (the layers one fine-tunes).

        As Theano differentiates the reference layers: ReLU6 / ReLU pass the
        gradient where ``lo <= z <= hi``; a fake quantisation passes none
        (Theano's ``round`` has a zero gradient). Other convolutions (the
        first, im2col layer) are forward only.
        """
        from theano.tensor.opt import Assert
        x, w, b = inputs[:3]
        residual = inputs[3] if len(inputs) > 3 else None
        gy, = output_grads
        if self.stride != 1 or any(self.pads) or self.input_affine is not None:
            return [grad_not_implemented(self, i, v, "ConvNHWC differentiates 1x1, stride-1, "
                                         "unpadded convolutions only")
                    for i, v in enumerate(inputs)]
        ci, co = x.shape[3], w.shape[0]
        w2 = Assert("ConvNHWC differentiates 1x1 kernels only")(
            w, T.eq(w.shape[2] * w.shape[3], 1)).reshape((co, ci))
        x2 = x.reshape((-1, ci))
        g_sum = gy.reshape((-1, co))
        if self.residual_quant is not None:
            g_sum = T.zeros_like(g_sum)
        g_act = g_sum if self.quant is None else T.zeros_like(g_sum)
        clip = ACTIVATIONS[self.activation]
        if clip is not None:
            z = ConvNHWC(openmp=self.openmp)(x, w, b).reshape((-1, co))   # pre-activation
            g_act = g_act * ((z >= np.float32(clip[0])) & (z <= np.float32(clip[1])))
        grads = [T.dot(g_act, w2).reshape(x.shape), T.dot(g_act.T, x2).reshape(w.shape),
                 g_act.sum(axis=0)]
        if residual is not None:
            grads.append(g_sum.reshape(residual.shape))
        return [g.astype(v.dtype) for g, v in zip(grads, inputs)]

    def perform(self, node, inputs, outputs):
        x, w, b = inputs[:3]
        residual = inputs[3] if len(inputs) > 3 else None
        n, h, wd, ci = x.shape
        co, ci2, kh, kw = w.shape
        if ci2 != ci or b.shape != (co,):
            raise ValueError("ConvNHWC: x has %d channels, w must be (Cout, %d, kh, kw) and b "
                             "(Cout,), got %s and %s" % (ci, ci, w.shape, b.shape))
        s = self.stride
        if self.input_affine is not None:
            scale, shift = (np.asarray(v, x.dtype) for v in self.input_affine)
            x = ((x - shift) * scale).astype(x.dtype)
        oh, ow = self.output_size(h, wd, kh, kw)
        if oh < 1 or ow < 1:
            raise ValueError("ConvNHWC: the kernel %dx%d does not fit the padded input %s"
                             % (kh, kw, x.shape))
        xp = self._pad(x)
        cols = np.stack([xp[:, i:i + (oh - 1) * s + 1:s, j:j + (ow - 1) * s + 1:s]
                         for i in range(kh) for j in range(kw)], axis=4)    # (.., c, i * kw + j)
        wm = w.transpose(1, 2, 3, 0).reshape(ci * kh * kw, co)
        y = np.dot(cols.reshape(-1, kh * kw * ci), wm).reshape(n, oh, ow, co).astype(x.dtype)
        if residual is not None and residual.shape != y.shape:
            raise ValueError("ConvNHWC: residual %s, output %s" % (residual.shape, y.shape))
        outputs[0][0] = np.asarray(self._epilogue_numpy(y, b, residual, self.residual_quant),
                                   x.dtype)

    @staticmethod
    def _openblas():
        return "openblas" in config.blas__ldflags

    def c_support_code(self, **kwargs):
        code = [blas_headers.blas_header_text(), _SUPPORT_C]
        if self._openblas():
            code.insert(1, blas_headers.openblas_threads_text())
        return code

    def c_libraries(self, **kwargs):
        return ldflags()

    def c_compile_args(self, **kwargs):
        return ldflags(libs=False, flags=True) + super(ConvNHWC, self).c_compile_args(**kwargs)

    def c_lib_dirs(self, **kwargs):
        return ldflags(libs=False, libs_dir=True)

    def c_header_dirs(self, **kwargs):
        return ldflags(libs=False, include_dir=True)

    def c_code_cache_version(self):
        return (9, self.openmp, BLOCK_FLOATS, SMALL_K, blas_header_version())

    def c_code(self, node, name, inp, out, sub):
        self._check_c(node)
        x, w, b = inp[:3]
        has_res = len(inp) > 3
        res = inp[3] if has_res else "NULL"
        y, = out
        fail = sub["fail"]
        pt, pb, pl, pr = self.pads
        s = self.stride
        flags, epi = self._epilogue_c(self.residual_quant, has_res)
        block_floats, small_k = BLOCK_FLOATS, SMALL_K
        # The BLAS on one thread, whatever its setting: a thread count must not change
        # the sums (OpenBLAS splits the tiles by thread); threads come from OpenMP over
        # the blocks when theano.config.openmp is on.
        omp_begin = "#pragma omp parallel for schedule(dynamic)" if self.openmp else ""
        omp_end = ""
        if self._openblas():
            omp_begin = ("int blas_threads = openblas_get_num_threads();\n"
                         "openblas_set_num_threads(1);\n" + omp_begin)
            omp_end = "openblas_set_num_threads(blas_threads);"
        direct = int(s == 1 and not any(self.pads) and self.input_affine is None)
        affine = int(self.input_affine is not None)
        a_scale, a_shift = (_f32(v) for v in (self.input_affine or (1.0, 0.0)))
        return r"""
        {
        npy_intp N = PyArray_DIMS(%(x)s)[0], H = PyArray_DIMS(%(x)s)[1];
        npy_intp W = PyArray_DIMS(%(x)s)[2], CI = PyArray_DIMS(%(x)s)[3];
        npy_intp CO = PyArray_DIMS(%(w)s)[0], KH = PyArray_DIMS(%(w)s)[2];
        npy_intp KW = PyArray_DIMS(%(w)s)[3];
        if (PyArray_DIMS(%(w)s)[1] != CI || PyArray_DIMS(%(b)s)[0] != CO) {
            PyErr_Format(PyExc_ValueError, "ConvNHWC: x has %%ld channels, w must be (Cout, "
                         "%%ld, kh, kw) and b (Cout,)", (long)CI, (long)CI);
            %(fail)s
        }
        if (H + %(pt)d + %(pb)d < KH || W + %(pl)d + %(pr)d < KW) {
            PyErr_SetString(PyExc_ValueError, "ConvNHWC: the kernel does not fit the padded "
                            "input");
            %(fail)s
        }
        npy_intp OH = (H + %(pt)d + %(pb)d - KH) / %(s)d + 1;
        npy_intp OW = (W + %(pl)d + %(pr)d - KW) / %(s)d + 1;
        npy_intp M = N * OH * OW, K = KH * KW * CI;
        PyArrayObject* resc = NULL;
        if (%(has_res)d) {
            PyArrayObject* r_in = (PyArrayObject*)%(res)s;
            if (PyArray_DIMS(r_in)[0] != N || PyArray_DIMS(r_in)[1] != OH
                    || PyArray_DIMS(r_in)[2] != OW || PyArray_DIMS(r_in)[3] != CO) {
                PyErr_SetString(PyExc_ValueError, "ConvNHWC: the residual must have the "
                                "output's shape (N, OH, OW, Cout)");
                %(fail)s
            }
        }
        if (M > 2147483647 || K > 2147483647 || CO > 2147483647) {
            PyErr_SetString(PyExc_ValueError, "ConvNHWC: too large for BLAS int sizes");
            %(fail)s
        }
        npy_intp dims[4] = {N, OH, OW, CO};
        if (lc_output4(&%(y)s, dims)) { %(fail)s }
        /* weights as the (K, CO) matrix, rows ordered (c, i, j) like lc_im2col's, and the
           bias */
        float* WM = (float*)malloc(sizeof(float) * (K + 1) * (CO > 0 ? CO : 1));
        if (!WM) { PyErr_NoMemory(); %(fail)s }
        float* BC = WM + K * CO;
        for (npy_intp o = 0; o < CO; ++o) {
            for (npy_intp c = 0; c < CI; ++c)
                for (npy_intp i = 0; i < KH; ++i)
                    for (npy_intp j = 0; j < KW; ++j)
                        WM[((c * KH + i) * KW + j) * CO + o] =
                            *(float*)PyArray_GETPTR4(%(w)s, o, c, i, j);
            BC[o] = *(float*)PyArray_GETPTR1(%(b)s, o);
        }
        PyArrayObject* xc = PyArray_GETCONTIGUOUS(%(x)s);
        if (%(has_res)d) resc = PyArray_GETCONTIGUOUS((PyArrayObject*)%(res)s);
        int direct = %(direct)d && KH == 1 && KW == 1;
        /* Blocks of output pixels whose taps or outputs fit in L2 (at least 64 pixels),
           never across images and the same in every image: an image's codes do not depend
           on the batch (BLAS sums edge tiles in another order). im2col: one image per sgemm,
           as CorrMM (the same sums). */
        npy_intp PIX = OH * OW;
        npy_intp MB = %(block_floats)d / (K > CO ? K : CO);
        if (MB < 64) MB = 64;
        if (!direct || MB > PIX) MB = PIX;
        if (MB < 1) MB = 1;
        npy_intp nsub = (PIX + MB - 1) / MB;      /* blocks per image */
        /* im2col: the weights as (CO x K), for CorrMM's sgemm call */
        float* WK = direct ? NULL : (float*)malloc(sizeof(float) * (K > 0 ? K : 1) * CO + 1);
        if (WK)
            for (npy_intp o = 0; o < CO; ++o)
                for (npy_intp k = 0; k < K; ++k) WK[o * K + k] = WM[k * CO + o];
        if (!xc || (%(has_res)d && !resc) || (!direct && !WK)) {
            free(WM); free(WK); Py_XDECREF(xc); Py_XDECREF(resc);
            if (!PyErr_Occurred()) PyErr_NoMemory();
            %(fail)s
        }
        const float* X = (const float*)PyArray_DATA(xc);
        const float* R = resc ? (const float*)PyArray_DATA(resc) : NULL;
        float* Y = (float*)PyArray_DATA(%(y)s);
        const lc_epi epi = %(epi)s;
        npy_intp nblocks = N * nsub;
        int failed = 0;
        %(omp_begin)s
        for (npy_intp bi = 0; bi < nblocks; ++bi) {
            char nt = 'N';
            float one = 1.0f, zero = 0.0f;
            int n_ = (int)CO, k_ = (int)K;
            npy_intp p0 = (bi %% nsub) * MB;
            npy_intp m0 = (bi / nsub) * PIX + p0;
            npy_intp rows = PIX - p0 < MB ? PIX - p0 : MB;
            const float* A = X + m0 * CI;
            int m_ = (int)rows;
            float* Yb = Y + m0 * CO;
            if (K == 0) {
                memset(Yb, 0, sizeof(float) * rows * CO);
            } else if (!direct) {
                /* the taps (K x rows) and the output block (CO x rows) */
                float* P = (float*)malloc(sizeof(float) * rows * (K + CO));
                if (!P) { failed = 1; continue; }
                float* TB = P + rows * K;
                lc_im2col(X, H, W, CI, KH, KW, %(s)d, %(pt)d, %(pl)d, OH, OW, m0, rows,
                          %(affine)d, %(a_scale)s, %(a_shift)s, P);
                /* as CorrMM: column-major TB (rows x CO) = P (rows x K) . WK^T (K x CO),
                   then TB (stored CO x rows) transposed into the NHWC block, in tiles */
                char tr = 'T';
                sgemm_(&tr, &nt, &m_, &n_, &k_, &one, P, &k_, WK, &k_, &zero, TB, &m_);
                for (npy_intp r0 = 0; r0 < rows; r0 += 64) {
                    npy_intp r1 = r0 + 64 < rows ? r0 + 64 : rows;
                    for (npy_intp o = 0; o < CO; ++o)
                        for (npy_intp r = r0; r < r1; ++r) Yb[r * CO + o] = TB[o * rows + r];
                }
                free(P);
            } else if (K <= %(small_k)d) {
                lc_small_gemm(A, rows, K, WM, CO, Yb);
            } else {
                /* row-major Yb (rows x CO) = A (rows x K) . WM (K x CO), i.e. column-major
                   Yb^T = WM^T . A^T */
                sgemm_(&nt, &nt, &n_, &m_, &k_, &one, WM, &n_, A, &k_, &zero, Yb, &n_);
            }
            lc_epilogue<%(flags)s>(Yb, rows, CO, BC, R ? R + m0 * CO : NULL, epi);
        }
        %(omp_end)s
        free(WK);
        free(WM);
        Py_DECREF(xc);
        Py_XDECREF(resc);
        if (failed) { PyErr_NoMemory(); %(fail)s }
        }
        """ % dict(locals(), fail=fail, has_res=int(has_res))
