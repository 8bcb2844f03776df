"""Speed of the attention network's train step: the toolkit against its PyTorch peer.

Run from the repository (or give this file's path from any directory)::

    python benchmarks/attention_speed.py --threads 2 --rounds 3 --steps 20 --batch 64
        [--data data/flickr8k-grid] [--warmup 3] [--gate selector] [--out FILE.md] [--json FILE]

``--help`` lists every option. What it does:

* **batches**: with ``--data``, real Flickr8k grid batches
  (``lasagne_caption.data.epoch_batches`` over the ``train`` split, the
  vocabulary of ``train`` with ``--min-count``, ``numpy.random.default_rng(seed)``,
  the first ``warmup + steps`` batches); without it, synthetic ones at the
  same shapes (ReLU6-like regions 49 x 1280, captions of 8..16 tokens,
  ``--n-tokens`` words); ``--small`` makes a tiny synthetic network (for
  checking that the command runs, not for timing). Made once, written to a
  temporary folder, read by every worker;
* **toolkit** (``AttentionModel``, ``train.py``'s attention defaults: embed
  256, units 512, attention 256, dropout 0.5, lambda 1, Adam at 4e-4; seeded
  weights): computes the first batch's loss with dropout off (``loss``),
  compiles ``train_step`` (timed apart: the persistent compile cache makes
  every round after the first a cached compile) and times ``--steps`` train
  steps after ``--warmup`` untimed ones, cycling through the batches;
* **torch** (:mod:`benchmarks.torch_attention`): the same weights (the
  toolkit worker's ``get_param_values()``), the same batches in the same
  order, the same first-batch loss, then the same Adam train steps, dropout
  on (its own Bernoulli masks).

Each implementation runs in its own subprocess per round with
``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS`` and ``MKL_NUM_THREADS`` set to
``--threads`` before anything is imported (and ``torch.set_num_threads``),
toolkit then torch in every round, so that load from other processes falls on
both. The table gives each round's median ms/step and their ratio, then the
medians over rounds (the ratio's is the median of the per-round ratios).

torch is optional (``pip install -e .[bench]``); without it this command
stops with a one-line message.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if __name__ == "__main__" and ROOT not in sys.path:
    # run as a script (also the workers): the repository root makes
    # ``benchmarks`` and ``lasagne_caption`` importable from any directory
    sys.path.insert(0, ROOT)

from benchmarks import bench  # noqa: E402
from benchmarks.bench import (_load_batches, _median, _save_batches, _time_steps,  # noqa: E402
                              torch_available)

# the attention decoder's defaults of train.py (DECODER_DEFAULTS["attention"])
REAL = dict(embed_size=256, units=512, attention_size=256, image_shape=[49, 1280])
SMALL = dict(embed_size=4, units=7, attention_size=3, image_shape=[5, 6], n_tokens=30,
             min_len=3, max_len=9)
SYNTHETIC = dict(n_tokens=2500, min_len=8, max_len=16)
TORCH_MISSING = ("PyTorch is not installed: pip install -e '.[bench]' "
                 "(benchmarks/torch_attention.py needs it)")


# ---------------------------------------------------------------- batches

def synthetic_batches(n, batch, image_shape, n_tokens, min_len, max_len, seed=0):
    """Random batches at the grid's shapes: ReLU6-like regions (sparse, in [0, 6]) and
    captions ``#START# w... #END#`` of min_len..max_len tokens, padded with -1."""
    import numpy as np
    rng = np.random.RandomState(seed)
    out = []
    for _ in range(n):
        regions = np.clip(2 * rng.randn(batch, *image_shape), 0, 6).astype("float32")
        sentences = np.full((batch, max_len), -1, dtype="int32")
        lengths = rng.randint(min_len, max_len + 1, size=batch)
        lengths[0] = max_len
        for i, length in enumerate(lengths):
            sentences[i, 0] = 1
            sentences[i, 1:length - 1] = rng.randint(3, n_tokens, size=length - 2)
            sentences[i, length - 1] = 2
        out.append((regions, sentences))
    return out


