"""Caption generation: one recurrent step per word, matching the full network."""
import contextlib

import numpy as np
import pytest

from lasagne_caption.data import generate_batch, load_dataset
from lasagne_caption.errors import UserError
from lasagne_caption.generate import CaptionGenerator, generate_by_prefix
from lasagne_caption.models import NetworkConfig, SeminarModel


@pytest.fixture(scope="module")
def trained(tiny_model, tiny_dataset):
    """The tiny model trained a little (its captions follow the codes); restored afterwards."""
    saved = tiny_model.get_param_values()
    saved_optimizer = [v.get_value() for v in tiny_model.optimizer_state]
    codes, captions = load_dataset(tiny_dataset).split("train")
    rng = np.random.RandomState(0)
    # dropout's stream too: the session's model may have trained in other tests before
    tiny_model.seed_dropout(1)
    for _ in range(200):
        tiny_model.train_step(*generate_batch(codes, captions, tiny_model.vocab, 30, rng))
    yield tiny_model
    tiny_model.set_param_values(saved)
    for var, value in zip(tiny_model.optimizer_state, saved_optimizer):
        var.set_value(value)


@pytest.fixture(scope="module")
def generator(trained):
    return CaptionGenerator(trained)


@pytest.fixture(scope="module")
def codes(tiny_dataset):
    """The dataset's 40 images and 160 noisy variants of them."""
    base = load_dataset(tiny_dataset).codes
    noisy = np.repeat(base, 4, axis=0) + np.random.RandomState(1).normal(0, 1, (160, base.shape[1]))
    return np.concatenate([base, noisy]).astype("float32")


def caption_log_prob(model, codes, captions):
    """log p(caption + #END# | image) from the full network, one row per caption."""
    matrix = model.vocab.as_matrix([["#START#"] + c.split() + ["#END#"] for c in captions])
    probs = model.probabilities(codes, matrix)
    return np.array([sum(np.log(probs[i, t, matrix[i, t + 1]]) for t in range(len(c.split()) + 1))
                     for i, c in enumerate(captions)])


def step_probabilities(generator, codes, sentences):
    """Next-word probabilities (batch, time, n_tokens) fed word by word through ``step``."""
    states = generator.initial_states(codes)
    out = []
    for t in range(sentences.shape[1]):
        log_probs, states, extras = generator.step(sentences[:, t], states)
        assert extras == {}   # the seminar network reports nothing per step
        out.append(np.exp(log_probs))
    return np.stack(out, axis=1)


def test_step_probabilities_equal_the_full_network(trained, generator, tiny_dataset):
    ds = load_dataset(tiny_dataset)
    sentences = trained.vocab.as_matrix([c[0] for c in ds.captions[:8]])
    sentences[sentences == -1] = trained.vocab.end_ix   # step needs a word in every row
    expected = trained.probabilities(ds.codes[:8], sentences)
    np.testing.assert_allclose(step_probabilities(generator, ds.codes[:8], sentences),
                               expected, **F32)


def test_greedy_equals_rerunning_the_prefix(trained, generator, codes):
    captions, log_probs = generator.greedy(codes)
    reference, reference_log_probs = generate_by_prefix(trained, codes)
    assert captions == reference
    np.testing.assert_allclose(log_probs, reference_log_probs, atol=1e-4)
    # the model learned the task: the first image is a red dog
    assert "red dog" in captions[0], captions[:4]


@pytest.mark.parametrize("image_inject,cell", [("first_input", "lstm"), ("cell_init", "gru"),
                                               ("first_input", "gru")])
def test_other_networks_step_like_the_full_network(tiny_model, codes, image_inject, cell):
    config = NetworkConfig(n_tokens=len(tiny_model.vocab), code_size=codes.shape[1],
                           embed_size=8, units=16, image_inject=image_inject, cell=cell)
    model = SeminarModel(config, tiny_model.vocab)
    generator = CaptionGenerator(model)
    sentences = np.random.RandomState(0).randint(1, len(model.vocab), (5, 6)).astype("int32")
    np.testing.assert_allclose(step_probabilities(generator, codes[:5], sentences),
                               model.probabilities(codes[:5], sentences), **F32)
    assert generator.greedy(codes[:20], max_len=6)[0] == \
        generate_by_prefix(model, codes[:20], max_len=6)[0]


# Tolerances: decisions (words) are compared exactly; log-probabilities are
# sums of float32 values whose last bits depend on the BLAS and the batch
# shape (beam search runs more rows per step than greedy), so they are
# compared to a relative and absolute 1e-5, as float32 (eps 1.2e-7) keeps
# them over a few dozen operations; a fresh-machine run differed by 2.1e-6.
F32 = dict(rtol=1e-5, atol=1e-5)


def test_generation_is_deterministic(generator, codes):
    # dropout on the image would make two runs differ
    first, first_lp = generator.greedy(codes)
    second, second_lp = generator.greedy(codes)
    assert first == second
    np.testing.assert_allclose(first_lp, second_lp, **F32)


