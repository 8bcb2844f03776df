"""The network, its masked loss and the seminar's parameter order."""
import pickle

import lasagne
import numpy as np
import pytest
import theano
import theano.tensor as T
from lasagne.layers import (DenseLayer, DropoutLayer, EmbeddingLayer, InputLayer,
                            get_all_param_values, get_output)
from lasagne.nonlinearities import softmax

from tests import reference
from lasagne_caption.checkpoint import safe_load_arrays
from lasagne_caption.errors import UserError
from lasagne_caption.layers import BroadcastLayer, LSTMLayer, UnbroadcastLayer
from lasagne_caption.models import NetworkConfig, SeminarModel, build_network, param_shapes, read_glove
from lasagne_caption.models.losses import masked_cross_entropy
from lasagne_caption.models.seminar import fast_masked_cross_entropy  # noqa

SENTENCES = np.array([[1, 5, 6, 7, 2, -1, -1],
                      [1, 8, 2, -1, -1, -1, -1],
                      [1, 5, 9, 10, 11, 12, 2]], "int32")


def _codes(model, n=3, seed=0):
    return np.random.RandomState(seed).randn(n, model.config.code_size).astype("float32")


def test_loss_is_hand_computed_masked_cross_entropy(tiny_model):
    codes = _codes(tiny_model)
    probs = tiny_model.probabilities(codes, SENTENCES)
    assert probs.shape == (3, 7, tiny_model.config.n_tokens)
    np.testing.assert_allclose(probs.sum(-1), 1, rtol=1e-5)
    terms = [-np.log(probs[b, t, SENTENCES[b, t + 1]])
             for b in range(3) for t in range(6) if SENTENCES[b, t + 1] != -1]
    assert len(terms) == 4 + 2 + 6
    assert tiny_model.val_step(codes, SENTENCES) == pytest.approx(np.mean(terms), rel=1e-5)


def test_fast_loss_equals_the_full_softmax_loss_and_gradients(tiny_model):
    net = tiny_model.net
    full = masked_cross_entropy(get_output(net["probabilities"], deterministic=True),
                                net["sentences"])
    fast = fast_masked_cross_entropy(net, deterministic=True)
    params = tiny_model.trainable
    f = theano.function([net["image_codes"], net["sentences"]],
                        [full, fast] + T.grad(full, params) + T.grad(fast, params))
    out = f(_codes(tiny_model), SENTENCES)
    n = len(params)
    assert out[0] == pytest.approx(out[1], rel=1e-5)
    for g_full, g_fast in zip(out[2:2 + n], out[2 + n:]):
        np.testing.assert_allclose(g_full, g_fast, rtol=1e-4, atol=1e-6)


@pytest.fixture(scope="module")
def loss_and_grads(tiny_model):
    net = tiny_model.net
    loss = fast_masked_cross_entropy(net, deterministic=True)
    return theano.function([net["image_codes"], net["sentences"]],
                           [loss] + T.grad(loss, tiny_model.trainable))


def test_padding_changes_neither_loss_nor_gradients(tiny_model, loss_and_grads):
    codes = _codes(tiny_model)
    padded = np.hstack([SENTENCES, -np.ones((3, 5), "int32")])
    short, long_ = loss_and_grads(codes, SENTENCES), loss_and_grads(codes, padded)
    for a, b in zip(short, long_):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_long_captions_are_not_underweighted(tiny_model):
    # the seminar's loss averaged over padding too; ours is a mean over real words
    codes = _codes(tiny_model)
    both = tiny_model.val_step(codes[[0, 1]], SENTENCES[[0, 1]])
    one = tiny_model.val_step(codes[[0]], SENTENCES[[0]][:, :5])
    two = tiny_model.val_step(codes[[1]], SENTENCES[[1]][:, :3])
    assert both == pytest.approx((4 * one + 2 * two) / 6, rel=1e-5)


def test_dropout_is_off_in_validation(tiny_model):
    codes = _codes(tiny_model)
    assert tiny_model.val_step(codes, SENTENCES) == tiny_model.val_step(codes, SENTENCES)


def _seminar_network(n_tokens, code_size):
    """The network exactly as the seminar's notebook writes it."""
    sentences, image_vectors = T.imatrix(), T.matrix()
    l_words = InputLayer((None, None), sentences)
    l_mask = InputLayer((None, None), T.neq(sentences, -1))
    l_image_features = InputLayer((None, code_size), image_vectors)
    l_word_embeddings = EmbeddingLayer(l_words, n_tokens, 8)
    l_image_features_small = DenseLayer(DropoutLayer(l_image_features), 16)
    decoder = LSTMLayer(l_word_embeddings, num_units=16, cell_init=l_image_features_small,
                        mask_input=l_mask, grad_clipping=10)
    broadcast_decoder_ticks = BroadcastLayer(decoder, (0, 1))
    predicted = DenseLayer(broadcast_decoder_ticks, n_tokens, nonlinearity=softmax)
    next_word_probas = UnbroadcastLayer(predicted, broadcast_layer=broadcast_decoder_ticks)
    return sentences, image_vectors, next_word_probas


