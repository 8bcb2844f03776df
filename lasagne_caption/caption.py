"""Caption photos with a trained checkpoint: a Python API and a command line.

In a notebook::

    cap = Captioner.from_checkpoint("wrote_net.params")
    cap.caption("photo.jpg")                        # beam search, width 3
    cap.caption(["a.jpg", "b.jpg"], greedy=True)
    cap.caption("photo.jpg", sample=True, temperature=0.7, n=5, seed=0)

From a shell::

    python -m lasagne_caption.caption photo.jpg more/*.jpg --checkpoint wrote_net.params \\
        [--beam 3 [--length-normalization 0.7] | --greedy | --sample --temperature T] [-n K]
        [--json] [--model MODEL]

Photos are encoded by the image encoder and feature tap that produced the
checkpoint's training codes, as its metadata records them (``"encoder"``).
A bare seminar parameter file has no metadata: its encoder is recognised by
the code size, 1000 / 1024 (the seminar's GoogLeNet logits / pool5, which
need ``blvc_googlenet.pkl``), 1001 / 1280 (MobileNetV2 logits / pool).
Precomputed codes are accepted too. A file that is not an image gets a one-line error and the other photos
are still captioned.
"""
import argparse
import json
import os
import sys

import numpy as np

from .errors import UserError, run_cli

# code size -> the encoder that makes codes of that size: the guess for a
# bare seminar parameter file, whose metadata does not say
ENCODER_FOR_CODE_SIZE = {1001: ("mobilenet_v2", "logits"), 1280: ("mobilenet_v2", "pool"),
                         1000: ("googlenet", "logits"), 1024: ("googlenet", "pool")}


def encoder_record(metadata, code_size):
    """``(encoder name, tap)`` that made a checkpoint's training codes.

    From the metadata's ``"encoder"`` (format 3), or its data's features
    (formats 1 and 2); otherwise (a bare seminar file) guessed from the code
    size. None if no encoder makes codes of that size.
    """
    from .checkpoint import encoder_of
    record = (metadata or {}).get("encoder")
    if record is None:
        record = encoder_of(((metadata or {}).get("data") or {}).get("features"))
    if isinstance(record, dict) and isinstance(record.get("name"), str) \
            and isinstance(record.get("tap"), str):
        return record["name"], record["tap"]
    return ENCODER_FOR_CODE_SIZE.get(code_size)


