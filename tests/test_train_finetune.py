"""Fine-tuning MobileNetV2's last layers with the captioner (``train --fine-tune N``) on
block16 codes: which layers train, what stays frozen, resume, and captioning new photos."""
import glob
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from lasagne_caption import checkpoint as ckpt
from lasagne_caption.errors import UserError
from lasagne_caption.train import log_paths
from tests.test_train_attention import write_grid_dataset


@pytest.fixture(scope="session")
def tflite(shared_dir):
    return str(shared_dir / "models" / "mobilenet_v2" / "mobilenet_v2_1.0_224_quant.tflite")


@pytest.fixture(scope="session")
def head_init(tflite):
    from lasagne_caption.encoders.mobilenet_v2 import head_weights
    return head_weights(tflite)


@pytest.fixture(scope="module")
def block16_data(tmp_path_factory):
    """12 tiny captioned images of block16 codes (49 x 320), as ``prepare --features block16``
    writes them."""
    return write_grid_dataset(tmp_path_factory.mktemp("block16") / "tiny-block16",
                              image_shape=(49, 320), features="mobilenet_v2_block16",
                              grid_shape=(7, 7, 320))


SEMINAR = ["--embed-size", "4", "--units", "5", "--batch-size", "4", "--batches-per-epoch", "2",
           "--min-count", "1", "--learning-rate", "0.01", "--val-batches", "0",
           "--encoder-lr-scale", "0.5"]


def _main(data, checkpoint, tflite, *extra, options=SEMINAR):
    from lasagne_caption.train import main
    return main(["--data", str(data), "--checkpoint", str(checkpoint), "--model", tflite]
                + list(options) + list(extra))


def _encoder_file(path):
    head = ckpt.load_metadata(str(path))["encoder"]["head"]
    with np.load(os.path.join(os.path.dirname(str(path)), head["file"])) as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def seminar_runs(block16_data, tflite, tmp_path_factory):
    """--fine-tune 1 for 4 epochs straight, and 2 + a resume to 4; --fine-tune 2 for 2."""
    root = tmp_path_factory.mktemp("finetune")
    straight, resumed, both = root / "straight.params", root / "resumed.params", root / "two.params"
    _main(block16_data, straight, tflite, "--fine-tune", "1", "--epochs", "4", "--save-every", "1")
    _main(block16_data, resumed, tflite, "--fine-tune", "1", "--epochs", "2", "--save-every", "1")
    interrupted = root / "interrupted"
    interrupted.mkdir()
    for f in glob.glob(str(resumed) + "*"):
        shutil.copy(f, interrupted / os.path.basename(f))
    _main(block16_data, resumed, tflite, "--epochs", "4", "--save-every", "1")
    _main(block16_data, both, tflite, "--fine-tune", "2", "--epochs", "2", "--save-every", "1")
    return {"straight": straight, "resumed": resumed, "two": both,
            "interrupted": interrupted / "resumed.params"}


def test_only_the_chosen_layers_train_and_the_rest_stay_as_loaded(seminar_runs, head_init):
    one, two = _encoder_file(seminar_runs["straight"]), _encoder_file(seminar_runs["two"])
    (conv_w, conv_b), (logits_w, logits_b) = head_init["Conv_1"], head_init["Logits"]
    # --fine-tune 1: the logits layer trained, Conv_1 is the int8 model's, bit for bit
    np.testing.assert_array_equal(one["Conv_1/W"], conv_w)
    np.testing.assert_array_equal(one["Conv_1/b"], conv_b)
    assert not np.array_equal(one["Logits/W"], logits_w)
    assert not np.array_equal(one["Logits/b"], logits_b)
    # --fine-tune 2: both
    for name, start in (("Conv_1/W", conv_w), ("Logits/W", logits_w)):
        assert not np.array_equal(two[name], start), name
    meta = ckpt.load_metadata(str(seminar_runs["two"]))
    assert meta["encoder"]["name"] == "mobilenet_v2" and meta["encoder"]["tap"] == "block16"
    assert meta["encoder"]["head"]["train_layers"] == 2
    assert meta["encoder"]["head"]["learning_rate_scale"] == 0.5
    assert meta["network"]["code_size"] == 1001          # the captioner reads the logits


def test_the_parameter_file_keeps_the_seminars_format(seminar_runs):
    from lasagne_caption.models.seminar import param_shapes
    meta = ckpt.load_metadata(str(seminar_runs["straight"]))
    values = ckpt.safe_load_arrays(str(seminar_runs["straight"]))
    config = ckpt.read_network(meta, str(seminar_runs["straight"]))[1]
    assert [v.shape for v in values] == [tuple(s) for s in param_shapes(config)]
    # nothing of the encoder in it, and its file is beside it, named after it
    head = meta["encoder"]["head"]
    assert head["file"] == "straight.params.encoder-%s.npz" % meta["params_sha256"][:16]
    assert len(glob.glob(str(seminar_runs["straight"]) + ".encoder-*.npz")) == 1


