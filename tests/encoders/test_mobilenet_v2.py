"""MobileNetV2 in Lasagne vs the shared codes made by the reference TFLite runtime.

Fixtures ``mobilenet`` and ``mobilenet_dir``: tests/encoders/conftest.py.
"""
import os

import numpy as np
import pytest

from lasagne_caption.errors import UserError
from lasagne_caption.encoders import get_encoder
from lasagne_caption.encoders.mobilenet_v2 import read_labels
from lasagne_caption.encoders.preprocess import load_image

N_FLICKR = int(os.environ.get("LASAGNE_CAPTION_TEST_PHOTOS", "24"))


def _corr(a, b):
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    return (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))


def test_samples_top1(mobilenet, mobilenet_dir, shared_dir):
    labels = read_labels(mobilenet_dir / "imagenet_labels.txt")
    assert len(labels) == 1001 and labels[0] == "background"
    samples = shared_dir / "data" / "samples"
    codes = mobilenet.encode([str(samples / f) for f in
                              ("cat.bmp", "parrot.jpg", "grace_hopper.bmp")], progress=False)
    assert codes["logits"].shape == (3, 1001) and codes["pool"].shape == (3, 1280)
    top = [labels[i] for i in codes["logits"].argmax(1)]
    assert top == ["Egyptian cat", "macaw", "military uniform"]


def test_flickr8k_matches_shared_codes(mobilenet, flickr8k_dir):
    codes_dir = flickr8k_dir / "codes"
    names = (codes_dir / "image_names.txt").read_text().split()[:N_FLICKR]
    ref_logits = np.load(codes_dir / "mobilenet_v2_logits.npy", mmap_mode="r")[:N_FLICKR]
    ref_pool = np.load(codes_dir / "mobilenet_v2_pool.npy", mmap_mode="r")[:N_FLICKR]
    images = np.stack([load_image(flickr8k_dir / "images" / n) for n in names])
    codes = mobilenet.encode(images, batch_size=12, progress=False)
    cl = _corr(codes["logits"], ref_logits.astype(np.float32))
    cp = _corr(codes["pool"], ref_pool.astype(np.float32))
    agree = (codes["logits"].argmax(1) == ref_logits.argmax(1)).mean()
    assert np.median(cl) > 0.995 and cl.min() > 0.99, (np.median(cl), cl.min())
    assert np.median(cp) > 0.995 and cp.min() > 0.99, (np.median(cp), cp.min())
    assert agree >= 0.85, agree


def test_encode_accepts_one_array_and_batches_consistently(mobilenet, flickr8k_dir):
    p = sorted((flickr8k_dir / "images").iterdir())[0]
    img = load_image(p)
    one = mobilenet.encode(img, progress=False)["logits"]
    many = mobilenet.encode(np.stack([img, img, img]), batch_size=2, progress=False)["logits"]
    np.testing.assert_allclose(many, np.repeat(one, 3, 0), rtol=1e-4, atol=1e-4)


def test_missing_model_message(tmp_path):
    with pytest.raises(UserError) as exc:
        get_encoder("mobilenet_v2", tmp_path / "m.tflite")
    msg = str(exc.value)
    assert "m.tflite does not exist" in msg and "https://" in msg and "--model" in msg
    assert "\n" not in msg


def test_not_a_tflite_model(tmp_path):
    bad = tmp_path / "model.tflite"
    bad.write_bytes(b"PK\x03\x04 zip, not a model")
    enc = get_encoder("mobilenet_v2", bad)
    with pytest.raises(UserError, match="model.tflite is not a TensorFlow Lite model"):
        enc.compile()
