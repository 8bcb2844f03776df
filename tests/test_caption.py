"""Captioning photos: the Python API and the command line, on a demo checkpoint."""
import json
import shutil

import numpy as np
import pytest

from lasagne_caption import caption
from lasagne_caption.caption import Captioner, load_encoder
from lasagne_caption.checkpoint import load_metadata
from lasagne_caption.errors import UserError
from lasagne_caption.vocab import Vocabulary



@pytest.fixture(scope="session")
def tflite(shared_dir):
    return str(shared_dir / "models" / "mobilenet_v2" / "mobilenet_v2_1.0_224_quant.tflite")


@pytest.fixture(scope="module")
def captioner(demo_checkpoint, tflite):
    return Captioner.from_checkpoint(demo_checkpoint, encoder_model=tflite)


@pytest.fixture(scope="session")
def photos(shared_dir):
    return [str(shared_dir / "data" / "samples" / name) for name in ("cat.bmp", "owl.jpg")]


def test_caption_photos_and_codes(captioner, photos):
    one = captioner.caption(photos[0])
    assert isinstance(one, str) and one
    both = captioner.caption(photos, greedy=True)
    assert len(both) == 2 and all(isinstance(c, str) and c for c in both)
    samples = captioner.caption(photos[0], sample=True, n=3, seed=0)
    assert len(samples) == 3 and all(isinstance(c, str) for c in samples)
    # codes computed beforehand give the same captions as the photos
    codes, errors = captioner.encode(photos)
    assert codes.shape == (2, 1001) and errors == {}
    assert captioner.caption(codes, greedy=True) == both
    assert captioner.caption(codes[0]) == one


def test_unreadable_photo_raises_in_the_api(captioner, tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("not a photo")
    with pytest.raises(UserError, match="notes.txt"):
        captioner.caption(str(bad))


def test_cli_reports_a_non_image_and_captions_the_rest(demo_checkpoint, tflite, photos,
                                                       tmp_path, capsys):
    bad = tmp_path / "notes.txt"
    bad.write_text("not a photo")
    code = caption.main([photos[0], str(bad), photos[1], "--checkpoint", str(demo_checkpoint),
                         "--model", tflite, "--greedy"])
    out, err = capsys.readouterr()
    assert code == 1
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "notes.txt" in errors[0] and "not an image" in errors[0]
    lines = out.splitlines()
    assert [line.split(": ")[0] for line in lines] == [photos[0], photos[1]]
    assert all(line.split(": ", 1)[1] for line in lines)


def test_cli_json_samples(demo_checkpoint, tflite, photos, capsys):
    argv = photos + ["--checkpoint", str(demo_checkpoint), "--model", tflite,
                     "--sample", "-n", "2", "--seed", "3", "--temperature", "0.8", "--json"]
    assert caption.main(argv) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["photo"] for r in results] == photos
    assert all(r["method"] == "sample" and len(r["captions"]) == 2 and len(r["log_probs"]) == 2
               for r in results)
    assert caption.main(argv) == 0
    again = json.loads(capsys.readouterr().out)                # same seed, same captions
    assert [r["captions"] for r in again] == [r["captions"] for r in results]
    for a, b in zip(again, results):   # float32 sums: a tolerance, not bit equality
        assert a["log_probs"] == pytest.approx(b["log_probs"], rel=1e-5, abs=1e-5)


def test_bare_seminar_file_needs_a_vocabulary(demo_checkpoint, captioner, tmp_path):
    bare = tmp_path / "wrote_net.params"
    shutil.copy(demo_checkpoint, bare)
    with pytest.raises(UserError, match="no metadata.*--vocab"):
        Captioner.from_checkpoint(bare)
    vocab_file = tmp_path / "vocab.txt"
    Vocabulary(load_metadata(str(demo_checkpoint))["vocabulary"]).save(vocab_file)
    loaded = Captioner.from_checkpoint(bare, vocab=vocab_file)
    codes = np.random.RandomState(0).randn(3, 1001).astype("float32")
    assert loaded.caption(codes, greedy=True) == captioner.caption(codes, greedy=True)


