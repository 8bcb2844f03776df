"""Attention maps: the figure, its one-line errors, ``caption --attention-map`` on real photos."""
import json
import re
import types

import numpy as np
import pytest

from lasagne_caption import caption
from lasagne_caption.attention_map import draw_attention_map, seen_box
from lasagne_caption.errors import UserError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
WORDS = ["#UNK#", "#START#", "#END#", "a", "the", "cat", "dog", "bird", "on", "grass", "sits"]


def write_attention_checkpoint(path):
    """A tiny attention network over MobileNetV2's 7x7x1280 grid, saved as training would.

    Its weights are drawn from a fixed seed (not Lasagne's global generator),
    so its captions are the same in every run; they are nonsense. Reused if
    ``path`` exists (the checkpoint is shared by several test modules).
    """
    from lasagne_caption.checkpoint import make_metadata, save_checkpoint
    from lasagne_caption.models import AttentionConfig, AttentionModel
    from lasagne_caption.vocab import Vocabulary
    if path.exists():
        return path
    vocab = Vocabulary(WORDS)
    config = AttentionConfig(n_tokens=len(vocab), image_shape=[49, 1280], embed_size=8,
                             units=8, attention_size=8)
    model = AttentionModel(config, vocab)
    rng = np.random.RandomState(0)
    values = [np.asarray(rng.randn(*v.shape) * 0.3, dtype=v.dtype)
              for v in model.get_param_values()]
    values[-1][vocab.end_ix] = -1.5     # captions of a few words rather than none
    model.set_param_values(values)
    dataset = types.SimpleNamespace(meta={"features": "mobilenet_v2_grid"},
                                    name="flickr8k-grid", path=path.parent)
    metadata = make_metadata(model, dataset, epoch=1, step=1, run={})
    assert metadata["encoder"] == {"name": "mobilenet_v2", "tap": "grid"}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(str(path), model.get_param_values(), metadata)
    return path


@pytest.fixture(scope="session")
def attention_checkpoint(tmp_path_factory):
    return write_attention_checkpoint(tmp_path_factory.getbasetemp() / "attention" / "a.params")


@pytest.fixture(scope="session")
def tflite_model(shared_dir):
    return str(shared_dir / "models" / "mobilenet_v2" / "mobilenet_v2_1.0_224_quant.tflite")


@pytest.fixture(scope="session")
def sample_photos(shared_dir):
    """Real photos of the shared folder: a tall JPEG and a square BMP."""
    return [str(shared_dir / "data" / "samples" / name) for name in ("parrot.jpg", "cat.bmp")]


def read_png(path):
    from skimage import io
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    image = io.imread(str(path))
    assert image.ndim == 3 and image.shape[0] > 0 and image.shape[1] > 0 and image.size > 0
    return image


def same_size(image, fig):
    """The PNG is the figure at 100 dpi (matplotlib rounds the pixels down)."""
    width, height = fig.get_size_inches() * 100
    return abs(image.shape[0] - height) < 1.01 and abs(image.shape[1] - width) < 1.01


def test_figure_has_a_panel_per_word_and_is_written_as_png(tmp_path):
    photo = np.random.RandomState(0).randint(0, 256, (120, 200, 3)).astype(np.uint8)
    attention = np.random.RandomState(1).dirichlet(np.ones(49), size=3)
    out = tmp_path / "sub" / "map.png"
    fig = draw_attention_map(photo, "a red bird", attention, gate=[0.83, 0.5, 0.25],
                             path=str(out), columns=2)
    assert len(fig.axes) == 4
    assert [ax.get_title() for ax in fig.axes] == ["a red bird", "a", "red", "bird"]
    assert [t.get_text() for t in fig.axes[1].texts] == ["gate 0.83"]
    assert len(fig.axes[0].texts) == 0
    image = read_png(out)
    assert same_size(image, fig)
    assert sorted(p.name for p in out.parent.iterdir()) == ["map.png"]   # no temporaries left
    # without a gate there is no text under the panels; (T, 7, 7) weights are accepted
    fig = draw_attention_map(photo, ["a", "bird"], attention[:2].reshape(2, 7, 7))
    assert all(len(ax.texts) == 0 for ax in fig.axes)


