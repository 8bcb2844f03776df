"""lasagne_caption.encoders.tflite: parsing and dequantising a real .tflite."""
import numpy as np
import pytest

from lasagne_caption.errors import UserError
from lasagne_caption.encoders.tflite import load_tflite, dequantize, Tensor


@pytest.fixture(scope="module")
def model(shared_dir):
    return load_tflite(shared_dir / "models" / "mobilenet_v2" / "mobilenet_v2_1.0_224_quant.tflite")


def test_graph(model):
    ops = [op.op for op in model.operators]
    assert ops.count("CONV_2D") == 36 and ops.count("DEPTHWISE_CONV_2D") == 17
    assert ops.count("ADD") == 10 and ops[-1] == "SOFTMAX"
    inp = model.tensor(int(model.inputs[0]))
    assert inp.shape == (1, 224, 224, 3) and inp.dtype == np.uint8
    assert inp.scale[0] == pytest.approx(0.0078125) and inp.zero_point[0] == 128
    assert model.operators[0].options["stride"] == (2, 2)
    assert model.operators[0].options["padding"] == "SAME"
    assert model.operators[0].options["activation"] == "RELU6"
    logits = model.tensor("MobilenetV2/Logits/Squeeze1")
    assert logits.shape == (1, 1001)
    producers = model.producers()
    assert producers[logits.index].op == "RESHAPE"


def test_dequantize_weights(model):
    w = model.tensors[model.operators[0].inputs[1]]
    assert w.data.dtype == np.uint8 and w.shape == (32, 3, 3, 3)
    real = dequantize(w)
    assert real.dtype == np.float32
    np.testing.assert_allclose(real, w.scale[0] * (w.data.astype(np.float32) - w.zero_point[0]),
                               rtol=1e-6)
    b = model.tensors[model.operators[0].inputs[2]]
    assert b.data.dtype == np.int32
    np.testing.assert_allclose(dequantize(b), b.scale[0] * b.data, rtol=1e-6)


def test_dequantize_per_channel():
    data = np.array([[-2, 0, 2], [10, 20, 30]], np.int8)
    t = Tensor(0, "w", data.shape, np.int8, data, np.array([0.5, 0.1], np.float32),
               np.array([0, 10]), 0)
    np.testing.assert_allclose(dequantize(t), [[-1, 0, 1], [0, 1, 2]], atol=1e-6)


def test_missing_and_not_tflite(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_tflite(tmp_path / "nope.tflite")
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"this is not a model at all")
    with pytest.raises(UserError, match="bad.tflite is not a TensorFlow Lite model"):
        load_tflite(bad)
    damaged = tmp_path / "damaged.tflite"
    damaged.write_bytes(b"\x10\x00\x00\x00TFL3" + b"\xff" * 8)
    with pytest.raises(UserError) as exc:
        load_tflite(damaged)
    assert "damaged.tflite" in str(exc.value) and "\n" not in str(exc.value)
