"""The trained models shipped in the package: found by name, used by default, scored as
the README says, and packing a checkpoint of one's own the same way."""
import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

from lasagne_caption import pretrained
from lasagne_caption.caption import Captioner
from lasagne_caption.checkpoint import load_metadata, load_model, read_decoding
from lasagne_caption.errors import UserError
from lasagne_caption.evaluate import evaluate
from tests.data.helpers import flickr_photo_folder

ROOT = pathlib.Path(__file__).resolve().parent.parent
SHIPPED = ("flickr8k-attention", "flickr8k-seminar")
# a Flickr8k test photo whose five references all say "dog" and "snow"
DOG_IN_SNOW = "3197917064_e679a44b8e.jpg"


@pytest.fixture(scope="session")
def tflite(shared_dir):
    return str(shared_dir / "models" / "mobilenet_v2" / "mobilenet_v2_1.0_224_quant.tflite")


def test_every_shipped_model_has_weights_metadata_and_a_card():
    assert pretrained.names() == sorted(SHIPPED)
    assert pretrained.DEFAULT in SHIPPED
    for name in SHIPPED:
        path = pretrained.shipped_path(name)
        assert os.path.getsize(path) < 8e6                  # a few MB, packed
        meta = load_metadata(path)                           # its sha256 matches the file
        assert meta["params_sha256"] and meta["packed"]["storage"] == "int8"
        assert read_decoding(meta, path) == {"beam": 5, "length_normalization": 0.7}
        card = pathlib.Path(pretrained.model_card(name)).read_text()
        for needed in ("python -m lasagne_caption.train", "python -m lasagne_caption.evaluate",
                       "BLEU-4", "METEOR", "CIDEr-D", "mobilenet_v2_1.0_224_quant.tflite",
                       "Flickr8k", "research", "Apache"):
            assert needed in card, (name, needed)


def test_resolve_prefers_a_local_file_and_lists_the_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert pretrained.resolve(None) == (pretrained.shipped_path(pretrained.DEFAULT),
                                        pretrained.DEFAULT)
    assert pretrained.resolve("flickr8k-seminar") == (
        pretrained.shipped_path("flickr8k-seminar"), "flickr8k-seminar")
    (tmp_path / "wrote_net.params").write_bytes(b"")
    (tmp_path / "flickr8k-seminar").write_bytes(b"")
    assert pretrained.resolve(None) == ("wrote_net.params", None)
    assert pretrained.resolve("flickr8k-seminar") == ("flickr8k-seminar", None)
    with pytest.raises(UserError) as info:
        pretrained.resolve("flickr8k-transformer")
    message = str(info.value)
    assert message.startswith("flickr8k-transformer: no such checkpoint file")
    assert "flickr8k-attention, flickr8k-seminar" in message and "\n" not in message


def test_list_command_names_both_models():
    out = subprocess.run([sys.executable, "-m", "lasagne_caption.pretrained", "list"],
                         capture_output=True, text=True, check=True).stdout
    lines = out.splitlines()
    assert [line.split()[0] for line in lines] == sorted(SHIPPED)
    assert "attention mobilenet_v2 grid, beam 5, length norm. 0.7" in " ".join(lines[0].split())
    assert "seminar mobilenet_v2 logits, beam 5" in " ".join(lines[1].split())


def test_caption_uses_the_shipped_model_when_there_is_no_wrote_net(tmp_path, shared_dir):
    photo = shared_dir / "data" / "flickr8k" / "images" / DOG_IN_SNOW
    models = tmp_path / "models"
    env = dict(os.environ, LASAGNE_CAPTION_MODELS=str(models))
    # no encoder weights where caption looks by default: a one-line error saying so
    run = subprocess.run([sys.executable, "-m", "lasagne_caption.caption", str(photo)],
                         capture_output=True, text=True, cwd=str(tmp_path), env=env)
    last = run.stderr.strip().splitlines()[-1]
    assert run.returncode == 2 and last.startswith("error: the model expects 49x1280 mobilenet_v2")
    assert "mobilenet_v2_1.0_224_quant.tflite does not exist" in last
    models.mkdir()
    (models / "mobilenet_v2_1.0_224_quant.tflite").symlink_to(
        shared_dir / "models" / "mobilenet_v2" / "mobilenet_v2_1.0_224_quant.tflite")
    run = subprocess.run([sys.executable, "-m", "lasagne_caption.caption", str(photo)],
                         capture_output=True, text=True, cwd=str(tmp_path), env=env)
    assert run.returncode == 0, run.stderr
    assert "using the shipped model flickr8k-attention" in run.stderr
    assert "no wrote_net.params here" in run.stderr
    caption = run.stdout.strip().split(": ", 1)[1]
    assert "dog" in caption.split() and "snow" in caption.split(), caption


