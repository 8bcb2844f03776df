"""Load any photo a user has as a uint8 RGB array of the encoder's input size.

* formats: whatever Pillow reads (JPEG, PNG, BMP, GIF, TIFF, WebP, ...);
* modes: grayscale (L, I;16, I, F), palette, CMYK, RGBA/LA (composited over
  white) are all turned into 3-channel RGB;
* EXIF orientation: the tag (0x0112) is read and the pixels rotated/flipped
  so the photo stands as the camera showed it;
* size: resized to ``size`` (224x224 by default) with scikit-image's
  anti-aliased resize. By default the aspect ratio is *not* kept (the photo is
  stretched), which is how the shared Flickr8k photos were made, so codes
  computed here and the shared codes are interchangeable;
  ``keep_aspect=True`` scales the shorter side and crops the centre instead
  (a photo far larger than ``size`` is cropped first, then scaled);
* memory: a photo far larger than ``size`` is made smaller while it is
  decoded, before it becomes a numpy array: a JPEG is decoded at 1/2, 1/4 or
  1/8 scale (Pillow's ``draft``), other formats are box-averaged in Pillow
  (``reduce``), keeping at least twice the target size on each side for the
  final anti-aliased resize. Photos of 2x the target or less are untouched;
* a pixel limit: a photo that would decode to more than ``max_pixels``
  (:data:`MAX_PIXELS`, 50 megapixels) is refused from its header, before it
  is decoded (a JPEG counts at the reduced size it is decoded at).

A file that is not an image, or over the limit, raises :class:`UserError`
naming it; :meth:`~lasagne_caption.encoders.base.ImageEncoder.encode` with
``skip_unreadable=True`` and :func:`~lasagne_caption.encoders.encode_folder`
skip such files and go on.
"""
import os
import struct
import warnings

import numpy as np

from ..errors import UserError

__all__ = ["load_image", "to_rgb_uint8", "resize_image",
           "IMAGE_EXTENSIONS", "list_images", "MAX_PIXELS"]

# the largest photo decoded (width x height after JPEG draft scaling): about
# 150 MB as RGB; Pillow's own decompression-bomb limit is 179 megapixels
MAX_PIXELS = 50_000_000

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff",
                    ".webp", ".ppm", ".pgm", ".pbm")

_EXIF_ORIENTATION = 0x0112


def _first_line(exc):
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


def _open_pil(path):
    """Open ``path`` with Pillow; only the header is read (nothing decoded yet)."""
    from PIL import Image, UnidentifiedImageError
    if not os.path.exists(path):
        raise UserError("image file %s does not exist" % path)
    if os.path.isdir(path):
        raise UserError("image file %s is a folder" % path)
    try:
        with warnings.catch_warnings():
            # photos over our own limit are refused with one line below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
    except UnidentifiedImageError:
        raise UserError("%s is not an image (format not recognised)" % path)
    except Image.DecompressionBombError as exc:
        raise UserError("%s is too large to load (%s)" % (path, _first_line(exc)))
    except (OSError, SyntaxError, ValueError) as exc:
        raise UserError("%s is not a readable image (%s)" % (path, _first_line(exc)))
    return img


