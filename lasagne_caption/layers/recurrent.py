"""LSTM and GRU layers whose initial state may be a Lasagne Layer.

PyPI Lasagne 0.1 accepts ``cell_init``/``hid_init`` only as a TensorVariable:
the graph behind it is invisible to ``get_all_params``, ``deterministic=True``
never reaches its dropout and no gradient reaches its weights. The seminar
(written for Lasagne master) passes a Layer (the image projection). These
classes take a Layer as an extra incoming, as Lasagne master does, keep the
parameter names and order of master (so ``get_all_param_values`` lists match
the seminar's ``wrote_net.params``), and expose :meth:`step` so a caption can
be generated one word at a time with the same weights.
"""
import numpy as np
import theano
import theano.tensor as T
from lasagne import init, nonlinearities
from lasagne.layers import Gate, Layer, MergeLayer

from ..ops import LSTMCell


class _RecurrentBase(MergeLayer):
    """Incomings: the input, then the optional mask, then any init Layers.

    Subclasses add their weights first and then call :meth:`add_init_params`,
    which is the order Lasagne master uses (it fixes the parameter order).
    """

    init_names = ()

    def __init__(self, incoming, num_units, inits, mask_input=None, backwards=False,
                 learn_init=False, gradient_steps=-1, grad_clipping=0,
                 only_return_final=False, **kwargs):
        incomings = [incoming]
        self.mask_incoming_index = -1
        if mask_input is not None:
            incomings.append(mask_input)
            self.mask_incoming_index = len(incomings) - 1
        self.init_incoming_index = {}
        for name in self.init_names:
            if isinstance(inits[name], Layer):
                if inits[name].output_shape[1:] != (num_units,):
                    raise ValueError("%s layer must have output shape (batch, %d), got %r"
                                     % (name, num_units, inits[name].output_shape))
                incomings.append(inits[name])
                self.init_incoming_index[name] = len(incomings) - 1
            elif isinstance(inits[name], T.TensorVariable) and inits[name].ndim != 2:
                raise ValueError("%s given as a TensorVariable must be (batch, %d)"
                                 % (name, num_units))
        super(_RecurrentBase, self).__init__(incomings, **kwargs)
        self.num_units = num_units
        self.num_inputs = int(np.prod(self.input_shapes[0][2:]))
        self.backwards = backwards
        self.learn_init = learn_init
        self.gradient_steps = gradient_steps
        self.grad_clipping = grad_clipping
        self.only_return_final = only_return_final

    def add_init_params(self, inits):
        for name in self.init_names:
            value = inits[name]
            if not isinstance(value, (Layer, T.TensorVariable)):
                value = self.add_param(value, (1, self.num_units), name=name,
                                       trainable=self.learn_init, regularizable=False)
            setattr(self, name, value)

    def get_output_shape_for(self, input_shapes):
        shape = input_shapes[0]
        if self.only_return_final:
            return shape[0], self.num_units
        return shape[0], shape[1], self.num_units

    def initial_states(self, inputs, num_batch):
        """The (batch, units) start of every state, in ``init_names`` order.

        ``inputs`` are this layer's incoming outputs, as in get_output_for.
        """
        states = []
        for name in self.init_names:
            if name in self.init_incoming_index:
                states.append(inputs[self.init_incoming_index[name]])
            elif isinstance(getattr(self, name), theano.compile.SharedVariable):
                # repeat the learned (1, units) row for every sequence
                states.append(T.dot(T.ones((num_batch, 1)), getattr(self, name)))
            else:
                states.append(getattr(self, name))
        return states

    def get_output_for(self, inputs, **kwargs):
        input = inputs[0]
        if input.ndim > 3:
            input = T.flatten(input, 3)
        # scan iterates over the first axis: (time, batch, features)
        input = self.precompute_input(input.dimshuffle(1, 0, 2))
        states = self.initial_states(inputs, input.shape[1])
        weights = self.step_weights()
        n_states = len(states)

        def step(input_n, *args):
            return self.step(input_n, *args[:n_states])

        if self.mask_incoming_index > 0:
            mask = inputs[self.mask_incoming_index].dimshuffle(1, 0, 'x')

            def masked_step(input_n, mask_n, *args):
                previous = args[:n_states]
                new = self.step(input_n, *previous)
                # a padded step keeps the previous state
                return [T.switch(mask_n, n, p) for n, p in zip(new, previous)]
            fn, sequences = masked_step, [input, mask]
        else:
            fn, sequences = step, [input]
        outputs = theano.scan(fn=fn, sequences=sequences, outputs_info=states,
                              go_backwards=self.backwards,
                              truncate_gradient=self.gradient_steps,
                              non_sequences=weights, strict=True)[0]
        hid_out = outputs[-1] if isinstance(outputs, (list, tuple)) else outputs
        if self.only_return_final:
            return hid_out[-1]
        hid_out = hid_out.dimshuffle(1, 0, 2)
        return hid_out[:, ::-1] if self.backwards else hid_out

    def step_weights(self):
        """Shared variables the step uses (scan's non_sequences)."""
        raise NotImplementedError

    def precompute_input(self, input):
        """Input-to-hidden products for all steps at once: (..., features) -> (..., k*units)."""
        raise NotImplementedError

    def step(self, input_n, *states):
        """One time step: precomputed input (batch, k*units) and states -> new states.

        The last state is the hidden state. Used inside scan and, compiled on
        its own, to generate a caption one word at a time.
        """
        raise NotImplementedError

    def _clip(self, x):
        if self.grad_clipping:
            return theano.gradient.grad_clip(x, -self.grad_clipping, self.grad_clipping)
        return x

    def _slice(self, x, n):
        return x[:, n * self.num_units:(n + 1) * self.num_units]


