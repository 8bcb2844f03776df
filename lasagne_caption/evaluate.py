"""Score a checkpoint with the MS-COCO caption metrics on a dataset split.

``python -m lasagne_caption.evaluate --checkpoint wrote_net.params --split test --beam 3``
captions every image of the split, scores the captions against all of each
image's reference captions (BLEU-1..4, METEOR, ROUGE-L, CIDEr-D from
pycocoevalcap), prints a table beside published results, and writes the
captions (COCO results JSON) and the scores (JSON and CSV).

``--checkpoint`` also takes a shipped model's name (``flickr8k-attention``);
beam width and length normalisation default to the checkpoint's recorded best
dev setting (metadata ``"decoding"``), else beam 3.
"""
import argparse
import os
import time

from . import metrics
from .checkpoint import load_model, read_decoding
from .data import load_dataset
from .errors import UserError, run_cli
from .vocab import END, START


def references_of(dataset, split):
    """``{image name: [reference caption, ...]}`` of one split, as plain text."""
    ix = dataset.splits.get(split)
    if ix is None or not len(ix):
        dataset.split(split)   # raises the one-line unknown-split / empty-split error
    return {dataset.image_names[i]: [" ".join(w for w in c if w not in (START, END))
                                     for c in dataset.captions[i]] for i in ix}


def caption_split(model, dataset, split, beam=3, max_len=20, length_normalization=0.0,
                  progress=False):
    """Generated captions ``{image name: caption}`` for every image of ``split``."""
    from .generate import CaptionGenerator
    dataset.split(split)   # one-line errors for an unknown or empty split
    ix = dataset.splits[split]
    generator = CaptionGenerator(model)
    codes = dataset.codes[ix]
    if beam > 1:
        captions, _ = generator.beam_search(codes, beam=beam, max_len=max_len,
                                            length_normalization=length_normalization,
                                            progress=progress)
    else:
        captions, _ = generator.greedy(codes, max_len=max_len, progress=progress)
    return {dataset.image_names[i]: c for i, c in zip(ix, captions)}


def output_stem(checkpoint, split, beam, length_normalization, out=None):
    """``OUT/CHECKPOINT.SPLIT.beamB[.lnA]``, the common start of the written files."""
    out = out or os.path.dirname(os.path.abspath(checkpoint))
    stem = os.path.join(out, "%s.%s.beam%d" % (os.path.basename(checkpoint), split, beam))
    if length_normalization:
        stem += ".ln%g" % length_normalization
    return stem


OUTPUT_SUFFIXES = (".captions.json", ".scores.json", ".scores.csv")


def check_writable(stem):
    """Make sure the files ``STEM + suffix`` can be written, before hours of captioning.

    Creates the folder if needed and writes (and removes) a probe file in it.
    """
    import tempfile
    folder = os.path.dirname(stem) or "."
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise UserError("--out %s: cannot create the folder (%s)" % (folder, exc.strerror or exc))
    if not os.path.isdir(folder):
        raise UserError("--out %s is not a folder" % folder)
    for suffix in OUTPUT_SUFFIXES:
        if os.path.isdir(stem + suffix):
            raise UserError("%s is a folder; cannot write the results there" % (stem + suffix))
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".evaluate-probe-"):
            pass
    except OSError as exc:
        raise UserError("--out %s: cannot write there (%s)" % (folder, exc.strerror or exc))


