"""Where the attention network looked for each word: a figure of heat maps over the photo.

Like the figures of Xu et al.'s *Show, Attend and Tell* (``arctic-captions``)
and of the sgrvinod PyTorch tutorial: the photo with its caption, then one
panel per generated word, the photo dimmed and grey under that word's
attention over the 7x7 grid of MobileNetV2 regions, upsampled to the photo
and smoothed, with the visual/language gate of the word under it.

Region ``r`` of the flattened grid (49 weights) is row ``r // 7``, column
``r % 7`` of the encoder's 7x7 map (row-major, as the ``grid`` codes are
flattened to ``(49, 1280)``). The map covers the part of the photo the
encoder saw: :func:`~lasagne_caption.encoders.preprocess.load_image` stretches
the whole photo to 224x224 by default (so the grid covers the whole photo,
stretched back to its aspect ratio); with ``keep_aspect=True`` it crops the
centre, and the map is drawn over that centre only.

From a shell: ``python -m lasagne_caption.caption photo.jpg --checkpoint
attention.params --attention-map map.png``.
"""
import math
import numbers
import os
import textwrap

import numpy as np

from .errors import UserError

__all__ = ["draw_attention_map", "DISPLAY_SIZE"]

#: the longer side, in pixels, of the photo as drawn in each panel
DISPLAY_SIZE = 336
# the encoder's input, whose aspect ratio decides the centre crop of keep_aspect
_ENCODER_INPUT = (224, 224)


