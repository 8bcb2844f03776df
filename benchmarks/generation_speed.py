"""Caption-generation speed: one step per word vs re-running the prefix.

Run from the repository (or give this file's path from any directory)::

    python benchmarks/generation_speed.py --checkpoint wrote_net.params
        [--data data/flickr8k] [--split test] [--max-len 20]
        [--prefix-images N] [--seminar-images 20]

Captions the images of a split (Flickr8k test: 1000 images) with the step
functions of :class:`lasagne_caption.generate.CaptionGenerator` (greedy and
beam 3, all images at once) and with the seminar's method, which re-runs the
whole network on the growing prefix for every word: batched over images
(:func:`generate_by_prefix`, on ``--prefix-images``, all by default) and one
image at a time as the seminar's notebook did (on ``--seminar-images``, then
extrapolated to the whole split; the table says so). Compilation is done
before timing and reported apart. The checkpoint is never trained here.

:func:`time_step_generation` is the one timing of the step-per-word decoders:
``python benchmarks/bench.py --generation`` uses it too.
"""
import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


def time_step_generation(generator, codes, max_len=20, warmup=0):
    """Time greedy and beam-3 decoding of all ``codes`` at once, one step per word.

    ``generator`` is a :class:`lasagne_caption.generate.CaptionGenerator`. Its
    network's step functions are compiled first (a one-word greedy caption of
    one image: ``compile_s``), then, with ``warmup`` > 0, greedy and beam 3
    run untimed on the first ``warmup`` images; then greedy and beam 3 on all
    of them are timed. Returns ``{"compile_s": s, "greedy": ((captions,
    log_probs), s), "beam3": ((captions, log_probs), s)}``.
    """
    _, compile_s = timed(generator.greedy, codes[:1], max_len=1)
    if warmup:
        generator.greedy(codes[:warmup], max_len=max_len)
        generator.beam_search(codes[:warmup], beam=3, max_len=max_len)
    return dict(compile_s=compile_s,
                greedy=timed(generator.greedy, codes, max_len=max_len),
                beam3=timed(generator.beam_search, codes, beam=3, max_len=max_len))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="parameter file with metadata")
    p.add_argument("--data", default=os.path.join(ROOT, "data", "flickr8k"))
    p.add_argument("--split", default="test")
    p.add_argument("--max-len", type=int, default=20)
    p.add_argument("--prefix-images", type=int, default=None,
                   help="images for the batched prefix method (default: all)")
    p.add_argument("--seminar-images", type=int, default=20,
                   help="images captioned one at a time with the prefix method")
    args = p.parse_args(argv)

    from lasagne_caption.caption import Captioner
    from lasagne_caption.data import load_dataset
    from lasagne_caption.errors import UserError
    from lasagne_caption.generate import generate_by_prefix

    captioner = Captioner.from_checkpoint(args.checkpoint)
    model, generator = captioner.model, captioner.generator
    codes = load_dataset(args.data).split(args.split)[0]
    if codes.shape[1] != model.config.code_size:
        raise UserError("%s has %d-d codes, the checkpoint expects %d-d"
                        % (args.data, codes.shape[1], model.config.code_size))
    n = len(codes)
    n_prefix = min(args.prefix_images or n, n)
    n_seminar = min(args.seminar_images, n)
    step = time_step_generation(generator, codes, max_len=args.max_len)
    _, compile_prefix = timed(generate_by_prefix, model, codes[:2], max_len=2)
    print("checkpoint %s: %s" % (args.checkpoint, model.describe()))
    print("%d %s images, max_len %d; compiling took %.1f s (step functions) and %.1f s "
          "(full network); not in the times below" % (n, args.split, args.max_len,
                                                      step["compile_s"], compile_prefix))

    rows = []
    (greedy, _), seconds = step["greedy"]
    rows.append(("step, greedy", n, seconds, ""))
    (beam, _), seconds = step["beam3"]
    rows.append(("step, beam 3", n, seconds, ""))
    (prefix, _), seconds = timed(generate_by_prefix, model, codes[:n_prefix], max_len=args.max_len)
    rows.append(("prefix, greedy, batched", n_prefix, seconds, ""))
    seminar, seconds = [], 0.0
    for i in range(n_seminar):
        (caption, _), dt = timed(generate_by_prefix, model, codes[i:i + 1], max_len=args.max_len)
        seminar += caption
        seconds += dt
    rows.append(("prefix, greedy, 1 image at a time", n_seminar, seconds,
                 "extrapolated from %d images" % n_seminar if n_seminar < n else ""))

    print("\n%-36s %7s %10s %11s %14s" % ("method", "images", "seconds", "ms/image",
                                          "s for %d" % n))
    for name, count, seconds, note in rows:
        print("%-36s %7d %10.2f %11.2f %14.1f  %s" % (name, count, seconds, 1000 * seconds / count,
                                                     seconds / count * n, note))
    same = sum(a == b for a, b in zip(greedy, prefix)) + sum(a == b for a, b in zip(greedy, seminar))
    print("\nstep greedy == prefix greedy on %d of %d compared captions; beam 3 differs from "
          "greedy on %d of %d images" % (same, n_prefix + n_seminar,
                                          sum(a != b for a, b in zip(greedy, beam)), n))
    print("examples:", *("  greedy: %s | beam 3: %s" % gb for gb in zip(greedy[:3], beam[:3])),
          sep="\n")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    from lasagne_caption.errors import run_cli
    run_cli(main)