def test_seminar_parameter_file_loads_and_gives_the_same_loss(tiny_model, tmp_path):
    n_tokens, code_size = tiny_model.config.n_tokens, tiny_model.config.code_size
    sentences, images, top = _seminar_network(n_tokens, code_size)
    path = tmp_path / "wrote_net.params"
    with open(path, "wb") as f:   # what the seminar notebook does
        pickle.dump(get_all_param_values(top), f)
    loss = masked_cross_entropy(get_output(top, deterministic=True), sentences)
    seminar_loss = theano.function([images, sentences], loss)(_codes(tiny_model), SENTENCES)
    before = tiny_model.get_param_values()
    try:
        tiny_model.set_param_values(safe_load_arrays(path), str(path))
        assert tiny_model.val_step(_codes(tiny_model), SENTENCES) == \
            pytest.approx(float(seminar_loss), rel=1e-5)
    finally:
        tiny_model.set_param_values(before)


def test_seminar_network_matches_numpy_master_equations(tiny_model):
    """Hidden states and loss of the built network = tests/reference.py's master LSTM, to 1e-5."""
    n_tokens, code_size = tiny_model.config.n_tokens, tiny_model.config.code_size
    params = reference.seminar_params(n_tokens, code_size, embed=8, units=16, seed=3)
    codes = _codes(tiny_model, seed=4)
    before = tiny_model.get_param_values()
    try:
        tiny_model.set_param_values([params[n] for n in reference.SEMINAR_PARAM_NAMES])
        net = tiny_model.net
        hidden = theano.function([net["image_codes"], net["sentences"]],
                                 get_output(net["decoder"], deterministic=True))(codes, SENTENCES)
        expected_hidden, expected_loss = reference.seminar_forward(params, codes, SENTENCES)
        np.testing.assert_allclose(hidden, expected_hidden, rtol=1e-5, atol=1e-5)
        assert tiny_model.val_step(codes, SENTENCES) == pytest.approx(expected_loss, rel=1e-5)
        # the same parameters under Lasagne 0.1's equations give another loss
        _, loss_01 = reference.seminar_forward(params, codes, SENTENCES, "lasagne-0.1")
        assert abs(loss_01 - expected_loss) > 1e-3
    finally:
        tiny_model.set_param_values(before)


def test_config_refuses_unknown_options_and_bad_sizes():
    good = NetworkConfig(n_tokens=10, code_size=4).to_dict()
    assert NetworkConfig.from_dict(good) == NetworkConfig(n_tokens=10, code_size=4)
    assert good["grad_clipping"] == 10 and good["lstm_variant"] == "master"   # the seminar's
    with pytest.raises(UserError, match="unknown network option attention: written by a newer"):
        NetworkConfig.from_dict(dict(good, attention="soft"))
    with pytest.raises(UserError, match="lack code_size"):
        NetworkConfig.from_dict({"n_tokens": 10})
    for field, value in [("units", "16"), ("units", 16.5), ("units", -5), ("units", 10 ** 12),
                         ("n_tokens", True), ("dropout", float("nan")), ("cell", "rnn"),
                         ("lstm_variant", "0.2"), ("grad_clipping", -1)]:
        with pytest.raises(UserError, match=field):
            NetworkConfig.from_dict(dict(good, **{field: value}))
    with pytest.raises(UserError, match="mapping"):
        NetworkConfig.from_dict([])


