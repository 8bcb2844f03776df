"""What every image encoder offers, and the one loop that encodes many photos.

An encoder (a subclass of :class:`ImageEncoder`) declares its **feature
taps** -- the named outputs of the network it can return -- in
``tap_shapes``, an ordered dict ``tap -> per-image shape``::

    tap_shapes = {"logits": (1001,), "pool": (1280,)}

(a spatial tap is ``(7, 7, 1280)``: codes are not assumed flat), and
implements :meth:`ImageEncoder.forward` for one batch of uint8 RGB images.
Adding a tap is one entry there plus its output in the encoder's compiled
function.

:meth:`ImageEncoder.encode` is the only batching loop of the package: it
takes file paths and/or uint8 arrays, loads paths lazily batch by batch, and
returns an :class:`Encoded` -- a read-only mapping ``tap -> float32 (M,
*tap_shapes[tap])`` that also says which inputs were encoded (``kept``) and
which could not be read (``failed``).
"""
import os
from collections.abc import Mapping

import numpy as np

from ..errors import UserError

__all__ = ["ImageEncoder", "Encoded"]


class Encoded(Mapping):
    """The result of :meth:`ImageEncoder.encode`: codes, and what was encoded.

    It is a read-only mapping ``tap -> float32 array (M, *tap_shape)``
    (``result["logits"]``, ``dict(result)``), with:

    * ``codes`` -- that dict itself;
    * ``kept`` -- ``M`` input indices, row ``r`` of every array is input ``kept[r]``;
    * ``failed`` -- ``[(index, item, message)]`` of the inputs that were not
      readable images (only with ``skip_unreadable=True``; else empty).

    >>> r = Encoded({"pool": np.zeros((1, 2), np.float32)}, [1], [(0, "a.txt", "not an image")])
    >>> r["pool"].shape, list(r), r.kept, [i for i, _, _ in r.failed]
    ((1, 2), ['pool'], [1], [0])
    """

    __slots__ = ("codes", "kept", "failed")

    def __init__(self, codes, kept, failed=()):
        self.codes = dict(codes)
        self.kept = list(kept)
        self.failed = list(failed)

    def __getitem__(self, tap):
        return self.codes[tap]

    def __iter__(self):
        return iter(self.codes)

    def __len__(self):
        return len(self.codes)

    def __repr__(self):
        shapes = ", ".join("%s: %s" % (k, v.shape) for k, v in self.codes.items())
        return "Encoded({%s}, kept=%d, failed=%d)" % (shapes, len(self.kept), len(self.failed))


def _is_path(item):
    return isinstance(item, (str, bytes, os.PathLike))


