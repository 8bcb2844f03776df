"""Theano ops the toolkit adds, each with C code for float32 (numpy otherwise).

* :class:`SoftmaxNLL`: softmax cross-entropy for big vocabularies. Theano's
  fused ``CrossentropySoftmaxArgmax1HotWithBias`` and its gradient make
  several passes over the (words, vocabulary) matrix; this makes two per
  row (max, then exp and sum) and keeps the exponentials, so the gradient is
  one multiply.
* :class:`LSTMCell`: the gates and state update of Lasagne's peephole LSTM
  in one loop, with its gradient :class:`LSTMCellGrad`, instead of about
  ten elementwise ops per time step each way. Both variants of the output
  gate: Lasagne master's (the seminar's) and Lasagne 0.1's.

* :class:`AttentionScores`: soft attention's ``sum_a w_a tanh(P + s)``
  over regions, with its gradient :class:`AttentionScoresGrad`: Theano's
  elementwise tanh is a scalar libm call per element and its gradient
  computes tanh again, which was most of an attention train step.

All evaluate exp with a polynomial gcc vectorises (glibc's ``expf`` is a
scalar call); measured with ``python benchmarks/bench.py``, see README.
"""
import numpy as np
import theano.tensor as T
from theano.compile import optdb
from theano.gradient import DisconnectedType
from theano.graph.basic import Apply
from theano.graph.op import COp
from theano.graph.opt import local_optimizer
from theano.graph.utils import MethodNotDefined
from theano.tensor.elemwise import Sum


