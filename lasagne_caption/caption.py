"""Caption photos with a trained checkpoint: a Python API and a command line.

In a notebook::

    cap = Captioner.from_checkpoint("wrote_net.params")   # or a shipped model's name
    cap.caption("photo.jpg")                        # beam search, the model's best setting
    cap.caption(["a.jpg", "b.jpg"], greedy=True)
    cap.caption("photo.jpg", sample=True, temperature=0.7, n=5, seed=0)

From a shell::

    python -m lasagne_caption.caption photo.jpg more/*.jpg [--checkpoint wrote_net.params|NAME] \\
        [--beam 3 [--length-normalization 0.7] | --greedy | --sample --temperature T] [-n K]
        [--json] [--model MODEL] [--attention-map OUT.png]

Without ``--checkpoint``: ``wrote_net.params`` if it is in the current
folder, else the shipped model :data:`lasagne_caption.pretrained.DEFAULT`
(said on stderr); ``python -m lasagne_caption.pretrained list`` names the
shipped models. Beam width and length normalisation default to the
checkpoint's recorded best dev setting (metadata ``"decoding"``), else beam 3.

Photos are encoded by the image encoder and feature tap that produced the
checkpoint's training codes, as its metadata records them (``"encoder"``).
A bare seminar parameter file has no metadata: its encoder is recognised by
the code size, 1000 / 1024 (the seminar's GoogLeNet logits / pool5, which
need ``blvc_googlenet.pkl``), 1001 / 1280 (MobileNetV2 logits / pool).
A network over a grid of regions (``--decoder attention``, image shape
``(49, 1280)``) reads MobileNetV2's 7x7x1280 ``grid`` tap, flattened
row-major to 49 regions. Precomputed codes are accepted too: ``(N, D)`` flat
codes, or grid codes ``(N, 49, 1280)`` / ``(N, 7, 7, 1280)``. A file that is
not an image gets a one-line error and the other photos are still captioned.

``--attention-map OUT.png`` draws where an attention network looked for
each word of the printed caption (:mod:`lasagne_caption.attention_map`).
"""
import argparse
import json
import os
import sys

import numpy as np

from .errors import UserError, run_cli
from .pretrained import DEFAULT, LOCAL_CHECKPOINT, model_card

# code size -> the encoder that makes codes of that size: the guess for a
# bare seminar parameter file, whose metadata does not say
ENCODER_FOR_CODE_SIZE = {1001: ("mobilenet_v2", "logits"), 1280: ("mobilenet_v2", "pool"),
                         1000: ("googlenet", "logits"), 1024: ("googlenet", "pool")}
# the same for a network over a grid of regions, image shape (L, D) -> encoder
ENCODER_FOR_GRID = {(49, 1280): ("mobilenet_v2", "grid")}
# decoding when a checkpoint records no best setting of its own
DEFAULT_DECODING = {"beam": 3, "length_normalization": 0.0}


def _image_shape(code_size):
    """A code size (int) or image shape (sequence) as a shape tuple: ``(D,)`` or ``(L, D)``."""
    if isinstance(code_size, (tuple, list, np.ndarray)):
        return tuple(int(s) for s in code_size)
    return (int(code_size),)


def _describe(shape):
    """``"1001-d"`` for flat codes, ``"49x1280"`` for a grid."""
    return "%d-d" % shape[0] if len(shape) == 1 else "x".join(map(str, shape))


def code_shapes(image_shape):
    """The shapes one image's precomputed codes may have, for a network's ``image_shape``.

    Flat codes: ``(D,)``. A grid ``(L, D)``: that, and ``(s, s, D)`` when L
    is a square ``s * s`` (the encoder's map before flattening).

    >>> code_shapes((1001,)), code_shapes((49, 1280))
    ([(1001,)], [(49, 1280), (7, 7, 1280)])
    """
    shape = _image_shape(image_shape)
    shapes = [shape]
    if len(shape) == 2:
        side = int(round(shape[0] ** 0.5))
        if side * side == shape[0]:
            shapes.append((side, side, shape[1]))
    return shapes


