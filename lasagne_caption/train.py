"""Train the seminar captioner: ``python -m lasagne_caption.train --epochs 100``.

Each epoch is ``--batches-per-epoch`` random batches (random images, one
random caption each, as in the seminar), then a validation loss on a fixed
part of the held-out ``val`` split. Losses go to ``<checkpoint>.log.csv``
and a plot to ``<checkpoint>.loss.png``. Parameters are saved every
``--save-every`` epochs, at the end and on Ctrl-C, and training resumes from
the checkpoint: batch order and dropout are seeded per epoch from
``--seed``, so an interrupted and resumed run gives the same parameters as
one that ran straight through.
"""
import argparse
import os
import signal
import sys
import time

import numpy as np
from tqdm import tqdm

from . import checkpoint as ckpt
from .data import generate_batch, iterate_captions, load_dataset
from .errors import UserError, run_cli
from .files import atomic_write
from .model import CaptionModel, NetworkConfig, read_glove
from .vocab import Vocabulary

LOG_COLUMNS = ["epoch", "train_loss", "val_loss", "seconds", "step"]


def log_paths(checkpoint):
    stem = checkpoint[:-len(".params")] if checkpoint.endswith(".params") else checkpoint
    return stem + ".log.csv", stem + ".loss.png"


def epoch_rngs(seed, epoch):
    """The batch RNG and the dropout seed of one epoch (same in every run)."""
    rng = np.random.default_rng([seed, epoch])
    return rng, int(rng.integers(1, 2 ** 30))


def seed_dropout(model, seed):
    from lasagne.layers import DropoutLayer, get_all_layers
    for layer in get_all_layers(model.top):
        if isinstance(layer, DropoutLayer):
            layer._srng.seed(seed)


def build_model(dataset, args, meta=None):
    """A new model from the options, or the one described by checkpoint metadata."""
    import lasagne
    # Lasagne draws initial weights from its global RNG: seed it for repeatable runs
    lasagne.random.set_rng(np.random.RandomState(args.seed))
    if meta is not None:
        vocab = Vocabulary(meta["vocabulary"])
        config = NetworkConfig.from_dict(meta["network"])
        if config.code_size != dataset.code_size:
            raise UserError("%s: the checkpoint expects %d-d image codes, %s has %d-d"
                            % (args.checkpoint, config.code_size, dataset.path,
                               dataset.code_size))
        return CaptionModel(config, vocab, learning_rate=meta.get("learning_rate", 1e-3))
    vocab = dataset.vocabulary(min_count=args.min_count)
    embeddings = None
    if args.glove:
        embeddings, found = read_glove(args.glove, vocab)
        print("GloVe: %d of %d words found in %s" % (found, len(vocab), args.glove))
    config = NetworkConfig(
        n_tokens=len(vocab), code_size=dataset.code_size,
        embed_size=args.embed_size if embeddings is None else embeddings.shape[1],
        units=args.units, image_inject=args.image_inject, cell=args.cell,
        freeze_embeddings=args.freeze_embeddings)
    return CaptionModel(config, vocab, learning_rate=args.learning_rate, embeddings=embeddings)


def metadata(model, dataset, args, epoch, step):
    return {
        "format": "lasagne-caption checkpoint 1",
        "network": model.config.to_dict(),
        "vocabulary": model.vocab.words,
        "data": {"name": dataset.name, "path": str(dataset.path),
                 "features": dataset.meta.get("features")},
        "epoch": epoch,
        "optimizer": {"name": "adam", "step": step, "learning_rate": model.learning_rate},
        "learning_rate": model.learning_rate,
        "rng": {"seed": args.seed,
                "rule": "epoch e draws batches from numpy default_rng([seed, e]) and "
                        "seeds dropout from its first integer"},
        "batch_size": args.batch_size,
        "batches_per_epoch": args.batches_per_epoch,
        "max_caption_len": args.max_caption_len,
    }


def _compile_record():
    from .compat import cache_dir
    return os.path.join(cache_dir(), "compile_seconds.json")


# measured with `python -m lasagne_caption.bench` (cold compile column), see README
FIRST_COMPILE_ESTIMATE = "about 1.5-2 minutes"


def _compile_times():
    import json
    try:
        with open(_compile_record()) as f:
            times = json.load(f)
        return times if isinstance(times, dict) else {}
    except (OSError, ValueError):
        return {}


