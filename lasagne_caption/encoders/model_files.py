"""Where each encoder's model file is looked for, and where a user downloads it.

The bottom of ``lasagne_caption.encoders``: the encoder modules and the
registry import it; it imports none of them.

Model files are never downloaded at run time. ``model_path=None`` means the
documented default location, ``~/.cache/lasagne-caption/models/<file>``
(``$XDG_CACHE_HOME`` aware; ``$LASAGNE_CAPTION_MODELS`` names another folder); a missing file gives a :class:`UserError` that
says where to put it and the public URL to fetch it from.

>>> MODEL_FILES["googlenet"].file_name
'blvc_googlenet.pkl'
"""
import collections
import os

from ..errors import UserError

ModelFile = collections.namedtuple("ModelFile", "file_name url")

#: encoder name -> :class:`ModelFile`
MODEL_FILES = {
    "mobilenet_v2": ModelFile("mobilenet_v2_1.0_224_quant.tflite",
                              "https://github.com/google-coral/test_data/raw/master/"
                              "mobilenet_v2_1.0_224_quant.tflite"),
    "googlenet": ModelFile("blvc_googlenet.pkl",
                           "https://s3.amazonaws.com/lasagne/recipes/pretrained/imagenet/"
                           "blvc_googlenet.pkl"),
}


def _model_file(name):
    if name not in MODEL_FILES:
        raise UserError("unknown encoder %r (choose from %s)" % (name, ", ".join(MODEL_FILES)))
    return MODEL_FILES[name]


def models_dir():
    """``$LASAGNE_CAPTION_MODELS``, else ``~/.cache/lasagne-caption/models`` (``$XDG_CACHE_HOME`` aware)."""
    from ..compat import cache_dir
    return os.environ.get("LASAGNE_CAPTION_MODELS") or os.path.join(cache_dir(), "models")


def default_model_path(name="mobilenet_v2"):
    """Where the model file of encoder ``name`` is looked for by default."""
    return os.path.join(models_dir(), _model_file(name).file_name)


def missing_model_message(path, name="mobilenet_v2"):
    """One line: ``path`` is missing, which file to download from where, where to put it."""
    model_file = _model_file(name)
    return ("model file %s does not exist: download %s from %s and pass it with "
            "--model PATH or put it at %s" % (path, model_file.file_name, model_file.url,
                                               default_model_path(name)))
