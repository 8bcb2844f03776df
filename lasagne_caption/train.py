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
from .data import epoch_batches, generate_batch, iterate_captions, load_dataset
from .errors import UserError, run_cli
from .files import atomic_write, exclusive_lock, remove_stale_temporaries
from .models import (AttentionConfig, AttentionModel, NetworkConfig, SeminarModel, read_glove,
                     seed_initial_weights)

BASE_LOG_COLUMNS = ["epoch", "train_loss", "val_loss", "seconds", "step"]
# dev scores of the captions written each --dev-every epochs, and the step size
LOG_COLUMNS = BASE_LOG_COLUMNS + ["dev_bleu4", "dev_cider", "learning_rate"]

# defaults that depend on the decoder: the seminar's, and Xu et al.'s recipe
# at Flickr8k size for the attention network (a pass over every caption per
# epoch, captions for the dev split after each, decay and early stopping)
DECODER_DEFAULTS = {
    "seminar": {"embed_size": 128, "units": 200, "learning_rate": 1e-3, "batch_size": 50,
                "batches_per_epoch": 50, "dev_every": 0, "early_stop": 0, "lr_decay": 1.0},
    "attention": {"embed_size": 256, "units": 512, "learning_rate": 4e-4, "batch_size": 64,
                  "batches_per_epoch": 0, "dev_every": 1, "early_stop": 4, "lr_decay": 0.5},
}


def kept_path(checkpoint, epoch):
    """Where ``--keep-every`` puts the copy of epoch ``epoch``: wrote_net.epoch-0120.params."""
    stem = checkpoint[:-len(".params")] if checkpoint.endswith(".params") else checkpoint
    return "%s.epoch-%04d.params" % (stem, epoch)


def log_paths(checkpoint):
    stem = checkpoint[:-len(".params")] if checkpoint.endswith(".params") else checkpoint
    return stem + ".log.csv", stem + ".loss.png"


def epoch_rngs(seed, epoch):
    """The batch RNG and the dropout seed of one epoch (same in every run)."""
    rng = np.random.default_rng([seed, epoch])
    return rng, int(rng.integers(1, 2 ** 30))


def apply_decoder_defaults(args, decoder):
    """Fill the options left at None with ``decoder``'s defaults."""
    args.decoder = decoder
    for name, value in DECODER_DEFAULTS[decoder].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def build_head(dataset, args):
    """The encoder head to fine-tune (``--fine-tune N``), or None; checks the data.

    Fine-tuning reads MobileNetV2's ``block16`` codes and starts the head from
    the int8 model's weights (``--model``, else the encoders' default file).
    """
    from .models.finetune import BLOCK16_SHAPE, EncoderHead, HeadConfig
    block16 = tuple(dataset.image_shape) == BLOCK16_SHAPE \
        and str(dataset.meta.get("features", "")).endswith("block16")
    if args.fine_tune is None:
        if block16:
            raise UserError("%s holds block16 codes, the input of MobileNetV2's last layers: "
                            "train them with the captioner with --fine-tune N, or use logits "
                            "or grid codes" % args.data)
        return None
    if not block16:
        raise UserError("--fine-tune trains MobileNetV2's last layers on its block16 codes; %s "
                        "has %s codes. Prepare them with `python -m lasagne_caption.data "
                        "prepare flickr8k ... --features block16`"
                        % (args.data, dataset.meta.get("features")))
    from .encoders.mobilenet_v2 import head_weights
    config = HeadConfig(output="grid" if args.decoder == "attention" else "logits",
                        train_layers=args.fine_tune, learning_rate_scale=args.encoder_lr_scale)
    head = EncoderHead(config, head_weights(args.model))
    layers = "block16 -> Conv_1 -> pool -> Logits" if config.output == "logits" \
        else "block16 -> Conv_1"
    print("fine-tuning MobileNetV2's last layers (%s): %s train%s" % (
        layers, " and ".join(config.trained) or "none (frozen)",
        " at %g x the step size" % config.learning_rate_scale if config.trained else ""))
    return head