def compile_with_notice(model, name):
    """Compile ``model.compile(name)`` if needed, saying first how long it will take.

    The estimate is the last compile of that kind measured on this machine;
    the first time, the measured cold-cache figure (Theano writes and
    compiles its C code once, into ``theano.config.compiledir``).
    """
    import json
    import theano
    if model.is_compiled(name):
        return
    kind = "val_step" if name == "val_step" else "train_step"
    what = {"val_step": "the validation loss",
            "train_step": "the train step for captions of any length (scan)"}.get(
        name, "the train step for captions of up to %s words" % name.rsplit("_", 1)[-1])
    times = _compile_times()
    if kind in times:
        estimate = "last time on this machine: %.0f s" % times[kind]
    else:
        estimate = ("the first time on a machine this takes %s on 2 cores while Theano "
                    "compiles C code into %s; later runs reuse it"
                    % (FIRST_COMPILE_ESTIMATE, theano.config.compiledir))
    tqdm.write("compiling %s (%s) ..." % (what, estimate))
    started = time.time()
    model.compile(name)
    seconds = time.time() - started
    tqdm.write("compiled in %.0f s" % seconds)
    times[kind] = round(seconds, 1)
    try:
        atomic_write(_compile_record(), lambda f: json.dump(times, f), text=True)
    except OSError:
        pass   # a read-only cache only costs the estimate


def read_log(path, upto_epoch):
    import pandas as pd
    if not os.path.exists(path):
        return pd.DataFrame(columns=LOG_COLUMNS)
    log = pd.read_csv(path)
    return log[log["epoch"] <= upto_epoch]


