"""The speed benchmark: its PyTorch peer computes what the toolkit computes.

No timing is asserted. The peer tests need torch (the optional ``bench``
extra) and are skipped without it. Run from the repository root (``benchmarks``
is imported from there).
"""
import os
import subprocess
import sys

import numpy as np
import pytest

import lasagne_caption  # noqa: F401  (compat layer before theano)
from benchmarks import bench

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

N_TOKENS, CODE_SIZE, EMBED, UNITS = 23, 7, 6, 5


def _model(grad_clipping=5.0, seed=0):
    import lasagne
    from lasagne_caption.models import NetworkConfig, SeminarModel
    from lasagne_caption.vocab import Vocabulary
    vocab = Vocabulary(["#UNK#", "#START#", "#END#"] + ["w%d" % i for i in range(N_TOKENS - 3)])
    lasagne.random.set_rng(np.random.RandomState(seed))
    config = NetworkConfig(N_TOKENS, CODE_SIZE, embed_size=EMBED, units=UNITS, dropout=0.0,
                           grad_clipping=grad_clipping)
    return SeminarModel(config, vocab, learning_rate=0.01)


def _batch(seed=1):
    rng = np.random.RandomState(seed)
    codes = (3 * rng.randn(4, CODE_SIZE)).astype("float32")
    sentences = rng.randint(3, N_TOKENS, (4, 9)).astype("int32")
    sentences[:, 0] = 1
    for i, length in enumerate([9, 6, 3, 7]):     # padding, and one 2-token caption
        sentences[i, length - 1] = 2
        sentences[i, length:] = -1
    return codes, sentences


@pytest.fixture(scope="module")
def models():
    """Two tiny networks (clipping inactive / clipping active) and their peers."""
    pytest.importorskip("torch")
    from benchmarks.torch_peer import TorchCaptionNet, TorchTrainer
    out = {}
    for name, clip in (("plain", 5.0), ("clipped", 0.01)):
        model = _model(grad_clipping=clip)
        peer = TorchTrainer(TorchCaptionNet.from_theano(model), learning_rate=0.01)
        out[name] = (model, peer)
    return out


def test_peer_parameter_order_matches_the_toolkit(models):
    from benchmarks.torch_peer import param_names
    model, peer = models["plain"]
    assert [p.name for p in model.params] == param_names()
    for a, b in zip(model.get_param_values(), peer.net.get_param_values()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", ["plain", "clipped"])
def test_peer_same_loss_and_parameters_after_adam_steps(models, name):
    model, peer = models[name]
    codes, sentences = _batch()
    assert abs(model.val_step(codes, sentences) - peer.val_step(codes, sentences)) < 1e-4
    for step in range(2):
        # dropout is 0 in these configs: the train losses are deterministic too
        loss_theano = model.train_step(codes, sentences)
        loss_torch = peer.train_step(codes, sentences)
        assert abs(loss_theano - loss_torch) < 1e-4, step
        for label, a, b in zip([p.name for p in model.params], model.get_param_values(),
                               peer.net.get_param_values()):
            np.testing.assert_allclose(a, b, atol=1e-4, rtol=0, err_msg=label)


def test_peer_gradients_match_theano():
    """Gradients of the loss, with gate-gradient clipping active, against theano.grad."""
    pytest.importorskip("torch")
    import theano
    from lasagne_caption.models.seminar import fast_masked_cross_entropy
    from benchmarks.torch_peer import TorchCaptionNet
    model = _model(grad_clipping=0.01, seed=3)
    net = model.net
    loss = fast_masked_cross_entropy(net, deterministic=True)
    grads = theano.function([net["image_codes"], net["sentences"]],
                            theano.grad(loss, model.trainable))
    codes, sentences = _batch(seed=4)
    expected = grads(codes, sentences)
    peer = TorchCaptionNet.from_theano(model)
    peer.loss(codes, sentences, train=False).backward()
    got = [p.grad.numpy() for p in peer.trainable_params()]
    assert len(got) == len(expected)
    for p, a, b in zip(model.trainable, expected, got):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=0, err_msg=p.name)


def test_grad_clip_clips_only_the_gradient():
    torch = pytest.importorskip("torch")
    from benchmarks.torch_peer import grad_clip
    x = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    y = grad_clip(x, 0.5)
    assert torch.equal(y, x.detach())
    (y * torch.tensor([10.0, -10.0, 0.1])).sum().backward()
    assert x.grad.tolist() == pytest.approx([0.5, -0.5, 0.1])


def test_synthetic_batches_have_the_coco_shapes():
    batches = bench.synthetic_batches(3, 50, 16, 10373, 1000)
    for codes, sentences in batches:
        assert codes.shape == (50, 1000) and codes.dtype == np.float32
        assert sentences.shape == (50, 16) and sentences.dtype == np.int32
        lengths = (sentences != -1).sum(1)
        assert lengths.min() >= 8 and lengths.max() == 16
        assert (sentences[:, 0] == 1).all()
        assert sentences.max() < 10373


def test_markdown_table_without_torch():
    row = dict(shape="coco",
               theano=dict(batch=50, time_steps=[16, 16], n_tokens=10373, ms=250.0,
                           loss_dropout_off=9.25, peak_rss_mib=300.0, compile_s=20.0),
               torch=dict(skipped=bench.TORCH_MISSING))
    table = bench.markdown([row])
    assert "| coco | 50 × 16 | 10373 | 250.0 | - |" in table
    assert "PyTorch is not installed" in table


def _help(script, tmp_path):
    """``python benchmarks/SCRIPT --help``, run from a directory outside the repository."""
    return subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", script), "--help"],
                          cwd=str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=120)


def test_bench_help(tmp_path):
    proc = _help("bench.py", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "--generation" in proc.stdout and "--json" in proc.stdout
    assert "python benchmarks/bench.py" in proc.stdout


def test_train_step_flops_counts_the_products_by_hand():
    sentences = np.array([[1, 5, 2, -1], [1, 6, 7, 2]], "int32")     # 2 + 3 real targets
    n_tokens, code_size, embed, units = 10, 3, 2, 4
    output = 3 * 2 * 5 * units * n_tokens            # logits, d hidden, d W on real targets
    recurrent = 4 * 3 * 2 * 2 * units * 4 * units   # 4 steps, 3 products of (2, 4) x (4, 16)
    inputs = 3 * 2 * 8 * embed * 4 * units           # 8 (step, caption) rows
    image = 2 * 2 * 2 * code_size * units            # forward and d W only
    assert bench.train_step_flops(sentences, n_tokens, code_size, embed, units) == \
        output + recurrent + inputs + image
    assert bench.gemm_gflops(8, 8, 8, repeats=2) > 0