def build_model(dataset, args):
    """A new network (``args.decoder``) from the command-line options."""
    vocab = dataset.vocabulary(min_count=args.min_count)
    head = build_head(dataset, args)
    image_shape = tuple(dataset.image_shape) if head is None else head.output_shape
    if args.decoder == "attention":
        if len(image_shape) != 2:
            raise UserError("--decoder attention reads image regions; %s has %s features of "
                            "shape %s. Prepare region features with `python -m "
                            "lasagne_caption.data prepare ... --features grid`"
                            % (args.data, dataset.meta.get("features"), dataset.image_shape))
        if args.glove:
            raise UserError("--glove is for the seminar decoder")
        config = AttentionConfig(
            n_tokens=len(vocab), image_shape=list(image_shape),
            embed_size=args.embed_size, units=args.units, attention_size=args.attention_size,
            gate=args.gate, dropout=args.dropout, doubly_stochastic=args.doubly_stochastic)
        return AttentionModel(config, vocab, learning_rate=args.learning_rate, head=head)
    embeddings = None
    if args.glove:
        embeddings, found = read_glove(args.glove, vocab)
        print("GloVe: %d of %d words found in %s" % (found, len(vocab), args.glove))
    config = NetworkConfig(
        n_tokens=len(vocab), code_size=dataset.code_size if head is None else image_shape[0],
        embed_size=args.embed_size if embeddings is None else embeddings.shape[1],
        units=args.units, image_inject=args.image_inject, cell=args.cell,
        freeze_embeddings=args.freeze_embeddings)
    return SeminarModel(config, vocab, learning_rate=args.learning_rate, embeddings=embeddings,
                        head=head)


def run_options(args):
    """What a checkpoint records of the run: how batches are drawn, how it started."""
    return {
        "rng": {"seed": args.seed,
                "rule": "epoch e draws batches from numpy default_rng([seed, e]) and "
                        "seeds dropout from its first integer"},
        "batch_size": args.batch_size,
        "batches_per_epoch": args.batches_per_epoch,
        "max_caption_len": args.max_caption_len,
        # how the run started (vocabulary, first weights): a resume checks them
        "min_count": args.min_count,
        "glove": args.glove,
        "init_from": args.init_from,
        "dev": {"every": args.dev_every, "beam": args.dev_beam, "select_on": args.select_on,
                "lr_decay": args.lr_decay, "early_stop": args.early_stop},
    }


def _compile_record():
    from .compat import cache_dir
    return os.path.join(cache_dir(), "compile_seconds.json")


# measured with `python benchmarks/bench.py` (cold compile column), see README
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
    # each network's compile times are recorded apart
    if getattr(model, "kind", "seminar") != "seminar":
        kind = "%s:%s" % (model.kind, kind)
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
    """The log's rows up to ``upto_epoch``; a damaged log is set aside, not fatal.

    The log is only a record: a truncated or edited CSV must not stop a
    resume (the weights are in the checkpoint). It is renamed to
    ``PATH.damaged`` and a new log starts.
    """
    import pandas as pd
    empty = pd.DataFrame(columns=LOG_COLUMNS)
    if not os.path.exists(path):
        return empty
    try:
        log = pd.read_csv(path)
        if list(log.columns) == BASE_LOG_COLUMNS:   # a log of version 0.3
            log = log.reindex(columns=LOG_COLUMNS)
        if list(log.columns) != LOG_COLUMNS:
            raise ValueError("columns %s, expected %s" % (list(log.columns), LOG_COLUMNS))
        log = log.astype({"epoch": int, "train_loss": float, "val_loss": float,
                          "seconds": float, "step": int, "dev_bleu4": float,
                          "dev_cider": float, "learning_rate": float})
    except (ValueError, TypeError, OSError, pd.errors.ParserError,
            pd.errors.EmptyDataError) as exc:
        os.replace(path, path + ".damaged")
        print("warning: %s is unreadable (%s): moved it to %s.damaged and starting a new "
              "log; the checkpoint is not affected" % (path, str(exc).splitlines()[0], path),
              file=sys.stderr)
        return empty
    return log[log["epoch"] <= upto_epoch]


