"""Concat and Slice layers with Lasagne master's shape rule: unknown stays unknown.

Lasagne 0.1 computes output shapes with arithmetic that fails on ``None``
(a variable batch or time size), which a caption network always has.
"""
import lasagne


class ConcatLayer(lasagne.layers.ConcatLayer):
    """Lasagne's ConcatLayer, accepting ``None`` sizes along ``axis``.

    Examples
    --------
    >>> from lasagne.layers import InputLayer
    >>> ConcatLayer([InputLayer((None, 1, 8)), InputLayer((None, None, 8))]).output_shape
    (None, None, 8)
    """

    def get_output_shape_for(self, input_shapes):
        sizes = [shape[self.axis] for shape in input_shapes]
        output_shape = list(input_shapes[0])
        output_shape[self.axis] = None if None in sizes else sum(sizes)
        return tuple(output_shape)


class SliceLayer(lasagne.layers.SliceLayer):
    """Lasagne's SliceLayer, accepting a ``None`` size along ``axis``.

    Examples
    --------
    >>> from lasagne.layers import InputLayer
    >>> SliceLayer(InputLayer((None, None, 8)), slice(1, None), axis=1).output_shape
    (None, None, 8)
    """

    def get_output_shape_for(self, input_shape):
        if input_shape[self.axis] is not None:
            return super(SliceLayer, self).get_output_shape_for(input_shape)
        output_shape = list(input_shape)
        if isinstance(self.slice, int):
            del output_shape[self.axis]
        return tuple(output_shape)