def load_encoder(record, code_size, model_path=None):
    """The image encoder named by ``record`` (``(name, tap)``), checked against the code size.

    Returns
    -------
    encoder : object with ``encode`` and ``input_size``
    tap : str
        Which of its codes the model reads (``"logits"``, ``"pool"``).
    """
    from .encoders import get_encoder
    if record is None:
        raise UserError("the model expects %d-d image codes, which no encoder here "
                        "produces; pass precomputed codes instead of photos" % code_size)
    name, tap = record
    try:
        encoder = get_encoder(name, model_path)
    except UserError as exc:
        raise UserError("the model expects %d-d %s %s codes: %s" % (code_size, name, tap, exc))
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
        :func:`encoder_record` guesses them from the code size.
    """

    def __init__(self, model, encoder_model=None, encoder=None):
        from .generate import CaptionGenerator
        self.model = model
        self.vocab = model.vocab
        self.generator = CaptionGenerator(model)
        self.encoder_model = encoder_model
        self.encoder_name = encoder or encoder_record(None, model.image_shape[-1])
        self._encoder = None

    @classmethod
    def from_checkpoint(cls, path, encoder_model=None, vocab=None):
        """Load a checkpoint written by ``python -m lasagne_caption.train``.

        Parameters
        ----------
        path : str
            The parameter file; its metadata (``PATH.json``) names the network
            options and the vocabulary.
        encoder_model : str, optional
            See :class:`Captioner`.
        vocab : str, optional
            A vocabulary file (``Vocabulary.save`` format) for a bare seminar
            parameter file that has no metadata.
        """
        from .checkpoint import load_model
        model, metadata = load_model(path, vocab)
        return cls(model, encoder_model, encoder_record(metadata, model.image_shape[-1]))

    @property
    def encoder(self):
        """The image encoder the model was trained with, loaded once."""
        if self._encoder is None:
            self._encoder, self.features = load_encoder(self.encoder_name,
                                                        self.model.image_shape[-1],
                                                        self.encoder_model)
        return self._encoder

    def encode(self, photos):
        """Codes of photos (paths or uint8 RGB arrays); unreadable files are reported.

        Returns
        -------
        codes : float32 array (M, code_size)
            One row per photo that could be read, in order.
        errors : dict
            Index in ``photos`` -> one-line message, for the others.
        """
        encoded = self.encoder.encode(list(photos), taps=self.features, progress=False,
                                      skip_unreadable=True)
        return encoded[self.features], {i: message for i, _, message in encoded.failed}

    def run(self, photos, beam=3, greedy=False, sample=False, temperature=1.0, n=1,
            seed=None, max_len=20, suppress_unk=True, length_normalization=0.0):
        """Caption many photos (or codes); one result dict per item, failures included.

        Parameters
        ----------
        photos : list of (path or uint8 image), or float array (N, code_size) of codes
        beam, greedy, sample, temperature, n, seed, max_len, suppress_unk, length_normalization
            See :meth:`caption`.

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
        check_options(beam=None if (greedy or sample) else beam, max_len=max_len,
                      temperature=temperature if sample else None, n=n,
                      seed=seed if sample else None,
                      length_normalization=length_normalization)
        if length_normalization and (greedy or sample):
            raise UserError("--length-normalization ranks beam hypotheses: it needs beam "
                            "search, not %s" % ("greedy" if greedy else "sampling"))
        if n > 1 and not sample:
            raise UserError("-n %d needs --sample (beam and greedy give one caption)" % n)
        if _are_codes(photos, self.model.image_shape[-1]):
            codes, errors = np.asarray(photos, np.float32), {}
        else:
            codes, errors = self.encode(photos)
        if sample:
            method = "sample"
            captions, log_probs, extras = self.generator.sample(
                codes, temperature=temperature, n=n, seed=seed, max_len=max_len,
                suppress_unk=suppress_unk, extras=True)
        else:
            method = "greedy" if greedy else "beam%d" % beam
            captions, log_probs, extras = (
                self.generator.greedy(codes, max_len, suppress_unk, extras=True) if greedy else
                self.generator.beam_search(codes, beam, max_len,
                                           length_normalization=length_normalization,
                                           suppress_unk=suppress_unk, extras=True))
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

    def caption(self, photos, beam=3, greedy=False, sample=False, temperature=1.0, n=1,
                seed=None, max_len=20, suppress_unk=True, length_normalization=0.0):
        """Caption one photo or several.

        Parameters
        ----------
        photos : path, uint8 RGB image, code vector, or a list / array of them
        beam : int
            Beam width (the default method); 1 is greedy decoding.
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
        length_normalization : float
            Beam search ranks its hypotheses by ``log_prob / length ** alpha``
            (0: raw log-probabilities, which favour short captions; the
            README's best Flickr8k setting is beam 5 with 0.7).

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
        single = (isinstance(photos, (str, bytes, os.PathLike))
                  or (isinstance(photos, np.ndarray)
                      and (photos.ndim == 1 or (photos.ndim == 3 and photos.dtype == np.uint8))))
        items = [photos] if single else photos
        if isinstance(items, list) and items and _are_codes(items[0], self.model.image_shape[-1]):
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
    """Precomputed codes: a float vector or matrix whose last axis is ``code_size``."""
    return (isinstance(items, np.ndarray) and items.dtype.kind == "f"
            and items.ndim in (1, 2) and items.shape[-1] == code_size)


def build_parser():
    p = argparse.ArgumentParser(
        prog="python -m lasagne_caption.caption",
        description="Caption photos with a trained checkpoint (one line per caption).")
    p.add_argument("photos", nargs="+", metavar="PHOTO", help="image files")
    p.add_argument("--checkpoint", default="wrote_net.params",
                   help="parameter file written by lasagne_caption.train (default: %(default)s)")
    p.add_argument("--vocab", help="vocabulary file, for a bare seminar parameter file")
    p.add_argument("--model", help="image encoder weights, e.g. mobilenet_v2_1.0_224_quant.tflite")
    method = p.add_mutually_exclusive_group()
    method.add_argument("--beam", type=int, default=3, help="beam width (default: %(default)s)")
    method.add_argument("--greedy", action="store_true", help="greedy decoding")
    method.add_argument("--sample", action="store_true", help="sample captions")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    p.add_argument("-n", type=int, default=1, help="samples per photo (with --sample)")
    p.add_argument("--seed", type=int, help="sampling seed (reproducible captions)")
    p.add_argument("--length-normalization", type=float, default=0.0, metavar="ALPHA",
                   help="beam search: rank hypotheses by log-prob / length**ALPHA "
                        "(default: %(default)s; 0.7 with --beam 5 scored best on Flickr8k dev)")
    p.add_argument("--max-len", type=int, default=20, help="at most this many words + #END#")
    p.add_argument("--keep-unk", action="store_true", help="allow #UNK# in captions")
    p.add_argument("--json", action="store_true", help="print a JSON list of results")
    return p


def main(argv=None):
    from .generate import check_options
    args = build_parser().parse_args(argv)
    # every option is checked before the checkpoint and the photos are read
    check_options(beam=args.beam, n=args.n, max_len=args.max_len, temperature=args.temperature,
                  seed=args.seed, length_normalization=args.length_normalization)
    if args.length_normalization and (args.greedy or args.sample):
        raise UserError("--length-normalization ranks beam hypotheses: it needs beam search, "
                        "not --%s" % ("greedy" if args.greedy else "sample"))
    if args.n > 1 and not args.sample:
        raise UserError("-n %d needs --sample (beam and greedy give one caption)" % args.n)
    if args.temperature != 1.0 and not args.sample:
        raise UserError("--temperature needs --sample (beam and greedy do not sample)")
    captioner = Captioner.from_checkpoint(args.checkpoint, args.model, args.vocab)
    results = captioner.run(args.photos, beam=args.beam, greedy=args.greedy, sample=args.sample,
                            temperature=args.temperature, n=args.n, seed=args.seed,
                            max_len=args.max_len, suppress_unk=not args.keep_unk,
                            length_normalization=args.length_normalization)
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
    return 1 if failed else 0


if __name__ == "__main__":
    run_cli(main)