def write_log(path, png, log):
    """Write the CSV log and its loss plot, each atomically."""
    atomic_write(path, lambda f: f.write(log.to_csv(index=False)), text=True)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    dev = log.dropna(subset=["dev_bleu4"]) if len(log) else log
    fig, axes = plt.subplots(1, 2 if len(dev) else 1, figsize=(11 if len(dev) else 6, 4),
                             squeeze=False)
    ax = axes[0, 0]
    ax.plot(log["epoch"], log["train_loss"], label="train (with the attention term)"
            if len(dev) else "train")
    ax.plot(log["epoch"], log["val_loss"], label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy per word")
    ax.grid(alpha=0.3)
    ax.legend()
    if len(dev):
        ax = axes[0, 1]
        ax.plot(dev["epoch"], dev["dev_bleu4"], "o-", label="BLEU-4")
        ax.plot(dev["epoch"], dev["dev_cider"], "s-", label="CIDEr-D")
        ax.set_xlabel("epoch")
        ax.set_ylabel("dev score (beam search captions)")
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


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


# options that define the network or its optimiser: a resume keeps the
# checkpoint's, and refuses a different value given on the command line
NETWORK_OPTIONS = {"embed_size": "embed_size", "units": "units", "image_inject": "image_inject",
                   "cell": "cell", "freeze_embeddings": "freeze_embeddings", "gate": "gate",
                   "attention_size": "attention_size", "dropout": "dropout",
                   "doubly_stochastic": "doubly_stochastic"}
# options a resume may change (with a note): they change batches, not the network
RUN_OPTIONS = ("batch_size", "batches_per_epoch", "max_caption_len", "seed")


def _checkpoint_files(checkpoint):
    log_csv, log_png = log_paths(checkpoint)
    best = best_path(checkpoint)
    return [checkpoint, ckpt.metadata_path(checkpoint), log_csv, log_png, best,
            ckpt.metadata_path(best)]


def best_path(checkpoint):
    """Where the best-on-dev parameters go: wrote_net.best.params."""
    stem = checkpoint[:-len(".params")] if checkpoint.endswith(".params") else checkpoint
    return stem + ".best.params"


def remove_stale_files(checkpoint):
    """Delete temporaries that a killed run left beside ``checkpoint`` (never a live run's)."""
    import glob
    bases = set(_checkpoint_files(checkpoint))
    # state files are named after a digest: find their bases from the temporaries
    for tmp in glob.glob(glob.escape(checkpoint) + ".state-*.npz.*.tmp"):
        bases.add(tmp[:tmp.index(".npz.") + len(".npz")])
    removed = []
    for base in sorted(bases):
        removed += remove_stale_temporaries(base)
    if removed:
        print("removed %d temporary file%s left by a killed run: %s"
              % (len(removed), "s" if len(removed) > 1 else "",
                 ", ".join(os.path.basename(r) for r in removed)))
    return removed


def open_checkpoint(args):
    """The metadata to resume from, or None to start anew; refuses to clobber.

    Starting anew over an existing checkpoint needs ``--overwrite`` and is
    only done to a checkpoint of this toolkit (a parameter file with its
    metadata), never to some other file.
    """
    path = args.checkpoint
    if os.path.isdir(path):
        raise UserError("--checkpoint %s is a folder; give a file name such as %s"
                        % (path, os.path.join(path, "wrote_net.params")))
    if not os.path.exists(path):
        return None
    if args.resume:
        meta = ckpt.load_metadata(path)
        if meta is None:
            raise UserError("%s has no metadata (%s); to start from its weights pass "
                            "--init-from %s --no-resume --checkpoint NEW.params"
                            % (path, ckpt.metadata_path(path), path))
        return meta
    if not args.overwrite:
        raise UserError("%s exists; --no-resume would replace it: add --overwrite to do so, "
                        "or choose another --checkpoint" % path)
    try:
        meta = ckpt.load_metadata(path)
        ckpt.safe_load_arrays(path)
    except UserError as exc:
        raise UserError("refusing to overwrite %s: it is not a readable checkpoint of this "
                        "toolkit (%s)" % (path, exc))
    if meta is None:
        raise UserError("refusing to overwrite %s: it has no metadata, so it was not written "
                        "by this toolkit's training" % path)
    print("--overwrite: replacing %s (epoch %s) with a new run"
          % (path, meta.get("epoch", "?")))
    return None


def check_resume(meta, dataset, args, given):
    """Refuse options that contradict the checkpoint; say what the resume keeps."""
    where = args.checkpoint
    options = meta.get("network", {})
    for option, key in NETWORK_OPTIONS.items():
        if option in given and key in options and given[option] != options[key]:
            raise UserError("%s was trained with --%s %s; you gave --%s %s. A resume keeps "
                            "the checkpoint's network: drop the option, or start a new run "
                            "with another --checkpoint" % (where, option.replace("_", "-"),
                                                            options[key],
                                                            option.replace("_", "-"),
                                                            given[option]))
    for option in ("glove", "min_count", "init_from"):
        # these made the vocabulary and first weights: the same value (the
        # same command run again) resumes; another one is refused
        if option in given and given[option] != meta.get(option, given[option]):
            raise UserError("%s was started with --%s %s; you gave %s. It only applies to a "
                            "new run: drop it, or start a new run with another --checkpoint"
                            % (where, option.replace("_", "-"), meta[option], given[option]))
    head = (meta.get("encoder") or {}).get("head") or {}
    for option, key in (("fine_tune", "train_layers"), ("encoder_lr_scale", "learning_rate_scale")):
        if option in given and given[option] != head.get(key):
            raise UserError("%s was trained with %s; you gave --%s %s. A resume keeps the "
                            "checkpoint's encoder: drop the option, or start a new run with "
                            "another --checkpoint"
                            % (where, "--%s %s" % (option.replace("_", "-"), head[key])
                               if key in head else "a frozen encoder (no --fine-tune)",
                               option.replace("_", "-"), given[option]))
    lr = meta.get("learning_rate")
    if "learning_rate" in given and lr is not None and given["learning_rate"] != lr:
        raise UserError("%s was trained with --learning-rate %g; you gave %g. A resume keeps "
                        "the optimizer: drop the option, or start a new run with another "
                        "--checkpoint" % (where, lr, given["learning_rate"]))
    data = meta.get("data") or {}
    trained_on = (data.get("name"), data.get("features"))
    if trained_on != (dataset.name, dataset.meta.get("features")):
        raise UserError("%s was trained on %s (%s features); --data %s is %s (%s features). "
                        "Train on other data with a new --checkpoint"
                        % (where, trained_on[0], trained_on[1], args.data, dataset.name,
                           dataset.meta.get("features")))
    for option in RUN_OPTIONS:
        before = meta.get(option, meta.get("rng", {}).get(option))
        if before is not None and getattr(args, option) != before:
            print("note: resuming with --%s %s (the checkpoint used %s)"
                  % (option.replace("_", "-"), getattr(args, option), before))


def train(args, given=None):
    """Run (or resume) training as the command-line options say; returns the model.

    ``given`` holds the options the user typed (the others are defaults);
    a resume refuses those that contradict the checkpoint.
    """
    given = {} if given is None else given
    directory = os.path.dirname(os.path.abspath(args.checkpoint))
    if not os.path.isdir(directory):
        raise UserError("--checkpoint %s: folder %s does not exist" % (args.checkpoint, directory))
    with exclusive_lock(args.checkpoint + ".lock", args.checkpoint):
        remove_stale_files(args.checkpoint)
        return _train(args, given)


def _train(args, given):
    import pandas as pd

    dataset = load_dataset(args.data)
    meta = open_checkpoint(args)
    decoder = args.decoder
    if meta is not None:
        decoder = meta.get("kind") or "seminar"
        if "decoder" in given and given["decoder"] != decoder:
            raise UserError("%s is a network of kind %s; you gave --decoder %s. Start a new run with "
                            "another --checkpoint" % (args.checkpoint, decoder, given["decoder"]))
    apply_decoder_defaults(args, decoder)
    if meta is not None:
        check_resume(meta, dataset, args, given)
    # initial weights and dropout streams come from one global RNG: seeded,
    # the run is repeatable
    seed_initial_weights(args.seed)
    start_epoch, step = 0, 0
    # model selection on dev: the best score so far, its epoch, the epochs
    # since, the current step size; saved with every checkpoint for resume
    selection = {"select_on": args.select_on, "best_score": None, "best_epoch": None,
                 "bad_epochs": 0, "learning_rate": None, "stopped": False}
    if meta is not None:
        model, meta = ckpt.resume(args.checkpoint, dataset.image_shape, args.reset_optimizer)
        start_epoch, step = meta["epoch"], meta["optimizer"]["step"]
        selection = dict(selection, **(meta.get("selection") or {}))
        if "select_on" in given and given["select_on"] != selection["select_on"]:
            raise UserError("%s chose its best epoch on dev %s; you gave --select-on %s. "
                            "Start a new run with another --checkpoint"
                            % (args.checkpoint, selection["select_on"], given["select_on"]))
        args.select_on = selection["select_on"]
        if selection.get("learning_rate") is not None:
            model.set_learning_rate(selection["learning_rate"])
        print("resuming %s at epoch %d: keeping its network (%s, %d units), vocabulary "
              "(%d words) and learning rate %g"
              % (args.checkpoint, start_epoch, getattr(model.config, "cell", model.kind),
                 model.config.units, len(model.vocab),
                 selection.get("learning_rate") or model.learning_rate))
    else:
        model = build_model(dataset, args)
        if args.init_from:
            model.set_param_values(ckpt.safe_load_arrays(args.init_from), args.init_from)
    log_csv, log_png = log_paths(args.checkpoint)
    log = read_log(log_csv, start_epoch) if meta is not None else pd.DataFrame(columns=LOG_COLUMNS)
    print("data: %s (%d images, codes of shape %s), vocabulary %d words"
          % (dataset.path, len(dataset.codes), "x".join(map(str, dataset.image_shape)),
             len(model.vocab)))
    if start_epoch >= args.epochs or selection["stopped"]:
        print("%s is already at epoch %d of %d%s: nothing to do"
              % (args.checkpoint, start_epoch, args.epochs,
                 " (stopped early)" if selection["stopped"] else ""))
        return model
    if selection["learning_rate"] is None and hasattr(model, "set_learning_rate"):
        selection["learning_rate"] = model.learning_rate

    optimizer = model.optimizer_state

    train_codes, train_captions = dataset.split("train")
    val = validation_batches(dataset, model, args)
    n_pairs = sum(len(c) for c in train_captions)
    batches_per_epoch = args.batches_per_epoch or -(-n_pairs // args.batch_size)

    def run_record(sel):
        return dict(run_options(args), selection=dict(sel)) if args.dev_every \
            else run_options(args)

    def snapshot(epoch):
        return (epoch, step, model.get_param_values(), [v.get_value() for v in optimizer],
                dict(selection), head_values(model))

    def save(snap):
        epoch, at_step, params, opt, sel, head = snap
        ckpt.save_checkpoint(args.checkpoint, params,
                             ckpt.make_metadata(model, dataset, epoch, at_step, run_record(sel)),
                             opt, encoder_values=head)
        write_log(log_csv, log_png, log)
        if args.keep_every and epoch % args.keep_every == 0:
            # a copy per chosen epoch, to pick the number of epochs on dev later
            ckpt.save_checkpoint(kept_path(args.checkpoint, epoch), params,
                                 ckpt.make_metadata(model, dataset, epoch, at_step,
                                                    run_record(sel)), opt, encoder_values=head)

    last = snapshot(start_epoch)
    saved_epoch = start_epoch

    def stop(signum, frame):
        raise KeyboardInterrupt
    previous_handler = signal.signal(signal.SIGTERM, stop)
    try:
        for epoch in range(start_epoch + 1, args.epochs + 1):
            t0 = time.time()
            rng, dropout_seed = epoch_rngs(args.seed, epoch)
            model.seed_dropout(dropout_seed)
            losses = []
            if args.batches_per_epoch:   # the seminar's: random images, a random caption each
                batches = (generate_batch(train_codes, train_captions, model.vocab,
                                          args.batch_size, rng, args.max_caption_len)
                           for _ in range(args.batches_per_epoch))
            else:                        # every training caption once
                batches = epoch_batches(train_codes, train_captions, model.vocab,
                                        args.batch_size, rng, args.max_caption_len)
            bar = tqdm(batches, total=batches_per_epoch, desc="epoch %d/%d" % (epoch, args.epochs),
                       leave=False, unit="batch", disable=None)
            for batch_no, batch in enumerate(bar):
                compile_with_notice(model, model.train_function_key(batch[1].shape[1]))
                losses.append(model.train_step(*batch))
                step += 1
                if not np.isfinite(losses[-1]):
                    raise TrainingDiverged(
                        "the training loss became %s at epoch %d, batch %d (learning rate %g): "
                        "the parameters are no longer finite"
                        % (losses[-1], epoch, batch_no + 1,
                           selection["learning_rate"] or model.learning_rate))
                bar.set_postfix(loss="%.3f" % losses[-1])
            if val:
                compile_with_notice(model, "val_step")
            val_loss = float(np.mean([model.val_step(*b) for b in val])) if val else float("nan")
            if val and not np.isfinite(val_loss):
                raise TrainingDiverged("the validation loss became %s after epoch %d"
                                       % (val_loss, epoch))
            row = {"epoch": epoch, "train_loss": float(np.mean(losses)), "val_loss": val_loss,
                   "seconds": round(time.time() - t0, 2), "step": step,
                   "dev_bleu4": float("nan"), "dev_cider": float("nan"),
                   "learning_rate": selection["learning_rate"] or model.learning_rate}
            dev_note = ""
            if args.dev_every and epoch % args.dev_every == 0:
                scores = dev_scores(model, dataset, args)
                row["dev_bleu4"], row["dev_cider"] = scores["BLEU-4"], scores["CIDEr-D"]
                dev_note = "  dev BLEU-4 %.2f CIDEr-D %.2f" % (100 * scores["BLEU-4"],
                                                               100 * scores["CIDEr-D"])
                dev_note += select(model, selection, scores, epoch, args, dataset, step)
            row["seconds"] = round(time.time() - t0, 2)
            log = pd.concat([log, pd.DataFrame([row])], ignore_index=True) if len(log) \
                else pd.DataFrame([row], columns=LOG_COLUMNS)
            tqdm.write("epoch %d/%d  train %.4f  val %.4f%s  (%.1f s)"
                       % (epoch, args.epochs, row["train_loss"], val_loss, dev_note,
                          row["seconds"]))
            last = snapshot(epoch)
            if selection["stopped"]:
                save(last)
                saved_epoch = epoch
                print("early stop: no better dev %s for %d evaluations; the best, epoch %d, "
                      "is in %s" % (args.select_on, selection["bad_epochs"],
                                    selection["best_epoch"], best_path(args.checkpoint)))
                return model
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
    except TrainingDiverged as exc:
        # the last completed epoch was finite: keep it, never the diverged state
        if last[0] > saved_epoch:
            log = log[log["epoch"] <= last[0]]
            save(last)
        raise TrainingDiverged("%s; %s keeps epoch %d. Lower --learning-rate and train a new "
                               "checkpoint, or resume from it" % (exc, args.checkpoint, last[0]))
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
    print("saved %s (epoch %d); log %s, plot %s"
          % (args.checkpoint, args.epochs, log_csv, log_png))
    return model


def dev_scores(model, dataset, args):
    """BLEU and CIDEr-D of beam-search captions for the dev (``val``) split."""
    from . import metrics
    from .evaluate import caption_split, references_of
    tqdm.write("captioning the %d dev images (beam %d) ..." % (len(dataset.splits["val"]),
                                                               args.dev_beam))
    candidates = caption_split(model, dataset, "val", beam=args.dev_beam)
    return metrics.score_captions(references_of(dataset, "val"), candidates,
                                  metrics=("BLEU", "CIDEr"))


SELECT_KEYS = {"BLEU-4": "BLEU-4", "CIDEr-D": "CIDEr-D"}


def head_values(model):
    """The fine-tuned encoder head's weights (saved beside the parameters), or None."""
    head = getattr(model, "head", None)
    return None if head is None else head.get_values()


def select(model, selection, scores, epoch, args, dataset, step):
    """Keep the best-on-dev parameters; decay the step size or stop when dev stalls.

    Updates ``selection`` in place and returns a note for the log line.
    """
    score = scores[args.select_on]
    if selection["best_score"] is None or score > selection["best_score"]:
        selection.update(best_score=score, best_epoch=epoch, bad_epochs=0)
        path = best_path(args.checkpoint)
        meta = ckpt.make_metadata(model, dataset, epoch, step,
                                  dict(run_options(args), selection=dict(selection),
                                       dev_scores=scores))
        ckpt.save_checkpoint(path, model.get_param_values(), meta,
                             encoder_values=head_values(model))
        return "  (best so far: %s)" % os.path.basename(path)
    selection["bad_epochs"] += 1
    note = "  (best: epoch %d)" % selection["best_epoch"]
    if args.early_stop and selection["bad_epochs"] >= args.early_stop:
        selection["stopped"] = True
    elif args.lr_decay < 1 and hasattr(model, "set_learning_rate"):
        selection["learning_rate"] *= args.lr_decay
        model.set_learning_rate(selection["learning_rate"])
        note += "  learning rate -> %g" % selection["learning_rate"]
    return note


def build_parser():
    p = argparse.ArgumentParser(
        prog="python -m lasagne_caption.train",
        description="Train the seminar's CNN->LSTM captioner on precomputed image codes, "
                    "saving to (and resuming from) wrote_net.params.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default="data/flickr8k",
                   help="prepared dataset folder (python -m lasagne_caption.data prepare ...)")
    p.add_argument("--epochs", type=int, default=100, help="train until this many epochs in total")
    p.add_argument("--decoder", choices=["seminar", "attention"], default="seminar",
                   help="seminar: the seminar's network on flat image codes; attention: "
                        "Show, Attend and Tell with a gate, on region features (a grid "
                        "dataset). A resume keeps the checkpoint's")
    p.add_argument("--batch-size", type=int, default=None,
                   help="captions per batch (default: seminar 50, attention 64)")
    p.add_argument("--batches-per-epoch", type=int, default=None,
                   help="random batches per epoch, as the seminar draws them; 0: one pass "
                        "over every training caption (default: seminar 50, attention 0)")
    p.add_argument("--val-batches", type=int, default=20,
                   help="validation batches per epoch from the val split (0: the whole split)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", default="wrote_net.params",
                   help="parameter file (seminar format); metadata goes to CHECKPOINT.json")
    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                   help="continue from --checkpoint if it exists")
    p.add_argument("--overwrite", action="store_true",
                   help="with --no-resume: replace an existing checkpoint of this toolkit")
    p.add_argument("--reset-optimizer", action="store_true",
                   help="resume with fresh Adam moments when the saved optimizer state is "
                        "missing or damaged")
    p.add_argument("--init-from", metavar="PARAMS",
                   help="start from the weights of a seminar parameter file (or a checkpoint "
                        "of the same network, e.g. to fine-tune the encoder as a second stage)")
    p.add_argument("--save-every", type=int, default=5, help="save every N epochs")
    p.add_argument("--keep-every", type=int, default=0, metavar="N",
                   help="also keep a copy of every N-th epoch's checkpoint "
                        "(CHECKPOINT.epoch-0120.params), to choose the epoch on dev; "
                        "a multiple of --save-every (0: keep none)")
    p.add_argument("--learning-rate", type=float, default=None,
                   help="Adam's step size (default: seminar 1e-3, attention 4e-4)")
    p.add_argument("--max-caption-len", type=int, default=None,
                   help="truncate training captions to this many tokens")
    net = p.add_argument_group("network (the defaults are the seminar's)")
    net.add_argument("--min-count", type=int, default=5, help="keep words seen this often")
    net.add_argument("--embed-size", type=int, default=None,
                     help="word vector size (default: seminar 128, attention 256)")
    net.add_argument("--units", type=int, default=None,
                     help="LSTM/GRU units (default: seminar 200, attention 512)")
    net.add_argument("--image-inject", choices=["cell_init", "first_input"], default="cell_init",
                     help="image as the LSTM's initial cell (seminar) or first input step")
    net.add_argument("--cell", choices=["lstm", "gru"], default="lstm")
    net.add_argument("--glove", metavar="FILE", help="initialise word vectors from GloVe text")
    net.add_argument("--freeze-embeddings", action="store_true",
                     help="keep the (GloVe) word vectors fixed")
    att = p.add_argument_group("attention decoder (--decoder attention)")
    att.add_argument("--gate", choices=["none", "selector", "sentinel"], default="selector",
                     help="how visual context is weighed against language: none, Show-Attend-"
                          "Tell's scalar selector, or a visual sentinel (Knowing When to Look)")
    att.add_argument("--attention-size", type=int, default=256,
                     help="size of the space regions and state are compared in")
    att.add_argument("--dropout", type=float, default=0.5, help="dropout before the word softmax")
    att.add_argument("--doubly-stochastic", type=float, default=1.0, metavar="LAMBDA",
                     help="weight of the term that makes every region attended over a caption")
    fine = p.add_argument_group(
        "fine-tuning the encoder's last layers (data prepared with --features block16)")
    fine.add_argument("--fine-tune", type=int, metavar="N",
                      help="train MobileNetV2's last N layers with the captioner: the seminar "
                           "network 1 (logits) or 2 (+ Conv_1), the attention network 1 "
                           "(Conv_1); 0 keeps them frozen (the baseline)")
    fine.add_argument("--encoder-lr-scale", type=float, default=0.1, metavar="S",
                      help="the encoder's step size as a fraction of --learning-rate")
    fine.add_argument("--model", metavar="TFLITE",
                      help="MobileNetV2 .tflite whose weights start the encoder's layers "
                           "(default: the encoders' default file)")
    dev = p.add_argument_group("model selection on the dev (val) split")
    dev.add_argument("--dev-every", type=int, default=None, metavar="N",
                     help="caption the dev split with beam search every N epochs, log BLEU-4 and "
                          "CIDEr-D and keep the best parameters in CHECKPOINT.best.params "
                          "(0: never; default: seminar 0, attention 1)")
    dev.add_argument("--dev-beam", type=int, default=3, help="beam width of the dev captions")
    dev.add_argument("--select-on", choices=sorted(SELECT_KEYS), default="BLEU-4",
                     help="the dev score that chooses the best epoch")
    dev.add_argument("--lr-decay", type=float, default=None,
                     help="multiply the step size by this when the dev score does not improve "
                          "(1: never; default: seminar 1, attention 0.5)")
    dev.add_argument("--early-stop", type=int, default=None, metavar="N",
                     help="stop after N dev evaluations without improvement (0: never; "
                          "default: seminar 0, attention 4)")
    return p


def given_options(argv):
    """The options typed on the command line (dest -> value), defaults left out."""
    parser = build_parser()
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    return vars(parser.parse_args(argv))


def check_options(args):
    """Ranges of the numeric options: one-line errors naming the option."""
    for name in ("epochs", "batch_size", "save_every", "embed_size", "units", "min_count",
                 "attention_size", "dev_beam"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise UserError("--%s must be at least 1, not %d"
                            % (name.replace("_", "-"), getattr(args, name)))
    for name in ("val_batches", "seed", "batches_per_epoch", "dev_every", "early_stop"):
        if getattr(args, name) is not None and getattr(args, name) < 0:
            raise UserError("--%s must be 0 or more, not %d"
                            % (name.replace("_", "-"), getattr(args, name)))
    if args.max_caption_len is not None and args.max_caption_len < 2:
        raise UserError("--max-caption-len must be at least 2 (#START# and #END#), not %d"
                        % args.max_caption_len)
    if args.lr_decay is not None and not (np.isfinite(args.lr_decay) and 0 < args.lr_decay <= 1):
        raise UserError("--lr-decay must be a number in (0, 1], not %s" % args.lr_decay)
    if not (0 <= args.dropout < 1) or not (0 <= args.doubly_stochastic < 1e6):
        raise UserError("--dropout must be in [0, 1) and --doubly-stochastic at least 0")
    if args.learning_rate is not None and not (np.isfinite(args.learning_rate)
                                               and 0 < args.learning_rate <= 1):
        raise UserError("--learning-rate must be a number in (0, 1], not %s" % args.learning_rate)
    if args.overwrite and args.resume:
        raise UserError("--overwrite only goes with --no-resume")


def main(argv=None):
    args = build_parser().parse_args(argv)
    check_options(args)
    if args.keep_every < 0 or args.keep_every % args.save_every:
        raise UserError("--keep-every must be 0 or a multiple of --save-every (%d), not %d"
                        % (args.save_every, args.keep_every))
    train(args, given_options(argv))
    return 0


if __name__ == "__main__":
    run_cli(main)