def test_shipped_models_by_name_default_to_their_dev_setting(shared_dir, tflite):
    photo = str(shared_dir / "data" / "flickr8k" / "images" / DOG_IN_SNOW)
    for name in SHIPPED:
        captioner = Captioner.from_checkpoint(name, encoder_model=tflite)
        assert captioner.shipped == name
        assert captioner.decoding == {"beam": 5, "length_normalization": 0.7}
        codes, errors = captioner.encode([photo])
        assert not errors
        default = captioner.run(codes)[0]
        assert default["method"] == "beam5"
        explicit = captioner.run(codes, beam=5, length_normalization=0.7)[0]
        assert default["captions"] == explicit["captions"]
        assert default["log_probs"] == pytest.approx(explicit["log_probs"])
        words = default["captions"][0].split()
        assert "dog" in words and "snow" in words, (name, words)
        greedy = captioner.run(codes, greedy=True)[0]          # no normalisation implied
        assert greedy["method"] == "greedy"


def test_pack_a_checkpoint_of_ones_own(demo_checkpoint, tmp_path):
    out = tmp_path / "mine.npz"
    subprocess.run([sys.executable, "-m", "lasagne_caption.pretrained", "pack",
                    str(demo_checkpoint), str(out), "--beam", "2", "--length-normalization",
                    "0.5", "--data", "data/flickr8k"], check=True, capture_output=True)
    model, meta = load_model(str(out))
    original, original_meta = load_model(str(demo_checkpoint))
    assert meta["decoding"] == {"beam": 2, "length_normalization": 0.5}
    assert meta["data"]["path"] == "data/flickr8k"
    assert meta["packed"] == {"storage": "int8", "from": os.path.basename(str(demo_checkpoint)),
                              "from_sha256": original_meta["params_sha256"]}
    assert meta["vocabulary"] == original_meta["vocabulary"]
    for a, b in zip(model.get_param_values(), original.get_param_values()):
        np.testing.assert_allclose(a, b, atol=np.abs(b).max() / 127 + 1e-7)
    # no state file, nothing else written beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.npz", "mine.npz.json"]
    with pytest.raises(UserError, match='"decoding" must be'):
        pretrained.pack_checkpoint(str(demo_checkpoint), str(tmp_path / "bad.npz"),
                                   decoding={"beam": 0, "length_normalization": 0.0})
    assert not (tmp_path / "bad.npz").exists()


# -- the README's table of the shipped models equals what evaluate gives ----------------

def readme_scores(name):
    """``{metric: value}`` of shipped model ``name`` in the README's table of shipped models."""
    lines = (ROOT / "README.md").read_text().splitlines()
    start = lines.index("<!-- shipped models: tests/test_pretrained.py checks these numbers -->")
    header = [c.strip() for c in lines[start + 1].strip("|").split("|")]
    for line in lines[start + 3:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] == "`%s`" % name:
            return {h: float(c.strip("*")) for h, c in zip(header, cells)
                    if re.fullmatch(r"\*{0,2}\d+\.\d\*{0,2}", c)}
    raise AssertionError("no README row for %s" % name)


def _check_against_readme(name, scores):
    expected = readme_scores(name)
    assert set(expected) == {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L",
                             "CIDEr-D"}
    for metric, value in expected.items():
        # the README rounds to 0.1; one caption decided otherwise on another CPU moves less
        assert abs(100 * scores[metric] - value) <= 0.15, (name, metric, scores[metric], value)


@pytest.fixture(scope="module")
def flickr8k_logits(flickr8k_dir, tmp_path_factory):
    from lasagne_caption.data.prepare import prepare_flickr8k
    from lasagne_caption.data.readers import DataWarning
    out = tmp_path_factory.mktemp("shipped") / "flickr8k"
    with pytest.warns(DataWarning):
        prepare_flickr8k(flickr8k_dir, out)
    return out


@pytest.fixture(scope="module")
def flickr8k_test_grid(flickr8k_dir, tflite, tmp_path_factory):
    """The 1,000 test photos (and 2 train, 2 dev: a split may not be empty) as a 7x7 grid."""
    from lasagne_caption.data.prepare import prepare_flickr8k
    root = tmp_path_factory.mktemp("shipped-grid")
    source = flickr_photo_folder(root / "src", flickr8k_dir, n_train=2, n_dev=2, n_test=1000)
    return prepare_flickr8k(source, root / "flickr8k-grid", features="grid", model_path=tflite)


def test_readme_scores_of_the_shipped_seminar_model(flickr8k_logits, tmp_path):
    scores, candidates, _, _, record = evaluate("flickr8k-seminar", data=str(flickr8k_logits),
                                                split="test", out=str(tmp_path))
    assert len(candidates) == 1000
    assert (record["beam"], record["length_normalization"]) == (5, 0.7)
    _check_against_readme("flickr8k-seminar", scores)


def test_readme_scores_of_the_shipped_attention_model(flickr8k_test_grid, tmp_path):
    scores, candidates, _, _, record = evaluate("flickr8k-attention",
                                                data=str(flickr8k_test_grid), split="test",
                                                out=str(tmp_path))
    assert len(candidates) == 1000
    assert (record["beam"], record["length_normalization"]) == (5, 0.7)
    _check_against_readme("flickr8k-attention", scores)
    assert json.load(open(tmp_path / "flickr8k-attention.npz.test.beam5.ln0.7.scores.json"))