def grid_batches(path, n, batch, min_count=5, seed=0):
    """The first ``n`` ``epoch_batches`` of the train split, and the vocabulary size."""
    import numpy as np
    import lasagne_caption  # noqa: F401  (compat layer before theano)
    from lasagne_caption.data import epoch_batches, load_dataset
    ds = load_dataset(path)
    if len(ds.image_shape) != 2:
        raise SystemExit("%s: features of shape %s, not a grid of regions (prepare with "
                         "--features grid)" % (path, ds.image_shape))
    vocab = ds.vocabulary(min_count=min_count)
    codes, captions = ds.split("train")
    out = []
    for b in epoch_batches(codes, captions, vocab, batch, np.random.default_rng(seed)):
        out.append((np.ascontiguousarray(b[0], dtype="float32"), b[1]))
        if len(out) == n:
            break
    return out, len(vocab), list(ds.image_shape)


# ---------------------------------------------------------------- workers

def worker_toolkit(spec):
    """Build the seeded model, save its weights for the torch worker, time ``train_step``."""
    import numpy as np
    import lasagne
    import theano
    from lasagne_caption.models import AttentionConfig, AttentionModel
    from lasagne_caption.vocab import Vocabulary
    config = AttentionConfig(**spec["config"])
    vocab = Vocabulary(["#UNK#", "#START#", "#END#"]
                       + ["w%d" % i for i in range(config.n_tokens - 3)])
    batches = _load_batches(os.path.join(spec["exchange"], "batches.npz"))
    lasagne.random.set_rng(np.random.RandomState(spec["seed"]))
    model = AttentionModel(config, vocab, learning_rate=spec["learning_rate"])
    model.seed_dropout(spec["seed"] + 1)     # Theano's MRG streams refuse seed 0
    params = os.path.join(spec["exchange"], "params.npz")
    if not os.path.exists(params):
        np.savez(params, *model.get_param_values())
    t0 = time.perf_counter()
    model.compile("loss")
    loss_compile_s = time.perf_counter() - t0
    loss0 = model.loss(*batches[0])
    t0 = time.perf_counter()
    model.compile("train_step")
    compile_s = time.perf_counter() - t0
    times, losses = _time_steps(model.train_step, batches, spec["warmup"], spec["steps"])
    return dict(impl="toolkit", loss_dropout_off=loss0, compile_s=compile_s,
                loss_compile_s=loss_compile_s, ms=1000 * _median(times),
                ms_all=[1000 * t for t in times], train_losses=losses,
                blas=theano.config.blas__ldflags or "none",
                threads=os.environ.get("OPENBLAS_NUM_THREADS", "default"))


def worker_torch(spec):
    import types
    import numpy as np
    import torch
    if os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    torch.manual_seed(spec["seed"])
    from benchmarks.torch_attention import TorchAttentionNet, TorchAttentionTrainer
    with np.load(os.path.join(spec["exchange"], "params.npz")) as f:
        values = [f["arr_%d" % i] for i in range(len(f.files))]
    batches = _load_batches(os.path.join(spec["exchange"], "batches.npz"))
    # the config's fields only: no theano in this process
    net = TorchAttentionNet(types.SimpleNamespace(**spec["config"]), values)
    trainer = TorchAttentionTrainer(net, learning_rate=spec["learning_rate"])
    loss0 = trainer.loss(*batches[0])
    times, losses = _time_steps(trainer.train_step, batches, spec["warmup"], spec["steps"])
    return dict(impl="torch", torch=torch.__version__, threads=torch.get_num_threads(),
                loss_dropout_off=loss0, ms=1000 * _median(times),
                ms_all=[1000 * t for t in times], train_losses=losses)


WORKERS = {"toolkit": worker_toolkit, "torch": worker_torch}


# ---------------------------------------------------------------- driver

def run_worker(kind, spec, threads=None, timeout=7200):
    """Run one worker in a fresh interpreter (threads set in its environment)."""
    return bench.run_worker(kind, spec, env=bench._env_with_flags(None, threads),
                            timeout=timeout, script=os.path.abspath(__file__))