def test_resume_equals_an_uninterrupted_run(seminar_runs):
    straight, resumed = str(seminar_runs["straight"]), str(seminar_runs["resumed"])
    assert ckpt.load_metadata(str(seminar_runs["interrupted"]))["epoch"] == 2
    assert ckpt.load_metadata(resumed)["epoch"] == ckpt.load_metadata(straight)["epoch"] == 4
    for x, y in zip(ckpt.safe_load_arrays(straight), ckpt.safe_load_arrays(resumed)):
        np.testing.assert_array_equal(x, y)
    a, b = _encoder_file(straight), _encoder_file(resumed)
    assert sorted(a) == sorted(b) == ["Conv_1/W", "Conv_1/b", "Logits/W", "Logits/b"]
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    # Adam's moments cover the network's parameters and the trained encoder layer
    state_a, state_b = ckpt.load_optimizer_state(straight), ckpt.load_optimizer_state(resumed)
    assert len(state_a) == len(state_b)
    assert [s.shape for s in state_a[-5:-1]] == [(1280, 1001), (1280, 1001), (1001,), (1001,)]
    for x, y in zip(state_a, state_b):
        np.testing.assert_array_equal(x, y)
    import pandas as pd
    logs = [pd.read_csv(log_paths(p)[0]) for p in (straight, resumed)]
    pd.testing.assert_frame_equal(logs[0][["epoch", "train_loss", "val_loss", "step"]],
                                  logs[1][["epoch", "train_loss", "val_loss", "step"]])
    # the interrupted run's encoder differs: training moved it
    assert not np.array_equal(_encoder_file(seminar_runs["interrupted"])["Logits/W"],
                              b["Logits/W"])


def test_a_fine_tuned_checkpoint_captions_photos_and_scores(seminar_runs, tflite, shared_dir,
                                                            block16_data, tmp_path):
    photo = str(shared_dir / "data" / "samples" / "cat.bmp")
    run = subprocess.run([sys.executable, "-m", "lasagne_caption.caption", photo,
                          "--checkpoint", str(seminar_runs["straight"]), "--model", tflite,
                          "--greedy"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    line = run.stdout.strip()
    assert line.startswith(photo + ": ") and len(line.split(": ", 1)[1].split()) >= 1
    # the captioner sees what the fine-tuned head makes of the photo's block16 codes
    from lasagne_caption.caption import Captioner
    cap = Captioner.from_checkpoint(str(seminar_runs["straight"]), encoder_model=tflite)
    assert cap.model.image_shape == (49, 320) and cap.encoder_name == ("mobilenet_v2", "block16")
    codes, errors = cap.encode([photo])
    assert codes.shape == (1, 49, 320) and not errors
    from lasagne_caption.evaluate import evaluate
    scores, candidates, _, _, _ = evaluate(str(seminar_runs["straight"]), data=str(block16_data),
                                           split="test", beam=2, out=str(tmp_path))
    assert len(candidates) == 3 and 0 <= scores["BLEU-4"] <= 1


def test_options_that_do_not_fit_are_one_line_errors(block16_data, seminar_runs, tflite,
                                                      tiny_dataset, tmp_path):
    with pytest.raises(UserError, match="holds block16 codes.*--fine-tune N"):
        _main(block16_data, tmp_path / "a.params", tflite, "--epochs", "1")
    with pytest.raises(UserError, match="--fine-tune trains MobileNetV2's last layers on its "
                                        "block16 codes"):
        _main(tiny_dataset, tmp_path / "b.params", tflite, "--fine-tune", "1", "--epochs", "1")
    with pytest.raises(UserError, match="train_layers must be 0..2, not 3"):
        _main(block16_data, tmp_path / "c.params", tflite, "--fine-tune", "3", "--epochs", "1")
    with pytest.raises(UserError, match="was trained with --fine-tune 1; you gave --fine-tune 2"):
        _main(block16_data, seminar_runs["straight"], tflite, "--fine-tune", "2", "--epochs", "5")
    assert not os.path.exists(tmp_path / "a.params") and not os.path.exists(tmp_path / "c.params")


ATTENTION = ["--decoder", "attention", "--embed-size", "4", "--units", "5",
             "--attention-size", "3", "--batch-size", "4", "--batches-per-epoch", "2",
             "--dev-every", "0", "--min-count", "1", "--learning-rate", "0.01",
             "--val-batches", "0"]


def test_the_attention_network_fine_tunes_conv_1(block16_data, tflite, head_init, shared_dir,
                                                 tmp_path):
    path = tmp_path / "att.params"
    _main(block16_data, path, tflite, "--fine-tune", "1", "--epochs", "1", options=ATTENTION)
    meta = ckpt.load_metadata(str(path))
    assert meta["network"]["image_shape"] == [49, 1280]
    assert meta["encoder"]["head"]["output"] == "grid"
    weights = _encoder_file(path)
    assert sorted(weights) == ["Conv_1/W", "Conv_1/b"]
    assert not np.array_equal(weights["Conv_1/W"], head_init["Conv_1"][0])
    out = tmp_path / "map.png"
    photo = str(shared_dir / "data" / "samples" / "owl.jpg")
    run = subprocess.run([sys.executable, "-m", "lasagne_caption.caption", photo,
                          "--checkpoint", str(path), "--model", tflite, "--greedy",
                          "--attention-map", str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
