"""The training command: logs, checkpoints, exact resume, kill -9."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from lasagne_caption import checkpoint as ckpt
from lasagne_caption.train import build_parser, log_paths, train

TINY = ["--batch-size", "8", "--batches-per-epoch", "3", "--val-batches", "2",
        "--embed-size", "8", "--units", "16", "--min-count", "1", "--learning-rate", "0.01"]


def _run(dataset, checkpoint, *extra):
    args = build_parser().parse_args(["--data", str(dataset), "--checkpoint", str(checkpoint)]
                                     + TINY + list(extra))
    return train(args)


def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(tiny_dataset, tmp_path):
    straight = tmp_path / "straight.params"
    _run(tiny_dataset, straight, "--epochs", "4", "--save-every", "2")
    resumed = tmp_path / "resumed.params"
    _run(tiny_dataset, resumed, "--epochs", "2", "--save-every", "2")
    assert ckpt.load_metadata(str(resumed))["epoch"] == 2
    _run(tiny_dataset, resumed, "--epochs", "4", "--save-every", "2")
    meta = ckpt.load_metadata(str(resumed))
    assert meta["epoch"] == 4 and meta["optimizer"]["step"] == 12
    for a, b in zip(ckpt.safe_load_arrays(straight), ckpt.safe_load_arrays(resumed)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    for a, b in zip(ckpt.load_optimizer_state(str(straight)),
                    ckpt.load_optimizer_state(str(resumed))):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    log_csv, log_png = log_paths(str(resumed))
    log = pd.read_csv(log_csv)
    assert log["epoch"].tolist() == [1, 2, 3, 4]
    assert log[["train_loss", "val_loss"]].notna().all().all()
    assert open(log_png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    # the validation loss of the uninterrupted run is the same curve
    np.testing.assert_allclose(pd.read_csv(log_paths(str(straight))[0])["val_loss"],
                               log["val_loss"], rtol=1e-5)


def test_kill_9_leaves_a_checkpoint_that_resumes(tiny_dataset, tmp_path):
    checkpoint = tmp_path / "killed.params"
    cmd = [sys.executable, "-m", "lasagne_caption.train", "--data", str(tiny_dataset),
           "--checkpoint", str(checkpoint), "--epochs", "100000", "--save-every", "1"] + TINY
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 600
        while time.time() < deadline:
            meta = ckpt.load_metadata(str(checkpoint)) if checkpoint.exists() else None
            if meta and meta["epoch"] >= 3:
                break
            time.sleep(0.05)
        else:
            pytest.fail("training wrote no checkpoint in time")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    meta = ckpt.load_metadata(str(checkpoint))
    params = ckpt.safe_load_arrays(checkpoint)
    assert len(ckpt.load_optimizer_state(str(checkpoint))) > 0
    assert all(np.isfinite(p).all() for p in params)
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    model = _run(tiny_dataset, checkpoint, "--epochs", str(meta["epoch"] + 1))
    assert ckpt.load_metadata(str(checkpoint))["epoch"] == meta["epoch"] + 1
    assert model.vocab.words == meta["vocabulary"]


def test_sigterm_saves_the_last_finished_epoch(tiny_dataset, tmp_path):
    checkpoint = tmp_path / "term.params"
    cmd = [sys.executable, "-m", "lasagne_caption.train", "--data", str(tiny_dataset),
           "--checkpoint", str(checkpoint), "--epochs", "100000", "--save-every", "1000"] + TINY
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log_csv = log_paths(str(checkpoint))[0]
    for line in proc.stdout:          # nothing is saved before epoch 1000
        if line.startswith("epoch 3/"):
            break
    assert not checkpoint.exists()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "interrupted: saved epoch" in err
    epoch = ckpt.load_metadata(str(checkpoint))["epoch"]
    assert epoch >= 1 and pd.read_csv(log_csv)["epoch"].max() == epoch


def test_help_explains_the_options():
    out = subprocess.run([sys.executable, "-m", "lasagne_caption.train", "--help"],
                         capture_output=True, text=True)
    assert out.returncode == 0
    for option in ("--epochs", "--checkpoint", "--resume", "--batches-per-epoch",
                   "--val-batches", "--image-inject", "--glove"):
        assert option in out.stdout


def test_missing_dataset_is_a_one_line_error(tmp_path):
    out = subprocess.run([sys.executable, "-m", "lasagne_caption.train", "--data",
                          str(tmp_path / "nothing")], capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "no such dataset folder" in out.stderr


def test_compile_notice_quotes_the_last_measured_time(tmp_path, monkeypatch, capsys):
    from lasagne_caption.train import compile_with_notice

    class Model:            # compile_with_notice needs only these two methods
        compiled = []

        def is_compiled(self, name):
            return name in self.compiled

        def compile(self, name):
            time.sleep(0.05)
            self.compiled.append(name)

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    model = Model()
    compile_with_notice(model, "train_step_24")
    out = capsys.readouterr().out
    assert "train step for captions of up to 24 words" in out and "the first time" in out
    compile_with_notice(model, "train_step_24")               # already compiled: silent
    assert capsys.readouterr().out == ""
    compile_with_notice(model, "train_step_32")
    assert "last time on this machine: 0 s" in capsys.readouterr().out
    compile_with_notice(model, "val_step")                    # another kind: no estimate yet
    assert "the first time" in capsys.readouterr().out