# exp, sigmoid and tanh written so that gcc -O3 vectorises loops over them
# (glibc's expf/tanhf are scalar calls): Cephes' expf polynomial, accurate
# to a few float32 ulp; tanh uses its Taylor series near zero, where
# (1 - e) / (1 + e) would cancel.
_FAST_MATH_C = r"""
#include <math.h>
#include <stdint.h>
/* The clamps and selects below (x < -87 ? -87 : x, tanh's small-x branch)
   vectorise only without trapping-math, set here per function: it lets gcc
   evaluate both sides of a select, and changes no value. Measured on the
   LSTM forward loop: the same bits, 3.6 times faster. Every function gets it,
   since gcc does not inline across different optimize attributes. */
#define LC_NO_TRAP __attribute__((optimize("no-trapping-math")))
static inline LC_NO_TRAP float lc_exp(float x) {
    x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    float t = x * 1.44269504088896341f;
    float n = (t + 12582912.0f) - 12582912.0f;        /* round to nearest */
    float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    union { int32_t i; float f; } scale;   /* 2^n; memcpy here stops gcc vectorising */
    scale.i = ((int32_t)n + 127) << 23;
    return p * scale.f;
}
static inline LC_NO_TRAP float lc_sigmoid(float x) { return 1.0f / (1.0f + lc_exp(-x)); }
static inline LC_NO_TRAP float lc_tanh(float x) {
    float a = x < 0.0f ? -x : x;
    float e = lc_exp(-2.0f * a);
    float t = (1.0f - e) / (1.0f + e);
    float x2 = x * x;
    float small = x * (1.0f + x2 * (-0.333333333f + x2 * (0.133333333f - x2 * 0.0539682540f)));
    return a < 0.0625f ? small : (x < 0.0f ? -t : t);
}
/* __restrict: without it gcc does not vectorise these loops.
   master != 0: Lasagne master's output gate, sigmoid(o + c * w_co) (the seminar's);
   master == 0: Lasagne 0.1's, sigmoid(o) + c * w_co. One loop per variant, so
   each stays branch-free and vectorised. */
static LC_NO_TRAP void lc_lstm_forward(int master, npy_intp B, npy_intp U, const float* __restrict G,
        const float* __restrict CP, const float* __restrict WI, const float* __restrict WF,
        const float* __restrict WO, float* __restrict CELL, float* __restrict HID,
        float* __restrict S) {
    for (npy_intp b = 0; b < B; ++b) {
        const float *g = G + b * 4 * U, *cp = CP + b * U;
        float *cell = CELL + b * U, *hid = HID + b * U, *s = S + b * 5 * U;
        if (master) {
            for (npy_intp u = 0; u < U; ++u) {
                float i = lc_sigmoid(g[u] + cp[u] * WI[u]);
                float f = lc_sigmoid(g[U + u] + cp[u] * WF[u]);
                float ci = lc_tanh(g[2 * U + u]);
                float c = f * cp[u] + i * ci;
                float o = lc_sigmoid(g[3 * U + u] + c * WO[u]);
                float tc = lc_tanh(c);
                cell[u] = c;
                hid[u] = o * tc;
                s[u] = i; s[U + u] = f; s[2 * U + u] = ci; s[3 * U + u] = o; s[4 * U + u] = tc;
            }
        } else {
            for (npy_intp u = 0; u < U; ++u) {
                float i = lc_sigmoid(g[u] + cp[u] * WI[u]);
                float f = lc_sigmoid(g[U + u] + cp[u] * WF[u]);
                float ci = lc_tanh(g[2 * U + u]);
                float os = lc_sigmoid(g[3 * U + u]);
                float c = f * cp[u] + i * ci;
                float tc = lc_tanh(c);
                cell[u] = c;
                hid[u] = (os + c * WO[u]) * tc;
                s[u] = i; s[U + u] = f; s[2 * U + u] = ci; s[3 * U + u] = os; s[4 * U + u] = tc;
            }
        }
    }
}
static LC_NO_TRAP void lc_lstm_backward(int master, npy_intp B, npy_intp U, const float* __restrict S,
        const float* __restrict CP, const float* __restrict WI, const float* __restrict WF,
        const float* __restrict WO, const float* __restrict DC, const float* __restrict DH,
        float* __restrict DG, float* __restrict DCP, float* __restrict DWI,
        float* __restrict DWF, float* __restrict DWO) {
    for (npy_intp u = 0; u < U; ++u) DWI[u] = DWF[u] = DWO[u] = 0.0f;
    for (npy_intp b = 0; b < B; ++b) {
        const float *s = S + b * 5 * U, *cp = CP + b * U, *dc_in = DC + b * U, *dh = DH + b * U;
        float *dg = DG + b * 4 * U, *dcp = DCP + b * U;
        if (master) {
            for (npy_intp u = 0; u < U; ++u) {
                float i = s[u], f = s[U + u], ci = s[2 * U + u], o = s[3 * U + u];
                float tc = s[4 * U + u];
                float c = f * cp[u] + i * ci;
                float d_o = dh[u] * tc * o * (1.0f - o);     /* through the sigmoid */
                float dc = dc_in[u] + dh[u] * o * (1.0f - tc * tc) + d_o * WO[u];
                float di = dc * ci * i * (1.0f - i);
                float df = dc * cp[u] * f * (1.0f - f);
                dg[u] = di;
                dg[U + u] = df;
                dg[2 * U + u] = dc * i * (1.0f - ci * ci);
                dg[3 * U + u] = d_o;
                dcp[u] = dc * f + di * WI[u] + df * WF[u];
                DWI[u] += di * cp[u];
                DWF[u] += df * cp[u];
                DWO[u] += d_o * c;
            }
        } else {
            for (npy_intp u = 0; u < U; ++u) {
                float i = s[u], f = s[U + u], ci = s[2 * U + u], os = s[3 * U + u];
                float tc = s[4 * U + u];
                float c = f * cp[u] + i * ci;
                float d_out = dh[u] * tc;
                float dc = dc_in[u] + dh[u] * (os + c * WO[u]) * (1.0f - tc * tc) + d_out * WO[u];
                float di = dc * ci * i * (1.0f - i);
                float df = dc * cp[u] * f * (1.0f - f);
                dg[u] = di;
                dg[U + u] = df;
                dg[2 * U + u] = dc * i * (1.0f - ci * ci);
                dg[3 * U + u] = d_out * os * (1.0f - os);
                dcp[u] = dc * f + di * WI[u] + df * WF[u];
                DWI[u] += di * cp[u];
                DWF[u] += df * cp[u];
                DWO[u] += d_out * c;
            }
        }
    }
}
#define LC_LANES 16   /* independent partial max/sum lanes: vectorisable without -ffast-math */
static LC_NO_TRAP float lc_row_max(npy_intp K, const float* __restrict x, const float* __restrict b) {
    float acc[LC_LANES];
    for (int l = 0; l < LC_LANES; ++l) acc[l] = -INFINITY;
    npy_intp j = 0;
    for (; j + LC_LANES <= K; j += LC_LANES)
        for (int l = 0; l < LC_LANES; ++l) {
            float v = x[j + l] + b[j + l];
            acc[l] = v > acc[l] ? v : acc[l];
        }
    float m = -INFINITY;
    for (int l = 0; l < LC_LANES; ++l) m = acc[l] > m ? acc[l] : m;
    for (; j < K; ++j) m = x[j] + b[j] > m ? x[j] + b[j] : m;
    return m;
}
static LC_NO_TRAP double lc_row_exp(npy_intp K, const float* __restrict x, const float* __restrict b,
                         float m, float* __restrict e) {
    float acc[LC_LANES];
    for (int l = 0; l < LC_LANES; ++l) acc[l] = 0.0f;
    npy_intp j = 0;
    for (; j + LC_LANES <= K; j += LC_LANES)
        for (int l = 0; l < LC_LANES; ++l) {
            float v = lc_exp(x[j + l] + b[j + l] - m);
            e[j + l] = v;
            acc[l] += v;
        }
    double sum = 0.0;
    for (int l = 0; l < LC_LANES; ++l) sum += acc[l];
    for (; j < K; ++j) { e[j] = lc_exp(x[j] + b[j] - m); sum += e[j]; }
    return sum;
}
static LC_NO_TRAP void lc_row_grad(npy_intp K, const float* __restrict e, float scale,
                        float* __restrict dx, float* __restrict db) {
    for (npy_intp j = 0; j < K; ++j) {
        float v = e[j] * scale;
        dx[j] = v;
        db[j] += v;
    }
}
static int lc_output(PyArrayObject** out, int nd, npy_intp* dims) {
    /* reuse the previous call's output when it fits, as Theano's own ops do */
    if (*out && PyArray_NDIM(*out) == nd && PyArray_ISCARRAY(*out)
            && PyArray_TYPE(*out) == NPY_FLOAT32
            && PyArray_DIMS(*out)[0] == dims[0] && (nd == 1 || PyArray_DIMS(*out)[1] == dims[1])
            && (nd < 3 || PyArray_DIMS(*out)[2] == dims[2]))
        return 0;
    Py_XDECREF(*out);
    *out = (PyArrayObject*)PyArray_EMPTY(nd, dims, NPY_FLOAT32, 0);
    return *out ? 0 : -1;
}
"""


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


class _Float32COp(COp):
    """Shared plumbing: C code for float32, ``perform`` (numpy) for other dtypes."""
    __props__ = ()

    def c_support_code(self, **kwargs):
        return _FAST_MATH_C

    def c_code_cache_version(self):
        return (6,)

    def _check_float32(self, node, skip=()):
        """Raise MethodNotDefined unless every input (but ``skip``'s) and output is float32."""
        inputs = [v for k, v in enumerate(node.inputs) if k not in skip]
        if any(v.dtype != "float32" for v in inputs + node.outputs):
            raise MethodNotDefined("float32 only")   # Theano then uses perform


