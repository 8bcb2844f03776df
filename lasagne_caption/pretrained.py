"""Trained models that ship with the package, by name, and how to pack your own.

``python -m lasagne_caption.caption photo.jpg`` with no ``wrote_net.params``
in the current folder uses the shipped model :data:`DEFAULT`;
``--checkpoint NAME`` picks a shipped model by name, anything else is a path.
Each shipped model is three files in ``lasagne_caption/shipped/``:

* ``NAME.npz``: the parameters, packed (:mod:`lasagne_caption.packed`);
* ``NAME.npz.json``: the checkpoint's metadata (network, vocabulary, encoder)
  plus ``"decoding"``, the best setting on the dev split, which ``caption``
  and ``evaluate`` use unless told otherwise;
* ``NAME.md``: the model card (data, the command that reproduces it, scores,
  encoder, licences).

From a shell::

    python -m lasagne_caption.pretrained list
    python -m lasagne_caption.pretrained pack runs/x/wrote_net.best.params my-model.npz \\
        --storage int8 --beam 5 --length-normalization 0.7

>>> DEFAULT in names()
True
"""
import argparse
import json
import os
import sys

from . import checkpoint as ckpt
from .errors import UserError, run_cli
from .files import atomic_write, file_digest
from .packed import STORAGES, save_packed

SHIPPED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "shipped")
#: the model ``caption`` uses when there is no ``wrote_net.params`` here
DEFAULT = "flickr8k-attention"
#: the file the seminar's notebook and ``train`` write, looked for first
LOCAL_CHECKPOINT = "wrote_net.params"


def names():
    """The shipped models' names, sorted."""
    if not os.path.isdir(SHIPPED_DIR):
        return []
    return sorted(f[:-len(".npz")] for f in os.listdir(SHIPPED_DIR) if f.endswith(".npz"))


def shipped_path(name):
    """The parameter file of shipped model ``name``."""
    return os.path.join(SHIPPED_DIR, name + ".npz")


def model_card(name):
    """The model card (markdown) of shipped model ``name``."""
    return os.path.join(SHIPPED_DIR, name + ".md")


def resolve(checkpoint=None):
    """The parameter file a ``--checkpoint`` value means: ``(path, shipped name or None)``.

    ``None``: ``wrote_net.params`` if it exists here, else the shipped
    :data:`DEFAULT`. An existing path is itself (a file beats a shipped name);
    a shipped model's name is its file. Anything else is a one-line error
    listing the shipped names.
    """
    if checkpoint is None:
        if os.path.exists(LOCAL_CHECKPOINT):
            return LOCAL_CHECKPOINT, None
        return shipped_path(DEFAULT), DEFAULT
    path = os.fspath(checkpoint)
    if os.path.exists(path):
        return path, None
    if path in names():
        return shipped_path(path), path
    raise UserError("%s: no such checkpoint file, nor a shipped model of that name "
                    "(shipped: %s)" % (path, ", ".join(names()) or "none"))


def pack_checkpoint(checkpoint, out, storage="int8", decoding=None, data=None):
    """Write ``checkpoint`` (with its metadata) as a packed model at ``out``.

    ``decoding``: ``{"beam": B, "length_normalization": A}``, the setting
    ``caption`` and ``evaluate`` use by default (choose it on the dev split).
    ``data``: the dataset folder to record, where ``evaluate`` looks by
    default (a checkpoint records the path its training run used, often
    relative to another folder). The metadata keeps everything else the
    checkpoint's had (the run's options too, for the record) and notes which
    file it was packed from.
    Returns the metadata written.
    """
    model, metadata = ckpt.load_model(checkpoint)   # a loadable network, or a one-line error
    if not metadata:
        raise UserError("%s has no metadata: pack a checkpoint written by "
                        "lasagne_caption.train" % checkpoint)
    if decoding is not None:
        ckpt.read_decoding(dict(metadata, decoding=decoding), checkpoint)   # checked
    out = os.fspath(out)
    atomic_write(out, lambda f: save_packed(f, model.get_param_values(), storage))
    metadata = dict(metadata, params_sha256=file_digest(out),
                    packed={"storage": storage, "from": os.path.basename(checkpoint),
                            "from_sha256": metadata.get("params_sha256")})
    if decoding is not None:
        metadata["decoding"] = decoding
    if data is not None:
        metadata["data"] = dict(metadata.get("data") or {}, path=os.fspath(data))
    text = json.dumps(metadata, indent=1, sort_keys=True)
    atomic_write(ckpt.metadata_path(out), lambda f: f.write(text.encode("utf-8")))
    return metadata


def describe(name):
    """One line about shipped model ``name``: kind, encoder, decoding, size."""
    path = shipped_path(name)
    metadata = ckpt.load_metadata(path) or {}
    encoder = metadata.get("encoder") or ckpt.encoder_of(
        (metadata.get("data") or {}).get("features")) or {}
    decoding = ckpt.read_decoding(metadata, path)
    return "%-20s %-9s %s %s, beam %d%s, %.1f MB  (card: %s)" % (
        name, metadata.get("kind", "seminar"), encoder.get("name", "?"), encoder.get("tap", "?"),
        decoding.get("beam", 3), ", length norm. %g" % decoding["length_normalization"]
        if decoding.get("length_normalization") else "", os.path.getsize(path) / 1e6,
        os.path.relpath(model_card(name)))


def build_parser():
    p = argparse.ArgumentParser(
        prog="python -m lasagne_caption.pretrained",
        description="The trained models shipped with lasagne-caption, and packing a "
                    "checkpoint of your own the same way.")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the shipped models: name, network, encoder, default decoding")
    pk = sub.add_parser("pack", help="write a checkpoint as a compact .npz (+ .json metadata)",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    pk.add_argument("checkpoint", help="parameter file written by lasagne_caption.train")
    pk.add_argument("out", help="the packed file to write, e.g. my-model.npz")
    pk.add_argument("--storage", choices=STORAGES, default="int8",
                    help="int8: a quarter of the size, a scale per column; float16: half")
    pk.add_argument("--beam", type=int, help="default beam width for this model "
                    "(the best on the dev split)")
    pk.add_argument("--length-normalization", type=float, default=0.0, metavar="ALPHA",
                    help="default length normalisation with --beam")
    pk.add_argument("--data", help="dataset folder to record, where evaluate looks by default "
                    "(default: the path the training run used)")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.command == "list":
        for name in names():
            print(describe(name))
        return 0
    decoding = None
    if args.beam is not None:
        decoding = {"beam": args.beam, "length_normalization": args.length_normalization}
    elif args.length_normalization:
        raise UserError("--length-normalization is the default with --beam: give both")
    pack_checkpoint(args.checkpoint, args.out, args.storage, decoding, args.data)
    print("wrote %s (%.1f MB) and %s" % (args.out, os.path.getsize(args.out) / 1e6,
                                         ckpt.metadata_path(args.out)), file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_cli(main)