def encoder_record(metadata, code_size):
    """``(encoder name, tap)`` that made a checkpoint's training codes.

    From the metadata's ``"encoder"`` (format 3), or its data's features
    (formats 1 and 2); otherwise (a bare seminar file) guessed from the code
    size (an int, or the network's ``image_shape``: ``(D,)`` or a grid
    ``(L, D)``). None if no encoder makes codes of that size.
    """
    from .checkpoint import encoder_of
    record = (metadata or {}).get("encoder")
    if record is None:
        record = encoder_of(((metadata or {}).get("data") or {}).get("features"))
    if isinstance(record, dict) and isinstance(record.get("name"), str) \
            and isinstance(record.get("tap"), str):
        return record["name"], record["tap"]
    shape = _image_shape(code_size)
    if len(shape) == 1:
        return ENCODER_FOR_CODE_SIZE.get(shape[0])
    return ENCODER_FOR_GRID.get(shape)


def load_encoder(record, code_size, model_path=None):
    """The image encoder named by ``record`` (``(name, tap)``), checked against the code size.

    ``code_size``: an int, or the network's ``image_shape`` (``(D,)``, or a
    grid ``(L, D)`` whose encoder tap is ``(rows, cols, D)`` with
    ``rows * cols = L``).

    Returns
    -------
    encoder : object with ``encode`` and ``input_size``
    tap : str
        Which of its codes the model reads (``"logits"``, ``"pool"``, ``"grid"``).
    """
    from .encoders import get_encoder
    shape = _image_shape(code_size)
    if record is None:
        raise UserError("the model expects %s image codes, which no encoder here "
                        "produces; pass precomputed codes instead of photos" % _describe(shape))
    name, tap = record
    try:
        encoder = get_encoder(name, model_path)
    except UserError as exc:
        raise UserError("the model expects %s %s %s codes: %s"
                        % (_describe(shape), name, tap, exc))
    tap_shape = tuple(getattr(encoder, "tap_shapes", {}).get(tap, ()))
    if tap_shape and (int(np.prod(tap_shape)) != int(np.prod(shape))
                      or tap_shape[-1] != shape[-1]):
        raise UserError("the model expects %s image codes, but encoder %s's %s codes are %s"
                        % (_describe(shape), name, tap, "x".join(map(str, tap_shape))))
    return encoder, tap


