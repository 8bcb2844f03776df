"""MobileNetV2's float head (Conv_1, the average pool, the logits) as Lasagne layers, with the
int8 model's dequantised weights, against the int8 encoder's own taps on real photos.

Fixture ``mobilenet`` (the session's compiled encoder): tests/encoders/conftest.py.
"""
import numpy as np
import pytest
import theano
import theano.tensor as T
from lasagne.layers import DenseLayer, InputLayer, get_all_params, get_output

from lasagne_caption.encoders.mobilenet_v2 import (HEAD_TAPS, head_quantization, head_weights,
                                                   read_tflite_weights)
from lasagne_caption.encoders.tflite import load_tflite
from lasagne_caption.errors import UserError
from lasagne_caption.layers import RegionDenseLayer, RegionMeanLayer, mobilenet_v2_head
# the session's compiled MobileNetV2, shared, not compiled again
from tests.encoders.conftest import mobilenet, mobilenet_dir, mobilenet_path  # noqa: F401

N_PHOTOS = 8


@pytest.fixture(scope="module")
def weights(mobilenet_path):
    return head_weights(mobilenet_path)


@pytest.fixture(scope="module")
def steps(mobilenet_path):
    """The quantisation step (scale) of each uint8 tap: block16, grid, pool, logits."""
    return {tap: scale for tap, (scale, _zero_point) in head_quantization(mobilenet_path).items()}


# ---- the weights

def _head_ops(model):
    """{scope: (input, weights, bias) tensors} of the Conv_1 and logits operators."""
    out = {}
    for op in model.operators:
        if op.op == "CONV_2D":
            x, w, b = (model.tensors[i] for i in op.inputs[:3])
            for scope in ("Conv_1", "Logits/Conv2d_1c_1x1"):
                if w.scope.startswith("MobilenetV2/%s/" % scope):
                    out[scope] = (x, w, b, op)
    return out


def test_head_weights_are_the_real_values_of_the_int8_tensors(weights, mobilenet_path):
    ops = _head_ops(load_tflite(mobilenet_path))
    assert set(ops) == {"Conv_1", "Logits/Conv2d_1c_1x1"}
    assert list(weights) == ["Conv_1", "Logits"]
    for scope, key in (("Conv_1", "Conv_1"), ("Logits/Conv2d_1c_1x1", "Logits")):
        W, b = weights[key]
        x, w, bias, op = ops[scope]
        # this file quantises per tensor (one scale and zero point), uint8 weights, int32 biases
        assert w.scale.size == 1 and w.data.dtype == np.uint8 and bias.data.dtype == np.int32
        assert bias.zero_point.tolist() == [0]
        real = w.scale[0].astype(np.float64) * (w.data.astype(np.float64) - w.zero_point[0])
        assert W.dtype == np.float32 and b.dtype == np.float32
        # OHWI (1280, 1, 1, 320) / (1001, 1, 1, 1280) -> dense (in, out)
        assert np.array_equal(W, real.reshape(real.shape[0], -1).T.astype(np.float32))
        # TFLite's bias unit is input_scale * weight_scale (the int32 accumulator's)
        unit = np.float64(x.scale[0]) * np.float64(w.scale[0])
        assert np.allclose(b, bias.data * unit, rtol=1e-6, atol=0)
        assert abs(bias.scale[0] / unit - 1) < 1e-6       # the file's own bias scale agrees
    assert weights["Conv_1"][0].shape == (320, 1280) and weights["Conv_1"][1].shape == (1280,)
    assert weights["Logits"][0].shape == (1280, 1001) and weights["Logits"][1].shape == (1001,)
    # Conv_1's batch norm is folded into its weights and bias; ReLU6 is fused into the op
    assert "BatchNorm_Fold/bias" in ops["Conv_1"][2].name
    assert ops["Conv_1"][3].options["activation"] == "RELU6"
    assert ops["Logits/Conv2d_1c_1x1"][3].options["activation"] is None