@pytest.mark.parametrize("image_inject", ["cell_init", "first_input"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_param_shapes_are_those_of_the_built_network(image_inject, cell):
    config = NetworkConfig(n_tokens=11, code_size=7, embed_size=5, units=3,
                           image_inject=image_inject, cell=cell)
    net = build_network(config)
    built = [p.get_value().shape for p in lasagne.layers.get_all_params(net["probabilities"])]
    assert built == param_shapes(config)


def test_mismatched_shapes_name_the_first_parameter(tiny_model):
    values = tiny_model.get_param_values()
    values[1] = np.zeros((values[1].shape[0] + 1, values[1].shape[1]), "float32")
    with pytest.raises(UserError, match=r"parameter 1 \(image_projection\.W\) has shape"):
        tiny_model.set_param_values(values, "x.params")
    with pytest.raises(UserError, match="3 parameter arrays"):
        tiny_model.set_param_values(values[:3], "x.params")


def test_training_lowers_the_loss_on_a_fixed_batch(tiny_dataset):
    from lasagne_caption.data import load_dataset
    ds = load_dataset(tiny_dataset)
    vocab = ds.vocabulary(min_count=1)
    model = SeminarModel(NetworkConfig(len(vocab), ds.code_size, embed_size=8, units=16),
                         vocab, learning_rate=0.01)
    codes, captions = ds.split("train")
    matrix = vocab.as_matrix([c[0] for c in captions[:10]])
    first = model.val_step(codes[:10], matrix)
    for _ in range(40):
        model.train_step(codes[:10], matrix)
    assert model.val_step(codes[:10], matrix) < 0.5 * first


@pytest.mark.parametrize("options", [dict(image_inject="first_input"), dict(cell="gru")])
def test_network_options_build_and_give_probabilities(tiny_model, options):
    config = NetworkConfig(tiny_model.config.n_tokens, tiny_model.config.code_size,
                           embed_size=8, units=16, **options)
    net = build_network(config)
    probs = theano.function([net["image_codes"], net["sentences"]],
                            get_output(net["probabilities"], deterministic=True))
    out = probs(_codes(tiny_model), SENTENCES)
    assert out.shape == (3, 7, config.n_tokens)
    np.testing.assert_allclose(out.sum(-1), 1, rtol=1e-5)


def test_glove_vectors_initialise_and_can_be_frozen(shared_dir, tiny_model):
    glove = shared_dir / "data" / "glove" / "glove_sample.50d.txt"
    matrix, found = read_glove(glove, tiny_model.vocab)
    words = {line.split(" ", 1)[0]: line for line in glove.read_text().splitlines()}
    common = [w for w in tiny_model.vocab.words if w in words]
    assert found == len(common) > 0
    row = np.asarray(words[common[0]].split(" ")[1:], "float32")
    np.testing.assert_array_equal(matrix[tiny_model.vocab.index[common[0]]], row)
    config = NetworkConfig(tiny_model.config.n_tokens, tiny_model.config.code_size,
                           units=16, freeze_embeddings=True)
    net = build_network(config, embeddings=matrix)
    assert net["embedding"].W not in lasagne.layers.get_all_params(net["probabilities"],
                                                                  trainable=True)
    np.testing.assert_array_equal(net["embedding"].W.get_value(), matrix)


def test_bad_glove_file_is_one_line(tmp_path, tiny_model):
    bad = tmp_path / "g.txt"
    bad.write_text("the 0.1 0.2\ncat 0.1\n")
    with pytest.raises(UserError, match="g.txt: line 2 has 1 numbers, expected 2"):
        read_glove(bad, tiny_model.vocab)


def _twin_models(tiny_model, **options):
    """Two identical networks (dropout off) for comparing train step implementations."""
    config = NetworkConfig(tiny_model.config.n_tokens, tiny_model.config.code_size,
                           embed_size=8, units=16, dropout=0.0, **options)
    models = []
    for _ in range(2):
        lasagne.random.set_rng(np.random.RandomState(3))
        models.append(SeminarModel(config, tiny_model.vocab, learning_rate=0.01))
    return models


@pytest.mark.parametrize("options", [dict(), dict(image_inject="first_input", cell="gru")])
def test_unrolled_train_step_equals_the_scan_train_step(tiny_model, options):
    scan, unrolled = _twin_models(tiny_model, **options)
    codes = _codes(tiny_model)
    assert unrolled.train_function_key(SENTENCES.shape[1]) == "train_step_8"
    for _ in range(2):
        loss_scan = scan.compile("train_step")(codes, SENTENCES)   # scan, no padding
        loss_unrolled = unrolled.train_step(codes, SENTENCES)      # padded to 8 steps
        assert loss_unrolled == pytest.approx(float(loss_scan), rel=1e-5)
    for a, b in zip(scan.get_param_values() + [v.get_value() for v in scan.optimizer_state],
                    unrolled.get_param_values()
                    + [v.get_value() for v in unrolled.optimizer_state]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert sorted(unrolled._functions) == ["train_step_8"]


def test_unrolled_lengths_are_multiples_of_eight_up_to_the_limit():
    from lasagne_caption.models.seminar import UNROLL_MAX, unrolled_length
    assert [unrolled_length(n) for n in (1, 8, 9, 16, 17)] == [8, 8, 16, 16, 24]
    assert unrolled_length(UNROLL_MAX) == UNROLL_MAX
    assert unrolled_length(UNROLL_MAX + 1) is None     # scan: any length, one compile


def test_adam_equals_lasagne_adam():
    from lasagne_caption.models.updates import adam, adam_state
    rng = np.random.RandomState(0)
    initial = [rng.randn(3, 2).astype("float32"), rng.randn(2).astype("float32")]
    results = []
    for ours in (True, False):
        params = [theano.shared(v.copy()) for v in initial]
        loss = T.sum(T.sqr(params[0])) + T.sum(T.exp(params[1]))
        if ours:
            updates = adam(loss, params, adam_state(params), learning_rate=0.1)
        else:
            updates = lasagne.updates.adam(loss, params, learning_rate=0.1)
        step = theano.function([], loss, updates=updates)
        for _ in range(3):
            step()
        results.append([v.get_value() for v in updates])     # params and Adam state
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-6)