class ImageEncoder(object):
    """Base class of the image encoders: photos -> codes of named feature taps.

    Subclasses set:

    * ``name`` -- the registry name (``"mobilenet_v2"``);
    * ``input_size`` -- ``(height, width)`` of the images :meth:`forward` takes;
    * ``tap_shapes`` -- ordered dict ``tap -> per-image shape tuple``;
    * ``default_batch_size`` -- the batch size of :meth:`encode` by default;

    and implement :meth:`forward` (and :meth:`compile` if compiling is lazy).
    ``taps`` is the tuple of tap names, in ``tap_shapes`` order.
    """

    name = None
    input_size = (224, 224)
    tap_shapes = {}
    default_batch_size = 32

    @property
    def taps(self):
        """The names of the feature taps, in order (``("logits", "pool")``)."""
        return tuple(self.tap_shapes)

    def __repr__(self):
        return "<%s %s taps=%s>" % (type(self).__name__, self.name, self.taps)

    def compile(self):
        """Compile the forward function now (instead of on the first batch); returns self."""
        return self

    def forward(self, batch, taps=None):
        """Codes of one batch: uint8 RGB ``(N, H, W, 3)`` of :attr:`input_size`.

        Returns ``{tap: float32 array (N, *tap_shapes[tap])}`` for the
        requested ``taps`` (a name or a sequence of names; None: all).
        """
        raise NotImplementedError

    # ---- helpers for forward() and encode()

    def check_taps(self, taps=None):
        """``taps`` as a tuple of known tap names (None: all); :class:`UserError` if unknown."""
        if taps is None:
            return self.taps
        if isinstance(taps, str):
            taps = (taps,)
        taps = tuple(taps)
        for tap in taps:
            if tap not in self.tap_shapes:
                raise UserError("unknown features %r for encoder %s (choose from %s)"
                                % (tap, self.name, ", ".join(self.taps)))
        if not taps:
            raise UserError("no features requested from encoder %s (choose from %s)"
                            % (self.name, ", ".join(self.taps)))
        return taps

    def check_batch(self, batch):
        """``batch`` as an array ``(N, H, W, 3)`` of :attr:`input_size`; ValueError if not."""
        batch = np.asarray(batch)
        h, w = self.input_size
        if batch.ndim != 4 or batch.shape[1:] != (h, w, 3):
            raise ValueError("expected uint8 images (N, %d, %d, 3), got %s"
                             % (h, w, batch.shape))
        return batch

    def load(self, item, keep_aspect=False):
        """One input of :meth:`encode` as uint8 ``(H, W, 3)`` of :attr:`input_size`.

        A path is read with :func:`~lasagne_caption.encoders.preprocess.load_image`
        (:class:`UserError` if it is not a readable image); an array must
        already have the input size (ValueError if not).
        """
        if _is_path(item):
            from .preprocess import load_image
            return load_image(item, size=self.input_size, keep_aspect=keep_aspect)
        image = np.asarray(item, np.uint8)
        h, w = self.input_size
        if image.shape != (h, w, 3):
            raise ValueError("expected a uint8 image (%d, %d, 3) or a path, got an array of "
                             "shape %s" % (h, w, image.shape))
        return image

    # ---- the batching loop

    def encode(self, items, taps=None, batch_size=None, progress=True,
               skip_unreadable=False, keep_aspect=False):
        """Codes of many photos, batch by batch; the one loop of the encoders.

        Parameters
        ----------
        items : path, uint8 array (H, W, 3) or (N, H, W, 3), or a sequence of paths/arrays
            Paths are loaded lazily, one batch at a time, at :attr:`input_size`
            (stretched, or centre-cropped with ``keep_aspect=True``); arrays
            must already be uint8 RGB of :attr:`input_size`.
        taps : str or sequence of str, optional
            Which feature taps to return (None: all of :attr:`taps`).
        batch_size : int, optional
            Images per forward pass (None: :attr:`default_batch_size`).
        progress : bool
            Show a tqdm progress bar (on stderr).
        skip_unreadable : bool
            False: a path that is not a readable image raises :class:`UserError`
            (one line naming the file). True: it is left out and listed in
            ``failed``; the others are encoded.
        keep_aspect : bool
            Passed to ``load_image`` for paths.

        Returns
        -------
        Encoded
            A mapping ``tap -> float32 (M, *tap_shapes[tap])`` with ``kept``
            (the M input indices, in order) and ``failed`` (``[(index, item,
            message)]``). Without skipping, M is the number of inputs.
        """
        from tqdm import tqdm
        taps = self.check_taps(taps)
        batch_size = int(self.default_batch_size if batch_size is None else batch_size)
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1, got %d" % batch_size)
        if _is_path(items):
            items = [items]
        elif isinstance(items, np.ndarray) and items.ndim == 3:
            items = items[None]
        elif not isinstance(items, np.ndarray):
            items = list(items)
        n = len(items)
        out = {t: np.empty((n,) + tuple(self.tap_shapes[t]), np.float32) for t in taps}
        kept, failed = [], []
        batch, batch_index = [], []
        reported = [0]   # inputs counted on the progress bar

        def flush(bar, upto):
            if batch:
                codes = self.forward(np.stack(batch), taps)
                start = len(kept)
                for t in taps:
                    rows = out[t][start:start + len(batch)]
                    if codes[t].shape != rows.shape:
                        raise RuntimeError("encoder %s returned %s for tap %r of %d images, "
                                           "expected %s" % (self.name, codes[t].shape, t,
                                                            len(batch), rows.shape))
                    rows[...] = codes[t]
                kept.extend(batch_index)
                del batch[:], batch_index[:]
            bar.update(upto - reported[0])
            reported[0] = upto

        with tqdm(total=n, disable=not progress, desc="encoding photos", unit="img") as bar:
            for i in range(n):
                try:
                    batch.append(self.load(items[i], keep_aspect))
                    batch_index.append(i)
                except UserError as exc:
                    if not skip_unreadable:
                        raise
                    failed.append((i, items[i], str(exc)))
                if len(batch) >= batch_size:
                    flush(bar, i + 1)
            flush(bar, n)
        m = len(kept)
        codes = {t: (a if m == n else a[:m]) for t, a in out.items()}
        return Encoded(codes, kept, failed)
