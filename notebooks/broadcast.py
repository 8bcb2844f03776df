"""The seminar's ``broadcast.py``, on the toolkit's layers.

The course shipped this module beside the captioning notebook::

    from broadcast import BroadcastLayer, UnbroadcastLayer

    broadcast_decoder_ticks = BroadcastLayer(decoder, (0, 1))     # (batch*time, units)
    predicted_probabilities_each_tick = DenseLayer(broadcast_decoder_ticks, n_tokens,
                                                   nonlinearity=softmax)
    predicted_probabilities = UnbroadcastLayer(predicted_probabilities_each_tick,
                                               broadcast_layer=broadcast_decoder_ticks)

The same two classes with the course's signatures, as thin subclasses of
:mod:`lasagne_caption.layers` (whose UnbroadcastLayer takes the sizes from the
graph instead of an attribute set while the output is built, so a network can
be compiled more than once). Importing this module applies the toolkit's
compatibility layer first, so it also works when imported before ``lasagne``.
"""
import lasagne_caption  # noqa: F401  (compat layer first: theano-pymc, Python 3.11)
import numpy as np
from lasagne_caption import layers as _layers

__all__ = ["BroadcastLayer", "UnbroadcastLayer"]


class BroadcastLayer(_layers.BroadcastLayer):
    """Merge ``broadcasted_axes`` into the first (batch) axis to apply a layer over them.

    Parameters
    ----------
    incoming : Layer
        The layer to be broadcasted, e.g. an LSTM's (batch, time, units) output.
    broadcasted_axes : int or tuple of int
        Axes folded into the new first axis; must include 0 (the batch axis).
    force_broadcastable_batch : bool
        As in the course's module. Only ``True`` is supported: leaving the
        batch axis out of ``broadcasted_axes`` raises ``ValueError``.
    """

    def __init__(self, incoming, broadcasted_axes, force_broadcastable_batch=True, **kwargs):
        axes = [broadcasted_axes] if np.isscalar(broadcasted_axes) else list(broadcasted_axes)
        ndim = len(getattr(incoming, "output_shape", incoming))
        if not force_broadcastable_batch and 0 not in [int(a) % ndim for a in axes]:
            raise ValueError("BroadcastLayer: broadcasting without the batch (0'th) axis is not "
                             "supported here; add 0 to the broadcasted_axes")
        super(BroadcastLayer, self).__init__(incoming, broadcasted_axes, **kwargs)


class UnbroadcastLayer(_layers.UnbroadcastLayer):
    """Do the inverse of a :class:`BroadcastLayer` (restore the folded axes).

    Parameters
    ----------
    incoming : Layer
        A layer applied to the broadcasted tensor; it must have as many
        dimensions as the BroadcastLayer's output (its last axis may change size).
    broadcast_layer : BroadcastLayer
        The broadcasting to undo.
    """

    def __init__(self, incoming, broadcast_layer, **kwargs):
        if len(incoming.output_shape) != len(broadcast_layer.output_shape):
            raise ValueError("UnbroadcastLayer: the incoming layer has %d dimensions, the "
                             "broadcast layer's output %d; they must be equal"
                             % (len(incoming.output_shape), len(broadcast_layer.output_shape)))
        super(UnbroadcastLayer, self).__init__(incoming, broadcast_layer, **kwargs)
