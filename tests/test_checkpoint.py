"""Seminar-format parameter files: safe loading, atomic saving, metadata."""
import json
import os
import pickle

import numpy as np
import pytest

from tests import reference
from lasagne_caption import checkpoint as ckpt
from lasagne_caption.errors import UserError
from lasagne_caption.vocab import Vocabulary

VALUES = [np.arange(6, dtype="float32").reshape(2, 3), np.ones(4, "float32")]


class _Evil(object):
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/lasagne_caption_pwned",))


def test_plain_list_of_arrays_round_trips(tmp_path):
    path = tmp_path / "wrote_net.params"
    with open(path, "wb") as f:
        pickle.dump(VALUES, f)            # as the seminar notebook writes it
    loaded = ckpt.safe_load_arrays(path)
    assert len(loaded) == 2
    for a, b in zip(loaded, VALUES):
        np.testing.assert_array_equal(a, b)


def test_python2_protocol2_pickle_loads(tmp_path):
    path = tmp_path / "py2.params"
    with open(path, "wb") as f:
        pickle.dump(VALUES, f, protocol=2)
    np.testing.assert_array_equal(ckpt.safe_load_arrays(path)[0], VALUES[0])


def test_malicious_pickle_is_refused_and_never_run(tmp_path):
    path = tmp_path / "evil.params"
    marker = "/tmp/lasagne_caption_pwned"
    if os.path.exists(marker):
        os.unlink(marker)
    with open(path, "wb") as f:
        pickle.dump([VALUES[0], _Evil()], f)
    with pytest.raises(UserError, match=r"evil.params: not a plain parameter pickle .*posix.system"):
        ckpt.safe_load_arrays(path)
    assert not os.path.exists(marker)


def test_truncated_and_wrong_content_are_one_line_errors(tmp_path):
    path = tmp_path / "cut.params"
    data = pickle.dumps(VALUES, protocol=2)
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(UserError, match="cut.params: truncated or corrupt"):
        ckpt.safe_load_arrays(path)
    other = tmp_path / "dict.params"
    other.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(UserError, match="expected a list of numpy arrays, found dict"):
        ckpt.safe_load_arrays(other)
    with pytest.raises(UserError, match="missing.params: checkpoint not found"):
        ckpt.safe_load_arrays(tmp_path / "missing.params")


