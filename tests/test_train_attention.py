"""Training the attention decoder: exact resume, best-on-dev, early stopping, decay, errors.

Everything runs on a tiny grid dataset (12 images of 4 regions x 6 features,
uint8 codes as ``prepare --features grid`` writes them) with a tiny network,
through ``lasagne_caption.train.main`` in this process.
"""
import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest

from lasagne_caption import checkpoint as ckpt
from lasagne_caption.errors import UserError
from lasagne_caption.train import best_path, log_paths

COLOURS, ANIMALS = ["red", "blue", "green"], ["dog", "cat", "bird", "horse"]


def write_grid_dataset(path, n_images=12, image_shape=(4, 6), seed=0,
                       features="mobilenet_v2_grid", grid_shape=None):
    """A tiny grid dataset written as ``prepare --features grid`` writes one.

    Image i shows a colour (i % 3) in one region and an animal (i // 3 % 4)
    in another; its three captions name both. Splits: 6 train, 3 val, 3 test.
    ``features``/``grid_shape``: what the dataset says it holds (e.g.
    ``"mobilenet_v2_block16"``, ``(7, 7, 320)``).
    """
    from lasagne_caption.data.dataset import CODES, QuantizedCodesWriter, write_dataset
    rng = np.random.RandomState(seed)
    regions, width = image_shape
    codes = 0.5 * rng.randn(n_images, regions, width).astype("float32")
    captions = []
    for i in range(n_images):
        colour, animal = i % 3, (i // 3) % 4
        codes[i, colour % regions, colour % width] += 3
        codes[i, (animal + 1) % regions, (3 + animal) % width] += 3
        c, a = COLOURS[colour], ANIMALS[animal]
        captions.append(["A %s %s runs on the grass." % (c, a), "The %s %s is running" % (c, a),
                         "a %s %s" % (c, a)])
    path.mkdir(parents=True, exist_ok=True)
    writer = QuantizedCodesWriter(path / CODES, n_images, image_shape, scale=0.05,
                                  zero_point=128,
                                  grid_shape=grid_shape or (2, regions // 2, width))
    writer.append(codes)
    writer.close()
    order = list(range(n_images))
    splits = {"train": order[:6], "val": order[6:9], "test": order[9:]}
    write_dataset(path, range(n_images), captions, ["img_%02d.jpg" % i for i in order], splits,
                  "flickr8k", features, codes_meta=writer.meta())
    return path


@pytest.fixture(scope="module")
def grid_data(tmp_path_factory):
    return write_grid_dataset(tmp_path_factory.mktemp("grid") / "tiny-grid")


TINY = ["--decoder", "attention", "--embed-size", "4", "--units", "5", "--attention-size", "3",
        "--batch-size", "4", "--batches-per-epoch", "0", "--dev-every", "1", "--dev-beam", "2",
        "--min-count", "1", "--learning-rate", "0.01", "--val-batches", "0"]


def _main(data, checkpoint, *extra, options=TINY):
    from lasagne_caption.train import main
    return main(["--data", str(data), "--checkpoint", str(checkpoint)] + list(options)
                + list(extra))


def _copy_checkpoint(src, folder):
    import glob
    for f in glob.glob(str(src) + "*") + list(log_paths(str(src))) + glob.glob(
            best_path(str(src)) + "*"):
        if not f.endswith(".lock"):
            shutil.copy(f, folder / os.path.basename(f))
    return folder / os.path.basename(str(src))


# a step size that makes the dev captions score above 0 within a few epochs, and a
# gentle decay: the selection state (best score, step size) changes along the run
LEARN = ["--learning-rate", "0.1", "--lr-decay", "0.8", "--early-stop", "0"]


@pytest.fixture(scope="module")
def runs(grid_data, tmp_path_factory):
    """Eight epochs straight, and three epochs then a resume to eight."""
    straight = tmp_path_factory.mktemp("straight") / "att.params"
    _main(grid_data, straight, "--epochs", "8", *LEARN)
    resumed = tmp_path_factory.mktemp("resumed") / "att.params"
    _main(grid_data, resumed, "--epochs", "3", *LEARN)
    interrupted = _copy_checkpoint(resumed, tmp_path_factory.mktemp("interrupted"))
    _main(grid_data, resumed, "--epochs", "8", *LEARN)
    return {"straight": straight, "resumed": resumed, "interrupted": interrupted}


def test_the_dataset_is_a_grid_of_regions(grid_data):
    from lasagne_caption.data import load_dataset
    ds = load_dataset(grid_data)
    assert ds.image_shape == (4, 6) and ds.meta["features"] == "mobilenet_v2_grid"
    codes, captions = ds.split("train")
    assert codes[[0, 1]].shape == (2, 4, 6) and len(captions) == 6


def test_a_resumed_run_equals_an_uninterrupted_one(runs):
    straight, resumed = str(runs["straight"]), str(runs["resumed"])
    assert ckpt.load_metadata(str(runs["interrupted"]))["epoch"] == 3
    meta = ckpt.load_metadata(resumed)
    assert meta["kind"] == "attention" and meta["epoch"] == 8
    # 18 training captions in batches of 4: 5 steps an epoch
    assert meta["optimizer"]["step"] == ckpt.load_metadata(straight)["optimizer"]["step"] == 40
    a, b = ckpt.safe_load_arrays(straight), ckpt.safe_load_arrays(resumed)
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    for x, y in zip(ckpt.load_optimizer_state(straight), ckpt.load_optimizer_state(resumed)):
        np.testing.assert_array_equal(x, y)
    # the interrupted checkpoint differs: training did move the weights
    assert any(not np.array_equal(x, y)
               for x, y in zip(ckpt.safe_load_arrays(runs["interrupted"]), b))
    logs = [pd.read_csv(log_paths(p)[0]) for p in (straight, resumed)]
    assert logs[1]["epoch"].tolist() == list(range(1, 9))
    columns = ["epoch", "train_loss", "val_loss", "step", "dev_bleu4", "dev_cider",
               "learning_rate"]
    assert logs[0][columns].notna().all().all()
    pd.testing.assert_frame_equal(logs[0][columns], logs[1][columns])
    assert meta["selection"] == ckpt.load_metadata(straight)["selection"]
    # the step size decayed along the way (and the resume restored it)
    assert logs[1]["learning_rate"].iloc[0] == 0.1 > logs[1]["learning_rate"].iloc[-1]
    assert meta["selection"]["learning_rate"] < 0.1


def test_the_best_on_dev_checkpoint_records_its_epoch_and_scores(runs):
    straight = str(runs["straight"])
    best = best_path(straight)
    assert best.endswith("att.best.params") and os.path.exists(best)
    meta = ckpt.load_metadata(best)
    log = pd.read_csv(log_paths(straight)[0])
    # the best epoch is the first with the highest BLEU-4 (ties keep the earlier)
    best_epoch = int(log["epoch"][log["dev_bleu4"].values.argmax()])
    assert meta["epoch"] == meta["selection"]["best_epoch"] == best_epoch
    assert meta["kind"] == "attention"
    assert log["dev_cider"].max() > 0       # the captions do score: a real choice
    row = log[log["epoch"] == best_epoch].iloc[0]
    assert meta["dev_scores"]["BLEU-4"] == pytest.approx(row["dev_bleu4"], rel=1e-9)
    assert meta["dev_scores"]["CIDEr-D"] == pytest.approx(row["dev_cider"], rel=1e-9)
    assert meta["selection"]["best_score"] == pytest.approx(row["dev_bleu4"], rel=1e-9)
    # the same best in the resumed run, with the same parameters
    resumed_best = best_path(str(runs["resumed"]))
    assert ckpt.load_metadata(resumed_best)["epoch"] == best_epoch
    for x, y in zip(ckpt.safe_load_arrays(best), ckpt.safe_load_arrays(resumed_best)):
        np.testing.assert_array_equal(x, y)
    # and it loads as a captioning model
    model, _ = ckpt.load_model(best)
    assert model.kind == "attention" and model.config.image_shape == [4, 6]


class FakeDev:
    """Dev scores that get worse after the first evaluation: epochs 2.. never improve."""

    def __init__(self, bleu=(0.30, 0.20, 0.25, 0.10, 0.05)):
        self.bleu, self.calls = list(bleu), 0

    def __call__(self, model, dataset, args):
        score = self.bleu[self.calls]
        self.calls += 1
        return {"BLEU-4": score, "CIDEr-D": 2 * score}


def test_early_stop_stops_and_a_resume_has_nothing_to_do(grid_data, tmp_path, monkeypatch,
                                                         capsys):
    import lasagne_caption.train as train
    fake = FakeDev()
    monkeypatch.setattr(train, "dev_scores", fake)
    path = tmp_path / "stop.params"
    _main(grid_data, path, "--epochs", "5", "--early-stop", "1")
    out = capsys.readouterr().out
    assert "early stop: no better dev BLEU-4 for 1 evaluations; the best, epoch 1" in out
    meta = ckpt.load_metadata(str(path))
    assert meta["epoch"] == 2 and fake.calls == 2
    assert meta["selection"]["stopped"] and meta["selection"]["best_epoch"] == 1
    assert ckpt.load_metadata(best_path(str(path)))["epoch"] == 1
    assert pd.read_csv(log_paths(str(path))[0])["epoch"].tolist() == [1, 2]
    before = path.read_bytes()
    _main(grid_data, path, "--epochs", "5", "--early-stop", "1")
    out = capsys.readouterr().out
    assert "already at epoch 2 of 5 (stopped early): nothing to do" in out
    assert fake.calls == 2 and path.read_bytes() == before


def test_lr_decay_halves_the_step_size_after_an_epoch_without_improvement(grid_data, tmp_path,
                                                                          monkeypatch):
    import lasagne_caption.train as train
    monkeypatch.setattr(train, "dev_scores", FakeDev())
    path = tmp_path / "decay.params"
    assert _main(grid_data, path, "--epochs", "4", "--lr-decay", "0.5", "--early-stop", "0") == 0
    log = pd.read_csv(log_paths(str(path))[0])
    # a row logs the step size its epoch trained with; epoch 2 and 4 do not
    # improve on epoch 1 (0.2, 0.1 < 0.3), epoch 3 neither (0.25 < 0.3)
    np.testing.assert_allclose(log["learning_rate"], [0.01, 0.01, 0.005, 0.0025], rtol=1e-6)
    meta = ckpt.load_metadata(str(path))
    assert meta["selection"]["learning_rate"] == pytest.approx(0.00125)
    assert meta["selection"]["bad_epochs"] == 3 and not meta["selection"]["stopped"]
    # a resume continues with the decayed step size
    monkeypatch.setattr(train, "dev_scores", FakeDev(bleu=(0.01,)))
    resumed = train.train(train.build_parser().parse_args(
        ["--data", str(grid_data), "--checkpoint", str(path), "--epochs", "5"]
        + TINY + ["--lr-decay", "0.5", "--early-stop", "0"]))
    assert resumed.current_learning_rate == pytest.approx(0.000625)
    log = pd.read_csv(log_paths(str(path))[0])
    assert log["learning_rate"].tolist()[-1] == pytest.approx(0.00125)


def _args(early_stop, lr_decay):
    from lasagne_caption.train import build_parser
    return build_parser().parse_args(["--checkpoint", "x.params", "--early-stop",
                                      str(early_stop), "--lr-decay", str(lr_decay)])


class _Model:
    def __init__(self):
        self.rates = []

    def set_learning_rate(self, value):
        self.rates.append(value)


@pytest.mark.parametrize("early_stop, lr_decay, stopped, rates", [
    (1, 0.5, True, []),            # stopping wins over decaying
    (2, 0.5, False, [0.5]),        # the first bad epoch decays, the second would stop
    (0, 0.5, False, [0.5]),
    (0, 1.0, False, []),           # decay 1: never
])
def test_select_decays_or_stops_when_dev_does_not_improve(early_stop, lr_decay, stopped, rates,
                                                          monkeypatch):
    import lasagne_caption.train as train
    saved = []
    monkeypatch.setattr(train.ckpt, "make_metadata", lambda *a: {"epoch": a[2]})
    monkeypatch.setattr(train.ckpt, "save_checkpoint", lambda path, *a, **k: saved.append(path))
    model = _Model()
    model.get_param_values = lambda: []
    selection = {"select_on": "BLEU-4", "best_score": None, "best_epoch": None,
                 "bad_epochs": 0, "learning_rate": 1.0, "stopped": False}
    args = _args(early_stop=early_stop, lr_decay=lr_decay)
    note = train.select(model, selection, {"BLEU-4": 0.3}, 1, args, None, 5)
    assert "best so far: x.best.params" in note and saved == ["x.best.params"]
    note = train.select(model, selection, {"BLEU-4": 0.3}, 2, args, None, 10)  # a tie
    assert selection["best_epoch"] == 1 and selection["bad_epochs"] == 1
    assert selection["stopped"] == stopped and model.rates == rates
    assert ("learning rate -> 0.5" in note) == bool(rates)
    assert len(saved) == 1
    if not stopped:
        train.select(model, selection, {"BLEU-4": 0.31}, 3, args, None, 15)
        assert selection["best_epoch"] == 3 and selection["bad_epochs"] == 0
        assert saved == ["x.best.params"] * 2


def test_attention_on_flat_codes_is_a_one_line_error(tiny_dataset, tmp_path):
    path = tmp_path / "flat.params"
    with pytest.raises(UserError) as error:
        _main(tiny_dataset, path, "--epochs", "1")
    message = str(error.value)
    assert "--features grid" in message and "--decoder attention" in message
    assert "\n" not in message
    assert not path.exists()


def test_resuming_an_attention_checkpoint_as_seminar_is_a_one_line_error(runs, grid_data,
                                                                         tmp_path):
    path = _copy_checkpoint(runs["interrupted"], tmp_path)
    before = path.read_bytes()
    options = [o for o in TINY if o != "attention"]
    options[options.index("--decoder") + 1:options.index("--decoder") + 1] = ["seminar"]
    with pytest.raises(UserError) as error:
        _main(grid_data, path, "--epochs", "4", *LEARN, options=options)
    message = str(error.value)
    assert "kind attention; you gave --decoder seminar" in message
    assert "\n" not in message
    assert path.read_bytes() == before and ckpt.load_metadata(str(path))["epoch"] == 3


def test_a_grid_checkpoint_is_refused_on_other_data(runs, grid_data, tmp_path):
    other = write_grid_dataset(tmp_path / "other", image_shape=(2, 6), seed=1)
    path = _copy_checkpoint(runs["interrupted"], tmp_path)
    with pytest.raises(UserError) as error:
        _main(other, path, "--epochs", "4", *LEARN)
    assert "was trained on tiny-grid" in str(error.value) and "\n" not in str(error.value)
    assert ckpt.load_metadata(str(path))["epoch"] == 3
    meta = json.loads(open(ckpt.metadata_path(str(path))).read())
    assert meta["data"]["features"] == "mobilenet_v2_grid"
