"""lasagne_caption.encoders.registry: names, model files, get_encoder; the import layering."""
import ast
import pathlib

import pytest

import lasagne_caption.encoders as encoders_package
from lasagne_caption.errors import UserError
from lasagne_caption.encoders import (ENCODERS, ImageEncoder, get_encoder, default_model_path,
                                      missing_model_message, models_dir, register)


def test_default_model_path(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = default_model_path()
    assert path == str(tmp_path / "lasagne-caption" / "models" / "mobilenet_v2_1.0_224_quant.tflite")
    with pytest.raises(UserError) as exc:
        get_encoder()
    assert path in str(exc.value) and "https://" in str(exc.value)
    with pytest.raises(UserError, match="unknown encoder 'vgg'"):
        get_encoder("vgg")


def test_unknown_encoder_is_one_line():
    with pytest.raises(UserError) as exc:
        get_encoder("nope")
    assert str(exc.value) == "unknown encoder 'nope' (choose from mobilenet_v2, googlenet)"
    with pytest.raises(UserError, match="unknown encoder 'nope'"):
        default_model_path("nope")


def test_registry_lists_model_files(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert list(ENCODERS) == ["mobilenet_v2", "googlenet"]
    for name, spec in ENCODERS.items():
        assert spec.name == name and spec.url.startswith("https://")
        assert spec.url.endswith("/" + spec.model_file)
        assert default_model_path(name) == str(pathlib.Path(models_dir()) / spec.model_file)
    msg = missing_model_message("/nowhere/blvc_googlenet.pkl", "googlenet")
    assert msg.startswith("model file /nowhere/blvc_googlenet.pkl does not exist")
    assert ENCODERS["googlenet"].url in msg and default_model_path("googlenet") in msg
    assert "\n" not in msg


def test_register_and_get(monkeypatch, tmp_path):
    made = []

    class Tiny(ImageEncoder):
        name = "tiny"
        tap_shapes = {"code": (2,)}

        def __init__(self, model_path, scale=1):
            made.append((model_path, scale))

    monkeypatch.setitem(ENCODERS, "tiny", None)       # removed again after the test
    register("tiny", Tiny, "tiny.bin", "https://example.org/tiny.bin")
    model = tmp_path / "tiny.bin"
    with pytest.raises(UserError, match="download tiny.bin from https://example.org/tiny.bin"):
        get_encoder("tiny", model)
    model.write_bytes(b"weights")
    enc = get_encoder("tiny", model, scale=3)
    assert isinstance(enc, Tiny) and enc.taps == ("code",)
    assert made == [(str(model), 3)]


PACKAGE = pathlib.Path(encoders_package.__file__).parent


def _upward_imports(path):
    """Imports in ``path`` (a module of lasagne_caption.encoders) of the package itself."""
    bad = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            bad += [a.name for a in node.names if a.name == "lasagne_caption.encoders"]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                module = node.module or ""
            else:   # resolve "from .x" / "from ..x" relative to lasagne_caption.encoders
                parts = ["lasagne_caption", "encoders"][:3 - node.level]
                module = ".".join(parts + ([node.module] if node.module else []))
            if module == "lasagne_caption.encoders":
                bad.append("from %s import %s" % ("." * node.level + (node.module or ""),
                                                  ", ".join(a.name for a in node.names)))
            elif module == "lasagne_caption":
                bad += ["from %s import encoders" % ("." * node.level)
                        for a in node.names if a.name == "encoders"]
    return bad


def test_no_module_imports_the_package_itself():
    modules = sorted(p for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    names = {p.name for p in modules}
    assert {"base.py", "registry.py", "mobilenet_v2.py", "googlenet.py"} <= names
    found = {p.name: _upward_imports(p) for p in modules}
    assert {k: v for k, v in found.items() if v} == {}


def test_upward_import_check_finds_them(tmp_path):
    sample = tmp_path / "m.py"
    sample.write_text("from . import missing_model_message\nfrom .registry import x\n"
                      "from .. import encoders\nimport lasagne_caption.encoders\n"
                      "from lasagne_caption.encoders import get_encoder\nfrom ..errors import E\n")
    assert _upward_imports(sample) == ["from . import missing_model_message",
                                       "from .. import encoders", "lasagne_caption.encoders",
                                       "from lasagne_caption.encoders import get_encoder"]