def _decode(img, path, size, max_pixels):
    """Decode an opened image, JPEGs at a reduced scale when ``size`` is far smaller."""
    from PIL import Image
    if size is not None and img.format == "JPEG":
        need = 2 * max(int(size[0]), int(size[1]))   # square: EXIF may turn the photo
        try:
            img.draft(None, (need, need))
        except (OSError, ValueError):
            pass
    w, h = img.size
    if max_pixels is not None and w * h > max_pixels:
        raise UserError("%s is too large: %dx%d pixels (%.1f megapixels) is over the limit of "
                        "%g megapixels; scale it down first"
                        % (path, w, h, w * h / 1e6, max_pixels / 1e6))
    if w < 1 or h < 1:
        raise UserError("%s is an empty image" % path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img.load()
    except MemoryError:
        raise UserError("%s is too large to decode in the memory available" % path)
    except Image.DecompressionBombError as exc:
        raise UserError("%s is too large to load (%s)" % (path, _first_line(exc)))
    except (OSError, SyntaxError, ValueError, struct.error, EOFError) as exc:
        raise UserError("%s is not a readable image (%s)" % (path, _first_line(exc)))
    return img


# modes whose pixels Pillow's reduce() can average; the others are converted first
_REDUCIBLE = ("L", "LA", "RGB", "RGBA", "CMYK", "YCbCr", "I", "F", "RGBa", "La")


def _shrink(img, size, keep_aspect, orientation):
    """Crop (keep_aspect) and box-average a decoded image down to >= 2x ``size``.

    Works in the stored orientation (before the EXIF turn), so the target's
    sides are swapped for orientations 5-8.
    """
    th, tw = int(size[0]), int(size[1])
    if orientation in (5, 6, 7, 8):
        th, tw = tw, th
    w, h = img.size
    box = (0, 0, w, h)
    if keep_aspect:
        # the centre with the target's aspect ratio: what scale-and-crop keeps
        if w * th > h * tw:
            cw = max(1, int(round(h * tw / float(th))))
            box = ((w - cw) // 2, 0, (w - cw) // 2 + cw, h)
        else:
            ch = max(1, int(round(w * th / float(tw))))
            box = (0, (h - ch) // 2, w, (h - ch) // 2 + ch)
    cw, ch = box[2] - box[0], box[3] - box[1]
    fx, fy = max(1, cw // (2 * tw)), max(1, ch // (2 * th))
    if fx > 1 or fy > 1:   # far larger than needed (else: untouched, as before)
        if box != (0, 0, w, h):
            img = img.crop(box)
        if img.mode not in _REDUCIBLE:
            if img.mode in ("I;16", "I;16L", "I;16B", "I;16N"):
                img = img.convert("I")
            elif img.mode == "1":
                img = img.convert("L")
            elif img.mode in ("P", "PA"):
                img = img.convert("RGBA" if img.mode == "PA" or "transparency" in img.info
                                  else "RGB")
            else:
                img = img.convert("RGBA" if "A" in img.mode else "RGB")
        img = img.reduce((fx, fy))
    return img


def exif_orientation(img):
    """The EXIF orientation tag (1..8) of a Pillow image, 1 if absent/invalid."""
    try:
        value = int(img.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:
        return 1
    return value if 1 <= value <= 8 else 1


def apply_orientation(img, orientation):
    """Rotate/flip a Pillow image so that EXIF ``orientation`` becomes 1."""
    from PIL import Image
    T = getattr(Image, "Transpose", Image)
    ops = {2: [T.FLIP_LEFT_RIGHT], 3: [T.ROTATE_180], 4: [T.FLIP_TOP_BOTTOM],
           5: [T.TRANSPOSE], 6: [T.ROTATE_270], 7: [T.TRANSVERSE], 8: [T.ROTATE_90]}
    for op in ops.get(orientation, []):
        img = img.transpose(op)
    return img


def to_rgb_uint8(img):
    """A Pillow image of any mode -> uint8 (H, W, 3) RGB; alpha over white."""
    from PIL import Image
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = np.zeros_like(arr) if hi <= lo else (arr - lo) / (hi - lo) * 255.0
        arr = np.clip(np.round(arr), 0, 255).astype(np.uint8)
        return np.repeat(arr[:, :, None], 3, axis=2)
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.uint8).copy()


def resize_image(rgb, size=(224, 224), keep_aspect=False):
    """uint8 (H, W, 3) -> uint8 (size[0], size[1], 3) with scikit-image.

    ``keep_aspect=False`` stretches to ``size``; ``True`` scales the shorter
    side to fit and crops the centre. An image already of ``size`` is
    returned unchanged (so the shared 224x224 photos are not resampled).
    """
    from skimage.transform import resize
    th, tw = int(size[0]), int(size[1])
    h, w = rgb.shape[:2]
    if keep_aspect and (h, w) != (th, tw):
        scale = max(th / float(h), tw / float(w))
        nh, nw = max(th, int(round(h * scale))), max(tw, int(round(w * scale)))
        rgb = resize_image(rgb, (nh, nw))
        top, left = (nh - th) // 2, (nw - tw) // 2
        return np.ascontiguousarray(rgb[top:top + th, left:left + tw])
    if (h, w) == (th, tw):
        return rgb
    out = resize(rgb, (th, tw), order=1, mode="edge", anti_aliasing=(h > th or w > tw),
                 preserve_range=True)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def load_image(path, size=(224, 224), keep_aspect=False, max_pixels=MAX_PIXELS):
    """Read ``path`` as uint8 RGB (size[0], size[1], 3); ``size=None`` keeps it.

    ``max_pixels``: refuse photos that decode to more pixels (None: no limit).

    Raises :class:`UserError` (one line, naming the file) for a missing file,
    a file that is not an image, or one over the pixel limit.
    """
    path = os.fspath(path)
    opened = _open_pil(path)
    try:
        img = _decode(opened, path, size, max_pixels)
        orientation = exif_orientation(img)
        if size is not None:
            img = _shrink(img, size, keep_aspect, orientation)
        img = apply_orientation(img, orientation)
        rgb = to_rgb_uint8(img)
    except UserError:
        raise
    except MemoryError:
        raise UserError("%s is too large to decode in the memory available" % path)
    except Exception as exc:
        raise UserError("%s is not a readable image (%s)" % (path, _first_line(exc)))
    finally:
        opened.close()
    if rgb.ndim != 3 or rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise UserError("%s is an empty image" % path)
    if size is None:
        return rgb
    return resize_image(rgb, size, keep_aspect)


def list_images(folder, extensions=IMAGE_EXTENSIONS):
    """Sorted paths of files in ``folder`` whose extension looks like an image."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise UserError("image folder %s does not exist" % folder)
    names = sorted(n for n in os.listdir(folder)
                   if n.lower().endswith(tuple(extensions))
                   and os.path.isfile(os.path.join(folder, n)))
    return [os.path.join(folder, n) for n in names]
