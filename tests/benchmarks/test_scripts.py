"""The documented benchmark commands start, and the timings bench.py shares with them.

``bench.py --generation`` and ``--encoding`` time with the functions of
``benchmarks/generation_speed.py`` and ``benchmarks/encode_throughput.py``
(one implementation of each measurement). No timing is asserted.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

import lasagne_caption  # noqa: F401  (compat layer before theano)
from benchmarks import encode_throughput, generation_speed

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("script, option", [("generation_speed.py", "--checkpoint"),
                                            ("encode_throughput.py", "--ref-python")])
def test_script_help_from_another_directory(tmp_path, script, option):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", script), "--help"],
                          cwd=str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert option in proc.stdout


class _StubEncoder(object):
    """Records the ``encode`` calls; what bench.py and encode_throughput.py may use."""

    def __init__(self):
        self.calls = []

    def encode(self, images, batch_size=None, progress=True):
        self.calls.append((len(images), batch_size, progress))
        return {"logits": np.zeros((len(images), 3), np.float32)}


def test_time_encoding_compiles_on_two_images_then_times_all():
    enc = _StubEncoder()
    images = np.zeros((5, 224, 224, 3), np.uint8)
    timed = encode_throughput.time_encoding(enc, images, batch_size=4)
    assert enc.calls == [(2, 4, False), (5, 4, False)]
    assert timed["codes"]["logits"].shape == (5, 3)
    assert timed["compile_s"] >= 0 and timed["seconds"] > 0
    assert timed["images_per_s"] == pytest.approx(5 / timed["seconds"])


def test_time_step_generation_with_a_real_generator():
    import lasagne
    from lasagne_caption.generate import CaptionGenerator
    from lasagne_caption.models import NetworkConfig, SeminarModel
    from lasagne_caption.vocab import Vocabulary
    vocab = Vocabulary(["#UNK#", "#START#", "#END#"] + ["w%d" % i for i in range(8)])
    lasagne.random.set_rng(np.random.RandomState(0))
    model = SeminarModel(NetworkConfig(len(vocab), 4, embed_size=3, units=5), vocab)
    codes = np.random.RandomState(1).randn(6, 4).astype("float32")
    timed = generation_speed.time_step_generation(CaptionGenerator(model), codes, max_len=5,
                                                  warmup=2)
    assert set(timed) == {"compile_s", "greedy", "beam3"}
    assert timed["compile_s"] > 0
    for name in ("greedy", "beam3"):
        (captions, log_probs), seconds = timed[name]
        assert len(captions) == len(log_probs) == 6 and seconds > 0
        assert all(len(c.split()) <= 5 for c in captions)     # #END# not shown
