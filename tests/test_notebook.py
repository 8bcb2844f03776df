"""The notebooks run top to bottom: apply_trained_model.ipynb on the shipped models (and
committed with its outputs), on a checkpoint of one's own, and seminar.ipynb (the seminar's own notebook, ported) for a few batches, whose
wrote_net.params then gives the same captions in the toolkit's CLI."""
import base64
import contextlib
import json
import os
import pathlib
import pickle
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "apply_trained_model.ipynb"
SEMINAR = ROOT / "notebooks" / "seminar.ipynb"
# the course shipped these modules beside its notebook; so does this port
SEMINAR_MODULES = ("broadcast.py", "pretrained_lenet.py")
MOBILENET = pathlib.Path("models") / "mobilenet_v2" / "mobilenet_v2_1.0_224_quant.tflite"


def _stdout(notebook):
    """What the notebook's code cells printed (stdout), in order."""
    return "".join(out.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                   for out in cell.outputs
                   if out.output_type == "stream" and out.get("name") == "stdout")


def _streams(notebook):
    return _stdout(notebook).splitlines()


def _execute(notebook, folder, env=(), timeout=900):
    """Run ``notebook`` in place from ``folder``; ``env``: variables the kernel inherits."""
    nbclient = pytest.importorskip("nbclient")
    with pytest.MonkeyPatch.context() as mp:
        for key, value in dict(env).items():
            mp.setenv(key, value)
        # "python3" is ipykernel's spec; jupyter_client starts it with this interpreter
        nbclient.NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                                resources={"metadata": {"path": str(folder)}}).execute()
    return notebook


def _pngs(notebook):
    return [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs
            if "image/png" in out.get("data", {})]


def test_apply_trained_model_is_committed_with_its_outputs():
    """It reads without running: the photos, their captions and attention maps are in it."""
    nbformat = pytest.importorskip("nbformat")
    notebook = nbformat.read(str(NOTEBOOK), as_version=4)
    lines = _streams(notebook)
    assert "shipped model flickr8k-seminar" in lines
    for label in ("greedy:", "beam 3:", "beam (default):"):
        assert any(line.startswith(label) and len(line.split()) > 3 for line in lines), label
    assert sum(line.startswith("sample: ") for line in lines) == 5
    photos = ["bird.bmp", "cat.bmp", "grace_hopper.bmp", "hot_dog.jpg", "kite_and_cold.jpg",
              "owl.jpg", "parrot.jpg"]                      # shared/data/samples
    for name in photos:
        assert any(line.startswith(name + ": ") for line in lines), name
    assert sum("attention: " in line for line in lines) >= len(photos)
    # the test photo, the sample photos, two attention maps
    assert len(_pngs(notebook)) == 4
    for out in _pngs(notebook):
        assert base64.b64decode(out["data"]["image/png"])[:8] == b"\x89PNG\r\n\x1a\n"
    counts = [cell.execution_count for cell in notebook.cells if cell.cell_type == "code"]
    assert counts == list(range(1, len(counts) + 1))      # executed top to bottom, once
    assert not any(out.output_type == "error" for cell in notebook.cells
                   if cell.cell_type == "code" for out in cell.outputs)
    assert "/work/" not in json.dumps([c.get("outputs", []) for c in notebook.cells])


def test_apply_trained_model_runs_and_gives_its_committed_captions(shared_dir, monkeypatch):
    """CI runs it on the shipped models: the captions it prints are the committed ones."""
    nbformat = pytest.importorskip("nbformat")
    monkeypatch.delenv("LASAGNE_CAPTION_CHECKPOINT", raising=False)
    monkeypatch.delenv("LASAGNE_CAPTION_ATTENTION_CHECKPOINT", raising=False)
    committed = nbformat.read(str(NOTEBOOK), as_version=4)
    notebook = _execute(nbformat.read(str(NOTEBOOK), as_version=4), NOTEBOOK.parent,
                        {"LASAGNE_CAPTION_SHARED": str(shared_dir)})
    # captions are decisions: the same on any CPU (float32's last bits do not move them)
    assert _streams(notebook) == _streams(committed)
    assert len(_pngs(notebook)) == 4


