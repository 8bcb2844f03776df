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
from lasagne.utils import unroll_scan

from ..ops import LASAGNE_01, LSTM_VARIANTS, MASTER, LSTMCell

__all__ = ["LSTMLayer", "GRULayer", "MASTER", "LASAGNE_01", "LSTM_VARIANTS"]


class _RecurrentBase(MergeLayer):
    """Incomings: the input, then the optional mask, then any init Layers.

    Subclasses add their weights first and then call :meth:`add_init_params`,
    which is the order Lasagne master uses (it fixes the parameter order).
    ``init_names`` lists the states in the order the step takes them;
    ``init_incoming_order`` the order master appends init Layers to the
    incomings (``hid_init`` before ``cell_init``), which fixes the order of
    ``get_all_params`` when both are Layers.
    """

    init_names = ()
    init_incoming_order = ()

    def __init__(self, incoming, num_units, inits, mask_input=None, backwards=False,
                 learn_init=False, gradient_steps=-1, grad_clipping=0, unroll_scan=False,
                 precompute_input=True, only_return_final=False, **kwargs):
        incomings = [incoming]
        self.mask_incoming_index = -1
        if mask_input is not None:
            incomings.append(mask_input)
            self.mask_incoming_index = len(incomings) - 1
        self.init_incoming_index = {}
        for name in self.init_incoming_order:
            if isinstance(inits[name], Layer):
                if inits[name].output_shape[1:] != (num_units,):
                    raise ValueError("%s layer must have output shape (batch, %d), got %r"
                                     % (name, num_units, inits[name].output_shape))
                incomings.append(inits[name])
                self.init_incoming_index[name] = len(incomings) - 1
            elif isinstance(inits[name], T.TensorVariable) and inits[name].ndim != 2:
                raise ValueError("When %s is provided as a TensorVariable, it should have 2 "
                                 "dimensions and have shape (num_batch, num_units)" % name)
        super(_RecurrentBase, self).__init__(incomings, **kwargs)
        self.num_units = num_units
        self.backwards = backwards
        self.learn_init = learn_init
        self.gradient_steps = gradient_steps
        self.grad_clipping = grad_clipping
        self.unroll_scan = unroll_scan
        self.precompute_input = precompute_input
        self.only_return_final = only_return_final
        if unroll_scan and gradient_steps != -1:
            raise ValueError("Gradient steps must be -1 when unroll_scan is true.")
        input_shape = self.input_shapes[0]
        if unroll_scan and input_shape[1] is None:
            raise ValueError("Input sequence length cannot be specified as None when "
                             "unroll_scan is True")
        self.num_inputs = int(np.prod(input_shape[2:]))

    # Lasagne master names the incoming indices one by one
    @property
    def hid_init_incoming_index(self):
        return self.init_incoming_index.get("hid_init", -1)

    @property
    def cell_init_incoming_index(self):
        return self.init_incoming_index.get("cell_init", -1)

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
            else:
                value = getattr(self, name)
                if isinstance(value, theano.compile.SharedVariable) or value.broadcastable[0]:
                    # repeat a (1, units) row for every sequence, as master does
                    value = T.dot(T.ones((num_batch, 1)), value)
                # else a (batch, units) TensorVariable, used as it is (Lasagne 0.1)
                states.append(value)
        return states

    def get_output_for(self, inputs, **kwargs):
        input = inputs[0]
        if input.ndim > 3:
            input = T.flatten(input, 3)
        # scan iterates over the first axis: (time, batch, features)
        input = input.dimshuffle(1, 0, 2)
        num_batch = input.shape[1]
        weights = self.step_weights()
        if self.precompute_input:
            input = self.input_products(input)
        else:
            weights = weights + self.input_weights()
        states = self.initial_states(inputs, num_batch)
        n_states = len(states)
        masked = self.mask_incoming_index > 0

        def step(input_n, *args):
            mask_n = None
            if masked:
                mask_n, args = args[0], args[1:]
            previous = args[:n_states]
            if not self.precompute_input:
                input_n = self.input_products(input_n)
            new = self.step(input_n, *previous)
            if masked:
                new = [keep_state_where_padded(n, p, mask_n) for n, p in zip(new, previous)]
            return new

        sequences = [input]
        if masked:
            sequences.append(inputs[self.mask_incoming_index].dimshuffle(1, 0, 'x'))
        if self.unroll_scan:
            outputs = unroll_scan(fn=step, sequences=sequences, outputs_info=states,
                                  go_backwards=self.backwards, non_sequences=weights,
                                  n_steps=self.input_shapes[0][1])
        else:
            outputs = theano.scan(fn=step, sequences=sequences, outputs_info=states,
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

    def input_weights(self):
        """The input-to-hidden shared variables (non_sequences without precompute_input)."""
        return ([getattr(self, "W_in_to_" + n) for n in self.gate_names]
                + [getattr(self, "b_" + n) for n in self.gate_names])

    def input_products(self, input):
        """Input-to-hidden products: (..., features) -> (..., k*units), gates stacked."""
        return T.dot(input, self._stacked("W_in_to_")) + self._stacked("b_", axis=0)

    def step(self, input_n, *states):
        """One time step: input products (batch, k*units) and states -> new states.

        The last state is the hidden state. Used inside scan and, compiled on
        its own, to generate a caption one word at a time.
        """
        raise NotImplementedError

    def _stacked(self, prefix, axis=1):
        return T.concatenate([getattr(self, prefix + n) for n in self.gate_names], axis=axis)

    def _clip(self, x):
        if self.grad_clipping:
            return theano.gradient.grad_clip(x, -self.grad_clipping, self.grad_clipping)
        return x

    def _slice(self, x, n):
        s = x[:, n * self.num_units:(n + 1) * self.num_units]
        # one unit: keep the column broadcastable like the state, or scan
        # refuses the step's output type (master, PR #792)
        return T.addbroadcast(s, 1) if self.num_units == 1 else s


def keep_state_where_padded(new, previous, mask_n):
    """Lasagne master's masking: ``new`` where the mask is nonzero, ``previous`` elsewhere.

    A switch, as on master since PR #554; Lasagne 0.1 computed
    ``new*m + previous*(1 - m)``, the same for a 0/1 mask and finite
    states, but not when a padded step overflows (0 * inf is NaN).
    """
    return T.switch(mask_n, new, previous)


class LSTMLayer(_RecurrentBase):
    """Long short-term memory layer computing Lasagne master's equations.

    .. math::
        i_t &= \\sigma_i(x_t W_{xi} + h_{t-1} W_{hi} + w_{ci} \\odot c_{t-1} + b_i)\\\\
        f_t &= \\sigma_f(x_t W_{xf} + h_{t-1} W_{hf} + w_{cf} \\odot c_{t-1} + b_f)\\\\
        c_t &= f_t \\odot c_{t-1} + i_t \\odot \\sigma_c(x_t W_{xc} + h_{t-1} W_{hc} + b_c)\\\\
        o_t &= \\sigma_o(x_t W_{xo} + h_{t-1} W_{ho} + w_{co} \\odot c_t + b_o)\\\\
        h_t &= o_t \\odot \\sigma_h(c_t)

    The output-gate peephole is inside the sigmoid, as on Lasagne master
    since PR #449 (2015-10-02), which the seminar ran on. PyPI's Lasagne 0.1
    adds it after the sigmoid; ``variant="lasagne-0.1"`` computes that, for
    checkpoints trained with it (this toolkit's before version 0.2).

    Parameters
    ----------
    incoming : Layer or tuple
        (batch, time, features...) input; trailing dimensions are flattened.
    num_units : int
    ingate, forgetgate, cell, outgate : lasagne.layers.Gate
    nonlinearity : callable
        :math:`\\sigma_h`, applied to the cell before the output gate.
    cell_init, hid_init : Layer, callable, array, shared variable or TensorVariable
        Initial cell / hidden state. A Layer with output (batch, num_units)
        becomes an incoming (master's behaviour): its parameters, dropout and
        gradients are part of the network. Anything else is a (1, num_units)
        parameter repeated for every sequence, learned if ``learn_init``; a
        (batch, num_units) TensorVariable is used as it is.
    backwards : bool
        Process the sequence from the end; the output is reversed back.
    learn_init : bool
        Train ``cell_init``/``hid_init`` when they are parameters.
    peepholes : bool
        Cell-to-gate connections (``W_cell_to_*``).
    gradient_steps : int
        Truncated backpropagation through time (-1: the whole sequence).
    grad_clipping : float
        Clip the gradient of the gate pre-activations (0: no clipping).
    unroll_scan : bool
        Write the recurrence out step by step instead of using scan (needs a
        known sequence length and ``gradient_steps=-1``).
    precompute_input : bool
        Compute the input-to-gate products for all steps before the
        recurrence (same numbers, faster).
    mask_input : Layer or None
        (batch, time) mask, 1 for real steps; padded steps keep the state.
    only_return_final : bool
        Return only the last state, (batch, num_units).
    variant : {"master", "lasagne-0.1"}
        Where the output-gate peephole goes (see above).

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
    >>> [p.name for p in l_lstm.get_params()][-4:]
    ['W_cell_to_ingate', 'W_cell_to_forgetgate', 'W_cell_to_outgate', 'hid_init']
    """

    init_names = ("cell_init", "hid_init")
    init_incoming_order = ("hid_init", "cell_init")
    gate_names = ("ingate", "forgetgate", "cell", "outgate")

    def __init__(self, incoming, num_units, ingate=Gate(), forgetgate=Gate(),
                 cell=Gate(W_cell=None, nonlinearity=nonlinearities.tanh),
                 outgate=Gate(), nonlinearity=nonlinearities.tanh,
                 cell_init=init.Constant(0.), hid_init=init.Constant(0.),
                 backwards=False, learn_init=False, peepholes=True, gradient_steps=-1,
                 grad_clipping=0, unroll_scan=False, precompute_input=True,
                 mask_input=None, only_return_final=False, variant=MASTER, **kwargs):
        if variant not in LSTM_VARIANTS:
            raise ValueError("variant must be one of %s, not %r" % (LSTM_VARIANTS, variant))
        inits = dict(cell_init=cell_init, hid_init=hid_init)
        super(LSTMLayer, self).__init__(
            incoming, num_units, inits, mask_input=mask_input, backwards=backwards,
            learn_init=learn_init, gradient_steps=gradient_steps,
            grad_clipping=grad_clipping, unroll_scan=unroll_scan,
            precompute_input=precompute_input, only_return_final=only_return_final, **kwargs)
        self.nonlinearity = nonlinearity or nonlinearities.identity
        self.peepholes = peepholes
        self.variant = variant
        gates = (ingate, forgetgate, cell, outgate)
        for gate, name in zip(gates, self.gate_names):
            _add_gate_params(self, gate, name)
        if peepholes:
            for gate, name in zip(gates, self.gate_names):
                if name != "cell":
                    setattr(self, "W_cell_to_" + name, self.add_param(
                        gate.W_cell, (num_units,), name="W_cell_to_" + name))
        self.add_init_params(inits)

    def step_weights(self):
        weights = [self.W_hid_to_ingate, self.W_hid_to_forgetgate,
                   self.W_hid_to_cell, self.W_hid_to_outgate]
        if self.peepholes:
            weights += [self.W_cell_to_ingate, self.W_cell_to_forgetgate,
                        self.W_cell_to_outgate]
        return weights

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
            cell, hid = LSTMCell(self.variant)(gates, cell_previous, self.W_cell_to_ingate,
                                               self.W_cell_to_forgetgate,
                                               self.W_cell_to_outgate)[:2]
            return [cell, hid]
        ingate, forgetgate, cell_input, outgate = [self._slice(gates, n) for n in range(4)]
        if self.peepholes:
            ingate += cell_previous * self.W_cell_to_ingate
            forgetgate += cell_previous * self.W_cell_to_forgetgate
        ingate = self.nonlinearity_ingate(ingate)
        forgetgate = self.nonlinearity_forgetgate(forgetgate)
        cell_input = self.nonlinearity_cell(cell_input)
        cell = forgetgate * cell_previous + ingate * cell_input
        if self.variant == MASTER:
            if self.peepholes:
                outgate += cell * self.W_cell_to_outgate
            outgate = self.nonlinearity_outgate(outgate)
        else:
            # Lasagne 0.1: the peephole is added after the nonlinearity
            outgate = self.nonlinearity_outgate(outgate)
            if self.peepholes:
                outgate += cell * self.W_cell_to_outgate
        hid = outgate * self.nonlinearity(cell)
        return [cell, hid]


class GRULayer(_RecurrentBase):
    """Gated recurrent unit layer computing Lasagne master's equations.

    .. math::
        r_t &= \\sigma_r(x_t W_{xr} + h_{t-1} W_{hr} + b_r)\\\\
        u_t &= \\sigma_u(x_t W_{xu} + h_{t-1} W_{hu} + b_u)\\\\
        c_t &= \\sigma_c(x_t W_{xc} + r_t \\odot (h_{t-1} W_{hc}) + b_c)\\\\
        h_t &= (1 - u_t) \\odot h_{t-1} + u_t \\odot c_t

    Parameters are those of :class:`LSTMLayer` (no peepholes, no variant)
    with gates ``resetgate``, ``updategate`` and ``hidden_update`` and a
    single state ``hid_init`` (a Layer is accepted, e.g. the image
    projection). ``learn_init`` defaults to False, as on Lasagne master
    (0.1: True).

    Examples
    --------
    >>> from lasagne.layers import InputLayer
    >>> GRULayer(InputLayer((None, None, 8)), 16).output_shape
    (None, None, 16)
    """

    init_names = ("hid_init",)
    init_incoming_order = ("hid_init",)
    gate_names = ("resetgate", "updategate", "hidden_update")

    def __init__(self, incoming, num_units, resetgate=Gate(W_cell=None),
                 updategate=Gate(W_cell=None),
                 hidden_update=Gate(W_cell=None, nonlinearity=nonlinearities.tanh),
                 hid_init=init.Constant(0.), backwards=False, learn_init=False,
                 gradient_steps=-1, grad_clipping=0, unroll_scan=False,
                 precompute_input=True, mask_input=None, only_return_final=False,
                 **kwargs):
        inits = dict(hid_init=hid_init)
        super(GRULayer, self).__init__(
            incoming, num_units, inits, mask_input=mask_input, backwards=backwards,
            learn_init=learn_init, gradient_steps=gradient_steps,
            grad_clipping=grad_clipping, unroll_scan=unroll_scan,
            precompute_input=precompute_input, only_return_final=only_return_final, **kwargs)
        # Lasagne creates the update gate first; the order fixes the param list
        for gate, name in ((updategate, "updategate"), (resetgate, "resetgate"),
                           (hidden_update, "hidden_update")):
            _add_gate_params(self, gate, name)
        self.nonlinearity_hid = self.nonlinearity_hidden_update   # master's name
        self.add_init_params(inits)

    def step_weights(self):
        return [self.W_hid_to_resetgate, self.W_hid_to_updategate,
                self.W_hid_to_hidden_update]

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