class LSTMLayer(_RecurrentBase):
    """Long short-term memory layer with Lasagne master's semantics.

    Parameters
    ----------
    incoming : Layer
        (batch, time, features) input.
    num_units : int
    ingate, forgetgate, cell, outgate : lasagne.layers.Gate
    nonlinearity : callable
        Applied to the cell before the output gate.
    cell_init, hid_init : Layer, TensorVariable, callable or array
        Initial cell / hidden state. A Layer with output (batch, num_units)
        becomes an incoming: its parameters, dropout and gradients are part
        of the network.
    peepholes : bool
        Cell-to-gate connections (``W_cell_to_*``), on by default as in Lasagne.
    grad_clipping : float
        Clip the gradient of the gate pre-activations (0: no clipping).
    mask_input : Layer or None
        (batch, time) mask, 1 for real steps; padded steps keep the state.
    backwards, learn_init, gradient_steps, only_return_final
        As in Lasagne.

    With peepholes and the default nonlinearities (the seminar's LSTM) a
    step runs as one C op, :class:`lasagne_caption.ops.LSTMCell`; the math
    is the same.

    Output: (batch, time, num_units), or (batch, num_units) with
    ``only_return_final``.

    Examples
    --------
    >>> from lasagne.layers import InputLayer, DenseLayer, get_all_params
    >>> l_in = InputLayer((None, None, 8))
    >>> l_img = DenseLayer(InputLayer((None, 5)), 16)
    >>> l_lstm = LSTMLayer(l_in, 16, cell_init=l_img)
    >>> l_img.W in get_all_params(l_lstm)
    True
    >>> l_lstm.output_shape
    (None, None, 16)
    """

    init_names = ("cell_init", "hid_init")
    gate_names = ("ingate", "forgetgate", "cell", "outgate")

    def __init__(self, incoming, num_units, ingate=Gate(), forgetgate=Gate(),
                 cell=Gate(W_cell=None, nonlinearity=nonlinearities.tanh),
                 outgate=Gate(), nonlinearity=nonlinearities.tanh,
                 cell_init=init.Constant(0.), hid_init=init.Constant(0.),
                 peepholes=True, **kwargs):
        inits = dict(cell_init=cell_init, hid_init=hid_init)
        super(LSTMLayer, self).__init__(incoming, num_units, inits, **kwargs)
        self.nonlinearity = nonlinearity or nonlinearities.identity
        self.peepholes = peepholes
        gates = (ingate, forgetgate, cell, outgate)
        for gate, name in zip(gates, self.gate_names):
            _add_gate_params(self, gate, name)
        if peepholes:
            for gate, name in zip(gates, self.gate_names):
                if name != "cell":
                    setattr(self, "W_cell_to_" + name, self.add_param(
                        gate.W_cell, (num_units,), name="W_cell_to_" + name))
        self.add_init_params(inits)

    def _stacked(self, prefix, axis=1):
        return T.concatenate([getattr(self, prefix + n) for n in self.gate_names], axis=axis)

    def step_weights(self):
        weights = [self.W_hid_to_ingate, self.W_hid_to_forgetgate,
                   self.W_hid_to_cell, self.W_hid_to_outgate]
        if self.peepholes:
            weights += [self.W_cell_to_ingate, self.W_cell_to_forgetgate,
                        self.W_cell_to_outgate]
        return weights

    def precompute_input(self, input):
        return T.dot(input, self._stacked("W_in_to_")) + self._stacked("b_", axis=0)

    def _fused(self):
        # the seminar's LSTM (peepholes, default nonlinearities): one C op per step
        return self.peepholes and (
            self.nonlinearity_ingate, self.nonlinearity_forgetgate, self.nonlinearity_cell,
            self.nonlinearity_outgate, self.nonlinearity) == (
            nonlinearities.sigmoid, nonlinearities.sigmoid, nonlinearities.tanh,
            nonlinearities.sigmoid, nonlinearities.tanh)

    def step(self, input_n, cell_previous, hid_previous):
        gates = self._clip(input_n + T.dot(hid_previous, self._stacked("W_hid_to_")))
        if self._fused():
            cell, hid = LSTMCell()(gates, cell_previous, self.W_cell_to_ingate,
                                   self.W_cell_to_forgetgate, self.W_cell_to_outgate)[:2]
            return [cell, hid]
        ingate, forgetgate, cell_input, outgate = [self._slice(gates, n) for n in range(4)]
        if self.peepholes:
            ingate += cell_previous * self.W_cell_to_ingate
            forgetgate += cell_previous * self.W_cell_to_forgetgate
        ingate = self.nonlinearity_ingate(ingate)
        forgetgate = self.nonlinearity_forgetgate(forgetgate)
        cell_input = self.nonlinearity_cell(cell_input)
        outgate = self.nonlinearity_outgate(outgate)
        cell = forgetgate * cell_previous + ingate * cell_input
        if self.peepholes:
            # after the sigmoid, as in every Lasagne release: seminar weights
            # were trained with exactly this
            outgate += cell * self.W_cell_to_outgate
        hid = outgate * self.nonlinearity(cell)
        return [cell, hid]


