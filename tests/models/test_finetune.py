"""The encoder head that fine-tunes with the captioner: its options, its weights, and which
parameters the optimiser updates (built symbolically, nothing compiled)."""
import numpy as np
import pytest

from lasagne_caption.errors import UserError
from lasagne_caption.models import NetworkConfig, SeminarModel
from lasagne_caption.models.attention import AttentionConfig, AttentionModel
from lasagne_caption.models.finetune import EncoderHead, HeadConfig
from lasagne_caption.models.seminar import fast_masked_cross_entropy
from lasagne_caption.vocab import Vocabulary


def _weights(seed=0, logits=True):
    rng = np.random.default_rng(seed)
    weights = {"Conv_1": (rng.normal(0, 0.05, (320, 1280)).astype("float32"),
                          rng.normal(0, 0.1, 1280).astype("float32"))}
    if logits:
        weights["Logits"] = (rng.normal(0, 0.05, (1280, 1001)).astype("float32"),
                             rng.normal(0, 0.1, 1001).astype("float32"))
    return weights


@pytest.mark.parametrize("options, message", [
    ({"output": "pool"}, "output must be one of grid, logits"),
    ({"output": "grid", "train_layers": 2}, "grid head has 1 trainable layer: train_layers "
                                            "must be 0..1, not 2"),
    ({"train_layers": -1}, "must be 0..2, not -1"),
    ({"train_layers": True}, "not True"),
    ({"learning_rate_scale": 0}, "learning_rate_scale must be in"),
    ({"learning_rate_scale": float("nan")}, "learning_rate_scale must be in"),
])
def test_head_options_are_checked(options, message):
    with pytest.raises(UserError, match=message):
        HeadConfig(**options)


def test_head_weights_are_checked_and_round_trip():
    head = EncoderHead(HeadConfig(output="logits", train_layers=1), _weights())
    assert head.names == ["Conv_1/W", "Conv_1/b", "Logits/W", "Logits/b"]
    assert head.output_shape == (1001,) and head.input_shape == (49, 320)
    values = head.get_values()
    other = EncoderHead(HeadConfig(output="logits"), _weights(seed=1))
    other.set_values(values)
    for name, value in other.get_values().items():
        np.testing.assert_array_equal(value, values[name])
    with pytest.raises(UserError, match="Logits/b is missing"):
        other.set_values({k: v for k, v in values.items() if k != "Logits/b"})
    bad = dict(values, **{"Conv_1/W": np.full((320, 1280), np.nan, "float32")})
    with pytest.raises(UserError, match="Conv_1/W must be finite floats"):
        other.set_values(bad)
    with pytest.raises(UserError, match="the encoder weights lack Logits"):
        EncoderHead(HeadConfig(output="logits"), _weights(logits=False))
    with pytest.raises(UserError, match=r"Conv_1: weights \(320, 1000\)"):
        EncoderHead(HeadConfig(output="grid"),
                    {"Conv_1": (np.zeros((320, 1000)), np.zeros(1000))})


VOCAB = Vocabulary.build([["a", "dog"], ["a", "cat"]], min_count=1)


def _model(output, train_layers):
    head = EncoderHead(HeadConfig(output=output, train_layers=train_layers),
                       _weights(logits=output == "logits"))
    if output == "logits":
        config = NetworkConfig(n_tokens=len(VOCAB), code_size=1001, embed_size=4, units=5)
        return SeminarModel(config, VOCAB, head=head), head
    config = AttentionConfig(n_tokens=len(VOCAB), image_shape=[49, 1280], embed_size=4,
                             units=5, attention_size=3)
    return AttentionModel(config, VOCAB, head=head), head


@pytest.mark.parametrize("output, train_layers, trained", [
    ("logits", 0, []), ("logits", 1, ["Logits"]), ("logits", 2, ["Logits", "Conv_1"]),
    ("grid", 0, []), ("grid", 1, ["Conv_1"]),
])
def test_the_optimiser_updates_the_network_and_exactly_the_chosen_layers(output, train_layers,
                                                                         trained):
    import lasagne
    from lasagne_caption.models.attention import training_loss
    model, head = _model(output, train_layers)
    assert model.image_shape == (49, 320)
    # the checkpoint's parameters are the network's only, in the seminar's order
    assert not set(model.params) & set(head.params)
    chosen = [p for name in trained for p in head.layers[name].get_params()]
    assert set(model.optimized) == set(model.trainable) | set(chosen)
    if output == "logits":
        loss = fast_masked_cross_entropy(model.net)
    else:
        loss = training_loss(model.net, model.config)[0]
    updates = model.adam_updates(loss, 0.01)
    assert set(updates) & set(head.params) == set(chosen)
    assert set(model.trainable) <= set(updates)
    # the gradient reaches each chosen layer through the captioner's loss
    import theano
    from theano.graph.basic import graph_inputs
    for p in chosen:
        grad = theano.grad(loss, p)
        assert head.input_var in graph_inputs([grad])
    assert len(model.optimizer_state) == 2 * len(model.optimized) + 1
    assert lasagne.layers.get_output(model.net["image"]) is head.output


def test_a_head_of_the_wrong_kind_is_refused():
    head = EncoderHead(HeadConfig(output="grid"), _weights(logits=False))
    config = NetworkConfig(n_tokens=len(VOCAB), code_size=1001, embed_size=4, units=5)
    with pytest.raises(UserError, match="the encoder head gives 49x1280 codes, the network "
                                        "reads 1001"):
        SeminarModel(config, VOCAB, head=head)
