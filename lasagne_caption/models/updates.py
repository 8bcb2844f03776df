"""Optimisers: Lasagne 0.1's Adam on moments that several compiled train steps share."""
from collections import OrderedDict

import lasagne
import numpy as np
import theano
import theano.tensor as T

from ..ops import SUMS_AS_DOT


def adam_state(params):
    """Zero Adam state for ``params``: ``[m_0, v_0, m_1, v_1, ..., t]`` as in Lasagne 0.1."""
    state = []
    for p in params:
        value = p.get_value(borrow=True)
        state += [theano.shared(np.zeros(value.shape, dtype=value.dtype),
                                broadcastable=p.broadcastable) for _ in range(2)]
    return state + [theano.shared(lasagne.utils.floatX(0.))]


def adam(loss, params, state, learning_rate=1e-3, beta1=0.9, beta2=0.999, epsilon=1e-8,
         scales=None):
    """``lasagne.updates.adam`` (0.1) on a given :func:`adam_state`.

    Several compiled train steps (one per unrolled length) then update the
    same moments, as one optimiser would. ``scales``: a factor per parameter
    on its step size (a fine-tuned encoder trains at a fraction of the
    captioner's); None is 1 for all, Lasagne's Adam exactly.
    """
    grads = theano.grad(loss, params)
    t_prev = state[-1]
    t = t_prev + 1
    a_t = learning_rate * T.sqrt(1 - beta2 ** t) / (1 - beta1 ** t)
    updates = OrderedDict()
    scales = [1.0] * len(params) if scales is None else scales
    for param, g_t, m_prev, v_prev, scale in zip(params, grads, state[0::2], state[1::2],
                                                  scales):
        m_t = beta1 * m_prev + (1 - beta1) * g_t
        v_t = beta2 * v_prev + (1 - beta2) * g_t ** 2
        updates[m_prev] = m_t
        updates[v_prev] = v_t
        step = a_t if scale == 1.0 else a_t * np.float32(scale)
        updates[param] = param - step * m_t / (T.sqrt(v_t) + epsilon)
    updates[t_prev] = t
    return updates


def training_mode(sums_as_dot=False):
    """Theano's default mode without ``local_dot22_to_dot22scalar``.

    That rewrite folds Adam's ``(1 - beta1) * grad`` into a second copy of the
    output layer's largest matrix product (about 60 ms of a 300 ms step at the
    seminar's shapes, measured with ``python benchmarks/bench.py``).
    ``sums_as_dot``: with :func:`~lasagne_caption.ops.local_leading_sum_as_dot`
    (the attention network's; the seminar network keeps Theano's sums, with
    which its published numbers were made).
    """
    mode = theano.compile.mode.get_default_mode().excluding("local_dot22_to_dot22scalar")
    return mode.including(SUMS_AS_DOT) if sums_as_dot else mode

