"""The PyTorch attention network computes what the toolkit's AttentionModel computes.

benchmarks/torch_attention.py is the peer that benchmarks/attention_speed.py
times against the toolkit. For every gate, with and without the doubly
stochastic term, on a batch with padding, these tests hold it to the same
loss with dropout off (at the toolkit's initial weights and at trained-like
ones), the same gradients and the same parameters after three Lasagne 0.1
Adam steps (dropout 0); and to the same loss at the real Flickr8k-grid
shapes. No timing is asserted. Needs torch (the optional ``bench`` extra):
skipped without it. Run from the repository root (``benchmarks`` is
imported from there).
"""
import dataclasses

import numpy as np
import pytest

import lasagne_caption  # noqa: F401  (compat layer before theano)

torch = pytest.importorskip("torch")

from benchmarks.torch_attention import (TorchAttentionNet, TorchAttentionTrainer,  # noqa: E402
                                        param_names)

N_TOKENS, IMAGE_SHAPE, EMBED, UNITS, ATTENTION = 30, [5, 6], 4, 7, 3
LEARNING_RATE = 0.01     # large, so that three steps move every parameter visibly
ADAM_STEPS = 3
WEIGHT_SCALE = 0.3       # of the trained-like weights the gradients and steps are compared at
REL = 1e-4


def _vocab(n_tokens):
    from lasagne_caption.vocab import Vocabulary
    return Vocabulary(["#UNK#", "#START#", "#END#"] + ["w%d" % i for i in range(n_tokens - 3)])


def _model(config, learning_rate=LEARNING_RATE, seed=0):
    import lasagne
    from lasagne_caption.models import AttentionModel
    lasagne.random.set_rng(np.random.RandomState(seed))
    return AttentionModel(config, _vocab(config.n_tokens), learning_rate=learning_rate)


def _batch(n_tokens, image_shape, lengths, seed=1):
    """Regions like ReLU6 features (sparse, non-negative) and captions with padding."""
    rng = np.random.RandomState(seed)
    shape = (len(lengths),) + tuple(image_shape)
    regions = (np.minimum(np.maximum(2 * rng.randn(*shape), 0), 6)).astype("float32")
    sentences = np.full((len(lengths), max(lengths)), -1, dtype="int32")
    for i, length in enumerate(lengths):
        sentences[i, 0] = 1
        sentences[i, 1:length - 1] = rng.randint(3, n_tokens, size=length - 2)
        sentences[i, length - 1] = 2
    return regions, sentences


def _trained_like(config, seed=5):
    """Seeded weights of scale WEIGHT_SCALE, every array.

    At Lasagne's initial weights (Normal(0.01)) the attention scores are all
    but uniform and the gradients of ``b_att`` and ``W_hid_att`` are ~1e-8,
    sums that nearly cancel, so their float32 rounding differs between the
    implementations by ~1e-3 relative; Adam scales every step to ~lr, so
    after three steps those parameters differ by rounding noise, not math.
    Weights of a trained network's size give gradients well above rounding.
    """
    from benchmarks.torch_attention import param_shapes
    rng = np.random.RandomState(seed)
    return [np.asarray(WEIGHT_SCALE * rng.randn(*s), dtype="float32")
            for s in param_shapes(config)]


def _relative(a, b):
    return abs(a - b) / max(abs(a), 1e-12)


CASES = [(gate, lam) for gate in ("none", "selector", "sentinel") for lam in (1.0, 0.0)]


@pytest.fixture(scope="module", params=CASES, ids=["%s-lambda%g" % c for c in CASES])
def agreement(request):
    """Both implementations, dropout 0, on one padded batch: the loss at the toolkit's
    initial weights, then at trained-like weights the loss, the gradients (lambda 1)
    and three Adam steps.

    Everything is computed here once per case (Theano compiles ``loss``,
    ``train_step`` and the gradients once); the tests only compare the records.
    """
    import theano
    from lasagne_caption.models import AttentionConfig
    from lasagne_caption.models.attention import training_loss
    gate, lam = request.param
    config = AttentionConfig(n_tokens=N_TOKENS, image_shape=IMAGE_SHAPE, embed_size=EMBED,
                             units=UNITS, attention_size=ATTENTION, gate=gate, dropout=0.0,
                             doubly_stochastic=lam)
    model = _model(config)
    net = TorchAttentionNet(config, model.get_param_values())
    trainer = TorchAttentionTrainer(net, learning_rate=LEARNING_RATE)
    # padding, a 2-token caption (one target) and a caption as long as the batch
    regions, sentences = _batch(N_TOKENS, IMAGE_SHAPE, [9, 6, 2, 7])
    record = dict(config=config, labels=model.param_labels(),
                  torch_initial_loss=trainer.loss(regions, sentences))
    record["initial_loss"] = (model.loss(regions, sentences), record["torch_initial_loss"])
    values = _trained_like(config)
    model.set_param_values(values)
    net.set_param_values(values)
    record["start"] = model.get_param_values()
    record["loss"] = (model.loss(regions, sentences), trainer.loss(regions, sentences))
    if lam:
        loss, _ = training_loss(model.net, config, deterministic=True)
        grads = theano.function([model.net["regions"], model.net["sentences"]],
                                theano.grad(loss, model.trainable))
        net.zero_grad()
        net.loss(regions, sentences).backward()
        record["gradients"] = (grads(regions, sentences),
                               [p.grad.numpy().copy() for p in net.trainable_params()])
        net.zero_grad()
    record["train_losses"] = []
    for _ in range(ADAM_STEPS):
        record["train_losses"].append((model.train_step(regions, sentences),
                                       trainer.train_step(regions, sentences)))
    record["after"] = (model.get_param_values(), net.param_values())
    return record