def test_beam_width_1_is_greedy(generator, codes):
    greedy, greedy_lp = generator.greedy(codes)
    beam, beam_lp = generator.beam_search(codes, beam=1)
    assert beam == greedy
    np.testing.assert_allclose(beam_lp, greedy_lp, **F32)


@pytest.mark.parametrize("beam", [3, 5])
def test_beam_search_never_scores_below_greedy(trained, generator, codes, beam):
    _, greedy_lp = generator.greedy(codes)
    captions, beam_lp = generator.beam_search(codes, beam=beam, length_normalization=0)
    assert np.all(beam_lp >= greedy_lp - (F32["atol"] + F32["rtol"] * np.abs(greedy_lp)))
    assert np.any(beam_lp > greedy_lp + 1e-3)     # and it does find better captions
    # the reported score is the model's log-probability of the caption
    np.testing.assert_allclose(beam_lp, caption_log_prob(trained, codes, captions), atol=1e-3)


def test_length_normalisation_prefers_longer_captions(generator, codes):
    def mean_length(alpha):
        captions, _ = generator.beam_search(codes, beam=5, length_normalization=alpha)
        return np.mean([len(c.split()) for c in captions])
    assert mean_length(2.0) > mean_length(0.0)


def test_same_seed_same_samples(trained, generator, codes):
    first, first_lp = generator.sample(codes[:40], n=3, seed=7)
    assert len(first) == 40 and all(len(c) == 3 for c in first) and first_lp.shape == (40, 3)
    assert generator.sample(codes[:40], n=3, seed=7)[0] == first
    assert generator.sample(codes[:40], n=3, seed=8)[0] != first
    flat = [c for per_image in first for c in per_image]
    np.testing.assert_allclose(first_lp.ravel(),
                               caption_log_prob(trained, np.repeat(codes[:40], 3, axis=0), flat),
                               atol=1e-3)


def test_cold_sampling_is_greedy(generator, codes):
    samples, _ = generator.sample(codes, temperature=1e-6, seed=0)
    assert [s[0] for s in samples] == generator.greedy(codes)[0]


def test_batches_do_not_change_the_captions(generator, codes):
    expected = generator.beam_search(codes, beam=3)[0]
    generator.batch_size = 7
    try:
        assert generator.beam_search(codes, beam=3)[0] == expected
    finally:
        generator.batch_size = 256


@contextlib.contextmanager
def wanting_unk(model):
    """The model, for the ``with`` block, always wants ``#UNK#`` next."""
    b = model.net["output"].b
    saved = b.get_value()
    biased = saved.copy()
    biased[model.vocab.unk_ix] += 100
    b.set_value(biased)
    try:
        yield
    finally:
        b.set_value(saved)


def test_unk_is_suppressed_by_default(trained, generator, codes):
    with wanting_unk(trained):
        assert "#UNK#" not in " ".join(generator.greedy(codes[:5])[0])
        assert "#UNK#" not in " ".join(generator.beam_search(codes[:5])[0])
        assert generator.greedy(codes[:5], max_len=3, suppress_unk=False)[0] == \
            ["#UNK# #UNK# #UNK#"] * 5


def test_max_len_cuts_captions(generator, codes):
    for captions in (generator.greedy(codes, max_len=2)[0],
                     generator.beam_search(codes, max_len=2)[0]):
        assert max(len(c.split()) for c in captions) <= 2


@pytest.mark.parametrize("call, message", [
    (lambda g, c: g.sample(c, temperature=float("nan")), "--temperature must be a finite number > 0"),
    (lambda g, c: g.sample(c, temperature=float("inf")), "--temperature must be a finite number > 0"),
    (lambda g, c: g.sample(c, temperature=0), "--temperature must be a finite number > 0, not 0"),
    (lambda g, c: g.sample(c, n=0), "-n must be a whole number of at least 1, not 0"),
    (lambda g, c: g.sample(c, seed=-1), "--seed must be a whole number of at least 0"),
    (lambda g, c: g.sample(c, max_len=0), "--max-len must be a whole number of at least 1"),
    (lambda g, c: g.greedy(c, max_len=-1), "--max-len must be a whole number of at least 1"),
    (lambda g, c: g.greedy(c, max_len=2.5), "--max-len must be a whole number"),
    (lambda g, c: g.beam_search(c, beam=0), "--beam must be a whole number of at least 1"),
    (lambda g, c: g.beam_search(c, length_normalization=float("nan")),
     "--length-normalization must be a finite number >= 0"),
    (lambda g, c: g.beam_search(c, length_normalization=-0.5),
     "--length-normalization must be a finite number >= 0"),
    (lambda g, c: g.greedy(np.full_like(c, np.nan)), "image codes contain NaN or inf"),
])
def test_bad_options_are_user_errors(generator, codes, call, message):
    with pytest.raises(UserError, match=message):
        call(generator, codes[:3])