def test_the_map_covers_what_the_encoder_saw(sample_photos):
    """Stretched (the encoders' default): the whole photo; keep_aspect: its centre crop."""
    from lasagne_caption.encoders.preprocess import load_image
    attention = np.full((1, 49), 1 / 49.0)
    photo = sample_photos[0]
    h, w = load_image(photo, size=None).shape[:2]
    assert h != w        # the parrot is taller than wide
    for keep_aspect in (False, True):
        fig = draw_attention_map(photo, ["parrot"], attention, keep_aspect=keep_aspect)
        background, heat = fig.axes[1].images
        dh, dw = background.get_array().shape[:2]
        assert abs(dh / float(dw) - h / float(w)) < 0.01    # drawn with its aspect ratio
        left, right, bottom, top = heat.get_extent()
        if keep_aspect:   # the centre square, as resize_image crops it
            assert (left, right) == (0, dw) and top == pytest.approx((dh - dw) / 2.0)
            assert bottom - top == pytest.approx(dw)
        else:
            assert (left, right, bottom, top) == (0, dw, dh, 0)
    assert seen_box(300, 100, keep_aspect=True) == (100.0, 200.0, 0.0, 100.0)


@pytest.mark.parametrize("words, attention, gate, message", [
    ("a cat", np.full((3, 49), 1 / 49.0), None, "2 words but attention for 3"),
    ("a cat sits", np.full((3, 48), 1 / 48.0), None, "49 weights (a 7x7 grid) per word"),
    ("a cat", np.full((2, 49), 1 / 49.0), [0.5], "2 words but 1 gate values"),
    ("a cat", np.full(49, 1 / 49.0), None, "49 weights (a 7x7 grid) per word"),
    ("a cat", np.full((2, 49), np.nan), None, "NaN or inf"),
])
def test_mismatches_are_one_line_errors(words, attention, gate, message):
    photo = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(UserError, match=re.escape(message)) as info:
        draw_attention_map(photo, words, attention, gate)
    assert "\n" not in str(info.value)


def test_bad_photos_are_one_line_errors(tmp_path):
    attention = np.full((1, 49), 1 / 49.0)
    with pytest.raises(UserError, match="uint8 RGB array"):
        draw_attention_map(np.zeros((32, 32), np.uint8), "cat", attention)
    bad = tmp_path / "notes.txt"
    bad.write_text("not a photo")
    with pytest.raises(UserError, match="notes.txt is not an image"):
        draw_attention_map(str(bad), "cat", attention)
    with pytest.raises(UserError, match="cannot write the attention map"):
        draw_attention_map(np.zeros((32, 32, 3), np.uint8), "cat", attention,
                           path=str(tmp_path))       # a folder


def test_cli_draws_the_map_of_the_printed_caption(attention_checkpoint, tflite_model,
                                                  sample_photos, tmp_path, capsys):
    out = tmp_path / "map.png"
    photo = sample_photos[0]
    assert caption.main([photo, "--checkpoint", str(attention_checkpoint), "--model",
                         tflite_model, "--greedy", "--max-len", "6", "--json",
                         "--attention-map", str(out)]) == 0
    captured = capsys.readouterr()
    (result,) = json.loads(captured.out)
    assert "attention map of %s: %s" % (photo, out) in captured.err
    words = result["captions"][0].split()
    attention = np.asarray(result["extras"][0]["attention"])
    gate = np.asarray(result["extras"][0]["gate"])
    assert words and attention.shape in ((len(words), 49), (len(words) + 1, 49))
    assert gate.shape == (len(attention),) and np.allclose(attention.sum(axis=1), 1, atol=1e-4)
    image = read_png(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.png"]
    # the API gives the same caption, and the figure one panel per word (and #END#)
    cap = caption.Captioner.from_checkpoint(attention_checkpoint, encoder_model=tflite_model)
    (again,) = cap.run([photo], greedy=True, max_len=6)
    assert again["captions"] == result["captions"]
    w, a, g = caption.attention_of(again)
    fig = draw_attention_map(photo, w, a, g)
    assert len(fig.axes) == 1 + len(attention)
    assert same_size(image, fig)


def test_cli_writes_one_map_per_photo(attention_checkpoint, tflite_model, sample_photos,
                                      tmp_path, capsys):
    bad = tmp_path / "notes.txt"
    bad.write_text("not a photo")
    code = caption.main(sample_photos + [str(bad), "--checkpoint", str(attention_checkpoint),
                                         "--model", tflite_model, "--beam", "2", "--max-len",
                                         "4", "--attention-map", str(tmp_path / "m.png")])
    out, err = capsys.readouterr()
    assert code == 1 and "notes.txt" in err                     # the others are still mapped
    assert [line.split(": ")[0] for line in out.splitlines()] == sample_photos
    assert sorted(p.name for p in tmp_path.glob("m*")) == ["m-cat.png", "m-parrot.png"]
    for name in ("m-cat.png", "m-parrot.png"):
        read_png(tmp_path / name)


def test_help_explains_the_file_names(capsys):
    with pytest.raises(SystemExit):
        caption.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--attention-map OUT.png" in text and "OUT-<photo stem>.png" in text
