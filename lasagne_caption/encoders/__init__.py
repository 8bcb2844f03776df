"""Image encoders: photos -> codes of named feature taps for the caption model.

Public API::

    enc = get_encoder("mobilenet_v2", model_path=None)   # or "googlenet"
    enc.taps                        # ("logits", "pool", "grid", "block16")
    enc.tap_shapes                  # {"logits": (1001,), "pool": (1280,), "grid": (7, 7, 1280), ...}
    codes = enc.encode(paths_or_uint8_images, taps=None, batch_size=None,
                       progress=True, skip_unreadable=False, keep_aspect=False)
    codes["logits"]                 # float32 (N, 1001); codes["pool"] (N, 1280)
    codes.kept, codes.failed        # input indices encoded; [(index, item, message)]
    enc.forward(uint8_batch, taps=None)   # one batch (N, 224, 224, 3) -> {tap: array}

    codes, names, failed = encode_folder(folder_or_paths, encoder=None,
                                         features="logits", progress=True)

Modules: :mod:`.registry` (names, model files, :func:`get_encoder`),
:mod:`.base` (:class:`ImageEncoder`, the batching loop, :class:`Encoded`),
:mod:`.folder` (:func:`encode_folder`), :mod:`.preprocess` (photo loading),
:mod:`.mobilenet_v2`, :mod:`.googlenet`, :mod:`.layers`, :mod:`.tflite`.
Model files are never downloaded at run time; see :mod:`.registry`.
"""
from .base import Encoded, ImageEncoder
from .folder import encode_folder
from .registry import (ENCODERS, EncoderSpec, default_model_path, get_encoder,
                       missing_model_message, models_dir, register)

__all__ = ["get_encoder", "encode_folder", "ImageEncoder", "Encoded", "ENCODERS",
           "EncoderSpec", "register", "default_model_path", "models_dir",
           "missing_model_message"]
