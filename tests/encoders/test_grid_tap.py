"""MobileNetV2's spatial taps: ``grid`` (Conv_1, 7x7x1280) and ``block16`` (its input, 7x7x320).

Fixtures ``mobilenet`` (compiled once per session) and ``mobilenet_path``: tests/encoders/conftest.py.
"""
import numpy as np

from lasagne_caption.encoders.mobilenet_v2 import TAP_SHAPES, read_tflite_weights
from lasagne_caption.encoders.preprocess import load_image


def _photos(flickr8k_dir, n=3):
    names = (flickr8k_dir / "codes" / "image_names.txt").read_text().split()[:n]
    return np.stack([load_image(flickr8k_dir / "images" / name) for name in names])


def test_spatial_taps_shapes_and_layout(mobilenet, flickr8k_dir):
    assert TAP_SHAPES["grid"] == (7, 7, 1280) and TAP_SHAPES["block16"] == (7, 7, 320)
    codes = mobilenet.encode(_photos(flickr8k_dir), progress=False)
    assert codes["grid"].shape == (3, 7, 7, 1280) and codes["grid"].dtype == np.float32
    assert codes["block16"].shape == (3, 7, 7, 320) and codes["block16"].dtype == np.float32
    one = mobilenet.encode(_photos(flickr8k_dir)[:1], taps="grid", progress=False)
    assert list(one) == ["grid"] and one["grid"].shape == (1, 7, 7, 1280)
    # the network's own layers: grid is Conv_1's output, block16 Conv_1's input
    assert mobilenet.net["Conv_1"].input_layer is mobilenet.net["expanded_conv_16/project/quant"]
    assert mobilenet.net["Logits/AvgPool"].input_layer is mobilenet.net["Conv_1/quant"]


def test_grid_values_lie_on_the_uint8_grid_of_conv_1(mobilenet, mobilenet_path, flickr8k_dir):
    _, out_quant, _ = read_tflite_weights(mobilenet_path)
    codes = mobilenet.encode(_photos(flickr8k_dir), progress=False)
    for tap, scope in (("grid", "Conv_1"), ("block16", "expanded_conv_16/project")):
        scale, zero_point = out_quant[scope]
        q = codes[tap] / np.float32(scale) + zero_point
        assert np.abs(q - np.round(q)).max() < 1e-3, tap      # fake-quantised: on the grid
        assert q.min() > -0.5 and q.max() < 255.5, tap
    assert codes["grid"].min() >= 0 and codes["grid"].max() <= 6 + 1e-6   # ReLU6


def test_pool_is_the_mean_of_the_grid(mobilenet, mobilenet_path, flickr8k_dir):
    """MobileNetV2's pool is the 7x7 mean of Conv_1's map. Here each layer's output is
    rounded to its uint8 grid (fake_quant), so pool is that mean rounded to AvgPool's
    grid: within half of its step (float32 slack), and equal after re-quantising it."""
    _, out_quant, _ = read_tflite_weights(mobilenet_path)
    scale, zero_point = out_quant["Logits/AvgPool"]
    codes = mobilenet.encode(_photos(flickr8k_dir, 4), progress=False)
    mean = codes["grid"].mean(axis=(1, 2), dtype=np.float64)
    assert np.abs(mean - codes["pool"]).max() <= 0.5 * scale * (1 + 1e-4) + 1e-6
    v = mean / scale
    q = np.clip(np.sign(v) * np.floor(np.abs(v) + 0.5) + zero_point, 0, 255)
    requantised = (q - zero_point) * scale
    # ties can round the other way in float32 sums: allow one value in a thousand
    assert (np.abs(requantised - codes["pool"]) < 1e-5).mean() > 0.999
