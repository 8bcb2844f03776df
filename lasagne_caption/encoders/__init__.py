"""Image encoders: photos -> fixed-size codes for the caption model.

Public API::

    enc = get_encoder("mobilenet_v2", model_path=None)   # or "googlenet"
    enc.code_names                  # ("logits", "pool")
    codes = enc.encode(paths_or_uint8_images, batch_size=32, progress=True)
    codes["logits"]                 # float32 (N, 1001); codes["pool"] (N, 1280)

    codes, names, failed = encode_folder(folder_or_paths, encoder=None,
                                         features="logits", progress=True)

Model files are never downloaded at run time. ``model_path=None`` means the
documented default location, ``~/.cache/lasagne-caption/models/<file>``
(``$XDG_CACHE_HOME`` aware); a missing file gives a :class:`UserError` that
says where to put it and the public URL to fetch it from.
"""
import os
import warnings

import numpy as np

from ..errors import UserError

__all__ = ["get_encoder", "encode_folder", "default_model_path", "ENCODERS",
           "missing_model_message"]

ENCODERS = ("mobilenet_v2", "googlenet")

_MODEL_FILES = {
    "mobilenet_v2": ("mobilenet_v2_1.0_224_quant.tflite",
                     "https://github.com/google-coral/test_data/raw/master/"
                     "mobilenet_v2_1.0_224_quant.tflite"),
    "googlenet": ("blvc_googlenet.pkl",
                  "https://s3.amazonaws.com/lasagne/recipes/pretrained/imagenet/"
                  "blvc_googlenet.pkl"),
}


def models_dir():
    """``~/.cache/lasagne-caption/models`` (``$XDG_CACHE_HOME`` aware)."""
    from ..compat import cache_dir
    return os.path.join(cache_dir(), "models")


def default_model_path(name="mobilenet_v2"):
    """Where the model file of encoder ``name`` is looked for by default."""
    if name not in _MODEL_FILES:
        raise UserError("unknown encoder %r (choose from %s)" % (name, ", ".join(ENCODERS)))
    return os.path.join(models_dir(), _MODEL_FILES[name][0])


def missing_model_message(path, name="mobilenet_v2"):
    filename, url = _MODEL_FILES[name]
    return ("model file %s does not exist: download %s from %s and pass it with "
            "--model PATH or put it at %s" % (path, filename, url,
                                               default_model_path(name)))


def get_encoder(name="mobilenet_v2", model_path=None, **kwargs):
    """An encoder object with ``.encode()``, ``.code_names`` and ``.code_dims``.

    ``name``: ``"mobilenet_v2"`` (int8 TFLite weights; kwargs ``fake_quant=True``,
    ``depthwise_impl="groups"``) or ``"googlenet"`` (BVLC GoogLeNet pickle of the
    Lasagne Recipes). ``model_path`` defaults to :func:`default_model_path`.
    """
    if name not in ENCODERS:
        raise UserError("unknown encoder %r (choose from %s)" % (name, ", ".join(ENCODERS)))
    path = os.fspath(model_path) if model_path is not None else default_model_path(name)
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        raise UserError(missing_model_message(path, name))
    if name == "mobilenet_v2":
        from .mobilenet_v2 import MobileNetV2Encoder
        return MobileNetV2Encoder(path, **kwargs)
    from .googlenet import GoogLeNetEncoder
    return GoogLeNetEncoder(path, **kwargs)


def _resolve_paths(folder_or_paths):
    from .preprocess import list_images
    if isinstance(folder_or_paths, (str, bytes, os.PathLike)):
        p = os.fspath(folder_or_paths)
        if os.path.isdir(p):
            return list_images(p)
        return [p]
    return [os.fspath(p) for p in folder_or_paths]


def encode_folder(folder_or_paths, encoder=None, features="logits", batch_size=32,
                  progress=True, keep_aspect=False):
    """Encode every photo of a folder (or a list of paths) with a progress bar.

    ``encoder``: an encoder object, an encoder name, or None (MobileNetV2 at
    the default model path). ``features``: one of ``encoder.code_names``.
    Files that are not readable images are skipped with a warning.

    Returns ``(codes float32 (N, D), names, failed)``: ``names`` are the
    file names (basenames) of the encoded photos in row order, ``failed`` a
    list of ``(path, message)`` of the skipped ones.
    """
    from tqdm import tqdm
    from .preprocess import load_image
    if encoder is None or isinstance(encoder, str):
        encoder = get_encoder(encoder or "mobilenet_v2")
    if features not in encoder.code_names:
        raise UserError("unknown features %r for encoder %s (choose from %s)"
                        % (features, encoder.name, ", ".join(encoder.code_names)))
    paths = _resolve_paths(folder_or_paths)
    dim = encoder.code_dims[features]
    chunks, names, failed = [], [], []
    batch, batch_names = [], []

    def flush():
        if batch:
            chunks.append(encoder.forward(np.stack(batch))[features])
            names.extend(batch_names)
            del batch[:], batch_names[:]

    with tqdm(total=len(paths), disable=not progress, desc="encoding photos",
              unit="img") as bar:
        for p in paths:
            try:
                batch.append(load_image(p, size=encoder.input_size, keep_aspect=keep_aspect))
                batch_names.append(os.path.basename(p))
            except UserError as exc:
                failed.append((p, str(exc)))
                warnings.warn("skipping %s" % exc, stacklevel=2)
            if len(batch) >= batch_size:
                flush()
            bar.update(1)
        flush()
    codes = (np.concatenate(chunks).astype(np.float32) if chunks
             else np.zeros((0, dim), np.float32))
    return codes, names, failed
