"""Losses of the captioning networks: the masked next-word cross-entropy.

>>> import numpy as np, theano, theano.tensor as T
>>> probs, words = T.tensor3(), T.imatrix()
>>> loss = theano.function([probs, words], masked_cross_entropy(probs, words))
>>> p = np.full((1, 3, 4), 0.25, dtype=theano.config.floatX)
>>> round(float(loss(p, np.array([[2, 1, -1]], dtype="int32"))), 4)   # log 4; padding ignored
1.3863
"""
import theano.tensor as T

from ..ops import SoftmaxNLL
from ..vocab import PAD_IX


def masked_cross_entropy(probabilities, sentences):
    """Next-word cross-entropy, mean over the non-padding target tokens.

    ``probabilities`` (batch, time, n_tokens) at step t predicts word t+1 of
    ``sentences`` (batch, time). This is the seminar's loss, except that the
    seminar averaged over padding positions too.
    """
    n_tokens = probabilities.shape[-1]
    predicted = probabilities[:, :-1].reshape((-1, n_tokens))
    targets = sentences[:, 1:].flatten()
    mask = T.neq(targets, PAD_IX)
    # padding targets (-1) index a real column; their terms are masked out
    nll = T.nnet.categorical_crossentropy(predicted, T.maximum(targets, 0))
    return T.sum(nll * mask) / T.maximum(T.sum(mask), 1)


def real_target_cross_entropy(hidden, W, b, sentences):
    """:func:`masked_cross_entropy` of a softmax output layer, on real tokens only.

    ``hidden`` (batch, time, units) at step t predicts word t+1 of
    ``sentences`` (batch, time) through ``softmax(hidden . W + b)``. The
    output layer (hidden -> n_tokens) is most of a training step; padding
    positions are masked out of the loss anyway, so the layer is applied
    only to the rows whose target is a real word, with
    :class:`~lasagne_caption.ops.SoftmaxNLL`: the same loss and gradients
    with less work (tests/models/test_losses.py).
    """
    hidden = hidden[:, :-1].reshape((-1, hidden.shape[-1]))
    targets = sentences[:, 1:].flatten()
    real = T.neq(targets, PAD_IX).nonzero()[0]
    nll = SoftmaxNLL()(T.dot(hidden[real], W), b, targets[real])[0]
    return T.sum(nll) / T.maximum(real.shape[0], 1)
