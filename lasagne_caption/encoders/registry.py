"""The encoders by name: ``get_encoder`` and ``register``.

The top of ``lasagne_caption.encoders``: each entry's factory imports its
encoder module when called. Model files and their default location are in
:mod:`lasagne_caption.encoders.model_files`.

>>> list(ENCODERS)
['mobilenet_v2', 'googlenet']
>>> ENCODERS["googlenet"].model_file
'blvc_googlenet.pkl'
"""
import collections
import os

from ..errors import UserError
from .model_files import MODEL_FILES, ModelFile, default_model_path, missing_model_message, \
    models_dir

__all__ = ["EncoderSpec", "ENCODERS", "register", "get_encoder", "models_dir",
           "default_model_path", "missing_model_message"]

EncoderSpec = collections.namedtuple("EncoderSpec", "name factory model_file url")
EncoderSpec.__doc__ = """One registered encoder.

``factory(model_path, **kwargs)`` returns the encoder (an
:class:`~lasagne_caption.encoders.base.ImageEncoder`); ``model_file`` is the
file name looked for in :func:`models_dir`, ``url`` where to download it.
"""

#: name -> :class:`EncoderSpec`, in registration order
ENCODERS = {}


def register(name, factory, model_file, url):
    """Add (or replace) encoder ``name``; returns its :class:`EncoderSpec`."""
    ENCODERS[name] = EncoderSpec(name, factory, model_file, url)
    MODEL_FILES[name] = ModelFile(model_file, url)
    return ENCODERS[name]


def _spec(name):
    if name not in ENCODERS:
        raise UserError("unknown encoder %r (choose from %s)" % (name, ", ".join(ENCODERS)))
    return ENCODERS[name]


def get_encoder(name="mobilenet_v2", model_path=None, **kwargs):
    """The encoder ``name`` (an :class:`~lasagne_caption.encoders.base.ImageEncoder`).

    ``name``: ``"mobilenet_v2"`` (int8 TFLite weights; kwargs ``fake_quant=True``,
    ``depthwise_impl="fused"``, ``conv_impl="gemm"``: the C ops; ``"groups"``,
    ``"corrmm"``: Theano's, the reference) or ``"googlenet"`` (BVLC GoogLeNet pickle of the
    Lasagne Recipes). ``model_path`` defaults to :func:`default_model_path`.

    Raises :class:`UserError` (one line) for an unknown name or a missing
    model file (saying where to put it and where to download it).
    """
    spec = _spec(name)
    path = os.fspath(model_path) if model_path is not None else default_model_path(name)
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        raise UserError(missing_model_message(path, name))
    return spec.factory(path, **kwargs)


def _mobilenet_v2(model_path, **kwargs):
    from .mobilenet_v2 import MobileNetV2Encoder
    return MobileNetV2Encoder(model_path, **kwargs)


def _googlenet(model_path, **kwargs):
    from .googlenet import GoogLeNetEncoder
    return GoogLeNetEncoder(model_path, **kwargs)


for _name, _factory in (("mobilenet_v2", _mobilenet_v2), ("googlenet", _googlenet)):
    register(_name, _factory, *MODEL_FILES[_name])