def test_code_sizes_choose_the_encoder(tmp_path):
    with pytest.raises(UserError, match="1000-d googlenet.*blvc_googlenet.pkl"):
        load_encoder(caption.encoder_record({}, 1000), 1000, tmp_path / "missing.pkl")
    with pytest.raises(UserError, match="12-d image codes.*precomputed codes"):
        load_encoder(caption.encoder_record({}, 12), 12)


def test_cli_missing_checkpoint_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        caption.run_cli(caption.main, [str(tmp_path / "a.jpg"),
                                       "--checkpoint", str(tmp_path / "none.params")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().count("\n") == 0


@pytest.mark.parametrize("options, message", [
    (["--sample", "--temperature", "nan"], "--temperature must be a finite number > 0, not nan"),
    (["--sample", "--temperature", "inf"], "--temperature must be a finite number > 0, not inf"),
    (["--sample", "--temperature", "0"], "--temperature must be a finite number > 0"),
    (["--beam", "0"], "--beam must be a whole number of at least 1, not 0"),
    (["--sample", "-n", "0"], "-n must be a whole number of at least 1, not 0"),
    (["--max-len", "-1"], "--max-len must be a whole number of at least 1, not -1"),
    (["--sample", "--seed", "-5"], "--seed must be a whole number of at least 0"),
    (["-n", "3"], "-n 3 needs --sample"),
    (["--temperature", "0.5"], "--temperature needs --sample"),
    (["--length-normalization", "-1"], "--length-normalization must be a finite number >= 0"),
    (["--greedy", "--length-normalization", "0.7"], "needs beam search, not --greedy"),
])
def test_cli_options_are_checked_before_anything_is_loaded(tmp_path, capsys, options, message):
    # the checkpoint does not exist: the option error must come first
    with pytest.raises(SystemExit) as exit_info:
        caption.run_cli(caption.main, [str(tmp_path / "a.jpg"), "--checkpoint",
                                       str(tmp_path / "none.params")] + options)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and message in err, err


def test_api_options_are_checked(captioner):
    codes = np.zeros((2, 1001), np.float32)
    for kwargs, message in (({"sample": True, "temperature": float("nan")}, "--temperature"),
                            ({"beam": 0}, "--beam"), ({"max_len": 0}, "--max-len"),
                            ({"greedy": True, "n": 2}, "-n 2 needs --sample")):
        with pytest.raises(UserError, match=message):
            captioner.caption(codes, **kwargs)


def test_cli_length_normalization_is_the_generators(demo_checkpoint, tflite, photos, captioner,
                                                    capsys):
    """--length-normalization reaches beam search: the CLI prints what the generator ranks first."""
    codes, _ = captioner.encode(photos)
    rankings = []
    for alpha in (0.0, 0.7, 3.0):
        expected, _ = captioner.generator.beam_search(codes, beam=5, length_normalization=alpha)
        rankings.append(expected)
        assert captioner.caption(photos, beam=5, length_normalization=alpha) == expected
        assert caption.main(photos + ["--checkpoint", str(demo_checkpoint), "--model", tflite,
                                      "--beam", "5", "--length-normalization", str(alpha)]) == 0
        printed = [line.split(": ", 1)[1] for line in capsys.readouterr().out.splitlines()]
        assert printed == expected
    # the option changes the captions here, so an ignored option would fail above
    assert rankings[0] != rankings[-1]
    with pytest.raises(UserError, match="needs beam search"):
        captioner.caption(photos, sample=True, length_normalization=0.7)


# -- a network over MobileNetV2's 7x7 grid (--decoder attention) -------------------------

@pytest.fixture(scope="module")
def attention_captioner(tmp_path_factory, tflite):
    from tests.test_attention_map import write_attention_checkpoint
    path = write_attention_checkpoint(tmp_path_factory.getbasetemp() / "attention" / "a.params")
    return Captioner.from_checkpoint(path, encoder_model=tflite)


def test_attention_map_needs_an_attention_network(demo_checkpoint, tflite, photos, tmp_path,
                                                  capsys, monkeypatch):
    def no_captioning(*args, **kwargs):
        raise AssertionError("captioned before checking the network")
    monkeypatch.setattr(Captioner, "run", no_captioning)
    monkeypatch.setattr(Captioner, "encode", no_captioning)
    with pytest.raises(SystemExit) as exit_info:
        caption.run_cli(caption.main, [photos[0], "--checkpoint", str(demo_checkpoint),
                                       "--model", tflite,
                                       "--attention-map", str(tmp_path / "map.png")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert err == ("error: this checkpoint's network (seminar) has no attention over regions; "
                   "train one with --decoder attention\n")
    assert list(tmp_path.iterdir()) == []


def test_grid_networks_read_the_mobilenet_grid(attention_captioner, tflite, tmp_path):
    assert attention_captioner.encoder_name == ("mobilenet_v2", "grid")
    assert attention_captioner.has_attention
    assert caption.encoder_record({}, (49, 1280)) == ("mobilenet_v2", "grid")
    assert caption.encoder_record({}, 1280) == ("mobilenet_v2", "pool")
    encoder, tap = load_encoder(("mobilenet_v2", "grid"), (49, 1280), tflite)
    assert tap == "grid"
    with pytest.raises(UserError, match="49x1280 image codes, but encoder mobilenet_v2's pool"):
        load_encoder(("mobilenet_v2", "pool"), (49, 1280), tflite)
    with pytest.raises(UserError, match="12x34 image codes.*precomputed codes"):
        load_encoder(caption.encoder_record({}, (12, 34)), (12, 34))
    with pytest.raises(UserError, match="49x1280 mobilenet_v2 grid codes: model file"):
        load_encoder(("mobilenet_v2", "grid"), (49, 1280), tmp_path / "missing.tflite")


def test_precomputed_grid_codes_in_both_shapes(attention_captioner, photos):
    cap = attention_captioner
    grids = np.random.RandomState(0).rand(3, 7, 7, 1280).astype("float32") * 3
    flat = grids.reshape(3, 49, 1280)
    expected = cap.caption(flat, greedy=True)
    assert len(expected) == 3 and all(isinstance(c, str) for c in expected)
    assert cap.caption(grids, greedy=True) == expected
    assert cap.caption(list(grids), greedy=True) == expected
    assert cap.caption(grids[1], greedy=True) == expected[1]        # one image, 7x7x1280
    assert cap.caption(flat[1], greedy=True) == expected[1]         # one image, 49x1280
    assert cap.caption(grids.astype("float64"), beam=2) == cap.caption(flat, beam=2)
    # region r is row r // 7, column r % 7 of the map: only a row-major flattening
    # gives these captions
    results = cap.run(grids, greedy=True)
    assert [r["photo"] for r in results] == [0, 1, 2]
    for r in results:
        (extras,) = r["extras"]
        assert extras["attention"].shape[1:] == (49,) and extras["gate"].ndim == 1
        assert len(extras["attention"]) == len(extras["gate"]) >= len(r["captions"][0].split())
    with pytest.raises(UserError, match="expected image codes"):
        cap.caption(np.zeros((2, 48, 1280), np.float32))
    # photos are encoded to the same grid: their codes give the same captions
    codes, errors = cap.encode(photos)
    assert codes.shape == (2, 49, 1280) and errors == {}
    encoded = cap.encoder.encode(photos, taps="grid", progress=False)["grid"]
    assert np.array_equal(codes[:, 7 * 2 + 3], encoded[:, 2, 3])
    assert cap.caption(photos, greedy=True) == cap.caption(encoded, greedy=True)