class SoftmaxNLL(_Float32COp):
    """``nll_i = -log softmax(x_i + b)[y_i]`` for logits x (N, K), bias b (K,), targets y (N,).

    Outputs ``(nll (N,), exp (N, K), inv_sum (N,))``; the last two are
    ``exp(x + b - max)`` and ``1 / sum(exp)``, kept for the gradient only:
    a graph must use only ``nll``.

    Examples
    --------
    >>> import theano
    >>> x, b, y = T.matrix(), T.vector(), T.ivector()
    >>> f = theano.function([x, b, y], SoftmaxNLL()(x, b, y)[0])
    >>> float(f(np.zeros((1, 4), "float32"), np.zeros(4, "float32"), [2])[0])  # log 4
    1.386294...
    """
    __props__ = ()

    def make_node(self, x, b, y):
        x, b, y = map(T.as_tensor_variable, (x, b, y))
        return Apply(self, [x, b, y], [T.vector(dtype=x.dtype), x.type(),
                                       T.vector(dtype=x.dtype)])

    def perform(self, node, inputs, outputs):
        x, b, y = inputs
        z = x + b
        z -= z.max(axis=1, keepdims=True)
        picked = z[np.arange(len(y)), y]
        np.exp(z, out=z)
        total = z.sum(axis=1)
        outputs[0][0] = (np.log(total) - picked).astype(x.dtype)
        outputs[1][0] = z
        outputs[2][0] = (1.0 / total).astype(x.dtype)

    def infer_shape(self, fgraph, node, shapes):
        return [(shapes[0][0],), shapes[0], (shapes[0][0],)]

    def connection_pattern(self, node):
        return [[True, True, True], [True, True, True], [False, False, False]]

    def grad(self, inputs, grads):
        x, b, y = inputs
        _, exp, inv_sum = self(x, b, y)
        dx, db = SoftmaxNLLGrad()(grads[0], exp, inv_sum, y)
        return [dx, db, DisconnectedType()()]


    def c_code(self, node, name, inp, out, sub):
        self._check_float32(node, skip=(2,))
        x, b, y = inp
        nll, exp, inv_sum = out
        fail = sub["fail"]
        return r"""
        {
        npy_intp N = PyArray_DIMS(%(x)s)[0], K = PyArray_DIMS(%(x)s)[1];
        if (PyArray_DIMS(%(b)s)[0] != K || PyArray_DIMS(%(y)s)[0] != N) {
            PyErr_SetString(PyExc_ValueError, "SoftmaxNLL: x must be (N, K), b (K,), y (N,)");
            %(fail)s
        }
        for (npy_intp i = 0; i < N; ++i) {
            npy_int64 t = (npy_int64)*(dtype_%(y)s*)PyArray_GETPTR1(%(y)s, i);
            if (t < 0 || t >= K) {
                PyErr_Format(PyExc_IndexError, "SoftmaxNLL: target %%lld of row %%ld is not "
                             "in [0, %%ld)", (long long)t, (long)i, (long)K);
                %(fail)s
            }
        }
        npy_intp dims[2] = {N, K};
        if (lc_output(&%(nll)s, 1, dims) || lc_output(&%(exp)s, 2, dims)
                || lc_output(&%(inv_sum)s, 1, dims)) {
            %(fail)s
        }
        PyArrayObject *xc = PyArray_GETCONTIGUOUS(%(x)s), *bc = PyArray_GETCONTIGUOUS(%(b)s);
        const float *X = (float*)PyArray_DATA(xc), *B = (float*)PyArray_DATA(bc);
        float *E = (float*)PyArray_DATA(%(exp)s);
        float *NLL = (float*)PyArray_DATA(%(nll)s), *INV = (float*)PyArray_DATA(%(inv_sum)s);
        for (npy_intp i = 0; i < N; ++i) {
            npy_intp t = (npy_intp)*(dtype_%(y)s*)PyArray_GETPTR1(%(y)s, i);
            const float *x = X + i * K;
            float m = lc_row_max(K, x, B);
            double sum = lc_row_exp(K, x, B, m, E + i * K);
            NLL[i] = (float)(log(sum) - ((double)x[t] + B[t] - m));
            INV[i] = (float)(1.0 / sum);
        }
        Py_DECREF(xc);
        Py_DECREF(bc);
        }
        """ % dict(locals(), fail=fail)


class SoftmaxNLLGrad(_Float32COp):
    """Gradient of :class:`SoftmaxNLL`: ``g * (softmax - onehot(y))`` and its column sum."""
    __props__ = ()

    def make_node(self, g, exp, inv_sum, y):
        g, exp, inv_sum, y = map(T.as_tensor_variable, (g, exp, inv_sum, y))
        return Apply(self, [g, exp, inv_sum, y], [exp.type(), T.vector(dtype=exp.dtype)])

    def perform(self, node, inputs, outputs):
        g, exp, inv_sum, y = inputs
        dx = exp * (g * inv_sum)[:, None]
        dx[np.arange(len(y)), y] -= g
        outputs[0][0] = dx
        outputs[1][0] = dx.sum(axis=0)

    def infer_shape(self, fgraph, node, shapes):
        return [shapes[1], (shapes[1][1],)]


    def c_code(self, node, name, inp, out, sub):
        self._check_float32(node, skip=(3,))
        g, exp, inv_sum, y = inp
        dx, db = out
        fail = sub["fail"]
        return r"""
        {
        npy_intp N = PyArray_DIMS(%(exp)s)[0], K = PyArray_DIMS(%(exp)s)[1];
        npy_intp dims[2] = {N, K}, b_dims[1] = {K};
        if (lc_output(&%(dx)s, 2, dims) || lc_output(&%(db)s, 1, b_dims)) {
            %(fail)s
        }
        PyArrayObject *ec = PyArray_GETCONTIGUOUS(%(exp)s);
        const float *E = (float*)PyArray_DATA(ec);
        float *DX = (float*)PyArray_DATA(%(dx)s), *DB = (float*)PyArray_DATA(%(db)s);
        for (npy_intp j = 0; j < K; ++j) DB[j] = 0.0f;
        for (npy_intp i = 0; i < N; ++i) {
            float gi = *(dtype_%(g)s*)PyArray_GETPTR1(%(g)s, i);
            float inv = *(dtype_%(inv_sum)s*)PyArray_GETPTR1(%(inv_sum)s, i);
            npy_intp t = (npy_intp)*(dtype_%(y)s*)PyArray_GETPTR1(%(y)s, i);
            lc_row_grad(K, E + i * K, gi * inv, DX + i * K, DB);
            DX[i * K + t] -= gi;
            DB[t] -= gi;
        }
        Py_DECREF(ec);
        }
        """ % dict(locals(), fail=fail)


