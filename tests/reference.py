"""Independent numpy versions of Lasagne master's recurrent equations and the seminar network.

Written from Lasagne master's ``lasagne/layers/recurrent.py`` (LSTMLayer and
GRULayer ``step``/``step_masked``) and the seminar notebook, in float64,
without Theano: the tests hold the toolkit's layers, compiled train/val
functions and loaded seminar checkpoints against these.
"""
import numpy as np


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def lstm(x, mask, p, cell0, hid0, variant="master", backwards=False):
    """Hidden states (batch, time, units) of a peephole LSTM.

    ``p`` maps Lasagne's parameter names (``W_in_to_ingate``, ...,
    ``W_cell_to_outgate``) to arrays; ``mask`` (batch, time) or None; the
    initial states are (batch, units).
    """
    x = np.asarray(x, np.float64)
    steps = range(x.shape[1])[::-1] if backwards else range(x.shape[1])
    c, h = np.asarray(cell0, np.float64), np.asarray(hid0, np.float64)
    out = np.zeros(x.shape[:2] + (h.shape[1],))

    def pre(gate, x_t):
        return x_t @ p["W_in_to_" + gate] + h @ p["W_hid_to_" + gate] + p["b_" + gate]

    for t in steps:
        i = sigmoid(pre("ingate", x[:, t]) + c * p["W_cell_to_ingate"])
        f = sigmoid(pre("forgetgate", x[:, t]) + c * p["W_cell_to_forgetgate"])
        new_c = f * c + i * np.tanh(pre("cell", x[:, t]))
        if variant == "master":
            o = sigmoid(pre("outgate", x[:, t]) + new_c * p["W_cell_to_outgate"])
        else:   # PyPI Lasagne 0.1
            o = sigmoid(pre("outgate", x[:, t])) + new_c * p["W_cell_to_outgate"]
        new_h = o * np.tanh(new_c)
        if mask is not None:
            m = mask[:, t:t + 1] != 0
            new_c, new_h = np.where(m, new_c, c), np.where(m, new_h, h)
        c, h = new_c, new_h
        out[:, t] = h
    return out


def gru(x, mask, p, hid0):
    """Hidden states (batch, time, units) of Lasagne master's GRU."""
    x = np.asarray(x, np.float64)
    h = np.asarray(hid0, np.float64)
    out = np.zeros(x.shape[:2] + (h.shape[1],))
    for t in range(x.shape[1]):
        x_t = x[:, t]
        r = sigmoid(x_t @ p["W_in_to_resetgate"] + p["b_resetgate"] + h @ p["W_hid_to_resetgate"])
        u = sigmoid(x_t @ p["W_in_to_updategate"] + p["b_updategate"]
                    + h @ p["W_hid_to_updategate"])
        c = np.tanh(x_t @ p["W_in_to_hidden_update"] + p["b_hidden_update"]
                    + r * (h @ p["W_hid_to_hidden_update"]))
        new_h = (1 - u) * h + u * c
        if mask is not None:
            new_h = np.where(mask[:, t:t + 1] != 0, new_h, h)
        h = new_h
        out[:, t] = h
    return out


SEMINAR_PARAM_NAMES = [
    # master's get_all_param_values order for the seminar network
    "embedding.W", "image_projection.W", "image_projection.b",
    "W_in_to_ingate", "W_hid_to_ingate", "b_ingate",
    "W_in_to_forgetgate", "W_hid_to_forgetgate", "b_forgetgate",
    "W_in_to_cell", "W_hid_to_cell", "b_cell",
    "W_in_to_outgate", "W_hid_to_outgate", "b_outgate",
    "W_cell_to_ingate", "W_cell_to_forgetgate", "W_cell_to_outgate",
    "hid_init", "output.W", "output.b"]


def seminar_params(n_tokens, code_size, embed=6, units=5, seed=0):
    """Random parameters of the seminar network, named as in SEMINAR_PARAM_NAMES."""
    rng = np.random.RandomState(seed)
    shapes = {"embedding.W": (n_tokens, embed), "image_projection.W": (code_size, units),
              "image_projection.b": (units,), "hid_init": (1, units),
              "output.W": (units, n_tokens), "output.b": (n_tokens,)}
    for gate in ("ingate", "forgetgate", "cell", "outgate"):
        shapes.update({"W_in_to_" + gate: (embed, units), "W_hid_to_" + gate: (units, units),
                       "b_" + gate: (units,)})
    for gate in ("ingate", "forgetgate", "outgate"):
        shapes["W_cell_to_" + gate] = (units,)
    return {name: (rng.randn(*shapes[name]) * 0.5).astype("float32")
            for name in SEMINAR_PARAM_NAMES}


def seminar_forward(p, codes, sentences, variant="master"):
    """The seminar network with dropout off: hidden states and the masked loss.

    ``sentences`` (batch, time) int with -1 padding. The loss is the
    next-word cross-entropy averaged over real (non-padding) targets.
    """
    sentences = np.asarray(sentences)
    mask = (sentences != -1).astype(np.float64)
    words = p["embedding.W"].astype(np.float64)[np.maximum(sentences, 0)]
    # DenseLayer's default nonlinearity is the rectifier
    cell0 = np.maximum(np.asarray(codes, np.float64) @ p["image_projection.W"]
                       + p["image_projection.b"], 0)
    hid0 = np.repeat(p["hid_init"].astype(np.float64), len(codes), axis=0)
    hidden = lstm(words, mask, p, cell0, hid0, variant)
    logits = hidden @ p["output.W"] + p["output.b"]
    logits -= logits.max(axis=-1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    targets = sentences[:, 1:]
    real = targets != -1
    picked = np.take_along_axis(log_probs[:, :-1], np.maximum(targets, 0)[..., None], -1)[..., 0]
    return hidden, -picked[real].mean()
