"""SoftmaxNLL: the same values and gradients as Theano's own softmax cross-entropy."""
import numpy as np
import theano
import theano.tensor as T

from lasagne_caption.ops import SoftmaxNLL


def test_values_and_gradients_match_theano():
    rng = np.random.RandomState(0)
    x_val = (rng.randn(7, 11) * 5).astype("float32")
    b_val = rng.randn(11).astype("float32")
    y_val = rng.randint(0, 11, 7).astype("int32")
    x, b, y = T.matrix(), T.vector(), T.ivector()
    w = T.vector()                       # weights make the upstream gradient non-trivial
    ours = T.sum(w * SoftmaxNLL()(x, b, y)[0])
    theirs = T.sum(w * T.nnet.categorical_crossentropy(T.nnet.softmax(x + b), y))
    f = theano.function([x, b, y, w], [ours, theirs] + T.grad(ours, [x, b]) + T.grad(theirs, [x, b]))
    weights = rng.rand(7).astype("float32")
    loss_a, loss_b, gx_a, gb_a, gx_b, gb_b = f(x_val, b_val, y_val, weights)
    np.testing.assert_allclose(loss_a, loss_b, rtol=1e-5)
    np.testing.assert_allclose(gx_a, gx_b, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(gb_a, gb_b, rtol=1e-4, atol=1e-6)


def test_large_logits_do_not_overflow():
    x = T.matrix()
    f = theano.function([x], SoftmaxNLL()(x, T.zeros((3,)), T.constant([0], dtype="int32"))[0])
    out = f(np.array([[1000.0, 0.0, -1000.0]], "float32"))
    np.testing.assert_allclose(out, [0.0], atol=1e-6)
