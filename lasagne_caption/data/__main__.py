"""The command line: ``python -m lasagne_caption.data prepare|download|info ...``.

``prepare SOURCE`` writes a dataset folder (default ``data/<source>``) with
:mod:`~lasagne_caption.data.prepare`; ``download flickr8k`` fetches Flickr8k
(:mod:`~lasagne_caption.data.download`) and prepares it; ``info`` loads a
folder and prints its counts. Bad input is one ``error: ...`` line and exit
code 2; a :class:`~lasagne_caption.data.readers.DataWarning` is one
``warning: ...`` line. Importing this module runs nothing.
"""
import argparse
import os
import sys
import warnings

from ..errors import UserError, run_cli
from .dataset import load_dataset
from .download import BASE_URL, fetch_flickr8k
from .output import DatasetOutput
from .prepare import FLICKR_FEATURES, GRID_FEATURES, prepare_coco, prepare_flickr8k, prepare_seminar
from .readers import DataWarning


def _parser():
    parser = argparse.ArgumentParser(
        prog="python -m lasagne_caption.data",
        description="Prepare caption datasets into data/NAME/ and inspect them.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    prepare = commands.add_parser("prepare", help="make a dataset folder from a source",
                                  description="Make a dataset folder (default data/<source>) from a source.")
    kinds = prepare.add_subparsers(dest="kind", required=True, metavar="SOURCE")
    helps = {"flickr8k": ("Flickr8k with its official split (dev -> val)",
                          "Flickr8k folder: Flickr8k.token.txt, Flickr_8k.*Images.txt, codes/ "
                          "or images/"),
             "coco": ("MS-COCO captions with precomputed codes, seeded 90/5/5 split",
                      "captions JSON (images, annotations)"),
             "seminar": ("the seminar archive, seeded 90/5/5 split",
                         "data.tar.gz or the folder holding image_codes.npy, caption_tokens.pcl")}
    for kind, (text, source_help) in helps.items():
        sub = kinds.add_parser(kind, help=text, description="Prepare " + text + ".")
        sub.add_argument("--source", required=True, help=source_help)
        sub.add_argument("--out", help="dataset folder to write (default: data/%s)" % kind)
        sub.add_argument("--force", action="store_true",
                         help="replace an existing dataset folder that this command made "
                              "(other folders are never replaced)")
        if kind == "flickr8k":
            sub.add_argument("--features", choices=sorted(FLICKR_FEATURES) + list(GRID_FEATURES),
                             default="logits",
                             help="which MobileNetV2 codes: logits or pool (precomputed in "
                                  "codes/, else encoded from images/); grid (the 7x7x1280 "
                                  "Conv_1 map per photo, 62,720 bytes a photo) or block16 "
                                  "(the 7x7x320 output of the last inverted-residual block, "
                                  "expanded_conv_16/project, Conv_1's input, 15,680 bytes a "
                                  "photo), both encoded from images/ and stored as uint8 "
                                  "(default: logits)")
            sub.add_argument("--model", help="MobileNetV2 .tflite file, to encode photos when "
                                             "the source has no codes/")
        if kind == "coco":
            sub.add_argument("--codes", help="float .npy, one row per image (required)")
            sub.add_argument("--names", help="text file naming the image of each row "
                                             "(COCO file name or id); without it rows follow the JSON")

    info = commands.add_parser("info", help="print counts, splits, code and vocabulary size",
                               description="Load a dataset folder and print its summary.")
    info.add_argument("path", help="dataset folder, e.g. data/flickr8k")
    info.add_argument("--min-count", type=int, default=5,
                      help="vocabulary threshold on the train split (default: 5)")

    download = commands.add_parser(
        "download", help="download a source and prepare it",
        description="Download Flickr8k (resumable), check its text files, and prepare it.")
    download.add_argument("kind", choices=["flickr8k"])
    download.add_argument("--dest", default="data/downloads", help="where the zips go (default: data/downloads)")
    download.add_argument("--out", help="dataset folder to write (default: data/flickr8k)")
    download.add_argument("--force", action="store_true",
                          help="replace an existing dataset folder that this command made "
                               "(other folders are never replaced)")
    download.add_argument("--model", help="MobileNetV2 .tflite file to encode the photos")
    download.add_argument("--base-url", default=None, help="mirror holding Flickr8k_text.zip and "
                          "Flickr8k_Dataset.zip (default: the jbrownlee/Datasets GitHub release)")
    return parser


def main(argv=None):
    """Entry point of ``python -m lasagne_caption.data``."""
    args = _parser().parse_args(argv)
    with warnings.catch_warnings():  # one "warning: ..." line, not a source excerpt
        warnings.simplefilter("always", DataWarning)
        warnings.showwarning = lambda msg, *a, **k: print("warning: %s" % msg, file=sys.stderr)
        return _run(args)


def _run(args):
    if args.command == "info":
        if args.min_count < 1:
            raise UserError("--min-count must be at least 1, not %d" % args.min_count)
        ds = load_dataset(args.path)
        if len(ds.image_shape) == 1:
            size = "code size %d" % ds.code_size
        else:
            size = "codes %s per image (%s on disk)" % (
                "x".join(map(str, ds.meta.get("grid_shape") or ds.image_shape)),
                ds.meta.get("code_dtype", "float32"))
        print("%s: %d images, %d captions, %s, source %s"
              % (ds.path, len(ds.codes), sum(map(len, ds.captions)), size,
                 ds.meta.get("source", "unknown")))
        for name, ix in ds.splits.items():
            print("  %-5s %6d images %7d captions" % (name, len(ix), sum(len(ds.captions[i]) for i in ix)))
        if "train" in ds.splits:
            print("vocabulary (train, min_count=%d): %d words" % (args.min_count, len(ds.vocabulary(args.min_count))))
        return 0
    out = args.out or os.path.join("data", args.kind)
    if args.command == "download":
        # refuse a bad --out before downloading a gigabyte
        DatasetOutput(out, args.force, [args.dest, args.model])
        source = fetch_flickr8k(args.dest, args.base_url or BASE_URL)
        path = prepare_flickr8k(source, out, force=args.force, model_path=args.model)
    elif args.kind == "flickr8k":
        path = prepare_flickr8k(args.source, out, args.features, args.force, args.model)
    elif args.kind == "coco":
        path = prepare_coco(args.source, out, args.codes, args.names, args.force)
    else:
        path = prepare_seminar(args.source, out, args.force)
    print("wrote %s" % path)
    return 0


if __name__ == "__main__":
    run_cli(main)