MASTER = "master"
LASAGNE_01 = "lasagne-0.1"
LSTM_VARIANTS = (MASTER, LASAGNE_01)


def _check_variant(variant):
    if variant not in LSTM_VARIANTS:
        raise ValueError("LSTM variant must be one of %s, not %r" % (LSTM_VARIANTS, variant))
    return variant


class LSTMCell(_Float32COp):
    """One step of Lasagne's peephole LSTM after the gate pre-activations.

    Inputs ``gates`` (B, 4U) = ``x_t W_in + b + h_{t-1} W_hid`` (gate order
    ingate, forgetgate, cell, outgate), ``cell`` (B, U), and the peephole
    weights ``w_ci, w_cf, w_co`` (U,). Outputs the new ``cell`` and ``hid``
    (B, U) and ``saved`` (B, 5U): the activations the gradient reuses (a
    graph must use only the first two outputs). Fused into one C loop, it
    replaces about ten elementwise ops per step (and as many in the
    gradient), which dominate the unrolled LSTM.

    ``variant`` is where the output gate's peephole goes::

        "master":      o = sigmoid(o_pre + c * w_co);  hid = o * tanh(c)
        "lasagne-0.1": o = sigmoid(o_pre) + c * w_co;  hid = o * tanh(c)

    Lasagne master (PR #449, 2015-10-02) and so the seminar use the first;
    PyPI's Lasagne 0.1 the second (kept to load checkpoints trained with it).

    Examples
    --------
    >>> g, c = T.matrix(), T.matrix()
    >>> w = T.vector()
    >>> cell, hid = LSTMCell()(g, c, w, w, w)[:2]
    >>> LSTMCell("lasagne-0.1").variant
    'lasagne-0.1'
    """
    __props__ = ("variant",)

    def __init__(self, variant=MASTER):
        self.variant = _check_variant(variant)
        super(LSTMCell, self).__init__()

    def make_node(self, gates, cell, w_ci, w_cf, w_co):
        inputs = list(map(T.as_tensor_variable, (gates, cell, w_ci, w_cf, w_co)))
        cell = inputs[1]
        saved = T.TensorType(cell.dtype, (cell.broadcastable[0], False))()
        return Apply(self, inputs, [cell.type(), cell.type(), saved])

    def perform(self, node, inputs, outputs):
        gates, c_prev, w_ci, w_cf, w_co = inputs
        i_pre, f_pre, c_pre, o_pre = np.split(gates, 4, axis=1)
        ingate = _sigmoid(i_pre + c_prev * w_ci)
        forgetgate = _sigmoid(f_pre + c_prev * w_cf)
        cell_input = np.tanh(c_pre)
        cell = forgetgate * c_prev + ingate * cell_input
        tanh_cell = np.tanh(cell)
        if self.variant == MASTER:
            outgate = _sigmoid(o_pre + cell * w_co)
            hid = outgate * tanh_cell
        else:
            outgate = _sigmoid(o_pre)
            hid = (outgate + cell * w_co) * tanh_cell
        dtype = gates.dtype
        outputs[0][0] = cell.astype(dtype)
        outputs[1][0] = hid.astype(dtype)
        outputs[2][0] = np.concatenate([ingate, forgetgate, cell_input, outgate, tanh_cell],
                                       axis=1).astype(dtype)

    def infer_shape(self, fgraph, node, shapes):
        batch, units = shapes[1]
        return [shapes[1], shapes[1], (batch, 5 * units)]

    def connection_pattern(self, node):
        return [[True, True, False]] * 5

    def grad(self, inputs, output_grads):
        gates, c_prev, w_ci, w_cf, w_co = inputs
        cell, hid, saved = self(*inputs)
        d_cell, d_hid = [T.zeros_like(out) if isinstance(g.type, DisconnectedType) else g
                         for g, out in zip(output_grads[:2], (cell, hid))]
        return LSTMCellGrad(self.variant)(saved, c_prev, w_ci, w_cf, w_co, d_cell, d_hid)

    def c_code(self, node, name, inp, out, sub):
        self._check_float32(node)
        gates, c_prev, w_ci, w_cf, w_co = inp
        cell, hid, saved = out
        fail = sub["fail"]
        return r"""
        {
        npy_intp B = PyArray_DIMS(%(c_prev)s)[0], U = PyArray_DIMS(%(c_prev)s)[1];
        if (PyArray_NDIM(%(gates)s) != 2 || PyArray_DIMS(%(gates)s)[0] != B
                || PyArray_DIMS(%(gates)s)[1] != 4 * U || PyArray_DIMS(%(w_ci)s)[0] != U
                || PyArray_DIMS(%(w_cf)s)[0] != U || PyArray_DIMS(%(w_co)s)[0] != U) {
            PyErr_SetString(PyExc_ValueError, "LSTMCell: gates must be (B, 4U), cell (B, U), "
                            "peepholes (U,)");
            %(fail)s
        }
        npy_intp dims[2] = {B, U}, saved_dims[2] = {B, 5 * U};
        if (lc_output(&%(cell)s, 2, dims) || lc_output(&%(hid)s, 2, dims)
                || lc_output(&%(saved)s, 2, saved_dims)) {
            %(fail)s
        }
        PyArrayObject* in[5] = {%(gates)s, %(c_prev)s, %(w_ci)s, %(w_cf)s, %(w_co)s};
        for (int k = 0; k < 5; ++k) in[k] = PyArray_GETCONTIGUOUS(in[k]);
        const float *G = (float*)PyArray_DATA(in[0]), *CP = (float*)PyArray_DATA(in[1]);
        const float *WI = (float*)PyArray_DATA(in[2]), *WF = (float*)PyArray_DATA(in[3]);
        const float *WO = (float*)PyArray_DATA(in[4]);
        float *CELL = (float*)PyArray_DATA(%(cell)s), *HID = (float*)PyArray_DATA(%(hid)s);
        float *S = (float*)PyArray_DATA(%(saved)s);
        lc_lstm_forward(%(master)d, B, U, G, CP, WI, WF, WO, CELL, HID, S);
        for (int k = 0; k < 5; ++k) Py_DECREF(in[k]);
        }
        """ % dict(locals(), fail=fail, master=int(self.variant == MASTER))