def test_head_weights_are_the_encoders_own(weights, mobilenet, mobilenet_path):
    W = mobilenet.net["Conv_1"].W.get_value()             # OIHW (1280, 320, 1, 1)
    assert np.array_equal(weights["Conv_1"][0], W[:, :, 0, 0].T)
    assert np.array_equal(weights["Conv_1"][1], mobilenet.net["Conv_1"].b.get_value())
    logits = mobilenet.net["Logits/Conv2d_1c_1x1"]
    assert np.array_equal(weights["Logits"][0], logits.W.get_value())
    assert np.array_equal(weights["Logits"][1], logits.b.get_value())
    _, out_quant, _ = read_tflite_weights(mobilenet_path)
    assert head_quantization(mobilenet_path) == {tap: out_quant[s] for tap, s in HEAD_TAPS.items()}


def test_head_weights_of_a_missing_file_is_one_line(tmp_path):
    for read in (head_weights, head_quantization):
        with pytest.raises(UserError, match="does not exist: download "
                                            "mobilenet_v2_1.0_224_quant") as exc:
            read(tmp_path / "nothing.tflite")
        assert "\n" not in str(exc.value)


# ---- the layers

def test_shapes():
    regions = InputLayer((None, 49, 320))
    head = mobilenet_v2_head(regions)
    assert head["grid"].output_shape == (None, 49, 1280)
    assert head["pool"].output_shape == (None, 1280)
    assert head["logits"].output_shape == (None, 1001)
    assert isinstance(head["logits"], DenseLayer)
    assert [p.get_value().shape for p in get_all_params(head["logits"], trainable=True)] == \
        [(320, 1280), (1280,), (1280, 1001), (1001,)]
    layer = RegionDenseLayer((2, 5, 3), 4, b=None)
    assert layer.output_shape == (2, 5, 4) and layer.get_params() == [layer.W]
    assert RegionMeanLayer((2, 5, 3)).output_shape == (2, 3)
    with pytest.raises(ValueError, match=r"needs input \(N, L, C\)"):
        RegionDenseLayer((2, 3), 4)
    with pytest.raises(ValueError, match=r"needs input \(N, L, C\)"):
        RegionMeanLayer((2, 3))
    # evaluated: (N, L, C) -> (N, L, U) -> (N, U) -> (N, K), any N and L
    small = mobilenet_v2_head(InputLayer((None, None, 3)), num_units=4, num_classes=2)
    x = T.tensor3("x")
    fn = theano.function([x], get_output([small[k] for k in ("grid", "pool", "logits")], x))
    grid, pool, logits = fn(np.random.RandomState(0).rand(2, 5, 3).astype(theano.config.floatX))
    assert grid.shape == (2, 5, 4) and pool.shape == (2, 4) and logits.shape == (2, 2)
    assert np.allclose(pool, grid.mean(axis=1), atol=1e-6)
    assert grid.min() >= 0 and grid.max() <= 6


def test_gradients_reach_w_and_b():
    rng = np.random.RandomState(1)
    X = rng.randn(3, 5, 4).astype(theano.config.floatX)
    W1 = rng.randn(4, 6).astype(theano.config.floatX)
    b1 = np.array([-9, 0, 0.5, 1, 3, 9], theano.config.floatX)  # a unit stuck at 0, one at 6
    W2 = rng.randn(6, 2).astype(theano.config.floatX)
    b2 = np.zeros(2, theano.config.floatX)
    head = mobilenet_v2_head(InputLayer((None, 5, 4)), (W1, b1), (W2, b2))
    R = rng.randn(3, 2).astype(theano.config.floatX)
    x = T.tensor3("x")
    loss = (get_output(head["logits"], x) * R).sum()
    params = get_all_params(head["logits"], trainable=True)
    grads = theano.function([x], T.grad(loss, params))(X)
    # numpy: d loss / d logits = R; through the mean and the ReLU6 to Conv_1's W and b
    pre = X.reshape(-1, 4).astype(np.float64) @ W1 + b1
    grid = np.clip(pre, 0, 6).reshape(3, 5, 6)
    d_grid = np.repeat((R @ W2.T)[:, None, :] / 5, 5, axis=1).reshape(-1, 6)
    d_pre = d_grid * ((pre > 0) & (pre < 6))
    expected = [X.reshape(-1, 4).T @ d_pre, d_pre.sum(0), grid.mean(1).T @ R, R.sum(0)]
    for got, want, p in zip(grads, expected, params):
        assert got.shape == p.get_value().shape
        assert np.allclose(got, want, rtol=1e-4, atol=1e-5), p.name
    assert np.abs(grads[0]).sum() > 0 and np.abs(grads[1]).sum() > 0
    assert grads[1][0] == 0 and grads[1][-1] == 0        # ReLU6 passes nothing when clipped