def test_parameter_order_matches_the_toolkit(agreement):
    assert agreement["labels"] == param_names(agreement["config"].gate)
    assert np.isfinite(agreement["torch_initial_loss"])


def test_same_loss_with_dropout_off(agreement):
    for key in ("initial_loss", "loss"):
        theano_loss, torch_loss = agreement[key]
        print("%s: toolkit %.7f, torch %.7f, relative difference %.1e"
              % (key, theano_loss, torch_loss, _relative(theano_loss, torch_loss)))
        assert np.isfinite(theano_loss) and theano_loss > 0
        assert _relative(theano_loss, torch_loss) < REL, (key, theano_loss, torch_loss)


def test_same_gradients(agreement):
    if "gradients" not in agreement:
        pytest.skip("gradients are compared with the attention term (lambda 1) only")
    expected, got = agreement["gradients"]
    assert len(expected) == len(got) == len(agreement["labels"])
    for label, a, b in zip(agreement["labels"], expected, got):
        scale = float(np.abs(a).max())
        assert scale > 0, label
        assert float(np.abs(a - b).max()) <= REL * scale, (label, np.abs(a - b).max(), scale)


def test_same_parameters_after_adam_steps(agreement):
    for step, (a, b) in enumerate(agreement["train_losses"]):
        assert _relative(a, b) < REL, (step, a, b)
    theano_values, torch_values = agreement["after"]
    assert len(theano_values) == len(torch_values) == len(agreement["labels"])
    for label, start, a, b in zip(agreement["labels"], agreement["start"], theano_values,
                                  torch_values):
        scale = float(np.abs(a).max())
        assert np.abs(a - start).max() > 0, label          # every parameter was trained
        assert float(np.abs(a - b).max()) <= REL * scale, (label, np.abs(a - b).max(), scale)


def test_dropout_only_in_train_mode():
    from lasagne_caption.models import AttentionConfig
    config = AttentionConfig(n_tokens=N_TOKENS, image_shape=IMAGE_SHAPE, embed_size=EMBED,
                             units=UNITS, attention_size=ATTENTION, dropout=0.5)
    values = _trained_like(config)
    regions, sentences = _batch(N_TOKENS, IMAGE_SHAPE, [9, 6, 2, 7])
    net = TorchAttentionNet(config, values)
    with torch.no_grad():
        off = [float(net.loss(regions, sentences)) for _ in range(2)]
        assert off[0] == off[1]
        torch.manual_seed(0)
        on = [float(net.loss(regions, sentences, train=True)) for _ in range(3)]
        assert all(x != off[0] for x in on) and len(set(on)) > 1
        same = TorchAttentionNet(dataclasses.replace(config, dropout=0.0), values)
        assert float(same.loss(regions, sentences, train=True)) == off[0]


def test_real_shapes_same_loss():
    """Flickr8k grid shapes (49 x 1280 regions, embed 256, units 512, attention 256,
    about 2500 words, batch 8, selector gate, the default dropout and lambda):
    the losses agree to 1e-4 (relative) at the same initial weights."""
    from lasagne_caption.models import AttentionConfig
    config = AttentionConfig(n_tokens=2500, image_shape=[49, 1280], embed_size=256, units=512,
                             attention_size=256, gate="selector")
    model = _model(config, learning_rate=4e-4)
    regions, sentences = _batch(config.n_tokens, config.image_shape,
                                [16, 12, 9, 14, 11, 16, 8, 13], seed=2)
    theano_loss = model.loss(regions, sentences)
    torch_loss = TorchAttentionTrainer(TorchAttentionNet(config, model.get_param_values())).loss(
        regions, sentences)
    print("real shapes: toolkit %.7f, torch %.7f, relative difference %.2e"
          % (theano_loss, torch_loss, _relative(theano_loss, torch_loss)))
    assert np.isfinite(theano_loss)
    assert _relative(theano_loss, torch_loss) < REL, (theano_loss, torch_loss)


def test_speed_command_help_from_another_directory(tmp_path):
    import os
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.run([sys.executable, os.path.join(root, "benchmarks", "attention_speed.py"),
                           "--help"], cwd=str(tmp_path), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "--threads" in proc.stdout and "--small" in proc.stdout


def test_speed_synthetic_batches_and_table():
    from benchmarks import attention_speed
    batches = attention_speed.synthetic_batches(2, 5, [49, 1280], 2500, 8, 16)
    for regions, sentences in batches:
        assert regions.shape == (5, 49, 1280) and regions.dtype == np.float32
        assert regions.min() >= 0 and regions.max() <= 6
        assert sentences.shape == (5, 16) and sentences.dtype == np.int32
        lengths = (sentences != -1).sum(1)
        assert lengths.min() >= 8 and lengths.max() == 16 and (sentences[:, 0] == 1).all()
    toolkit = dict(ms=300.0, compile_s=40.0, loss_dropout_off=7.9, loss_compile_s=20.0,
                   threads="2")
    rounds = [(dict(toolkit, ms=ms), dict(ms=100.0, loss_dropout_off=7.9000001, threads=2))
              for ms in (300.0, 200.0, 400.0)]
    table = attention_speed.markdown(dict(
        rounds=rounds, threads=2, steps=20, warmup=3, load_average=1.0, notes=[],
        network="gate selector", batches=dict(source="synthetic", n=23, batch=64,
                                              steps="8..16", n_tokens=2500,
                                              image_shape=[49, 1280])))
    assert "| 2 | 200.0 | 100.0 | 2.00 | 40.0 |" in table
    assert "| median | 300.0 | 100.0 | 3.00 | 40.0 |" in table
    assert "relative difference 1.3e-08" in table