class LSTMCellGrad(_Float32COp):
    """Gradient of :class:`LSTMCell`.

    Inputs ``saved, c_prev, w_ci, w_cf, w_co, d_cell, d_hid``; outputs the
    gradients of ``gates`` (B, 4U), ``c_prev`` (B, U) and the three
    peephole vectors (U,), summed over the batch.
    """
    __props__ = ("variant",)

    def __init__(self, variant=MASTER):
        self.variant = _check_variant(variant)
        super(LSTMCellGrad, self).__init__()

    def make_node(self, saved, c_prev, w_ci, w_cf, w_co, d_cell, d_hid):
        inputs = list(map(T.as_tensor_variable, (saved, c_prev, w_ci, w_cf, w_co, d_cell, d_hid)))
        c_prev = inputs[1]
        d_gates = T.TensorType(c_prev.dtype, (c_prev.broadcastable[0], False))()
        return Apply(self, inputs, [d_gates] + [v.type() for v in inputs[1:5]])

    def perform(self, node, inputs, outputs):
        saved, c_prev, w_ci, w_cf, w_co, d_cell, d_hid = inputs
        i, f, ci, o, tc = np.split(saved, 5, axis=1)
        cell = f * c_prev + i * ci
        if self.variant == MASTER:
            d_o_pre = d_hid * tc * o * (1 - o)
            d_c = d_cell + d_hid * o * (1 - tc * tc) + d_o_pre * w_co
            d_w_co = (d_o_pre * cell).sum(axis=0)
        else:
            d_out = d_hid * tc
            d_c = d_cell + d_hid * (o + cell * w_co) * (1 - tc * tc) + d_out * w_co
            d_o_pre = d_out * o * (1 - o)
            d_w_co = (d_out * cell).sum(axis=0)
        d_i = d_c * ci * i * (1 - i)
        d_f = d_c * c_prev * f * (1 - f)
        d_ci = d_c * i * (1 - ci * ci)
        dtype = saved.dtype
        results = [np.concatenate([d_i, d_f, d_ci, d_o_pre], axis=1),
                   d_c * f + d_i * w_ci + d_f * w_cf,
                   (d_i * c_prev).sum(axis=0), (d_f * c_prev).sum(axis=0), d_w_co]
        for storage, value in zip(outputs, results):
            storage[0] = value.astype(dtype)

    def infer_shape(self, fgraph, node, shapes):
        batch, units = shapes[1]
        return [(batch, 4 * units), shapes[1], shapes[2], shapes[3], shapes[4]]

    def c_code(self, node, name, inp, out, sub):
        self._check_float32(node)
        saved, c_prev, w_ci, w_cf, w_co, d_cell, d_hid = inp
        d_gates, d_c_prev, d_w_ci, d_w_cf, d_w_co = out
        fail = sub["fail"]
        return r"""
        {
        npy_intp B = PyArray_DIMS(%(c_prev)s)[0], U = PyArray_DIMS(%(c_prev)s)[1];
        npy_intp gate_dims[2] = {B, 4 * U}, dims[2] = {B, U}, vec_dims[1] = {U};
        if (lc_output(&%(d_gates)s, 2, gate_dims) || lc_output(&%(d_c_prev)s, 2, dims)
                || lc_output(&%(d_w_ci)s, 1, vec_dims) || lc_output(&%(d_w_cf)s, 1, vec_dims)
                || lc_output(&%(d_w_co)s, 1, vec_dims)) {
            %(fail)s
        }
        PyArrayObject* in[7] = {%(saved)s, %(c_prev)s, %(w_ci)s, %(w_cf)s, %(w_co)s,
                                %(d_cell)s, %(d_hid)s};
        for (int k = 0; k < 7; ++k) in[k] = PyArray_GETCONTIGUOUS(in[k]);
        const float *S = (float*)PyArray_DATA(in[0]), *CP = (float*)PyArray_DATA(in[1]);
        const float *WI = (float*)PyArray_DATA(in[2]), *WF = (float*)PyArray_DATA(in[3]);
        const float *WO = (float*)PyArray_DATA(in[4]);
        const float *DC = (float*)PyArray_DATA(in[5]), *DH = (float*)PyArray_DATA(in[6]);
        float *DG = (float*)PyArray_DATA(%(d_gates)s), *DCP = (float*)PyArray_DATA(%(d_c_prev)s);
        float *DWI = (float*)PyArray_DATA(%(d_w_ci)s), *DWF = (float*)PyArray_DATA(%(d_w_cf)s);
        float *DWO = (float*)PyArray_DATA(%(d_w_co)s);
        lc_lstm_backward(%(master)d, B, U, S, CP, WI, WF, WO, DC, DH, DG, DCP, DWI, DWF, DWO);
        for (int k = 0; k < 7; ++k) Py_DECREF(in[k]);
        }
        """ % dict(locals(), fail=fail, master=int(self.variant == MASTER))


