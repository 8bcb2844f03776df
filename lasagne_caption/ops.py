"""Theano ops the toolkit adds: a softmax cross-entropy for big vocabularies.

Theano's fused ``CrossentropySoftmaxArgmax1HotWithBias`` and its gradient make
several passes over the (words, vocabulary) matrix; at the seminar's 10,373
words that was 28% of a training step. :class:`SoftmaxNLL` computes the same
numbers with one ``exp`` pass in numpy and keeps the exponentials for the
gradient, which is then one multiply.
"""
import numpy as np
import theano.tensor as T
from theano.gradient import DisconnectedType
from theano.graph.basic import Apply
from theano.graph.op import Op


class SoftmaxNLL(Op):
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


class SoftmaxNLLGrad(Op):
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