def markdown(result):
    rounds = result["rounds"]
    lines = ["| round | toolkit ms/step | PyTorch ms/step | toolkit / PyTorch "
             "| toolkit compile s (excluded) |", "|---|---|---|---|---|"]
    for i, (th, to) in enumerate(rounds, 1):
        lines.append("| %d | %.1f | %.1f | %.2f | %.1f |" % (
            i, th["ms"], to["ms"], th["ms"] / to["ms"], th["compile_s"]))
    if rounds:
        lines.append("| median | %.1f | %.1f | %.2f | %.1f |" % (
            _median([th["ms"] for th, _ in rounds]), _median([to["ms"] for _, to in rounds]),
            _median([th["ms"] / to["ms"] for th, to in rounds]),
            _median([th["compile_s"] for th, _ in rounds])))
    b = result["batches"]
    lines += ["", "%s; %d batches of %d captions x %s steps, %d words, regions %s; %s." % (
        b["source"], b["n"], b["batch"], b["steps"], b["n_tokens"],
        " x ".join(map(str, b["image_shape"])), result["network"]),
        "Each round: the toolkit, then PyTorch, each in a new process, %s threads "
        "(OMP/OpenBLAS/MKL, torch.set_num_threads); median of %d timed train steps after %d "
        "warm-up steps, the same batches in the same order, the same starting weights, "
        "dropout on. Compile = building the toolkit's train_step (round 1 may be a cold "
        "compile, later rounds use the persistent cache); never in the step times."
        % (result["threads"] or "default", result["steps"], result["warmup"])]
    if rounds:
        th, to = rounds[0]
        l1, l2 = th["loss_dropout_off"], to["loss_dropout_off"]
        lines.append("First batch's loss at the shared starting weights, dropout off: "
                     "toolkit %.7f, PyTorch %.7f, relative difference %.1e (the toolkit's "
                     "loss function compiled in %.1f s, apart)."
                     % (l1, l2, abs(l1 - l2) / abs(l1), th["loss_compile_s"]))
        lines.append("Threads seen: toolkit OpenBLAS %s, PyTorch %s. Load average at start: "
                     "%.1f on %d cores." % (th.get("threads"), to.get("threads"),
                                            result["load_average"], os.cpu_count() or 1))
    lines += ["Note: " + n for n in result["notes"]]
    return "\n".join(lines)