class GRULayer(_RecurrentBase):
    """Gated recurrent unit layer with Lasagne master's semantics.

    Parameters are those of :class:`LSTMLayer` with gates ``resetgate``,
    ``updategate`` and ``hidden_update`` and a single state ``hid_init``
    (a Layer is accepted, e.g. the image projection).

    Examples
    --------
    >>> from lasagne.layers import InputLayer
    >>> GRULayer(InputLayer((None, None, 8)), 16).output_shape
    (None, None, 16)
    """

    init_names = ("hid_init",)
    gate_names = ("resetgate", "updategate", "hidden_update")

    def __init__(self, incoming, num_units, resetgate=Gate(W_cell=None),
                 updategate=Gate(W_cell=None),
                 hidden_update=Gate(W_cell=None, nonlinearity=nonlinearities.tanh),
                 hid_init=init.Constant(0.), **kwargs):
        inits = dict(hid_init=hid_init)
        kwargs.setdefault("learn_init", True)   # Lasagne's default for the GRU
        super(GRULayer, self).__init__(incoming, num_units, inits, **kwargs)
        # Lasagne creates the update gate first; the order fixes the param list
        for gate, name in ((updategate, "updategate"), (resetgate, "resetgate"),
                           (hidden_update, "hidden_update")):
            _add_gate_params(self, gate, name)
        self.add_init_params(inits)

    def _stacked(self, prefix, axis=1):
        return T.concatenate([getattr(self, prefix + n) for n in self.gate_names], axis=axis)

    def step_weights(self):
        return [self.W_hid_to_resetgate, self.W_hid_to_updategate,
                self.W_hid_to_hidden_update]

    def precompute_input(self, input):
        return T.dot(input, self._stacked("W_in_to_")) + self._stacked("b_", axis=0)

    def step(self, input_n, hid_previous):
        hid_input = self._clip(T.dot(hid_previous, self._stacked("W_hid_to_")))
        input_n = self._clip(input_n)
        resetgate = self.nonlinearity_resetgate(
            self._slice(hid_input, 0) + self._slice(input_n, 0))
        updategate = self.nonlinearity_updategate(
            self._slice(hid_input, 1) + self._slice(input_n, 1))
        hidden_update = self._clip(self._slice(input_n, 2) + resetgate * self._slice(hid_input, 2))
        hidden_update = self.nonlinearity_hidden_update(hidden_update)
        hid = (1 - updategate) * hid_previous + updategate * hidden_update
        return [hid]


def _add_gate_params(layer, gate, name):
    """W_in_to_NAME, W_hid_to_NAME, b_NAME and the gate's nonlinearity, as Lasagne names them."""
    layer.__dict__["W_in_to_" + name] = layer.add_param(
        gate.W_in, (layer.num_inputs, layer.num_units), name="W_in_to_" + name)
    layer.__dict__["W_hid_to_" + name] = layer.add_param(
        gate.W_hid, (layer.num_units, layer.num_units), name="W_hid_to_" + name)
    layer.__dict__["b_" + name] = layer.add_param(
        gate.b, (layer.num_units,), name="b_" + name, regularizable=False)
    layer.__dict__["nonlinearity_" + name] = gate.nonlinearity or nonlinearities.identity
