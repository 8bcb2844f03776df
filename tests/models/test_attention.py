"""The attention network: parameters, gradients, generation = teacher forcing, loss, checkpoints.

Tiny networks (E=4, U=5, A=3) over 4 regions of 6 features, one per gate,
built once per module with random weights large enough that the attention
is far from uniform; each compiled function is compiled once.
"""
import json

import numpy as np
import pytest
import theano
import theano.tensor as T

from lasagne_caption import checkpoint as ckpt
from lasagne_caption.errors import UserError
from lasagne_caption.generate import CaptionGenerator
from lasagne_caption.layers.attention import GATES
from lasagne_caption.models import AttentionConfig, AttentionModel, seed_initial_weights
from lasagne_caption.models.attention import param_shapes, training_loss
from tests.test_train_attention import write_grid_dataset

SIZES = dict(embed_size=4, units=5, attention_size=3, dropout=0.2)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from lasagne_caption.data import load_dataset
    return load_dataset(write_grid_dataset(tmp_path_factory.mktemp("grid") / "tiny-grid"))


@pytest.fixture(scope="module")
def vocab(dataset):
    return dataset.vocabulary(min_count=1)


@pytest.fixture(scope="module")
def batch(dataset, vocab):
    """Five images and captions of different lengths (padded)."""
    ix = [0, 1, 2, 4, 7]
    regions = dataset.codes[ix]
    sentences = vocab.as_matrix([dataset.captions[i][k] for i, k in zip(ix, [0, 2, 1, 2, 0])])
    assert (sentences == -1).any() and (sentences != -1).all(axis=0).any()
    return regions, sentences


def _randomise(model, seed=0, scale=0.6):
    rng = np.random.RandomState(seed)
    model.set_param_values([np.asarray(rng.randn(*v.shape) * scale, dtype="float32")
                            for v in model.get_param_values()])


@pytest.fixture(scope="module")
def models(vocab):
    """``get(gate, **options)``: one model per configuration, kept for the module."""
    cache = {}

    def get(gate="selector", **options):
        key = (gate,) + tuple(sorted(options.items()))
        if key not in cache:
            seed_initial_weights(0)
            config = AttentionConfig(n_tokens=len(vocab), image_shape=[4, 6], gate=gate,
                                     **dict(SIZES, **options))
            cache[key] = AttentionModel(config, vocab, learning_rate=0.01)
            _randomise(cache[key])
        return cache[key]
    return get


def _real(sentences):
    """mask of the steps that have a target (the next word is real)"""
    return sentences[:, 1:] != -1


# -- layout -----------------------------------------------------------------------
@pytest.mark.parametrize("gate", GATES)
def test_param_shapes_are_the_built_shapes(vocab, gate):
    config = AttentionConfig(n_tokens=len(vocab), image_shape=[4, 6], gate=gate, **SIZES)
    model = AttentionModel(config, vocab)
    built = [v.shape for v in model.get_param_values()]
    assert param_shapes(config) == built == AttentionModel.param_shapes(config)
    ckpt.check_param_shapes(model.get_param_values(), AttentionModel, config, "x.params")
    labels = model.param_labels()
    assert len(labels) == len(built) and labels[0] == "embedding.W"
    assert labels[-2:] == ["output.W", "output.b"]


def test_the_config_checks_its_options(vocab):
    for options, message in ((dict(image_shape=[49]), "image_shape must be"),
                             (dict(image_shape=[4, 0]), "out of range"),
                             (dict(image_shape=[4, True]), "image_shape must be"),
                             (dict(image_shape=[4, 6], gate="spotlight"), "gate must be one of"),
                             (dict(image_shape=[4, 6], dropout=1.0), "dropout"),
                             (dict(image_shape=[4, 6], doubly_stochastic=-1), "doubly_stochastic")):
        with pytest.raises(UserError, match=message):
            AttentionConfig(n_tokens=len(vocab), **options)