def write_log(path, png, log):
    """Write the CSV log and its loss plot, each atomically."""
    atomic_write(path, lambda f: f.write(log.to_csv(index=False)), text=True)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(log["epoch"], log["train_loss"], label="train")
    ax.plot(log["epoch"], log["val_loss"], label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy per word")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    atomic_write(png, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)


def validation_batches(dataset, model, args):
    codes, captions = dataset.split("val")
    batches = iterate_captions(codes, captions, model.vocab, args.batch_size,
                               args.max_caption_len)
    if args.val_batches > 0:
        batches = (b for _, b in zip(range(args.val_batches), batches))
    return list(batches)


def train(args):
    """Run (or resume) training as the command-line options say; returns the model."""
    import pandas as pd

    dataset = load_dataset(args.data)
    meta = None
    if args.resume and os.path.exists(args.checkpoint):
        meta = ckpt.load_metadata(args.checkpoint)
        if meta is None:
            raise UserError("%s has no metadata (%s); to start from its weights pass "
                            "--init-from %s --no-resume"
                            % (args.checkpoint, ckpt.metadata_path(args.checkpoint),
                               args.checkpoint))
    model = build_model(dataset, args, meta)
    start_epoch, step = 0, 0
    if meta is not None:
        model.set_param_values(ckpt.safe_load_arrays(args.checkpoint), args.checkpoint)
        start_epoch, step = meta["epoch"], meta["optimizer"]["step"]
    elif args.init_from:
        model.set_param_values(ckpt.safe_load_arrays(args.init_from), args.init_from)
    log_csv, log_png = log_paths(args.checkpoint)
    log = read_log(log_csv, start_epoch) if meta is not None else pd.DataFrame(columns=LOG_COLUMNS)
    print("data: %s (%d images, %d-d codes), vocabulary %d words"
          % (dataset.path, len(dataset.codes), dataset.code_size, len(model.vocab)))
    if start_epoch >= args.epochs:
        print("%s is already at epoch %d of %d: nothing to do"
              % (args.checkpoint, start_epoch, args.epochs))
        return model
    if meta is not None:
        print("resuming from %s at epoch %d" % (args.checkpoint, start_epoch))

    optimizer = model.optimizer_state
    if meta is not None:
        values = ckpt.load_optimizer_state(args.checkpoint)
        if len(values) != len(optimizer):
            raise UserError("%s: optimizer state has %d arrays, expected %d"
                            % (args.checkpoint, len(values), len(optimizer)))
        for var, value in zip(optimizer, values):
            var.set_value(value.astype(var.dtype))

    train_codes, train_captions = dataset.split("train")
    val = validation_batches(dataset, model, args)

    def snapshot(epoch):
        return (epoch, step, model.get_param_values(), [v.get_value() for v in optimizer])

    def save(snap):
        epoch, at_step, params, opt = snap
        ckpt.save_checkpoint(args.checkpoint, params,
                             metadata(model, dataset, args, epoch, at_step), opt)
        write_log(log_csv, log_png, log)

    last = snapshot(start_epoch)
    saved_epoch = start_epoch

    def stop(signum, frame):
        raise KeyboardInterrupt
    previous_handler = signal.signal(signal.SIGTERM, stop)
    try:
        for epoch in range(start_epoch + 1, args.epochs + 1):
            t0 = time.time()
            rng, dropout_seed = epoch_rngs(args.seed, epoch)
            seed_dropout(model, dropout_seed)
            losses = []
            bar = tqdm(range(args.batches_per_epoch), desc="epoch %d/%d" % (epoch, args.epochs),
                       leave=False, unit="batch", disable=None)
            for _ in bar:
                batch = generate_batch(train_codes, train_captions, model.vocab,
                                       args.batch_size, rng, args.max_caption_len)
                compile_with_notice(model, model.train_function_key(batch[1].shape[1]))
                losses.append(model.train_step(*batch))
                step += 1
                bar.set_postfix(loss="%.3f" % losses[-1])
            if val:
                compile_with_notice(model, "val_step")
            val_loss = float(np.mean([model.val_step(*b) for b in val])) if val else float("nan")
            row = {"epoch": epoch, "train_loss": float(np.mean(losses)), "val_loss": val_loss,
                   "seconds": round(time.time() - t0, 2), "step": step}
            log = pd.concat([log, pd.DataFrame([row])], ignore_index=True) if len(log) \
                else pd.DataFrame([row], columns=LOG_COLUMNS)
            tqdm.write("epoch %d/%d  train %.4f  val %.4f  (%.1f s)"
                       % (epoch, args.epochs, row["train_loss"], val_loss, row["seconds"]))
            last = snapshot(epoch)
            if epoch % args.save_every == 0 or epoch == args.epochs:
                save(last)
                saved_epoch = epoch
    except KeyboardInterrupt:
        # save the last completed epoch, not a half-done one, so resume is exact
        if last[0] > saved_epoch:
            log = log[log["epoch"] <= last[0]]
            save(last)
        print("\ninterrupted: saved epoch %d to %s; run the same command to resume"
              % (last[0], args.checkpoint), file=sys.stderr)
        raise SystemExit(130)
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
    print("saved %s (epoch %d); log %s, plot %s"
          % (args.checkpoint, args.epochs, log_csv, log_png))
    return model


def build_parser():
    p = argparse.ArgumentParser(
        prog="python -m lasagne_caption.train",
        description="Train the seminar's CNN->LSTM captioner on precomputed image codes, "
                    "saving to (and resuming from) wrote_net.params.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default="data/flickr8k",
                   help="prepared dataset folder (python -m lasagne_caption.data prepare ...)")
    p.add_argument("--epochs", type=int, default=100, help="train until this many epochs in total")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--batches-per-epoch", type=int, default=50)
    p.add_argument("--val-batches", type=int, default=20,
                   help="validation batches per epoch from the val split (0: the whole split)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", default="wrote_net.params",
                   help="parameter file (seminar format); metadata goes to CHECKPOINT.json")
    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                   help="continue from --checkpoint if it exists")
    p.add_argument("--init-from", metavar="PARAMS",
                   help="start from the weights of a seminar parameter file")
    p.add_argument("--save-every", type=int, default=5, help="save every N epochs")
    p.add_argument("--learning-rate", type=float, default=1e-3, help="Adam's step size")
    p.add_argument("--max-caption-len", type=int, default=None,
                   help="truncate training captions to this many tokens")
    net = p.add_argument_group("network (the defaults are the seminar's)")
    net.add_argument("--min-count", type=int, default=5, help="keep words seen this often")
    net.add_argument("--embed-size", type=int, default=128)
    net.add_argument("--units", type=int, default=200, help="LSTM/GRU units")
    net.add_argument("--image-inject", choices=["cell_init", "first_input"], default="cell_init",
                     help="image as the LSTM's initial cell (seminar) or first input step")
    net.add_argument("--cell", choices=["lstm", "gru"], default="lstm")
    net.add_argument("--glove", metavar="FILE", help="initialise word vectors from GloVe text")
    net.add_argument("--freeze-embeddings", action="store_true",
                     help="keep the (GloVe) word vectors fixed")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    for name in ("epochs", "batch_size", "batches_per_epoch", "save_every"):
        if getattr(args, name) < 1:
            raise UserError("--%s must be at least 1" % name.replace("_", "-"))
    train(args)
    return 0


if __name__ == "__main__":
    run_cli(main)