def test_save_writes_params_metadata_and_matching_state(tmp_path):
    path = str(tmp_path / "wrote_net.params")
    ckpt.save_checkpoint(path, VALUES, {"epoch": 3}, [np.zeros(2, "float32")])
    with open(path, "rb") as f:
        assert [v.shape for v in pickle.load(f)] == [(2, 3), (4,)]   # plain seminar format
    meta = json.loads(open(path + ".json").read())
    assert meta["epoch"] == 3 and len(meta["params_sha256"]) == 64
    assert ckpt.load_metadata(path)["epoch"] == 3
    np.testing.assert_array_equal(ckpt.load_optimizer_state(path)[0], np.zeros(2))
    leftovers = [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    assert leftovers == []


def test_a_save_killed_at_any_rename_leaves_a_consistent_checkpoint(tmp_path, monkeypatch):
    path = str(tmp_path / "wrote_net.params")
    ckpt.save_checkpoint(path, VALUES, {"epoch": 5}, [np.full(2, 5.0, "float32")])
    new_values = [v + 1 for v in VALUES]
    real_replace = os.replace
    for crash_at in range(3):          # state file, parameters, metadata
        calls = []

        def replace(src, dst):
            calls.append(dst)
            if len(calls) > crash_at:
                raise KeyboardInterrupt("killed")
            real_replace(src, dst)
        monkeypatch.setattr(os, "replace", replace)
        with pytest.raises(KeyboardInterrupt):
            ckpt.save_checkpoint(path, new_values, {"epoch": 10}, [np.full(2, 10.0, "float32")])
        monkeypatch.setattr(os, "replace", real_replace)
        params = ckpt.safe_load_arrays(path)
        epoch = ckpt.load_metadata(path)["epoch"]
        optimizer = ckpt.load_optimizer_state(path)[0]
        # whatever the moment, parameters, metadata and optimizer state agree
        expected = 5 if crash_at < 2 else 10
        assert epoch == expected and optimizer[0] == expected
        np.testing.assert_array_equal(params[1], VALUES[1] + (expected == 10))
        assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
        ckpt.save_checkpoint(path, VALUES, {"epoch": 5}, [np.full(2, 5.0, "float32")])


WORDS = ["#UNK#", "#START#", "#END#", "a", "dog", "cat", "runs", "on", "grass", "the", "red"]
SENTENCES = np.array([[1, 3, 4, 6, 7, 9, 8, 2],
                      [1, 3, 10, 5, 2, -1, -1, -1],
                      [1, 4, 2, -1, -1, -1, -1, -1]], "int32")


def _seminar_file(tmp_path, seed=0):
    """A wrote_net.params as the seminar notebook writes it, and its vocabulary file."""
    params = reference.seminar_params(len(WORDS), code_size=9, embed=6, units=5, seed=seed)
    path = tmp_path / "wrote_net.params"
    with open(path, "wb") as f:   # pickle.dump(get_all_param_values(...)), Python 2's protocol
        pickle.dump([params[n] for n in reference.SEMINAR_PARAM_NAMES], f, protocol=2)
    vocab = tmp_path / "vocab.tsv"
    Vocabulary(WORDS).save(vocab)
    return path, vocab, params


def test_seminar_parameter_pickle_reproduces_masters_loss(tmp_path):
    path, vocab, params = _seminar_file(tmp_path)
    model, metadata = ckpt.load_model(path, vocab=vocab)
    assert metadata == {} and model.config.lstm_variant == "master"
    assert [p.name for p in model.params][-2:] == ["output.W", "output.b"]
    codes = np.random.RandomState(1).randn(3, 9).astype("float32")
    _, expected = reference.seminar_forward(params, codes, SENTENCES)
    assert model.val_step(codes, SENTENCES) == pytest.approx(expected, rel=1e-5)


def test_old_toolkit_checkpoints_keep_lasagne_0_1_math(tmp_path):
    path, _, params = _seminar_file(tmp_path)
    options = {"n_tokens": len(WORDS), "code_size": 9, "embed_size": 6, "units": 5,
               "image_inject": "cell_init", "cell": "lstm", "dropout": 0.5,
               "grad_clipping": 5.0, "freeze_embeddings": False}
    meta = {"format": "lasagne-caption checkpoint 1", "network": options, "vocabulary": WORDS,
            "params_sha256": ckpt.file_digest(str(path))}
    (tmp_path / "wrote_net.params.json").write_text(json.dumps(meta))
    model, _ = ckpt.load_model(path)
    assert model.config.lstm_variant == "lasagne-0.1"
    codes = np.random.RandomState(1).randn(3, 9).astype("float32")
    _, expected = reference.seminar_forward(params, codes, SENTENCES, "lasagne-0.1")
    assert model.val_step(codes, SENTENCES) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("change, message", [
    (lambda m: m.update(format="lasagne-caption checkpoint 9"), "unknown format"),
    (lambda m: m.update(kind="transformer"), "unknown network kind 'transformer'"),
    (lambda m: m.pop("kind"), "unknown network kind None"),
    (lambda m: m.update(kind=["seminar"]), "unknown network kind"),
    (lambda m: m["network"].update(attention=True), "unknown network option attention"),
    (lambda m: m["network"].update(units="5"), "units must be a whole number"),
    (lambda m: m["network"].update(units=6000), r"parameter 1 has shape \(9, 5\), the network"),
    (lambda m: m.update(network="lstm"), "'network' must be a JSON object"),
    (lambda m: m.update(vocabulary=[1, 2]), "'vocabulary' must be a list of words"),
    (lambda m: m.update(vocabulary=WORDS[:-1]), "the vocabulary has 10 words, the network 11"),
])
def test_bad_metadata_is_refused_before_building(tmp_path, change, message):
    path, _, _ = _seminar_file(tmp_path)
    options = {"n_tokens": len(WORDS), "code_size": 9, "embed_size": 6, "units": 5}
    meta = {"format": ckpt.FORMAT, "kind": "seminar", "network": options, "vocabulary": WORDS,
            "params_sha256": ckpt.file_digest(str(path))}
    change(meta)
    (tmp_path / "wrote_net.params.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match=message):
        ckpt.load_model(path)


@pytest.mark.parametrize("content", ["[]", "null", "3"])
def test_metadata_that_is_not_an_object_is_one_line(tmp_path, content):
    path, _, _ = _seminar_file(tmp_path)
    (tmp_path / "wrote_net.params.json").write_text(content)
    with pytest.raises(UserError, match="wrote_net.params.json"):
        ckpt.load_model(path)


def test_non_finite_or_non_numeric_parameters_are_refused(tmp_path):
    path, vocab, params = _seminar_file(tmp_path)
    values = [params[n] for n in reference.SEMINAR_PARAM_NAMES]
    values[3] = np.full_like(values[3], np.nan)
    path.write_bytes(pickle.dumps(values, protocol=2))
    with pytest.raises(UserError, match="parameter 3 has NaN or infinite values"):
        ckpt.load_model(path, vocab=vocab)
    values[3] = np.array(["a"] * 3, dtype=object)
    path.write_bytes(pickle.dumps(values, protocol=2))
    with pytest.raises(UserError, match="parameter 3 holds object values"):
        ckpt.safe_load_arrays(path)


def test_a_pickle_asking_for_a_huge_array_is_refused_without_allocating(tmp_path):
    # _reconstruct(ndarray, (10**12,), b'b'): numpy pickles always ask for (0,)
    evil = (b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
            b"\x8a\x06\x00\x10\xa5\xd4\xe8\x00\x85C\x01b\x87R.")
    path = tmp_path / "huge.params"
    path.write_bytes(evil)
    with pytest.raises(UserError, match="not a plain parameter pickle .*_reconstruct of shape"):
        ckpt.safe_load_arrays(path)


# -- property-based: whatever the file says, loading succeeds or says why ------
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

JSON = st.recursive(st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70)
                    | st.floats(allow_nan=True) | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=6)
OPTIONS = ["n_tokens", "code_size", "embed_size", "units", "image_inject", "cell", "dropout",
           "grad_clipping", "freeze_embeddings", "lstm_variant", "extra"]


def _peak_bytes(fn):
    """Peak traced allocation of ``fn()`` (numpy reports its buffers to tracemalloc)."""
    import tracemalloc
    tracemalloc.start()
    try:
        fn()
    except UserError:
        pass
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(changes=st.dictionaries(st.sampled_from(OPTIONS + ["network", "vocabulary", "format",
                                                          "epoch", "kind"]), JSON, min_size=1,
                               max_size=3))
def test_mutated_metadata_loads_or_raises_a_user_error(tmp_path_factory, changes):
    folder = tmp_path_factory.mktemp("meta")
    path, _, params = _seminar_file(folder)
    network = {"n_tokens": len(WORDS), "code_size": 9, "embed_size": 6, "units": 5}
    meta = {"format": ckpt.FORMAT, "kind": "seminar", "network": network, "vocabulary": WORDS,
            "params_sha256": ckpt.file_digest(str(path))}
    for key, value in changes.items():
        (network if key in OPTIONS else meta)[key] = value
    (folder / "wrote_net.params.json").write_text(json.dumps(meta))
    try:
        model, _ = ckpt.load_model(path)
    except UserError as exc:
        assert "\n" not in str(exc)
        return
    # it loaded: then it is the network the parameters describe
    assert [p.get_value().shape for p in model.params] == \
        [params[n].shape for n in reference.SEMINAR_PARAM_NAMES]


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_fuzzed_parameter_pickles_load_or_raise_a_user_error_in_bounded_memory(tmp_path_factory,
                                                                               data):
    folder = tmp_path_factory.mktemp("fuzz")
    values = [np.arange(6, dtype="float32").reshape(2, 3), np.ones(4, "float64")]
    payload = bytearray(pickle.dumps(values, protocol=data.draw(st.integers(0, 5))))
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        at = data.draw(st.integers(0, len(payload) - 1))
        if kind == "flip":
            payload[at] = data.draw(st.integers(0, 255))
        elif kind == "cut":
            del payload[at:]
            if not payload:
                payload = bytearray(b".")
        else:
            payload[at:at] = data.draw(st.binary(min_size=1, max_size=8))
    path = folder / "fuzz.params"
    path.write_bytes(bytes(payload))

    def load():
        loaded = ckpt.safe_load_arrays(path)
        assert all(isinstance(v, np.ndarray) and v.dtype.kind in "fiu" for v in loaded)
    # a few hundred bytes of file may never cost more than a few MB
    assert _peak_bytes(load) < 16 * 2 ** 20


def test_a_memo_bomb_is_refused_in_bounded_memory(tmp_path):
    # 9 bytes asking the C unpickler for a memo of 300 million slots (4.7 GB measured)
    path = tmp_path / "bomb.params"
    path.write_bytes(b"\x80\x02]r\x00\xa3\xe1\x11.")
    assert _peak_bytes(lambda: ckpt.safe_load_arrays(path)) < 2 ** 20
    with pytest.raises(UserError, match="bomb.params: truncated or corrupt parameter pickle"):
        ckpt.safe_load_arrays(path)


def test_format_2_metadata_without_a_kind_is_the_seminar_network(tmp_path):
    """Checkpoints written by toolkit 0.2 (format 2, no "kind") still load."""
    path, _, _ = _seminar_file(tmp_path)
    options = {"n_tokens": len(WORDS), "code_size": 9, "embed_size": 6, "units": 5}
    meta = {"format": "lasagne-caption checkpoint 2", "network": options, "vocabulary": WORDS,
            "params_sha256": ckpt.file_digest(str(path))}
    (tmp_path / "wrote_net.params.json").write_text(json.dumps(meta))
    model, _ = ckpt.load_model(path)
    assert model.kind == "seminar" and model.config.lstm_variant == "master"


def test_unknown_kind_and_newer_format_are_one_line_errors_naming_the_file(tmp_path):
    path, _, _ = _seminar_file(tmp_path)
    options = {"n_tokens": len(WORDS), "code_size": 9, "embed_size": 6, "units": 5}
    for change, message in ((dict(kind="show_attend_tell_v9"), "unknown network kind"),
                            (dict(format="lasagne-caption checkpoint 4"), "unknown format")):
        meta = dict({"format": ckpt.FORMAT, "kind": "seminar", "network": options,
                     "vocabulary": WORDS, "params_sha256": ckpt.file_digest(str(path))}, **change)
        (tmp_path / "wrote_net.params.json").write_text(json.dumps(meta))
        for load in (ckpt.load_model, ckpt.resume):
            with pytest.raises(UserError) as error:
                load(str(path))
            assert message in str(error.value) and "\n" not in str(error.value)
            assert str(error.value).startswith(str(path) + ".json: ")


def test_metadata_records_kind_encoder_and_tap(tmp_path, tiny_model, tiny_dataset):
    from lasagne_caption.data import load_dataset
    dataset = load_dataset(tiny_dataset)
    dataset.meta["features"] = "mobilenet_v2_pool"
    meta = ckpt.make_metadata(tiny_model, dataset, epoch=3, step=30, run={"batch_size": 5})
    assert meta["format"] == ckpt.FORMAT and meta["kind"] == "seminar"
    assert meta["encoder"] == {"name": "mobilenet_v2", "tap": "pool"}
    assert meta["batch_size"] == 5 and meta["optimizer"]["step"] == 30
    cls, config, vocab = ckpt.read_network(json.loads(json.dumps(meta)), "x.params")
    assert cls is type(tiny_model) and config == tiny_model.config
    assert vocab.words == tiny_model.vocab.words
