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
    from lasagne_caption.files import _start_time, temporary_prefix
    checkpoint = tmp_path / "killed.params"
    cmd = [sys.executable, "-m", "lasagne_caption.train", "--data", str(tiny_dataset),
           "--checkpoint", str(checkpoint), "--epochs", "100000", "--save-every", "1"] + TINY
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    started = _start_time(proc.pid)       # the killed writer's identity in temporary names
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
    # The kill may have landed inside a save and left its temporary. Whether it
    # did depends on timing, so plant the temporaries the killed process would
    # have left in every save (same pid and start time in the names): the
    # resumed run must remove them all, whatever the kill left.
    log_csv, log_png = log_paths(str(checkpoint))
    planted = [tmp_path / (temporary_prefix(name, proc.pid, started) + "kill9xyz.tmp")
               for name in (checkpoint, ckpt.metadata_path(str(checkpoint)), log_csv, log_png,
                            str(checkpoint) + ".state-0123456789abcdef.npz")]
    for path in planted:
        path.write_bytes(b"half of a save")
    model = _run(tiny_dataset, checkpoint, "--epochs", str(meta["epoch"] + 1))
    assert ckpt.load_metadata(str(checkpoint))["epoch"] == meta["epoch"] + 1
    assert model.vocab.words == meta["vocabulary"]
    assert not [p for p in planted if p.exists()]
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")], os.listdir(tmp_path)


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
    # in tmp_path: the default checkpoint (./wrote_net.params) may be a user's
    # training that runs right now in the checkout
    out = subprocess.run([sys.executable, "-m", "lasagne_caption.train", "--data",
                          str(tmp_path / "nothing")], capture_output=True, text=True,
                         cwd=tmp_path)
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


# -- nothing lost, nothing silently wrong --------------------------------------
def _main(dataset, checkpoint, *extra):
    from lasagne_caption.train import main
    return main(["--data", str(dataset), "--checkpoint", str(checkpoint)] + TINY + list(extra))


@pytest.fixture(scope="module")
def one_epoch(tiny_dataset, tmp_path_factory):
    """A checkpoint after one epoch (the tests copy it before changing it)."""
    path = tmp_path_factory.mktemp("one_epoch") / "run.params"
    _main(tiny_dataset, path, "--epochs", "1")
    return path


def _copy_checkpoint(src, folder):
    import glob
    import shutil
    for f in glob.glob(str(src) + "*") + list(log_paths(str(src))):
        shutil.copy(f, folder / os.path.basename(f))
    return folder / os.path.basename(str(src))


def test_no_resume_never_replaces_without_overwrite_nor_a_foreign_file(tiny_dataset, one_epoch,
                                                                      tmp_path, capsys):
    from lasagne_caption.errors import UserError
    path = _copy_checkpoint(one_epoch, tmp_path)
    before = path.read_bytes()
    with pytest.raises(UserError, match="exists; --no-resume would replace it: add --overwrite"):
        _main(tiny_dataset, path, "--epochs", "1", "--no-resume")
    assert path.read_bytes() == before
    notes = tmp_path / "notes.params"
    notes.write_text("my notes")
    with pytest.raises(UserError, match="refusing to overwrite .*notes.params"):
        _main(tiny_dataset, notes, "--epochs", "1", "--no-resume", "--overwrite")
    assert notes.read_text() == "my notes"
    with pytest.raises(UserError, match="is a folder"):
        _main(tiny_dataset, tmp_path, "--epochs", "1")
    _main(tiny_dataset, path, "--epochs", "1", "--no-resume", "--overwrite")
    assert "--overwrite: replacing" in capsys.readouterr().out


def test_a_second_run_on_the_same_checkpoint_is_refused(tiny_dataset, one_epoch, tmp_path):
    from lasagne_caption.errors import UserError
    from lasagne_caption.files import exclusive_lock
    path = _copy_checkpoint(one_epoch, tmp_path)
    with exclusive_lock(str(path) + ".lock", "another run"):
        with pytest.raises(UserError, match="being written by another process"):
            _main(tiny_dataset, path, "--epochs", "2")
    assert ckpt.load_metadata(str(path))["epoch"] == 1