def parser():
    p = argparse.ArgumentParser(
        prog="python benchmarks/attention_speed.py",
        description="Time the toolkit's attention train step (AttentionModel) against the same "
                    "network in PyTorch (benchmarks/torch_attention.py) on the same batches "
                    "and weights, alternately, each in its own subprocess; prints a markdown "
                    "table.")
    p.add_argument("--data", default=None,
                   help="a prepared grid dataset (e.g. data/flickr8k-grid): real train-split "
                        "batches; default: synthetic batches at the same shapes")
    p.add_argument("--threads", type=int, default=None,
                   help="threads for both sides (OMP_NUM_THREADS, OPENBLAS_NUM_THREADS, "
                        "MKL_NUM_THREADS, torch.set_num_threads); default: the libraries' own")
    p.add_argument("--rounds", type=int, default=3,
                   help="toolkit and PyTorch run alternately this many times "
                        "(default: %(default)s)")
    p.add_argument("--steps", type=int, default=20,
                   help="timed steps per round (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=3,
                   help="untimed steps first (default: %(default)s)")
    p.add_argument("--batch", type=int, default=64,
                   help="captions per batch (default: %(default)s)")
    p.add_argument("--gate", default="selector", choices=("none", "selector", "sentinel"),
                   help="the network's gate (default: %(default)s)")
    p.add_argument("--learning-rate", type=float, default=4e-4,
                   help="Adam's step size (default: %(default)s, train.py's for attention)")
    p.add_argument("--min-count", type=int, default=5,
                   help="vocabulary of --data: words seen this often (default: %(default)s)")
    p.add_argument("--n-tokens", type=int, default=SYNTHETIC["n_tokens"],
                   help="vocabulary size of the synthetic batches (default: %(default)s)")
    p.add_argument("--small", action="store_true",
                   help="a tiny synthetic network (30 words, 5 x 6 regions, units 7): checks "
                        "that the command runs; the numbers mean nothing")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", metavar="FILE.md", help="also write the markdown table here")
    p.add_argument("--json", metavar="FILE", help="also write all results as JSON here")
    p.add_argument("--worker", nargs=3, metavar=("KIND", "SPEC", "OUT"), help=argparse.SUPPRESS)
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    if args.worker:
        kind, spec_path, out_path = args.worker
        if kind == "toolkit":
            import lasagne_caption  # noqa: F401  (compat layer before theano)
        with open(spec_path) as f:
            spec = json.load(f)
        result = WORKERS[kind](spec)
        with open(out_path, "w") as f:
            json.dump(result, f)
        return 0
    if args.small and args.data:
        parser().error("--small is a synthetic network; leave out --data")
    if args.data and not os.path.isdir(args.data):
        parser().error("%s: no such dataset folder" % args.data)
    if min(args.rounds, args.steps, args.batch) < 1 or args.warmup < 0:
        parser().error("--rounds, --steps and --batch must be positive, --warmup not negative")
    if not torch_available():
        print(TORCH_MISSING, file=sys.stderr)
        return 2
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    load = os.getloadavg()[0]
    log("load average %.1f on %d cores%s" % (load, os.cpu_count() or 1,
        ": other processes are running, timings will be noisy" if load > 0.5 else ""))
    n = args.warmup + args.steps
    if args.data:
        log("batches: %d of %d from %s (train split, epoch_batches, seed %d) ..."
            % (n, args.batch, args.data, args.seed))
        batches, n_tokens, image_shape = grid_batches(args.data, n, args.batch, args.min_count,
                                                      args.seed)
        source = "%s train split (epoch_batches, seed %d, min_count %d)" % (
            args.data, args.seed, args.min_count)
    else:
        shapes = dict(SMALL if args.small else dict(REAL, **SYNTHETIC, n_tokens=args.n_tokens))
        n_tokens, image_shape = shapes["n_tokens"], shapes["image_shape"]
        batches = synthetic_batches(n, args.batch, image_shape, n_tokens, shapes["min_len"],
                                    shapes["max_len"], seed=args.seed)
        source = "synthetic batches (seed %d)%s" % (args.seed, ", --small" if args.small else "")
    dims = SMALL if args.small else REAL
    config = dict(n_tokens=n_tokens, image_shape=image_shape, embed_size=dims["embed_size"],
                  units=dims["units"], attention_size=dims["attention_size"], gate=args.gate,
                  dropout=0.5, doubly_stochastic=1.0)
    steps = sorted(int(b[1].shape[1]) for b in batches)
    result = dict(threads=args.threads, steps=args.steps, warmup=args.warmup,
                  load_average=load, rounds=[], notes=[],
                  network="gate %s, embed %d, units %d, attention %d, dropout 0.5, lambda 1, "
                          "Adam lr %g" % (args.gate, config["embed_size"], config["units"],
                                          config["attention_size"], args.learning_rate),
                  batches=dict(source=source, n=len(batches), batch=args.batch,
                               n_tokens=n_tokens, image_shape=image_shape,
                               steps=("%d" % steps[0] if steps[0] == steps[-1]
                                      else "%d..%d" % (steps[0], steps[-1]))))
    if len(batches) < n:
        result["notes"].append("only %d batches: the steps cycle through them" % len(batches))
    exchange = tempfile.mkdtemp(prefix="attention-speed-")
    try:
        _save_batches(os.path.join(exchange, "batches.npz"), batches)
        del batches
        spec = dict(config=config, exchange=exchange, seed=args.seed, warmup=args.warmup,
                    steps=args.steps, learning_rate=args.learning_rate)
        for r in range(1, args.rounds + 1):
            log("round %d/%d: toolkit (theano) ..." % (r, args.rounds))
            th = run_worker("toolkit", spec, args.threads)
            if "error" in th:
                result["notes"].append("toolkit failed: " + th["error"])
                break
            log("round %d/%d: PyTorch ..." % (r, args.rounds))
            to = run_worker("torch", spec, args.threads)
            if "error" in to:
                result["notes"].append("PyTorch failed: " + to["error"])
                break
            result["rounds"].append((th, to))
    finally:
        shutil.rmtree(exchange, ignore_errors=True)
    table = markdown(result)
    print(table)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(table + "\n")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
    return 0 if len(result["rounds"]) == args.rounds else 1


if __name__ == "__main__":
    sys.exit(main())