class Captioner(object):
    """A caption model, its generator and (loaded on first use) its image encoder.

    Parameters
    ----------
    model : a :class:`~lasagne_caption.models.base.CaptionNetwork`
    encoder_model : str, optional
        The encoder's weights file (e.g. ``mobilenet_v2_1.0_224_quant.tflite``);
        None looks in the encoders' default location.
    encoder : (name, tap), optional
        The encoder and feature tap the model was trained on; by default
        :func:`encoder_record` guesses them from the model's image shape
        (a ``(49, 1280)`` grid: MobileNetV2's ``grid``).
    """

    def __init__(self, model, encoder_model=None, encoder=None, decoding=None):
        from .generate import CaptionGenerator
        self.model = model
        self.vocab = model.vocab
        self.generator = CaptionGenerator(model)
        self.encoder_model = encoder_model
        self.encoder_name = encoder or encoder_record(None, model.image_shape)
        # the default beam width and length normalisation (a checkpoint's best on dev)
        self.decoding = dict(DEFAULT_DECODING, **(decoding or {}))
        self._encoder = None

    @classmethod
    def from_checkpoint(cls, path=None, encoder_model=None, vocab=None):
        """Load a checkpoint written by ``python -m lasagne_caption.train``, or a shipped model.

        Parameters
        ----------
        path : str, optional
            The parameter file, whose metadata (``PATH.json``) names the
            network options and the vocabulary; or a shipped model's name
            (:func:`lasagne_caption.pretrained.names`). None: ``wrote_net.params``
            if it is here, else the shipped default model.
        encoder_model : str, optional
            See :class:`Captioner`.
        vocab : str, optional
            A vocabulary file (``Vocabulary.save`` format) for a bare seminar
            parameter file that has no metadata.

        The checkpoint's recorded decoding setting (``"decoding"`` in its
        metadata) becomes the default of :meth:`caption` and :meth:`run`;
        ``shipped`` says which shipped model was loaded (None for a file).
        """
        from .checkpoint import load_model, read_decoding
        from .pretrained import resolve
        path, shipped = resolve(path)
        model, metadata = load_model(path, vocab)
        captioner = cls(model, encoder_model, encoder_record(metadata, model.image_shape),
                        read_decoding(metadata, path))
        captioner.checkpoint, captioner.shipped = path, shipped
        return captioner

    @property
    def has_attention(self):
        """Whether the network reports attention over image regions for each word.

        Only a network over a grid of regions (a 2-D ``image_shape``, the
        ``attention`` decoder) does; known without captioning anything.
        """
        return len(tuple(self.model.image_shape)) == 2

    def check_attention(self):
        """A one-line :class:`UserError` unless the network reports attention over regions."""
        if not self.has_attention:
            raise UserError("this checkpoint's network (%s) has no attention over regions; "
                            "train one with --decoder attention"
                            % getattr(self.model, "kind", type(self.model).__name__))

    @property
    def encoder(self):
        """The image encoder the model was trained with, loaded once."""
        if self._encoder is None:
            self._encoder, self.features = load_encoder(self.encoder_name,
                                                        self.model.image_shape,
                                                        self.encoder_model)
        return self._encoder

    def encode(self, photos, progress=False):
        """Codes of photos (paths or uint8 RGB arrays); unreadable files are reported.

        Returns
        -------
        codes : float32 array (M,) + model.image_shape
            One row per photo that could be read, in order: ``(M, code_size)``,
            or for a grid network ``(M, 49, 1280)`` (the encoder's 7x7 map,
            flattened row-major: region ``row * 7 + col``).
        errors : dict
            Index in ``photos`` -> one-line message, for the others.
        """
        encoded = self.encoder.encode(list(photos), taps=self.features, progress=progress,
                                      skip_unreadable=True)
        codes = encoded[self.features]
        codes = codes.reshape((len(codes),) + tuple(self.model.image_shape))
        return codes, {i: message for i, _, message in encoded.failed}

    def run(self, photos, beam=None, greedy=False, sample=False, temperature=1.0, n=1,
            seed=None, max_len=20, suppress_unk=True, length_normalization=None,
            progress=False):
        """Caption many photos (or codes); one result dict per item, failures included.

        Parameters
        ----------
        photos : list of (path or uint8 image), or float array of codes
            Codes: ``(N, code_size)``; for a grid network ``(N, 49, 1280)``
            or ``(N, 7, 7, 1280)``.
        beam, greedy, sample, temperature, n, seed, max_len, suppress_unk, length_normalization
            See :meth:`caption`.
        progress : bool
            Progress bars (on stderr) for encoding the photos and captioning them.

        Returns
        -------
        list of dict
            ``{"photo", "method", "captions": [str], "log_probs": [float]}``
            or ``{"photo", "error": message}``; ``photo`` is the path, or the
            row number for arrays. A network that reports extras about each
            word (attention weights, a gate value) adds ``"extras"``: per
            caption, ``{name: array (words,) + shape}``.
        """
        from .generate import check_options
        if greedy and sample:
            raise UserError("choose greedy or sample, not both")
        beam, length_normalization = self.decoding_of(beam, length_normalization,
                                                      beam_search=not (greedy or sample))
        check_options(beam=None if (greedy or sample) else beam, max_len=max_len,
                      temperature=temperature if sample else None, n=n,
                      seed=seed if sample else None,
                      length_normalization=length_normalization)
        if length_normalization and (greedy or sample):
            raise UserError("--length-normalization ranks beam hypotheses: it needs beam "
                            "search, not %s" % ("greedy" if greedy else "sampling"))
        if n > 1 and not sample:
            raise UserError("-n %d needs --sample (beam and greedy give one caption)" % n)
        if _are_codes(photos, self.model.image_shape):
            codes, errors = _batch_of_codes(photos, self.model.image_shape), {}
        elif isinstance(photos, np.ndarray) and photos.dtype.kind == "f" \
                and photos.ndim and photos.shape[-1] != 3:
            # neither codes of this network nor RGB images
            raise UserError("expected image codes %s, got shape %s" % (" or ".join(
                "(N, %s)" % ", ".join(map(str, s)) for s in code_shapes(self.model.image_shape)),
                photos.shape))
        else:
            codes, errors = self.encode(photos, progress)
        if sample:
            method = "sample"
            captions, log_probs, extras = self.generator.sample(
                codes, temperature=temperature, n=n, seed=seed, max_len=max_len,
                suppress_unk=suppress_unk, extras=True, progress=progress)
        else:
            method = "greedy" if greedy else "beam%d" % beam
            captions, log_probs, extras = (
                self.generator.greedy(codes, max_len, suppress_unk, extras=True,
                                      progress=progress) if greedy else
                self.generator.beam_search(codes, beam, max_len,
                                           length_normalization=length_normalization,
                                           suppress_unk=suppress_unk, extras=True,
                                           progress=progress))
            captions, log_probs = [[c] for c in captions], np.asarray(log_probs)[:, None]
            extras = [[x] for x in extras]
        results, row = [], 0
        for i, photo in enumerate(photos):
            name = os.fspath(photo) if isinstance(photo, (str, os.PathLike)) else i
            if i in errors:
                results.append({"photo": name, "error": errors[i]})
                continue
            result = {"photo": name, "method": method, "captions": captions[row],
                      "log_probs": [float(x) for x in log_probs[row]]}
            if any(extras[row]):
                # what the network reported about each word (attention, gate)
                result["extras"] = extras[row]
            results.append(result)
            row += 1
        return results

    def decoding_of(self, beam=None, length_normalization=None, beam_search=True):
        """``(beam, length_normalization)``: the ones given, the rest from :attr:`decoding`.

        Without beam search (greedy, sampling) the default length
        normalisation is 0: it only ranks beam hypotheses.
        """
        if beam is None:
            beam = self.decoding["beam"]
        if length_normalization is None:
            length_normalization = self.decoding["length_normalization"] if beam_search else 0.0
        return beam, length_normalization

    def caption(self, photos, beam=None, greedy=False, sample=False, temperature=1.0, n=1,
                seed=None, max_len=20, suppress_unk=True, length_normalization=None):
        """Caption one photo or several.

        Parameters
        ----------
        photos : path, uint8 RGB image, codes of one image, or a list / array of them
            One image's codes: a vector ``(code_size,)``, or for a grid network
            ``(49, 1280)`` / ``(7, 7, 1280)``.
        beam : int, optional
            Beam width (the default method); 1 is greedy decoding. Default:
            the checkpoint's best dev setting (:attr:`decoding`), else 3.
        greedy : bool
            The most probable word at each step.
        sample : bool
            Draw captions at ``temperature`` (< 1: safer, > 1: more varied);
            ``seed`` makes them reproducible.
        n : int
            Captions per photo when sampling.
        max_len : int
            At most this many tokens, ``#END#`` included.
        suppress_unk : bool
            Never generate ``#UNK#``.
        length_normalization : float, optional
            Beam search ranks its hypotheses by ``log_prob / length ** alpha``
            (0: raw log-probabilities, which favour short captions; the
            shipped Flickr8k models' best dev setting is beam 5 with 0.7).
            Default: the checkpoint's (:attr:`decoding`), else 0.

        Returns
        -------
        str, or list
            The caption of a single photo (with ``sample=True, n>1``: a list of
            ``n``); for several photos, a list of those.

        Raises
        ------
        UserError
            A photo is not a readable image (use :meth:`run` to skip such files).
        """
        shape = self.model.image_shape
        single = (isinstance(photos, (str, bytes, os.PathLike))
                  or (isinstance(photos, np.ndarray)
                      and (photos.ndim == 1 or (photos.ndim == 3 and photos.dtype == np.uint8)
                           or (photos.dtype.kind == "f" and photos.shape in code_shapes(shape)))))
        items = [photos] if single else photos
        if isinstance(items, list) and items and _are_codes(items[0], shape):
            items = np.asarray(items, np.float32)
        results = self.run(items, beam=beam, greedy=greedy, sample=sample,
                           temperature=temperature, n=n, seed=seed, max_len=max_len,
                           suppress_unk=suppress_unk, length_normalization=length_normalization)
        for result in results:
            if "error" in result:
                raise UserError(result["error"])
        out = [r["captions"] if sample and n > 1 else r["captions"][0] for r in results]
        return out[0] if single else out