def test_nan_parameters_are_reported_not_captioned(trained, generator, codes):
    b = trained.net["output"].b
    saved = b.get_value()
    b.set_value(np.full_like(saved, np.nan))
    try:
        for decode in (generator.greedy, generator.beam_search, generator.sample,
                       lambda c: generate_by_prefix(trained, c)):
            with pytest.raises(UserError, match="the model produced NaN probabilities: "
                                                "its parameters are not finite"):
                decode(codes[:3])
    finally:
        b.set_value(saved)


@pytest.mark.parametrize("temperature", [1e-300, 1e-30, 1e6, 1e300])
def test_sampling_at_extreme_temperatures_never_gives_suppressed_words(trained, generator, codes,
                                                                       temperature):
    with wanting_unk(trained):
        samples, log_probs = generator.sample(codes[:20], temperature=temperature, seed=0)
        assert not any("#UNK#" in s[0] or "#START#" in s[0] for s in samples)
        assert np.isfinite(log_probs).all()
        if temperature < 1e-20:   # cold: the greedy captions
            assert [s[0] for s in samples] == generator.greedy(codes[:20])[0]


class _ReportingNetwork(object):
    """A numpy network on the inference interface that reports, per step, the word it was fed.

    Its log-probabilities depend on the image and the fed word, so beam
    search really reorders rows; its extras (``fed``: the word fed at this
    step, ``gate``: a number in [0, 1]) let a test check that every caption
    carries the extras of its own tokens, through beam reordering.
    """

    image_shape = (2,)

    def __init__(self, vocab, seed=0):
        from lasagne_caption.models.base import CaptionNetwork
        self.vocab = vocab
        self.check_images = lambda images: CaptionNetwork.check_images(self, images)
        rng = np.random.RandomState(seed)
        self.table = rng.randn(len(vocab), len(vocab)) * 2
        self.image_weights = rng.randn(2, len(vocab))
        self.table[:, vocab.end_ix] -= 1.0

    def feed_image(self, images):
        return [np.asarray(images, "float32"), np.zeros((len(images), 1), "float32")]

    def inference_step(self, words, states):
        images, steps = states
        logits = self.table[words] + images @ self.image_weights + steps * 0.8 * (
            np.arange(len(self.vocab)) == self.vocab.end_ix)
        log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        extras = {"fed": np.asarray(words, "float32"),
                  "gate": 1 / (1 + np.exp(-logits[:, 0]))}
        return log_probs.astype("float32"), [images, steps + 1], extras


@pytest.mark.parametrize("method", ["greedy", "beam1", "beam3", "sample"])
def test_every_decoder_carries_each_words_extras(method):
    from lasagne_caption.vocab import Vocabulary
    vocab = Vocabulary(["#UNK#", "#START#", "#END#", "a", "dog", "cat", "runs", "on", "grass", "the"])
    gen = CaptionGenerator(_ReportingNetwork(vocab))
    codes = np.random.RandomState(1).randn(5, 2).astype("float32")
    if method == "sample":
        captions, log_probs, extras = gen.sample(codes, n=2, seed=0, max_len=8, extras=True)
        captions, extras = sum(captions, []), sum(extras, [])
    elif method == "greedy":
        captions, log_probs, extras = gen.greedy(codes, max_len=8, extras=True)
    else:
        captions, log_probs, extras = gen.beam_search(codes, beam=int(method[4:]), max_len=8,
                                                      extras=True)
    assert len(extras) == len(captions) == (10 if method == "sample" else 5)
    for caption, notes in zip(captions, extras):
        tokens = [vocab.index[w] for w in caption.split()]
        ended = len(tokens) < 8     # #END# is a token too, unless max_len cut the caption
        fed = [vocab.start_ix] + tokens[:len(tokens) - (0 if ended else 1)]
        assert notes["fed"].tolist() == fed, caption
        assert notes["gate"].shape == (len(fed),)
        assert ((notes["gate"] >= 0) & (notes["gate"] <= 1)).all()
    # without extras=True the decoders return what they always did
    assert len(gen.greedy(codes, max_len=8)) == 2
    assert len(gen.beam_search(codes, beam=2, max_len=8)) == 2


def test_beam_width_one_equals_greedy_on_the_interface():
    from lasagne_caption.vocab import Vocabulary
    vocab = Vocabulary(["#UNK#", "#START#", "#END#", "a", "dog", "cat", "runs", "on", "grass", "the"])
    gen = CaptionGenerator(_ReportingNetwork(vocab, seed=4))
    codes = np.random.RandomState(2).randn(6, 2).astype("float32")
    greedy = gen.greedy(codes, max_len=10, extras=True)
    beam = gen.beam_search(codes, beam=1, max_len=10, extras=True)
    assert greedy[0] == beam[0]
    np.testing.assert_allclose(greedy[1], beam[1], rtol=1e-6)
    for a, b in zip(greedy[2], beam[2]):
        assert a["fed"].tolist() == b["fed"].tolist()
