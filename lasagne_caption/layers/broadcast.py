"""Fold several axes into the batch axis and back, as the seminar's broadcast.py.

A ``DenseLayer`` only sees (batch, features). To apply it at every time step
of an LSTM's (batch, time, units) output, :class:`BroadcastLayer` folds
(batch, time) into one axis and :class:`UnbroadcastLayer` restores it.
"""
import numpy as np
from lasagne.layers import Layer, MergeLayer


class BroadcastLayer(Layer):
    """Merge ``broadcasted_axes`` (which must include axis 0) into axis 0.

    Parameters
    ----------
    incoming : Layer or shape tuple
    broadcasted_axes : int or sequence of int
        Axes folded into the new first axis, in this order; 0 must be one of
        them. The remaining axes follow in their original order.

    Examples
    --------
    >>> from lasagne.layers import InputLayer, DenseLayer
    >>> l_seq = InputLayer((None, None, 200))            # (batch, time, units)
    >>> l_flat = BroadcastLayer(l_seq, (0, 1))           # (batch*time, units)
    >>> l_out = DenseLayer(l_flat, 10)
    >>> UnbroadcastLayer(l_out, l_flat).output_shape     # (batch, time, 10)
    (None, None, 10)
    """

    def __init__(self, incoming, broadcasted_axes, **kwargs):
        super(BroadcastLayer, self).__init__(incoming, **kwargs)
        axes = [broadcasted_axes] if np.isscalar(broadcasted_axes) else list(broadcasted_axes)
        ndim = len(self.input_shape)
        axes = [int(a) % ndim for a in axes]
        if 0 not in axes:
            raise ValueError("BroadcastLayer: broadcasted_axes must include axis 0, got %r"
                             % (broadcasted_axes,))
        if len(set(axes)) != len(axes):
            raise ValueError("BroadcastLayer: repeated axis in %r" % (broadcasted_axes,))
        self.broadcasted_axes = axes
        self.kept_axes = [a for a in range(ndim) if a not in axes]

    def get_output_shape_for(self, input_shape):
        sizes = [input_shape[a] for a in self.broadcasted_axes]
        folded = None if None in sizes else int(np.prod(sizes))
        return (folded,) + tuple(input_shape[a] for a in self.kept_axes)

    def get_output_for(self, input, **kwargs):
        moved = input.dimshuffle(self.broadcasted_axes + self.kept_axes)
        kept_shape = [moved.shape[i] for i in range(len(self.broadcasted_axes), input.ndim)]
        return moved.reshape([-1] + kept_shape, ndim=1 + len(self.kept_axes))


class UnbroadcastLayer(MergeLayer):
    """Undo a :class:`BroadcastLayer`: restore the folded axes, order and sizes.

    The last axis may have changed size between the two layers (a
    ``DenseLayer`` in between does that); every other axis must not.

    Parameters
    ----------
    incoming : Layer
        Output of the layers applied to the folded tensor.
    broadcast_layer : BroadcastLayer
        The layer whose folding is undone. Its input is taken as a second
        incoming so that the symbolic sizes are known without hidden state.
    """

    def __init__(self, incoming, broadcast_layer, **kwargs):
        if not isinstance(broadcast_layer, BroadcastLayer):
            raise TypeError("UnbroadcastLayer needs the BroadcastLayer it undoes")
        self.broadcast_layer = broadcast_layer
        super(UnbroadcastLayer, self).__init__(
            [incoming, broadcast_layer.input_layer], **kwargs)

    def _restore(self, folded_sizes, kept_sizes, last_size):
        # sizes in the moved order (broadcasted axes first), then back in place
        b = self.broadcast_layer
        moved = list(folded_sizes) + list(kept_sizes[:-1]) + [last_size] if kept_sizes \
            else list(folded_sizes)
        order = b.broadcasted_axes + b.kept_axes
        inverse = [order.index(a) for a in range(len(order))]
        return moved, inverse

    def get_output_shape_for(self, input_shapes):
        shape, original = input_shapes
        b = self.broadcast_layer
        moved, inverse = self._restore([original[a] for a in b.broadcasted_axes],
                                       [original[a] for a in b.kept_axes], shape[-1])
        return tuple(moved[i] for i in inverse)

    def get_output_for(self, inputs, **kwargs):
        folded, original = inputs
        b = self.broadcast_layer
        moved, inverse = self._restore([original.shape[a] for a in b.broadcasted_axes],
                                       [original.shape[a] for a in b.kept_axes],
                                       folded.shape[-1])
        return folded.reshape(moved, ndim=len(moved)).dimshuffle(inverse)