@pytest.mark.parametrize("option, value, message", [
    ("--learning-rate", "nan", "--learning-rate must be a number in"),
    ("--learning-rate", "-1", "--learning-rate must be a number in"),
    ("--units", "0", "--units must be at least 1"),
    ("--embed-size", "-1", "--embed-size must be at least 1"),
    ("--max-caption-len", "0", "--max-caption-len must be at least 2"),
    ("--keep-every", "3", "--keep-every must be 0 or a multiple of --save-every"),
])
def test_bad_options_are_one_line_errors(tiny_dataset, tmp_path, option, value, message):
    out = subprocess.run([sys.executable, "-m", "lasagne_caption.train", "--data",
                          str(tiny_dataset), "--checkpoint", str(tmp_path / "x.params"),
                          option, value], capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert message in out.stderr
    assert not os.listdir(tmp_path)


def test_a_nan_loss_stops_training_and_keeps_the_last_good_epoch(tiny_dataset, one_epoch,
                                                                 tmp_path, monkeypatch):
    from lasagne_caption.models import SeminarModel
    from lasagne_caption.train import TrainingDiverged
    path = _copy_checkpoint(one_epoch, tmp_path)
    real_step, calls = SeminarModel.train_step, []

    def step(self, *batch):   # epoch 2 trains, epoch 3 diverges at its second batch
        calls.append(1)
        return float("nan") if len(calls) == 5 else real_step(self, *batch)
    monkeypatch.setattr(SeminarModel, "train_step", step)
    with pytest.raises(TrainingDiverged, match="became nan at epoch 3, batch 2.*keeps epoch 2"):
        _main(tiny_dataset, path, "--epochs", "5", "--save-every", "5")
    assert ckpt.load_metadata(str(path))["epoch"] == 2
    assert all(np.isfinite(v).all() for v in ckpt.safe_load_arrays(path))
    assert pd.read_csv(log_paths(str(path))[0])["epoch"].tolist() == [1, 2]


@pytest.mark.parametrize("extra, message", [
    (["--units", "32"], "trained with --units 16; you gave --units 32"),
    (["--cell", "gru"], "trained with --cell lstm; you gave --cell gru"),
    (["--learning-rate", "0.02"], "trained with --learning-rate 0.01; you gave 0.02"),
    (["--min-count", "3"], "started with --min-count 1; you gave 3"),
])
def test_a_resume_refuses_options_that_contradict_the_checkpoint(tiny_dataset, one_epoch,
                                                                 tmp_path, extra, message):
    from lasagne_caption.errors import UserError
    path = _copy_checkpoint(one_epoch, tmp_path)
    args = ["--data", str(tiny_dataset), "--checkpoint", str(path), "--epochs", "2"]
    tiny = list(TINY)
    for option in extra[::2]:   # drop TINY's value of the option the test changes
        if option in tiny:
            del tiny[tiny.index(option):tiny.index(option) + 2]
    from lasagne_caption.train import main
    with pytest.raises(UserError, match=message):
        main(args + tiny + extra)
    assert ckpt.load_metadata(str(path))["epoch"] == 1


def test_a_resume_on_other_data_is_refused(tiny_dataset, one_epoch, tmp_path):
    from tests.conftest import write_tiny_dataset
    from lasagne_caption.errors import UserError
    other = write_tiny_dataset(tmp_path / "other", seed=1)
    path = _copy_checkpoint(one_epoch, tmp_path)
    with pytest.raises(UserError, match="was trained on tiny .*--data .*other is other"):
        _main(other, path, "--epochs", "2")
    assert ckpt.load_metadata(str(path))["data"]["name"] == "tiny"


def test_a_damaged_log_or_optimizer_state_does_not_hold_the_weights(tiny_dataset, one_epoch,
                                                                     tmp_path, capsys):
    import glob
    from lasagne_caption.errors import UserError
    path = _copy_checkpoint(one_epoch, tmp_path)
    log_csv = log_paths(str(path))[0]
    with open(log_csv, "w") as f:
        f.write("epoch,train_loss\n1,abc,3\n")
    state = glob.glob(str(path) + ".state-*.npz")[0]
    with open(state, "r+b") as f:
        f.truncate(100)
    with pytest.raises(UserError, match="add --reset-optimizer"):
        _main(tiny_dataset, path, "--epochs", "2")
    _main(tiny_dataset, path, "--epochs", "2", "--reset-optimizer")
    err = capsys.readouterr().err
    assert "moved it to" in err and os.path.exists(log_csv + ".damaged")
    assert ckpt.load_metadata(str(path))["epoch"] == 2
    assert pd.read_csv(log_csv)["epoch"].tolist() == [2]


def test_keep_every_keeps_a_copy_per_chosen_epoch(tiny_dataset, tmp_path):
    from lasagne_caption.train import kept_path
    path = tmp_path / "run.params"
    _main(tiny_dataset, path, "--epochs", "2", "--save-every", "1", "--keep-every", "2")
    kept = kept_path(str(path), 2)
    assert kept.endswith("run.epoch-0002.params")
    assert ckpt.load_metadata(kept)["epoch"] == 2
    assert not os.path.exists(kept_path(str(path), 1))
    for a, b in zip(ckpt.safe_load_arrays(kept), ckpt.safe_load_arrays(path)):
        np.testing.assert_array_equal(a, b)
