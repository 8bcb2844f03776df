"""encode_folder: every photo of a folder (or a list of paths), unreadable ones skipped.

It is :meth:`~lasagne_caption.encoders.base.ImageEncoder.encode` with
``skip_unreadable=True``, returning what data preparation needs: the codes of
one tap, the file names of their rows and the files that failed.
"""
import os
import warnings

from .base import ImageEncoder
from .preprocess import list_images
from .registry import get_encoder

__all__ = ["encode_folder", "resolve_paths"]


def resolve_paths(folder_or_paths):
    """A folder -> its image files (sorted); a path -> [path]; paths -> a list of paths."""
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
    the default model path). ``features``: one of ``encoder.taps``.
    Files that are not readable images are skipped with a warning.

    Returns ``(codes float32 (N, *encoder.tap_shapes[features]), names,
    failed)``: ``names`` are the file names (basenames) of the encoded photos
    in row order, ``failed`` a list of ``(path, message)`` of the skipped ones.
    """
    if encoder is None or isinstance(encoder, str):
        encoder = get_encoder(encoder or "mobilenet_v2")
    if not isinstance(encoder, ImageEncoder):
        raise TypeError("encoder must be an ImageEncoder, a name or None, not %r" % (encoder,))
    if not isinstance(features, str):
        raise TypeError("features must be one tap name, not %r" % (features,))
    encoder.check_taps(features)
    paths = resolve_paths(folder_or_paths)
    result = encoder.encode(paths, taps=features, batch_size=batch_size, progress=progress,
                            skip_unreadable=True, keep_aspect=keep_aspect)
    for _, _, message in result.failed:
        warnings.warn("skipping %s" % message, stacklevel=2)
    names = [os.path.basename(paths[i]) for i in result.kept]
    failed = [(path, message) for _, path, message in result.failed]
    return result[features], names, failed