class AttentionScores(_Float32COp):
    """Soft attention's scores ``e[n, l] = sum_a w[a] tanh(P[n, l, a] + s[n, a])``.

    ``P`` (N, L, A) are the projected regions, ``s`` (N, A) the projected
    state, ``w`` (A,) the scoring vector (Xu et al.'s ``U_att``).

    Examples
    --------
    >>> import theano
    >>> P, s, w = T.tensor3(), T.matrix(), T.vector()
    >>> f = theano.function([P, s, w], AttentionScores()(P, s, w))
    >>> x = np.full((1, 2, 3), 0.5, "float32")
    >>> np.allclose(f(x, np.zeros((1, 3), "float32"), np.ones(3, "float32")), 3 * np.tanh(0.5))
    True
    """
    __props__ = ()

    def make_node(self, P, s, w):
        P, s, w = map(T.as_tensor_variable, (P, s, w))
        return Apply(self, [P, s, w], [T.matrix(dtype=P.dtype)])

    def perform(self, node, inputs, outputs):
        P, s, w = inputs
        outputs[0][0] = np.tanh(P + s[:, None, :]).dot(w).astype(P.dtype)

    def infer_shape(self, fgraph, node, shapes):
        return [shapes[0][:2]]

    def grad(self, inputs, grads):
        P, s, w = inputs
        return list(AttentionScoresGrad()(P, s, w, grads[0]))

    def c_code(self, node, name, inp, out, sub):
        self._check_float32(node)
        P, s, w = inp
        e, = out
        fail = sub["fail"]
        return r"""
        {
        npy_intp N = PyArray_DIMS(%(P)s)[0], L = PyArray_DIMS(%(P)s)[1], A = PyArray_DIMS(%(P)s)[2];
        if (PyArray_DIMS(%(s)s)[0] != N || PyArray_DIMS(%(s)s)[1] != A || PyArray_DIMS(%(w)s)[0] != A) {
            PyErr_SetString(PyExc_ValueError, "AttentionScores: P must be (N, L, A), s (N, A), w (A,)");
            %(fail)s
        }
        npy_intp dims[2] = {N, L};
        if (lc_output(&%(e)s, 2, dims)) { %(fail)s }
        PyArrayObject *pc = PyArray_GETCONTIGUOUS(%(P)s), *sc = PyArray_GETCONTIGUOUS(%(s)s),
                      *wc = PyArray_GETCONTIGUOUS(%(w)s);
        const float *PP = (float*)PyArray_DATA(pc), *S = (float*)PyArray_DATA(sc),
                    *W = (float*)PyArray_DATA(wc);
        float *E = (float*)PyArray_DATA(%(e)s);
        float *row = (float*)malloc(sizeof(float) * (A + LC_LANES));
        for (npy_intp n = 0; n < N; ++n)
            for (npy_intp l = 0; l < L; ++l)
                E[n * L + l] = lc_attention_score(A, PP + (n * L + l) * A, S + n * A, W, row);
        free(row);
        Py_DECREF(pc); Py_DECREF(sc); Py_DECREF(wc);
        }
        """ % dict(locals(), fail=fail)

    def c_support_code(self, **kwargs):
        return _FAST_MATH_C + _ATTENTION_C


_ATTENTION_C = r"""
/* tanh as Eigen's rational approximation (a few float32 ulp), vectorised;
   lc_tanh stays as it is for the LSTM op, whose numbers are published. */
static inline LC_NO_TRAP float lc_tanh_rational(float x) {
    const float c = 7.90531110763549805f;
    x = x < -c ? -c : x;
    x = x > c ? c : x;
    float x2 = x * x;
    float p = x2 * -2.76076847742355e-16f + 2.00018790482477e-13f;
    p = p * x2 + -8.60467152213735e-11f;
    p = p * x2 + 5.12229709037114e-08f;
    p = p * x2 + 1.48572235717979e-05f;
    p = p * x2 + 6.37261928875436e-04f;
    p = p * x2 + 4.89352455891786e-03f;
    p = p * x;
    float q = x2 * 1.19825839466702e-06f + 1.18534705686654e-04f;
    q = q * x2 + 2.26843463243900e-03f;
    q = q * x2 + 4.89352518554385e-03f;
    return p / q;
}
/* sum_a w[a] tanh(p[a] + s[a]); tanh values go to t (vectorised), then a
   lane-wise sum */
static LC_NO_TRAP float lc_attention_score(npy_intp A, const float* __restrict p,
        const float* __restrict s, const float* __restrict w, float* __restrict t) {
    for (npy_intp a = 0; a < A; ++a) t[a] = w[a] * lc_tanh_rational(p[a] + s[a]);
    float acc[LC_LANES];
    for (int l = 0; l < LC_LANES; ++l) acc[l] = 0.0f;
    npy_intp a = 0;
    for (; a + LC_LANES <= A; a += LC_LANES)
        for (int l = 0; l < LC_LANES; ++l) acc[l] += t[a + l];
    float sum = 0.0f;
    for (int l = 0; l < LC_LANES; ++l) sum += acc[l];
    for (; a < A; ++a) sum += t[a];
    return sum;
}
"""


