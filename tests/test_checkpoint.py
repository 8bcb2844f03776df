"""Seminar-format parameter files: safe loading, atomic saving, metadata."""
import json
import os
import pickle

import numpy as np
import pytest

from lasagne_caption import checkpoint as ckpt
from lasagne_caption.errors import UserError

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