def test_apply_trained_model_takes_a_checkpoint_of_ones_own(demo_checkpoint, shared_dir):
    nbformat = pytest.importorskip("nbformat")
    notebook = nbformat.read(str(NOTEBOOK), as_version=4)
    # the cells up to the captions of the test photo
    notebook.cells = notebook.cells[:8]
    _execute(notebook, NOTEBOOK.parent, {"LASAGNE_CAPTION_CHECKPOINT": str(demo_checkpoint),
                                         "LASAGNE_CAPTION_SHARED": str(shared_dir)})
    lines = _streams(notebook)
    assert lines[0] == str(demo_checkpoint)
    assert any(line.startswith("default decoding: {'beam': 3, 'length_normalization': 0.0}")
               for line in lines)
    assert sum(line.startswith("sample: ") for line in lines) == 5


# -- seminar.ipynb --------------------------------------------------------------

@pytest.fixture(scope="module")
def prepared_flickr8k(tmp_path_factory, shared_dir):
    """Flickr8k prepared from shared/ (MobileNetV2 logits), once for the notebooks that train."""
    data = tmp_path_factory.mktemp("prepared") / "flickr8k"
    subprocess.run([sys.executable, "-m", "lasagne_caption.data", "prepare", "flickr8k",
                    "--source", str(shared_dir / "data" / "flickr8k"), "--out", str(data)],
                   check=True, stdout=subprocess.DEVNULL)
    return data


@pytest.fixture(scope="module")
def seminar_run(tmp_path_factory, shared_dir, prepared_flickr8k):
    """seminar.ipynb executed in a scratch copy: 1 epoch of 3 batches on the prepared Flickr8k.

    Returns (working folder, executed notebook). The copy starts with one added cell
    that seeds Python's and numpy's generators (batches, initial weights, dropout), so
    that the run, its captions and its duration are the same every time.
    """
    nbformat = pytest.importorskip("nbformat")
    base = tmp_path_factory.mktemp("seminar")
    data = prepared_flickr8k
    work = base / "notebooks"
    work.mkdir()
    for name in SEMINAR_MODULES:
        shutil.copy(ROOT / "notebooks" / name, work / name)
    notebook = nbformat.read(str(SEMINAR), as_version=4)
    notebook.cells.insert(0, nbformat.v4.new_code_cell(
        "import random, numpy\nrandom.seed(0)\nnumpy.random.seed(0)"))
    env = {
        "LASAGNE_CAPTION_DATA": str(data),
        "LASAGNE_CAPTION_SHARED": str(shared_dir),
        # never found: the notebook says so and captions with MobileNetV2
        "LASAGNE_CAPTION_GOOGLENET": str(base / "absent" / "blvc_googlenet.pkl"),
        "SEMINAR_N_EPOCHS": "1",
        "SEMINAR_BATCHES_PER_EPOCH": "3",
        "SEMINAR_VALIDATION_BATCHES": "1",
        "SEMINAR_N_SAMPLES": "1",
    }
    _execute(notebook, work, env)      # the kernel inherits the environment
    return work, notebook


def _notebook_greedy_captions(notebook):
    """{photo name: words} from the Demo cell's 'greedy NAME: words' lines."""
    captions = {}
    for line in _stdout(notebook).splitlines():
        if line.startswith("greedy "):
            name, _, words = line[len("greedy "):].partition(": ")
            captions[name] = words.split()
    return captions