# ---- against the int8 encoder on real photos

@pytest.fixture(scope="module")
def photos(flickr8k_dir, mobilenet, weights):
    """The encoder's taps and the float head's outputs for the first Flickr8k test photos."""
    names = (flickr8k_dir / "Flickr_8k.testImages.txt").read_text().split()[:N_PHOTOS]
    taps = mobilenet.encode([str(flickr8k_dir / "images" / n) for n in names], progress=False)
    head = mobilenet_v2_head(InputLayer((None, 49, 320)), weights["Conv_1"], weights["Logits"])
    x = T.tensor3("block16")
    fn = theano.function([x], get_output([head[k] for k in ("grid", "pool", "logits")], x,
                                         deterministic=True))
    # the block16 tap (N, 7, 7, 320) NHWC -> regions (N, 49, 320), as a block16 dataset stores it
    grid, pool, logits = fn(taps["block16"].reshape(-1, 49, 320))
    return taps, {"grid": grid, "pool": pool, "logits": logits}


def test_float_head_reproduces_the_int8_grid(photos, steps):
    """Same input (the block16 tap), same weights: the encoder's grid is the head's
    Conv_1 output rounded to its uint8 grid, so they differ by at most half a step
    (here 0.4995 of a step; float32 sums in another order add ~1e-6)."""
    taps, head = photos
    scale = steps["grid"]
    error = np.abs(head["grid"] - taps["grid"].reshape(-1, 49, 1280))
    assert error.max() <= 0.5 * scale * (1 + 1e-3)
    assert head["grid"].min() >= 0 and head["grid"].max() <= 6


def test_float_head_reproduces_the_int8_pool_and_logits(photos, weights, steps):
    """The int8 pool is the mean of the *rounded* grid, rounded again: the head's pool is
    within half a pool step (the grid's rounding, averaged) plus half a step (the pool's):
    one step (measured 0.55). The logits layer alone, on the encoder's own pool, is within
    half a logits step (the output's rounding). End to end, the pool's rounding errors
    (about uniform, sd step/sqrt(12)) go through the logits weights too: each logit gets
    sd sigma_j = |W[:, j]|_2 * pool_step / sqrt(12) of them (about 0.1 of a logits step,
    at most 0.14); we allow half a step plus 5 sigma_j (measured max 0.82 of a step)."""
    taps, head = photos
    W, b = weights["Logits"]
    pool_step, logits_step = steps["pool"], steps["logits"]
    d_pool = head["pool"] - taps["pool"]
    assert np.abs(d_pool).max() <= 1.0 * pool_step
    # the logits layer alone, on the int8 model's pool
    alone = taps["pool"].astype(np.float64) @ W + b
    assert np.abs(alone - taps["logits"]).max() <= 0.5 * logits_step * (1 + 1e-3)
    # end to end: exactly the output's rounding plus the pool's error through W ...
    through = d_pool.astype(np.float64) @ W
    assert np.abs(head["logits"] - through - taps["logits"]).max() <= 0.5 * logits_step * 1.001
    # ... which is bounded statistically per class
    sigma = np.sqrt((W.astype(np.float64) ** 2).sum(0)) * pool_step / np.sqrt(12)
    assert np.all(np.abs(head["logits"] - taps["logits"]) <= 0.5 * logits_step + 5 * sigma)


def test_float_head_top1_is_the_encoders(photos):
    """Agreement is certain where the encoder's top-2 margin exceeds twice the end-to-end
    error; these photos agree even where it does not (margins down to 2 logits steps)."""
    taps, head = photos
    assert head["logits"].shape == (N_PHOTOS, 1001)
    assert head["logits"].argmax(1).tolist() == taps["logits"].argmax(1).tolist()