def _are_codes(items, code_size):
    """Precomputed codes: a float array of one image's codes, or of several.

    ``code_size``: an int or the network's image shape. Flat codes: a vector
    or matrix whose last axis is the code size; a grid ``(L, D)``: one image
    ``(L, D)`` / ``(s, s, D)``, or a batch ``(N, L, D)`` / ``(N, s, s, D)``.
    """
    if not (isinstance(items, np.ndarray) and items.dtype.kind == "f"):
        return False
    shapes = code_shapes(code_size)
    return items.shape in shapes or items.shape[1:] in shapes


def _batch_of_codes(items, image_shape):
    """Float32 codes ``(N,) + image_shape``; a grid ``(N, s, s, D)`` is flattened row-major.

    Other shapes are passed on as they are (the generator names them in a
    one-line error).
    """
    codes = np.asarray(items, np.float32)
    shape = _image_shape(image_shape)
    if codes.ndim >= 1 and codes.shape[1:] in code_shapes(shape):
        codes = codes.reshape((len(codes),) + shape)
    return codes


def attention_of(result):
    """``(words, attention (T, L), gate (T,) or None)`` of a result's first caption.

    The words of the caption, plus ``#END#`` when the network's extras
    include the step that generated it (a caption not cut at ``max_len``).
    """
    from .vocab import END
    extras = result.get("extras") or []
    extras = extras[0] if extras else {}
    if "attention" not in extras:
        raise UserError("the network reported no attention for %s" % result["photo"])
    attention = np.asarray(extras["attention"])
    words = result["captions"][0].split()
    if len(attention) == len(words) + 1:
        words.append(END)
    gate = extras.get("gate")
    return words, attention, None if gate is None else np.asarray(gate)