class AttentionScoresGrad(_Float32COp):
    """Gradient of :class:`AttentionScores` for upstream ``g`` (N, L): ``(dP, ds, dw)``.

    ``dP[n, l, a] = g[n, l] w[a] (1 - tanh^2)``, ``ds = sum_l dP``,
    ``dw[a] = sum_{n, l} g[n, l] tanh(P + s)[n, l, a]``.

    With a fifth input ``dP_in`` (N, L, A), the first output is ``dP_in + dP``:
    a backward pass over time accumulates the regions' gradient in the same
    pass over them, instead of writing ``dP`` and adding it in another.
    """
    __props__ = ()

    def make_node(self, P, s, w, g, dP_in=None):
        inputs = [P, s, w, g] + ([] if dP_in is None else [dP_in])
        inputs = list(map(T.as_tensor_variable, inputs))
        P, s, w = inputs[:3]
        return Apply(self, inputs, [P.type(), s.type(), w.type()])

    def perform(self, node, inputs, outputs):
        P, s, w, g = inputs[:4]
        t = np.tanh(P + s[:, None, :])
        dP = (g[:, :, None] * w[None, None, :] * (1 - t * t)).astype(P.dtype)
        outputs[0][0] = dP if len(inputs) == 4 else (inputs[4] + dP).astype(P.dtype)
        outputs[1][0] = dP.sum(axis=1).astype(P.dtype)
        outputs[2][0] = np.einsum("nl,nla->a", g, t).astype(P.dtype)

    def infer_shape(self, fgraph, node, shapes):
        return [shapes[0], shapes[1], shapes[2]]

    def c_code(self, node, name, inp, out, sub):
        self._check_float32(node)
        P, s, w, g = inp[:4]
        dP, ds, dw = out
        fail = sub["fail"]
        n_in = len(inp)
        dP_in = inp[4] if n_in == 5 else "NULL"
        return r"""
        {
        npy_intp N = PyArray_DIMS(%(P)s)[0], L = PyArray_DIMS(%(P)s)[1], A = PyArray_DIMS(%(P)s)[2];
        npy_intp dims[3] = {N, L, A}, s_dims[2] = {N, A}, w_dims[1] = {A};
        PyArrayObject* acc_in = %(dP_in)s;
        if (acc_in && (PyArray_NDIM(acc_in) != 3 || PyArray_DIMS(acc_in)[0] != N
                       || PyArray_DIMS(acc_in)[1] != L || PyArray_DIMS(acc_in)[2] != A)) {
            PyErr_SetString(PyExc_ValueError, "AttentionScoresGrad: dP_in must be (N, L, A) as P");
            %(fail)s
        }
        if (lc_output(&%(dP)s, 3, dims) || lc_output(&%(ds)s, 2, s_dims)
                || lc_output(&%(dw)s, 1, w_dims)) { %(fail)s }
        PyArrayObject *pc = PyArray_GETCONTIGUOUS(%(P)s), *sc = PyArray_GETCONTIGUOUS(%(s)s),
                      *wc = PyArray_GETCONTIGUOUS(%(w)s), *gc = PyArray_GETCONTIGUOUS(%(g)s);
        PyArrayObject *ac = acc_in ? PyArray_GETCONTIGUOUS(acc_in) : NULL;
        const float *PP = (float*)PyArray_DATA(pc), *S = (float*)PyArray_DATA(sc),
                    *W = (float*)PyArray_DATA(wc), *G = (float*)PyArray_DATA(gc);
        const float *ACC = ac ? (float*)PyArray_DATA(ac) : NULL;
        float *DP = (float*)PyArray_DATA(%(dP)s), *DS = (float*)PyArray_DATA(%(ds)s),
              *DW = (float*)PyArray_DATA(%(dw)s);
        for (npy_intp a = 0; a < A; ++a) DW[a] = 0.0f;
        for (npy_intp n = 0; n < N; ++n) {
            float *dsn = DS + n * A;
            const float *sn = S + n * A;
            for (npy_intp a = 0; a < A; ++a) dsn[a] = 0.0f;
            for (npy_intp l = 0; l < L; ++l) {
                npy_intp at = (n * L + l) * A;
                if (ACC)
                    lc_attention_score_grad_acc(A, PP + at, sn, W, G[n * L + l], ACC + at,
                                                DP + at, dsn, DW);
                else
                    lc_attention_score_grad(A, PP + at, sn, W, G[n * L + l], DP + at, dsn, DW);
            }
        }
        Py_DECREF(pc); Py_DECREF(sc); Py_DECREF(wc); Py_DECREF(gc); Py_XDECREF(ac);
        }
        """ % dict(locals(), fail=fail)

    def c_support_code(self, **kwargs):
        return _FAST_MATH_C + _ATTENTION_C + r"""
static LC_NO_TRAP void lc_attention_score_grad(npy_intp A, const float* __restrict p,
        const float* __restrict s, const float* __restrict w, float g,
        float* __restrict dp, float* __restrict ds, float* __restrict dw) {
    for (npy_intp a = 0; a < A; ++a) {
        float t = lc_tanh_rational(p[a] + s[a]);
        float d = g * w[a] * (1.0f - t * t);
        dp[a] = d;
        ds[a] += d;
        dw[a] += g * t;
    }
}
static LC_NO_TRAP void lc_attention_score_grad_acc(npy_intp A, const float* __restrict p,
        const float* __restrict s, const float* __restrict w, float g,
        const float* __restrict dp_in, float* __restrict dp, float* __restrict ds,
        float* __restrict dw) {
    for (npy_intp a = 0; a < A; ++a) {
        float t = lc_tanh_rational(p[a] + s[a]);
        float d = g * w[a] * (1.0f - t * t);
        dp[a] = dp_in[a] + d;
        ds[a] += d;
        dw[a] += g * t;
    }
}
"""

    def c_code_cache_version(self):
        return (7,)


class _RegionOp(_Float32COp):
    """The C helpers shared by :class:`WeightedSum` and :class:`RegionDot`."""

    def c_support_code(self, **kwargs):
        return _FAST_MATH_C + _REGION_C


class WeightedSum(_RegionOp):
    """Soft attention's context ``r[n] = sum_l alpha[n, l] a[n, l]``.

    ``alpha`` (N, L) the weights, ``a`` (N, L, D) the regions; output (N, D).
    The same as ``T.batched_dot(alpha, a)``, which calls a BLAS product of one
    row per image; this streams the regions once (on the Flickr8k grid a
    batch's regions are 16 MB, read at every step), about three times faster
    here. Its gradient for ``alpha`` is :class:`RegionDot`.

    Examples
    --------
    >>> import theano
    >>> alpha, a = T.matrix(), T.tensor3()
    >>> f = theano.function([alpha, a], WeightedSum()(alpha, a))
    >>> f([[0.25, 0.75]], np.array([[[4, 0], [0, 4]]], "float32"))
    array([[1., 3.]], dtype=float32)
    """
    __props__ = ()

    def make_node(self, alpha, a):
        alpha, a = map(T.as_tensor_variable, (alpha, a))
        return Apply(self, [alpha, a], [T.matrix(dtype=a.dtype)])

    def perform(self, node, inputs, outputs):
        alpha, a = inputs
        outputs[0][0] = np.einsum("nl,nld->nd", alpha, a).astype(a.dtype)

    def infer_shape(self, fgraph, node, shapes):
        return [(shapes[1][0], shapes[1][2])]

    def grad(self, inputs, grads):
        alpha, a = inputs
        g, = grads
        return [RegionDot()(a, g), alpha.dimshuffle(0, 1, 'x') * g.dimshuffle(0, 'x', 1)]

    def c_code(self, node, name, inp, out, sub):
        self._check_float32(node)
        alpha, a = inp
        return _region_c_code("lc_weighted_sum", "WeightedSum: alpha must be (N, L), a (N, L, D)",
                              a, alpha, "L", out[0], "D", "O, A", sub["fail"])