def evaluate(checkpoint=None, data=None, split="test", beam=None, max_len=20,
             length_normalization=None, out=None, progress=False):
    """Caption and score a split: ``(scores, candidates, paths written, dataset, record)``.

    ``record``: what the scores file records about the run (checkpoint,
    split, beam, length normalisation used, captioning seconds, ...).

    ``checkpoint``: a parameter file or a shipped model's name (None:
    ``wrote_net.params`` if it is here, else the shipped default). ``beam``
    and ``length_normalization`` default to the checkpoint's recorded
    decoding setting, else 3 and 0. ``out`` defaults to the checkpoint's
    folder, or the current one for a shipped model. Options, the checkpoint,
    the dataset and split are checked, and the output folder tried, before
    anything is captioned.
    """
    from .generate import check_options
    from .pretrained import resolve
    check_options(beam=beam, max_len=max_len, length_normalization=length_normalization)
    checkpoint, shipped = resolve(checkpoint)
    model, meta = load_model(checkpoint)
    decoding = dict({"beam": 3, "length_normalization": 0.0}, **read_decoding(meta, checkpoint))
    beam = decoding["beam"] if beam is None else beam
    if length_normalization is None:
        length_normalization = decoding["length_normalization"] if beam > 1 else 0.0
    if shipped and out is None:
        out = "."     # not into the installed package
    named = meta.get("data") if isinstance(meta, dict) else None
    data = data or (named.get("path") if isinstance(named, dict) else None)
    if not data or not isinstance(data, (str, os.PathLike)):
        raise UserError("%s: the metadata names no dataset; pass --data" % checkpoint)
    dataset = load_dataset(data)
    if tuple(dataset.image_shape) != tuple(model.image_shape):
        raise UserError("%s: codes of shape %s, but %s was trained on codes of shape %s"
                        % (data, tuple(dataset.image_shape), checkpoint, tuple(model.image_shape)))
    references = references_of(dataset, split)
    stem = output_stem(checkpoint, split, beam, length_normalization, out)
    check_writable(stem)
    started = time.time()
    candidates = caption_split(model, dataset, split, beam, max_len, length_normalization,
                               progress)
    seconds = time.time() - started
    scores = metrics.score_captions(references, candidates)
    metrics.write_results_json(stem + ".captions.json", candidates)
    meta_row = {"checkpoint": checkpoint, "data": str(dataset.path), "split": split,
                "images": len(candidates), "beam": beam, "max_len": max_len,
                "length_normalization": length_normalization, "epoch": meta.get("epoch"),
                "caption_seconds": round(seconds, 1)}
    metrics.write_scores(stem + ".scores.json", stem + ".scores.csv", scores, meta_row)
    return scores, candidates, [stem + ".captions.json", stem + ".scores.json",
                                stem + ".scores.csv"], dataset, meta_row


def build_parser():
    p = argparse.ArgumentParser(
        prog="python -m lasagne_caption.evaluate",
        description="Caption every image of a split and score the captions with BLEU-1..4, "
                    "METEOR, ROUGE-L and CIDEr-D (pycocoevalcap; METEOR needs Java).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", metavar="FILE|NAME",
                   help="parameter file, or a shipped model's name (default: wrote_net.params "
                        "if it is here, else the shipped default model)")
    p.add_argument("--data", help="dataset folder (default: the one the checkpoint was trained on)")
    p.add_argument("--split", default="test", help="split to caption: train, val or test")
    p.add_argument("--beam", type=int, help="beam width, 1: greedy (default: the checkpoint's "
                   "best dev setting, else 3)")
    p.add_argument("--max-len", type=int, default=20, help="longest caption, in tokens")
    p.add_argument("--length-normalization", type=float, metavar="ALPHA",
                   help="rank beam hypotheses by log-prob / length**ALPHA (default: the "
                        "checkpoint's best dev setting, else 0)")
    p.add_argument("--out", help="folder for the captions and scores (default: beside the "
                   "checkpoint; the current folder for a shipped model)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--compare", choices=["flickr8k", "none"], default=None,
                   help="published results to print beside yours (default: flickr8k for a "
                        "Flickr8k dataset)")
    return p


def main(argv=None):
    from .generate import check_options
    args = build_parser().parse_args(argv)
    check_options(beam=args.beam, max_len=args.max_len,
                  length_normalization=args.length_normalization)
    scores, candidates, written, dataset, record = evaluate(
        args.checkpoint, args.data, args.split, args.beam, args.max_len,
        args.length_normalization, args.out, progress=not args.no_progress)
    others = None
    if args.compare == "flickr8k" or (args.compare is None and dataset.meta.get("source") == "flickr8k"):
        others = metrics.PUBLISHED_FLICKR8K
    print("%s: %d %s images, beam %d%s (%.0f s)" % (
        record["checkpoint"], len(candidates), args.split, record["beam"],
        ", length normalisation %g" % record["length_normalization"]
        if record["length_normalization"] else "", record["caption_seconds"]))
    print(metrics.format_table(scores, others=others))
    print("wrote " + ", ".join(written))
    return 0


if __name__ == "__main__":
    run_cli(main)