def attention_map_paths(out, photos):
    """Where ``--attention-map OUT`` writes each photo's map.

    One photo: ``OUT``. Several: ``OUT-<photo stem>.png`` (``OUT`` without
    its extension), numbered ``-<stem>-<i>`` where stems repeat.

    >>> attention_map_paths("map.png", ["a/cat.jpg"])
    ['map.png']
    >>> attention_map_paths("out/map.png", ["a/cat.jpg", "owl.bmp", "b/cat.jpg"])
    ['out/map-cat-1.png', 'out/map-owl.png', 'out/map-cat-3.png']
    """
    out = os.fspath(out)
    if len(photos) == 1:
        return [out]
    root, ext = os.path.splitext(out)
    stems = [os.path.splitext(os.path.basename(os.fspath(p)))[0] for p in photos]
    return ["%s-%s%s%s" % (root, stem, "-%d" % (i + 1) if stems.count(stem) > 1 else "",
                           ext or ".png") for i, stem in enumerate(stems)]


def build_parser():
    p = argparse.ArgumentParser(
        prog="python -m lasagne_caption.caption",
        description="Caption photos with a trained checkpoint (one line per caption).")
    p.add_argument("photos", nargs="+", metavar="PHOTO", help="image files")
    p.add_argument("--checkpoint", metavar="FILE|NAME",
                   help="parameter file written by lasagne_caption.train, or the name of a "
                        "shipped model (python -m lasagne_caption.pretrained list). Default: "
                        "wrote_net.params if it is here, else the shipped model %s" % DEFAULT)
    p.add_argument("--vocab", help="vocabulary file, for a bare seminar parameter file")
    p.add_argument("--model", help="image encoder weights, e.g. mobilenet_v2_1.0_224_quant.tflite")
    method = p.add_mutually_exclusive_group()
    method.add_argument("--beam", type=int,
                        help="beam width (default: the checkpoint's best dev setting, else 3)")
    method.add_argument("--greedy", action="store_true", help="greedy decoding")
    method.add_argument("--sample", action="store_true", help="sample captions")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    p.add_argument("-n", type=int, default=1, help="samples per photo (with --sample)")
    p.add_argument("--seed", type=int, help="sampling seed (reproducible captions)")
    p.add_argument("--length-normalization", type=float, metavar="ALPHA",
                   help="beam search: rank hypotheses by log-prob / length**ALPHA "
                        "(default: the checkpoint's best dev setting, else 0; the shipped "
                        "Flickr8k models: 0.7 with --beam 5)")
    p.add_argument("--max-len", type=int, default=20, help="at most this many words + #END#")
    p.add_argument("--keep-unk", action="store_true", help="allow #UNK# in captions")
    p.add_argument("--json", action="store_true", help="print a JSON list of results")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars (shown on stderr for more than one photo)")
    p.add_argument("--attention-map", metavar="OUT.png",
                   help="attention networks (--decoder attention): draw where the network "
                        "looked for each word of the (first) printed caption, with its gate, "
                        "as a PNG; with several photos, one OUT-<photo stem>.png per photo")
    return p