def test_seminar_notebook_trains_and_captions_with_mobilenet(seminar_run, shared_dir):
    work, notebook = seminar_run
    text = _stdout(notebook)
    assert "Epoch: 0, train loss: " in text and "Finish :)" in text
    # blvc_googlenet.pkl is absent: one line that says where to get it and what instead
    message = [line for line in text.splitlines() if line.startswith("blvc_googlenet.pkl not found")]
    assert len(message) == 1
    assert "https://s3.amazonaws.com/lasagne/recipes/pretrained/imagenet/blvc_googlenet.pkl" \
        in message[0] and "MobileNetV2" in message[0]
    assert "photos are encoded with MobileNetV2" in text
    photos = sorted(os.listdir(shared_dir / "data" / "samples"))
    captions = _notebook_greedy_captions(notebook)
    assert sorted(captions) == photos
    assert all(captions.values()), captions
    assert (work / "wrote_net.params").is_file() and (work / "vocab.tsv").is_file()
    assert not (work / "wrote_net.params.json").exists()     # a bare seminar file


def test_seminar_checkpoint_loads_in_the_toolkit(seminar_run):
    from lasagne_caption.checkpoint import load_model
    from lasagne_caption.vocab import Vocabulary

    work, _ = seminar_run
    vocab = Vocabulary.load(work / "vocab.tsv")
    # the notebook's vocabulary: every Flickr8k word seen 5 times, sorted after the specials
    assert vocab.words[3:] == sorted(vocab.words[3:]) and len(vocab) == 2980
    model, metadata = load_model(str(work / "wrote_net.params"), vocab=str(work / "vocab.tsv"))
    assert metadata == {}
    config = model.config
    assert (config.n_tokens, config.code_size, config.embed_size, config.units) == \
        (2980, 1001, 128, 200)
    assert config.lstm_variant == "master" and config.image_inject == "cell_init"
    with open(work / "wrote_net.params", "rb") as f:
        saved = pickle.load(f)     # written by this test's own run of the notebook
    loaded = model.get_param_values()
    assert len(loaded) == len(saved)
    for a, b in zip(loaded, saved):
        np.testing.assert_array_equal(a, b)


def test_seminar_checkpoint_captions_like_the_notebook_in_the_cli(seminar_run, shared_dir):
    """The CLI's --greedy captions equal the notebook's generate_caption(..., sample=False).

    The notebook re-runs the whole prefix for every word (the seminar's method); the CLI
    carries the LSTM state, one step per word. --keep-unk and --max-len 100 are the
    notebook's conventions (it may write #UNK#, and stops after 100 words).
    """
    work, notebook = seminar_run
    expected = _notebook_greedy_captions(notebook)
    samples = shared_dir / "data" / "samples"
    photos = [str(samples / name) for name in sorted(expected)]
    out = subprocess.run(
        [sys.executable, "-m", "lasagne_caption.caption", *photos,
         "--checkpoint", str(work / "wrote_net.params"), "--vocab", str(work / "vocab.tsv"),
         "--model", str(shared_dir / MOBILENET), "--greedy", "--keep-unk", "--max-len", "100",
         "--json"], check=True, capture_output=True, text=True).stdout
    results = json.loads(out)
    got = {os.path.basename(r["photo"]): r["captions"][0].split() for r in results}
    assert got == expected
    # the run is seeded: a few batches give captions that differ between the photos
    assert len({" ".join(words) for words in got.values()}) > 1


def test_seminar_notebook_is_committed_without_outputs():
    nbformat = pytest.importorskip("nbformat")
    notebook = nbformat.read(str(SEMINAR), as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.outputs == [] and cell.execution_count is None for cell in code)
    # the one added line comes first, before theano and lasagne are imported
    assert code[0].source.startswith("import lasagne_caption")
    sources = "\n".join(cell.source for cell in code)
    for seminar_line in ("from broadcast import BroadcastLayer,UnbroadcastLayer",
                         "from pretrained_lenet import build_model,preprocess,MEAN_VALUES",
                         "cell_init=l_image_features_small",
                         "lasagne.updates.adam", "get_all_param_values(predicted_probabilities)",
                         "'wrote_net.params'"):
        assert seminar_line in sources, seminar_line


# -- the modules beside it --------------------------------------------------------

@contextlib.contextmanager
def _notebook_modules():
    sys.path.insert(0, str(ROOT / "notebooks"))
    try:
        import broadcast
        import pretrained_lenet
        yield broadcast, pretrained_lenet
    finally:
        sys.path.remove(str(ROOT / "notebooks"))


