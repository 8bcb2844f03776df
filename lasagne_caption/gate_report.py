"""What the visual/language gate learned: its mean value per word.

``python -m lasagne_caption.gate_report --checkpoint runs/attention/wrote_net.best.params --split test``

The attention network's gate (Show, Attend and Tell's selector, or the
visual share with a sentinel) scales how much of the image reaches each
word. CAM-RNN's theory: near 0 for non-visual words ("a", "of", "is"), near 1
for visual ones ("dog", "grass"). This collects the gate of every word of a
split's captions, averaged per word, and prints the words with the lowest
and highest mean among the frequent ones; ``--out`` writes the whole table
(CSV).

Two sources of captions: ``generated`` (the model's own beam-search
captions, the gate it used to write each word) and ``references`` (the
human captions, teacher-forced: the gate with which the model predicts each
reference word).
"""
import argparse

import numpy as np
from tqdm import tqdm

from .checkpoint import load_model
from .data import iterate_captions, load_dataset
from .errors import UserError, run_cli
from .vocab import END, PAD_IX


def gate_of_generated(model, codes, beam=3, length_normalization=0.0, batch_size=100):
    """``[(word, gate), ...]`` over the beam-search captions of ``codes``."""
    from .generate import CaptionGenerator
    generator = CaptionGenerator(model)
    pairs = []
    for start in tqdm(range(0, len(codes), batch_size), desc="captioning", unit="batch",
                      disable=None, leave=False):
        chunk = np.asarray(codes[start:start + batch_size], dtype="float32")
        if beam > 1:
            captions, _, extras = generator.beam_search(
                chunk, beam=beam, length_normalization=length_normalization, extras=True)
        else:
            captions, _, extras = generator.greedy(chunk, extras=True)
        for caption, extra in zip(captions, extras):
            # extras hold every generated token, #END# included
            pairs += list(zip(caption.split() + [END], extra["gate"].tolist()))
    return pairs


def gate_of_references(model, codes, captions, batch_size=64):
    """``[(word, gate), ...]`` over reference captions, teacher-forced."""
    pairs = []
    batches = iterate_captions(codes, captions, model.vocab, batch_size)
    total = -(-sum(len(c) for c in captions) // batch_size)
    for images, matrix in tqdm(batches, total=total, desc="references", unit="batch",
                               disable=None, leave=False):
        _, gate = model.attention(images, matrix)
        # the gate at step t is the one predicting word t + 1
        for row, gates in zip(matrix, gate):
            for t in range(1, len(row)):
                if row[t] == PAD_IX:
                    break
                pairs.append((model.vocab.words[row[t]], float(gates[t - 1])))
    return pairs


def gate_table(pairs, min_count=20):
    """A pandas table: word, count, mean gate, sorted by mean gate; words seen < min_count dropped."""
    import pandas as pd
    frame = pd.DataFrame(pairs, columns=["word", "gate"])
    table = frame.groupby("word")["gate"].agg(["count", "mean"]).reset_index()
    table = table[table["count"] >= min_count].sort_values("mean").reset_index(drop=True)
    return table.rename(columns={"mean": "mean_gate"})


def build_parser():
    p = argparse.ArgumentParser(
        prog="python -m lasagne_caption.gate_report",
        description="Mean value of the attention network's visual/language gate per word "
                    "on a split's captions: the words that look at the image least and most.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", default="wrote_net.params",
                   help="an attention checkpoint (train --decoder attention)")
    p.add_argument("--data", help="dataset folder (default: the one the checkpoint names)")
    p.add_argument("--split", default="test")
    p.add_argument("--source", choices=["generated", "references"], default="generated",
                   help="the model's own beam-search captions, or the human captions "
                        "teacher-forced")
    p.add_argument("--beam", type=int, default=3)
    p.add_argument("--length-normalization", type=float, default=0.0)
    p.add_argument("--min-count", type=int, default=20, help="only words seen this often")
    p.add_argument("--top", type=int, default=10, help="how many lowest and highest to print")
    p.add_argument("--out", help="write the whole table here (CSV)")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    model, meta = load_model(args.checkpoint)
    if model.kind != "attention":
        raise UserError("%s is a %s network; the gate report needs one trained with "
                        "--decoder attention" % (args.checkpoint, model.kind))
    data = args.data or (meta.get("data") or {}).get("path")
    if not data:
        raise UserError("%s: the metadata names no dataset; pass --data" % args.checkpoint)
    dataset = load_dataset(data)
    codes, captions = dataset.split(args.split)
    if args.source == "generated":
        pairs = gate_of_generated(model, codes, args.beam, args.length_normalization)
    else:
        pairs = gate_of_references(model, codes, captions)
    table = gate_table(pairs, args.min_count)
    print("gate (%s) over %d words of %d %s captions; %d words seen at least %d times"
          % (model.config.gate, len(pairs), len(codes) if args.source == "generated"
             else sum(len(c) for c in captions), args.split, len(table), args.min_count))
    show = lambda part: ", ".join("%s %.2f" % (w, g) for w, g in
                                  zip(part["word"], part["mean_gate"]))
    print("lowest:  " + show(table.head(args.top)))
    print("highest: " + show(table.tail(args.top).iloc[::-1]))
    if args.out:
        from .files import atomic_write
        atomic_write(args.out, lambda f: f.write(table.to_csv(index=False)), text=True)
        print("wrote " + args.out)
    return 0


if __name__ == "__main__":
    run_cli(main)