def main(argv=None):
    from .generate import check_options
    args = build_parser().parse_args(argv)
    # every option is checked before the checkpoint and the photos are read
    check_options(beam=args.beam, n=args.n, max_len=args.max_len, temperature=args.temperature,
                  seed=args.seed, length_normalization=args.length_normalization or 0.0)
    if args.length_normalization and (args.greedy or args.sample):
        raise UserError("--length-normalization ranks beam hypotheses: it needs beam search, "
                        "not --%s" % ("greedy" if args.greedy else "sample"))
    if args.n > 1 and not args.sample:
        raise UserError("-n %d needs --sample (beam and greedy give one caption)" % args.n)
    if args.temperature != 1.0 and not args.sample:
        raise UserError("--temperature needs --sample (beam and greedy do not sample)")
    captioner = Captioner.from_checkpoint(args.checkpoint, args.model, args.vocab)
    if captioner.shipped:
        print("using the shipped model %s (%s; its card: %s)%s"
              % (captioner.shipped, captioner.checkpoint, model_card(captioner.shipped),
                 "" if args.checkpoint else "; no %s here" % LOCAL_CHECKPOINT), file=sys.stderr)
    if args.attention_map:
        captioner.check_attention()    # before any photo is read
    results = captioner.run(args.photos, beam=args.beam, greedy=args.greedy, sample=args.sample,
                            temperature=args.temperature, n=args.n, seed=args.seed,
                            max_len=args.max_len, suppress_unk=not args.keep_unk,
                            length_normalization=args.length_normalization,
                            progress=len(args.photos) > 1 and not args.no_progress)
    failed = [r for r in results if "error" in r]
    for r in failed:
        print("error: %s" % r["error"], file=sys.stderr)
    if args.json:
        print(json.dumps(results, indent=1,
                         default=lambda x: x.tolist() if isinstance(x, np.ndarray) else x))
    else:
        for r in results:
            for caption in r.get("captions", []):
                print("%s: %s" % (r["photo"], caption))
    if args.attention_map:
        from .attention_map import draw_attention_map
        # the encoder's map (7x7 for 49 regions); a region count that is not a square: a row
        shapes = code_shapes(captioner.model.image_shape)
        grid = shapes[-1][:2] if len(shapes) > 1 else (1, captioner.model.image_shape[0])
        for r, out in zip(results, attention_map_paths(args.attention_map, args.photos)):
            if "error" in r:
                continue
            words, attention, gate = attention_of(r)
            draw_attention_map(r["photo"], words, attention, gate, grid=grid, path=out)
            print("attention map of %s: %s" % (r["photo"], out), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    run_cli(main)
