"""A fake image encoder for the tests of the encoders' loop (no Theano, no model file)."""
import numpy as np

from lasagne_caption.encoders import ImageEncoder


class PixelEncoder(ImageEncoder):
    """A fake encoder without Theano: its taps are the pixels themselves.

    ``pixels`` is the image as float32 (H, W, 3) -- a non-flat tap, like a
    spatial grid -- and ``mean`` its per-channel mean; ``calls`` records the
    size of every batch ``forward`` saw.
    """

    name = "pixels"
    default_batch_size = 4

    def __init__(self, input_size=(224, 224)):
        self.input_size = tuple(input_size)
        self.tap_shapes = {"pixels": self.input_size + (3,), "mean": (3,)}
        self.calls = []

    def forward(self, batch, taps=None):
        taps = self.check_taps(taps)
        batch = self.check_batch(batch)
        self.calls.append(len(batch))
        x = batch.astype(np.float32)
        outputs = {"pixels": x, "mean": x.mean(axis=(1, 2))}
        return {t: outputs[t] for t in taps}