class RegionDot(_RegionOp):
    """``e[n, l] = a[n, l] . g[n]``: each region's dot product with a vector.

    ``a`` (N, L, D), ``g`` (N, D); output (N, L). The gradient of
    :class:`WeightedSum` for its weights; like it, one pass over the regions.

    Examples
    --------
    >>> import theano
    >>> a, g = T.tensor3(), T.matrix()
    >>> f = theano.function([a, g], RegionDot()(a, g))
    >>> f(np.array([[[4, 0], [0, 4]]], "float32"), [[0.25, 0.75]])
    array([[1., 3.]], dtype=float32)
    """
    __props__ = ()

    def make_node(self, a, g):
        a, g = map(T.as_tensor_variable, (a, g))
        return Apply(self, [a, g], [T.matrix(dtype=a.dtype)])

    def perform(self, node, inputs, outputs):
        a, g = inputs
        outputs[0][0] = np.einsum("nld,nd->nl", a, g).astype(a.dtype)

    def infer_shape(self, fgraph, node, shapes):
        return [shapes[0][:2]]

    def grad(self, inputs, grads):
        a, g = inputs
        d, = grads
        return [d.dimshuffle(0, 1, 'x') * g.dimshuffle(0, 'x', 1), WeightedSum()(d, a)]

    def c_code(self, node, name, inp, out, sub):
        self._check_float32(node)
        a, g = inp
        return _region_c_code("lc_region_dot", "RegionDot: a must be (N, L, D), g (N, D)",
                              a, g, "D", out[0], "L", "A, O", sub["fail"])


def _region_c_code(function, message, a, other, other_cols, result, result_cols, args, fail):
    """The C code of :class:`WeightedSum` and :class:`RegionDot`: regions ``a``
    (N, L, D) and a matrix ``other`` (N, other_cols) give ``result``
    (N, result_cols) through ``function(N, L, D, args, result)``, where ``A``
    and ``O`` in ``args`` are the two inputs' data."""
    return r"""
    {
    npy_intp N = PyArray_DIMS(%(a)s)[0], L = PyArray_DIMS(%(a)s)[1], D = PyArray_DIMS(%(a)s)[2];
    if (PyArray_DIMS(%(other)s)[0] != N || PyArray_DIMS(%(other)s)[1] != %(other_cols)s) {
        PyErr_SetString(PyExc_ValueError, "%(message)s");
        %(fail)s
    }
    npy_intp dims[2] = {N, %(result_cols)s};
    if (lc_output(&%(result)s, 2, dims)) { %(fail)s }
    PyArrayObject *ac = PyArray_GETCONTIGUOUS(%(a)s), *oc = PyArray_GETCONTIGUOUS(%(other)s);
    const float *A = (float*)PyArray_DATA(ac), *O = (float*)PyArray_DATA(oc);
    %(function)s(N, L, D, %(args)s, (float*)PyArray_DATA(%(result)s));
    Py_DECREF(ac); Py_DECREF(oc);
    }
    """ % locals()


_REGION_C = r"""
/* r[n] = sum_l alpha[n, l] a[n, l]: the output row stays in L1 while the
   regions stream past once */
static LC_NO_TRAP void lc_weighted_sum(npy_intp N, npy_intp L, npy_intp D,
        const float* __restrict alpha, const float* __restrict a, float* __restrict r) {
    for (npy_intp n = 0; n < N; ++n) {
        float *rn = r + n * D;
        for (npy_intp d = 0; d < D; ++d) rn[d] = 0.0f;
        for (npy_intp l = 0; l < L; ++l) {
            const float *al = a + (n * L + l) * D;
            float w = alpha[n * L + l];
            for (npy_intp d = 0; d < D; ++d) rn[d] += w * al[d];
        }
    }
}
/* e[n, l] = a[n, l] . g[n], with lane-wise partial sums (vectorisable
   without -ffast-math) */
static LC_NO_TRAP void lc_region_dot(npy_intp N, npy_intp L, npy_intp D,
        const float* __restrict a, const float* __restrict g, float* __restrict e) {
    for (npy_intp n = 0; n < N; ++n) {
        const float *gn = g + n * D;
        for (npy_intp l = 0; l < L; ++l) {
            const float *al = a + (n * L + l) * D;
            float acc[LC_LANES];
            for (int k = 0; k < LC_LANES; ++k) acc[k] = 0.0f;
            npy_intp d = 0;
            for (; d + LC_LANES <= D; d += LC_LANES)
                for (int k = 0; k < LC_LANES; ++k) acc[k] += al[d + k] * gn[d + k];
            float sum = 0.0f;
            for (int k = 0; k < LC_LANES; ++k) sum += acc[k];
            for (; d < D; ++d) sum += al[d] * gn[d];
            e[n * L + l] = sum;
        }
    }
}
"""


# -- a graph rewrite ------------------------------------------------------------
SUMS_AS_DOT = "lc_sums_as_dot"


@local_optimizer([Sum])
def local_leading_sum_as_dot(fgraph, node):
    """A float32 sum over leading axes as ``ones . x`` (a BLAS gemv).

    Theano accumulates float32 sums in float64 with a scalar loop: summing
    the bias gradients of the attention network (over time and batch, e.g.
    20 x 64 x 2048 for the LSTM's) took 10 ms of its train step, against
    well under a millisecond as a matrix-vector product (float32 sums in
    BLAS blocks: equal up to float32 rounding). Off by default; a mode
    takes it with ``.including(SUMS_AS_DOT)``.
    """
    if type(node.op) is not Sum or node.op.axis is None:
        return False
    x, = node.inputs
    out = node.outputs[0]
    n = len(node.op.axis)
    if (x.dtype != "float32" or out.dtype != "float32" or n == x.ndim
            or sorted(node.op.axis) != list(range(n))):
        return False
    rows, rest = T.prod(x.shape[:n]), x.shape[n:]
    flat = x.reshape((rows, T.prod(rest)), ndim=2)
    summed = T.dot(T.ones((rows,), dtype="float32"), flat)
    summed = summed.reshape(rest, ndim=x.ndim - n)
    return [T.patternbroadcast(summed, out.broadcastable)]


# before the BLAS rewrites (position 1.7), which make the dot a gemv
optdb["stabilize"].register("local_leading_sum_as_dot", local_leading_sum_as_dot, SUMS_AS_DOT)