def test_broadcast_module_has_the_seminars_layers():
    import theano
    from lasagne.layers import DenseLayer, InputLayer, get_output

    with _notebook_modules() as (broadcast, _):
        l_in = InputLayer((None, None, 4))
        flat = broadcast.BroadcastLayer(l_in, (0, 1))
        dense = DenseLayer(flat, 3, nonlinearity=None)
        out = broadcast.UnbroadcastLayer(dense, broadcast_layer=flat)
        assert flat.output_shape == (None, 4) and out.output_shape == (None, None, 3)
        x = np.random.RandomState(0).randn(2, 5, 4).astype("float32")
        # Python linker: nothing to compile for a check this small
        fast = theano.compile.mode.Mode(linker="py", optimizer="fast_compile")
        y = theano.function([l_in.input_var], get_output(out), mode=fast)(x)
        expected = x @ dense.W.get_value() + dense.b.get_value()
        np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
        with pytest.raises(ValueError, match="batch"):
            broadcast.BroadcastLayer(l_in, (1,), force_broadcastable_batch=False)
        with pytest.raises(ValueError, match="dimensions"):
            broadcast.UnbroadcastLayer(InputLayer((None, 3, 2)), broadcast_layer=flat)


def test_pretrained_lenet_without_its_weights_says_where_to_get_them(tmp_path, monkeypatch):
    with _notebook_modules() as (_, pretrained_lenet):
        missing = tmp_path / "blvc_googlenet.pkl"
        monkeypatch.setenv("LASAGNE_CAPTION_GOOGLENET", str(missing))
        with pytest.raises(FileNotFoundError) as info:
            pretrained_lenet.load_weights()
        message = str(info.value)
        assert "\n" not in message and str(missing) in message
        assert pretrained_lenet.WEIGHTS_URL in message and "MobileNetV2" in message
        # present: read with the toolkit's safe unpickler (Python 2's protocol, as distributed)
        with open(missing, "wb") as f:
            pickle.dump({"param values": [np.ones((2, 3), np.float32)],
                         "synset words": ["tench"]}, f, protocol=2)
        blob = pretrained_lenet.load_weights()
        np.testing.assert_array_equal(blob["param values"][0], np.ones((2, 3)))


def test_pretrained_lenet_preprocess_and_model_are_the_recipes():
    import lasagne
    from lasagne_caption.encoders.googlenet import expected_param_shapes

    with _notebook_modules() as (_, pretrained_lenet):
        rgb = np.random.RandomState(0).randint(0, 256, (224, 224, 3)).astype(np.uint8)
        x = pretrained_lenet.preprocess(rgb)
        assert x.shape == (1, 3, 224, 224) and x.dtype == np.float32
        # the seminar's "deprocess and show, one line"
        back = np.transpose((x[0] + pretrained_lenet.MEAN_VALUES)[::-1], [1, 2, 0])
        np.testing.assert_allclose(back, rgb, atol=1e-3)
        # other sizes: shorter side to 224, centre crop; grayscale and [0, 1] floats too
        assert pretrained_lenet.preprocess(rgb[:200, :, 0] / 255.0).shape == (1, 3, 224, 224)
        assert pretrained_lenet.preprocess(np.zeros((300, 500, 4), np.uint8)).shape == \
            (1, 3, 224, 224)
        lenet = pretrained_lenet.build_model()
        shapes = [p.get_value().shape for p in lasagne.layers.get_all_params(lenet["prob"])]
        assert shapes == expected_param_shapes()
        assert lenet["loss3/classifier"].output_shape == (None, 1000)


# -- train_seminar.ipynb ------------------------------------------------------------

TRAIN_SEMINAR = ROOT / "notebooks" / "train_seminar.ipynb"
# the loop's line per epoch: "epoch 1/5  train 5.9678  val 5.0754  (63.2 s)"
EPOCH_LINE = re.compile(r"epoch (\d+)/(\d+)  train (\S+)  val (\S+)  \(")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _epoch_lines(notebook):
    """(epoch, epochs, train loss, val loss) of each epoch line the notebook printed."""
    return [(int(m.group(1)), int(m.group(2)), float(m.group(3)), float(m.group(4)))
            for m in map(EPOCH_LINE.match, _stdout(notebook).splitlines()) if m]