# -- gradients --------------------------------------------------------------------
ATTENTION_PARAMS = ["W_region_att", "b_att", "W_hid_att", "w_att"]
GATE_PARAMS = {"none": [], "selector": ["w_gate", "b_gate"],
               "sentinel": ["W_sentinel_in", "W_sentinel_hid", "b_sentinel", "W_sentinel_att",
                            "W_sentinel_ctx"]}


@pytest.mark.parametrize("gate", GATES)
def test_gradients_reach_every_attention_and_gate_parameter(models, batch, gate):
    model = models(gate)
    loss, _ = training_loss(model.net, model.config, deterministic=True)
    f = theano.function([model.net["regions"], model.net["sentences"]],
                        T.grad(loss, model.trainable))
    grads = dict(zip([p.name for p in model.trainable], f(*batch)))
    names = ["decoder." + n for n in ATTENTION_PARAMS + GATE_PARAMS[gate]]
    assert set(names) <= set(grads)
    for name in grads:   # every parameter, the attention's and the gate's included
        assert np.isfinite(grads[name]).all(), name
        assert np.abs(grads[name]).max() > 1e-7, name


# -- generation = teacher forcing --------------------------------------------------
@pytest.mark.parametrize("gate", GATES)
def test_inference_steps_reproduce_the_teacher_forced_network(models, batch, gate):
    model = models(gate)
    regions, sentences = batch
    probs = model.probabilities(regions, sentences)
    alpha, gates = model.attention(regions, sentences)
    n, steps = sentences.shape
    assert probs.shape == (n, steps, len(model.vocab)) and alpha.shape == (n, steps, 4)
    assert gates.shape == (n, steps)
    states = model.feed_image(regions)
    for t in range(steps - 1):
        real = sentences[:, t + 1] != -1
        words = np.where(sentences[:, t] == -1, model.vocab.end_ix, sentences[:, t])
        log_probs, states, extras = model.inference_step(words, states)
        assert set(extras) == {"attention", "gate"}
        np.testing.assert_allclose(np.exp(log_probs[real]), probs[real, t], rtol=1e-5,
                                   atol=1e-5)
        np.testing.assert_allclose(extras["attention"][real], alpha[real, t], rtol=1e-5,
                                   atol=1e-5)
        np.testing.assert_allclose(extras["gate"][real], gates[real, t], rtol=1e-5, atol=1e-5)
    # the comparison is not between constants
    assert np.abs(alpha - 0.25).max() > 0.05


@pytest.mark.parametrize("gate", GATES)
def test_beam_1_is_greedy_with_the_same_extras(models, dataset, gate):
    model = models(gate)
    images = dataset.codes[list(range(12))]
    generator = CaptionGenerator(model, batch_size=5)   # two chunks and a short one
    greedy, greedy_lp, greedy_x = generator.greedy(images, max_len=8, extras=True)
    beam, beam_lp, beam_x = generator.beam_search(images, beam=1, max_len=8, extras=True)
    assert beam == greedy
    np.testing.assert_allclose(beam_lp, greedy_lp, rtol=1e-6)
    assert len(greedy_x) == len(beam_x) == 12
    for caption, a, b in zip(greedy, greedy_x, beam_x):
        words = len(caption.split()) + 1 if len(caption.split()) < 8 else 8  # #END# included
        assert set(a) == set(b) == {"attention", "gate"}
        assert a["attention"].shape == (words, 4) and a["gate"].shape == (words,)
        np.testing.assert_allclose(a["attention"], b["attention"], rtol=1e-6)
        np.testing.assert_allclose(a["gate"], b["gate"], rtol=1e-6)
        np.testing.assert_allclose(a["attention"].sum(-1),
                                   a["gate"] if gate == "sentinel" else 1, rtol=1e-5)


# -- training and its loss -------------------------------------------------------------
def test_train_step_lowers_the_loss_on_a_fixed_batch(models, batch):
    model = models("selector")
    before = model.get_param_values()
    try:
        start = model.loss(*batch)
        losses = [model.train_step(*batch) for _ in range(20)]
        end = model.loss(*batch)
        assert np.isfinite(losses).all()
        assert end < 0.8 * start, (start, end)
        assert np.mean(losses[-5:]) < np.mean(losses[:5])
    finally:
        model.set_param_values(before)