def _whole(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise UserError("%s must be a whole number of at least %d, not %r"
                        % (name, minimum, value))
    return int(value)


def _display_size(h, w, longest=DISPLAY_SIZE):
    """(h, w) scaled down (never up) so that the longer side is at most ``longest``."""
    scale = min(1.0, longest / float(max(h, w)))
    return max(1, int(round(h * scale))), max(1, int(round(w * scale)))


def load_photo(photo, longest=DISPLAY_SIZE):
    """The photo as drawn: uint8 RGB (h, w, 3), its aspect ratio kept, longer side <= ``longest``.

    A path is read by the encoders' own loader (EXIF orientation, any mode,
    the pixel limit, large JPEGs decoded at a reduced scale); an array must
    be uint8 RGB (H, W, 3).
    """
    from .encoders.preprocess import _open_pil, exif_orientation, load_image, resize_image
    if isinstance(photo, (str, bytes, os.PathLike)):
        path = os.fsdecode(photo)
        opened = _open_pil(path)                  # the header only: the stored size
        try:
            w, h = opened.size
            if exif_orientation(opened) in (5, 6, 7, 8):
                w, h = h, w
        finally:
            opened.close()
        if w < 1 or h < 1:
            raise UserError("%s is an empty image" % path)
        return load_image(path, size=_display_size(h, w, longest))
    image = np.asarray(photo)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 \
            or image.shape[0] < 1 or image.shape[1] < 1:
        raise UserError("the photo must be a path or a uint8 RGB array (H, W, 3), not an "
                        "array of %s %s" % (image.dtype, image.shape))
    return resize_image(image, _display_size(image.shape[0], image.shape[1], longest))


def seen_box(h, w, keep_aspect=False, input_size=_ENCODER_INPUT):
    """``(top, bottom, left, right)`` of the part of an (h, w) photo the encoder saw.

    The whole photo (stretched to the input) unless ``keep_aspect``: then the
    centre with the input's aspect ratio, as
    :func:`~lasagne_caption.encoders.preprocess.resize_image` crops it.

    >>> seen_box(100, 200), seen_box(100, 200, keep_aspect=True)
    ((0.0, 100.0, 0.0, 200.0), (0.0, 100.0, 50.0, 150.0))
    """
    if not keep_aspect:
        return 0.0, float(h), 0.0, float(w)
    th, tw = input_size
    if w * th > h * tw:        # wider than the input: the sides are cut
        ch, cw = float(h), h * tw / float(th)
    else:                      # taller: the top and bottom are cut
        ch, cw = w * th / float(tw), float(w)
    top, left = (h - ch) / 2.0, (w - cw) / 2.0
    return top, top + ch, left, left + cw


def upsample(weights, size, smooth=True):
    """A (rows, cols) map of weights resized to ``size`` (height, width), smoothed.

    Bilinear, then a Gaussian of a third of a grid cell: the blurred blobs of
    ``pyramid_expand`` in the Show, Attend and Tell figures. Not negative.
    """
    from skimage.filters import gaussian
    from skimage.transform import resize
    weights = np.asarray(weights, np.float64)
    out = resize(weights, size, order=1, mode="edge", anti_aliasing=False)
    if smooth:
        sigma = min(size[0] / float(weights.shape[0]), size[1] / float(weights.shape[1])) / 3.0
        out = gaussian(out, sigma=sigma, mode="nearest", preserve_range=True)
    return np.maximum(out, 0.0)


def _check(words, attention, gate, grid):
    if isinstance(words, str):
        words = words.split()
    try:
        words = [str(w) for w in words]
    except TypeError:
        raise UserError("words must be a caption string or a list of words, not %r"
                        % type(words).__name__)
    if (not isinstance(grid, (tuple, list)) or len(grid) != 2):
        raise UserError("grid must be (rows, columns), not %r" % (grid,))
    rows, cols = _whole("grid rows", grid[0]), _whole("grid columns", grid[1])
    try:
        attention = np.asarray(attention, np.float64)
    except (TypeError, ValueError):
        raise UserError("attention must be a float array (words, %d)" % (rows * cols))
    if attention.ndim == 3 and attention.shape[1:] == (rows, cols):
        attention = attention.reshape(len(attention), rows * cols)
    if attention.ndim != 2 or attention.shape[1] != rows * cols:
        raise UserError("attention must have %d weights (a %dx%d grid) per word, not shape %s"
                        % (rows * cols, rows, cols, attention.shape))
    if len(attention) != len(words):
        raise UserError("%d words but attention for %d; give one row of weights per word"
                        % (len(words), len(attention)))
    if not np.isfinite(attention).all():
        raise UserError("attention weights contain NaN or inf")
    if gate is not None:
        gate = np.asarray(gate, np.float64).reshape(-1) if np.ndim(gate) else None
        if gate is None or len(gate) != len(words):
            raise UserError("%d words but %s gate values; give one per word"
                            % (len(words), "scalar" if gate is None else len(gate)))
    return words, attention.reshape(len(words), rows, cols), gate


def draw_attention_map(photo, words, attention, gate=None, grid=(7, 7), path=None, columns=5,
                       keep_aspect=False):
    """Draw the attention of each word over the photo; optionally write a PNG.

    Parameters
    ----------
    photo : path or uint8 array (H, W, 3)
        The photo that was encoded (read as the encoders read it; any size:
        it is drawn with its aspect ratio).
    words : str or list of str, T words
        The caption (a string is split on spaces); ``#END#`` may be one of
        them when the attention of the end token is given too.
    attention : float array (T, rows * cols) or (T, rows, cols)
        Per word, the weights over the regions: row-major, region ``r`` at
        grid row ``r // cols``, column ``r % cols`` (what
        ``AttentionModel.inference_step`` reports as ``"attention"``).
    gate : float array (T,), optional
        Per word, the visual share of the gate, printed under its panel.
    grid : (rows, cols)
        The encoder's grid: (7, 7) for MobileNetV2's ``grid`` tap.
    path : str, optional
        Write the figure there as PNG (atomically: never half a file).
    columns : int
        Panels per row of the figure.
    keep_aspect : bool
        How the photo was encoded: False (the default of the encoders and
        of :class:`~lasagne_caption.caption.Captioner`) stretches the whole
        photo, so the grid covers all of it; True crops the centre, and the
        map covers only that.

    Each heat map is scaled from 0 to its own peak weight, or to 4 times the
    uniform weight ``4 / (rows * cols)`` when the peak is lower (attention
    spread evenly is drawn cool, not all hot).

    Returns
    -------
    matplotlib.figure.Figure
        1 + T panels (Agg canvas, not registered with pyplot): the photo
        titled with the caption, then one per word.

    Raises
    ------
    UserError
        One line: a photo that cannot be read, words and attention (or gate)
        of different lengths, the wrong number of weights per word, or a
        ``path`` that cannot be written.

    Examples
    --------
    >>> photo = np.full((224, 300, 3), 128, np.uint8)
    >>> fig = draw_attention_map(photo, "a cat", np.full((2, 49), 1 / 49.0), gate=[0.8, 0.4])
    >>> len(fig.axes), fig.axes[1].get_title()
    (3, 'a')
    >>> draw_attention_map("cat.bmp", "a cat", alphas, gate, path="map.png")  # doctest: +SKIP
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    words, attention, gate = _check(words, attention, gate, grid)
    columns = _whole("columns", columns)
    image = load_photo(photo)
    h, w = image.shape[:2]
    top, bottom, left, right = seen_box(h, w, keep_aspect)
    box_size = (max(1, int(round(bottom - top))), max(1, int(round(right - left))))
    # the photo in grey, dimmed, under the heat maps
    grey = image.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    dimmed = np.repeat((0.25 * 255 + 0.6 * grey)[:, :, None], 3, axis=2).astype(np.uint8)

    panels = 1 + len(words)
    ncols = min(columns, panels)
    nrows = int(math.ceil(panels / float(ncols)))
    panel_w = 2.6
    panel_h = panel_w * h / float(w) + 0.7
    fig = Figure(figsize=(panel_w * ncols, panel_h * nrows))
    FigureCanvasAgg(fig)
    caption = " ".join(word for word in words if word != "#END#")
    extent = (0, w, h, 0)
    for i in range(panels):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
        if i == 0:
            ax.imshow(image, extent=extent, interpolation="bilinear")
            ax.set_title("\n".join(textwrap.wrap(caption or "(empty caption)", 28)),
                         fontsize=9)
            continue
        t = i - 1
        ax.imshow(dimmed, extent=extent, interpolation="bilinear")
        heat = upsample(attention[t], box_size)
        # each panel is scaled to its own peak, but never below 4x uniform
        # attention: weights spread evenly stay cool instead of all red
        vmax = max(float(heat.max()), 4.0 / attention[t].size)
        ax.imshow(heat, cmap="jet", alpha=0.6, vmin=0.0, vmax=vmax,
                  extent=(left, right, bottom, top), interpolation="bilinear")
        ax.set_xlim(0, w)
        ax.set_ylim(h, 0)
        ax.set_title(words[t], fontsize=11)
        if gate is not None:
            ax.text(0.5, -0.03, "gate %.2f" % gate[t], transform=ax.transAxes,
                    ha="center", va="top", fontsize=9)
    fig.tight_layout()
    if path is not None:
        _write_png(fig, path)
    return fig


def _write_png(fig, path):
    from .files import atomic_write
    try:
        atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    except OSError as exc:
        raise UserError("cannot write the attention map %s (%s)"
                        % (os.fspath(path), exc.strerror or exc))