def _png_outputs(cell):
    return [base64.b64decode(out["data"]["image/png"]) for out in cell.outputs
            if "image/png" in out.get("data", {})]


def _code_cell(notebook, snippet):
    """The one code cell whose source holds ``snippet``."""
    cells = [c for c in notebook.cells if c.cell_type == "code" and snippet in c.source]
    assert len(cells) == 1, snippet
    return cells[0]


def _labelled(notebook, label):
    """The text after ``label`` on the notebook's stdout lines that start with it."""
    return [line[len(label):].strip() for line in _stdout(notebook).splitlines()
            if line.startswith(label)]


@pytest.fixture(scope="module")
def train_seminar_run(tmp_path_factory, shared_dir, prepared_flickr8k):
    """train_seminar.ipynb executed in a scratch copy: 1 epoch of 3 batches on a fresh
    Flickr8k preparation. Returns (the folder it saved to, executed notebook)."""
    nbformat = pytest.importorskip("nbformat")
    base = tmp_path_factory.mktemp("train_seminar")
    data = prepared_flickr8k
    work, out = base / "notebooks", base / "out"
    work.mkdir()
    notebook = nbformat.read(str(TRAIN_SEMINAR), as_version=4)
    env = {
        "LASAGNE_CAPTION_EPOCHS": "1",
        "LASAGNE_CAPTION_BATCHES_PER_EPOCH": "3",
        "LASAGNE_CAPTION_VAL_BATCHES": "1",
        "LASAGNE_CAPTION_DATA": str(data),
        "LASAGNE_CAPTION_SHARED": str(shared_dir),
        "LASAGNE_CAPTION_OUT": str(out),
    }
    _execute(notebook, work, env)      # the kernel inherits the environment
    return out, notebook


def test_train_seminar_notebook_trains_plots_and_captions(train_seminar_run):
    out, notebook = train_seminar_run
    epochs = _epoch_lines(notebook)
    assert len(epochs) == 1, _stdout(notebook)
    epoch, total, train_loss, val_loss = epochs[0]
    assert (epoch, total) == (1, 1)
    # 3 Adam steps from random weights: still near the uniform guess ln(2537) = 7.84
    assert np.isfinite([train_loss, val_loss]).all()
    assert 6.0 < train_loss < 8.5 and 6.0 < val_loss < 8.5, epochs
    # the loss plot and the photo, both real PNG images
    plot = _png_outputs(_code_cell(notebook, "ax.plot(epochs, train_losses"))
    assert len(plot) == 1 and plot[0].startswith(PNG_SIGNATURE) and len(plot[0]) > 5000
    photo = _png_outputs(_code_cell(notebook, 'captioner = Captioner(model'))
    assert len(photo) == 1 and photo[0].startswith(PNG_SIGNATURE)
    for label in ("greedy:", "beam 3:", "reloaded, beam 3:"):
        captions = _labelled(notebook, label)
        assert len(captions) == 1 and captions[0], (label, _stdout(notebook))
    # the saved network captions as the trained one did
    assert _labelled(notebook, "reloaded, beam 3:") == _labelled(notebook, "beam 3:")
    assert _labelled(notebook, "saved") == [str(out / "wrote_net.params")]
    assert not [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs
                if o.output_type == "error"]