def test_the_doubly_stochastic_term(models, batch):
    with_term = models("selector")
    without = models("selector", doubly_stochastic=0.0)
    without.set_param_values(with_term.get_param_values())   # the same network
    regions, sentences = batch
    cross_entropy = with_term.val_step(regions, sentences)
    assert without.loss(regions, sentences) == without.val_step(regions, sentences)
    assert without.val_step(regions, sentences) == pytest.approx(cross_entropy, rel=1e-6)
    # lambda = 1 adds sum_i (1 - sum_t alpha_ti)^2 over the steps with a target, per word
    alpha, _ = with_term.attention(regions, sentences)
    steps = _real(sentences)
    seen = (alpha[:, :-1] * steps[..., None]).sum(axis=1)
    penalty = ((1 - seen) ** 2).sum() / steps.sum()
    assert penalty > 0.01
    loss = with_term.loss(regions, sentences)
    assert loss > cross_entropy
    assert loss == pytest.approx(cross_entropy + penalty, rel=1e-5)


# -- checkpoints ----------------------------------------------------------------------
def _save(model, dataset, path):
    meta = ckpt.make_metadata(model, dataset, epoch=2, step=10, run={"batch_size": 4})
    ckpt.save_checkpoint(str(path), model.get_param_values(), meta)
    return meta


@pytest.mark.parametrize("gate", GATES)
def test_a_checkpoint_round_trip_gives_the_same_network(models, dataset, tmp_path, gate):
    model = models(gate)
    path = tmp_path / "att.params"
    meta = _save(model, dataset, path)
    assert meta["kind"] == "attention" and meta["network"]["gate"] == gate
    assert meta["encoder"] == {"name": "mobilenet_v2", "tap": "grid"}
    loaded, loaded_meta = ckpt.load_model(str(path))
    assert isinstance(loaded, AttentionModel) and loaded.config == model.config
    assert loaded.vocab.words == model.vocab.words and loaded_meta["epoch"] == 2
    for a, b in zip(loaded.get_param_values(), model.get_param_values()):
        np.testing.assert_array_equal(a, b)
    images = dataset.codes[[6, 7, 8]]
    ours = CaptionGenerator(model).beam_search(images, beam=2, max_len=8, extras=True)
    theirs = CaptionGenerator(loaded).beam_search(images, beam=2, max_len=8, extras=True)
    assert ours[0] == theirs[0]
    np.testing.assert_array_equal(ours[1], theirs[1])
    for a, b in zip(ours[2], theirs[2]):
        np.testing.assert_array_equal(a["attention"], b["attention"])
        np.testing.assert_array_equal(a["gate"], b["gate"])
    # resume for training: the same network with the checkpoint's step size
    resumed, _ = ckpt.resume(str(path), image_shape=(4, 6), reset_optimizer=True)
    assert resumed.config == model.config and resumed.learning_rate == 0.01
    with pytest.raises(UserError, match=r"expects image codes of shape \(4, 6\), the data "
                                        r"has \(49, 1280\)"):
        ckpt.resume(str(path), image_shape=(49, 1280))


def test_an_unknown_gate_in_metadata_is_a_one_line_error_naming_the_file(models, dataset,
                                                                          tmp_path):
    path = tmp_path / "att.params"
    _save(models("selector"), dataset, path)
    meta_file = ckpt.metadata_path(str(path))
    meta = json.loads(open(meta_file).read())
    meta["network"]["gate"] = "spotlight"
    with open(meta_file, "w") as f:
        json.dump(meta, f)
    for load in (ckpt.load_model, ckpt.resume):
        with pytest.raises(UserError) as error:
            load(str(path))
        message = str(error.value)
        assert message.startswith(meta_file + ": ") and "\n" not in message
        assert "gate must be one of none, selector, sentinel, not 'spotlight'" in message