def test_train_seminar_checkpoint_captions_like_the_notebook_in_the_cli(train_seminar_run,
                                                                        shared_dir):
    from lasagne_caption.checkpoint import load_model

    out, notebook = train_seminar_run
    params = out / "wrote_net.params"
    model, metadata = load_model(str(params))
    assert (metadata["epoch"], metadata["optimizer"]["step"]) == (1, 3)
    assert metadata["kind"] == "seminar" and metadata["encoder"] == \
        {"name": "mobilenet_v2", "tap": "logits"}
    config = model.config
    assert (config.code_size, config.embed_size, config.units, config.dropout) == \
        (1001, 128, 200, 0.5)
    owl = shared_dir / "data" / "samples" / "owl.jpg"
    got = {}
    for method in ("--greedy", "--beam"):
        result = subprocess.run(
            [sys.executable, "-m", "lasagne_caption.caption", str(owl), "--checkpoint",
             str(params), "--model", str(shared_dir / MOBILENET), "--json",
             *([method] if method == "--greedy" else [method, "3"])],
            check=True, capture_output=True, text=True).stdout
        got[method] = json.loads(result)[0]["captions"]
    assert got["--greedy"] == _labelled(notebook, "greedy:")
    assert got["--beam"] == _labelled(notebook, "beam 3:")


def test_train_seminar_notebook_without_data_says_make_data(tmp_path, shared_dir, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    pytest.importorskip("nbclient")
    from nbclient.exceptions import CellExecutionError

    missing = tmp_path / "no-such-dataset"
    monkeypatch.setenv("LASAGNE_CAPTION_DATA", str(missing))
    monkeypatch.setenv("LASAGNE_CAPTION_SHARED", str(shared_dir))
    monkeypatch.setenv("LASAGNE_CAPTION_OUT", str(tmp_path / "out"))
    notebook = nbformat.read(str(TRAIN_SEMINAR), as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    for cell in code:      # the committed outputs, cleared: what runs now shows
        cell.outputs, cell.execution_count = [], None
    with pytest.raises(CellExecutionError):
        _execute(notebook, tmp_path, timeout=600)
    data_cell = _code_cell(notebook, "load_dataset(DATA)")
    errors = [o for o in data_cell.outputs if o.output_type == "error"]
    # one line, no traceback: where it looked and how to prepare the data
    assert len(errors) == 1 and len(errors[0].traceback) == 1, errors
    line = errors[0].traceback[0]
    assert "\n" not in line and str(missing) in line and "make data" in line
    # and nothing after it ran
    after = code[code.index(data_cell) + 1:]
    assert after and all(c.execution_count is None and c.outputs == [] for c in after)
    assert not (tmp_path / "out").exists()


def test_train_seminar_notebook_is_committed_executed():
    nbformat = pytest.importorskip("nbformat")
    notebook = nbformat.read(str(TRAIN_SEMINAR), as_version=4)
    nbformat.validate(notebook)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    # run top to bottom in one kernel, with its outputs saved
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    assert code[0].source.startswith("import lasagne_caption")
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    # the default run: 5 epochs of the seminar's 50 batches, losses falling
    epochs = _epoch_lines(notebook)
    assert [(e, n) for e, n, _, _ in epochs] == [(e, 5) for e in range(1, 6)]
    train, val = np.array([e[2] for e in epochs]), np.array([e[3] for e in epochs])
    assert np.isfinite(train).all() and np.isfinite(val).all()
    assert (np.diff(train) < 0).all() and (np.diff(val) < 0).all()
    # epoch 1 is python -m lasagne_caption.train's, as a markdown cell says
    assert epochs[0][2:] == (5.9678, 5.0754)
    assert any("train 5.9678  val 5.0754" in c.source for c in notebook.cells
               if c.cell_type == "markdown")
    assert _png_outputs(_code_cell(notebook, "ax.plot(epochs, train_losses"))
    assert len([png for c in code for png in _png_outputs(c)]) == 2   # plot and photo
    for label in ("greedy:", "beam 3:", "saved"):
        assert _labelled(notebook, label) and all(_labelled(notebook, label)), label
    # the outputs name folders relative to notebooks/, nothing of the machine that ran it
    text = json.dumps([o for o in outputs if o.output_type == "stream"])
    for prefix in ("/work/", "/root/", "/home/", "/tmp/", "/Users/"):
        assert prefix not in text, prefix
    assert _labelled(notebook, "saved") == ["../runs/train_seminar/wrote_net.params"]
