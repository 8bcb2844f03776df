"""Speed benchmark: the toolkit's compiled train step against a PyTorch peer.

Run from the repository (or give this file's path from any directory)::

    python benchmarks/bench.py [--shapes coco,flickr8k] [--steps 20] [--rounds 3] [--warmup 3]
        [--threads N] [--no-cold-compile] [--generation] [--encoding] [--out FILE.md] [--json FILE]

(``python -m benchmarks.bench`` from the repository root does the same;
``--help`` lists every option.)

For every shape it runs, one after the other, each in its own subprocess
(so peak memory is that implementation's own ``ru_maxrss`` and nothing is
shared):

* **theano**: builds ``SeminarModel`` (seeded weights), writes the weights and
  the batches to a temporary folder, computes the loss with dropout off
  (``val_step``), compiles the train steps the batches need (one per
  unrolled length; compile time with the persistent cache) and times them;
  it also counts the step's matrix-product FLOPs and measures the BLAS
  speed, for the floor column;
* **torch**: :mod:`benchmarks.torch_peer` with the same weights and
  batches: the same loss with dropout off, then the same Adam train step;
* **theano-cold** (unless ``--no-cold-compile``): the same compiles with an
  empty ``base_compiledir``, i.e. what a first run on a new machine pays.

The two run alternately, ``--rounds`` times each, so that load from other
processes falls on both. Timings are medians over every round's ``--steps``
steps after ``--warmup`` steps, both sides cycling through the same batches,
dropout on. Shapes:

* ``coco``: the seminar's COCO shapes (batch 50, 16 steps, 10,373 words,
  1000-d codes), synthetic: random codes, captions of 8..16 tokens;
* ``flickr8k``: the real prepared data (``--data``, default ``data/flickr8k``):
  ``load_dataset``, ``vocabulary(min_count=5)``, ``generate_batch`` on the
  train split.

On a machine where other processes run, pass ``--threads 1``: two spinning
OpenMP/OpenBLAS thread pools on two busy cores collapse (PyTorch's 2-thread
step went from ~0.2 s to 0.5-3 s while another training ran), and the table
then measures the contention, not the code.

torch is optional (``pip install -e .[bench]``): without it the toolkit is
still timed and the table says so. ``--generation`` times greedy and beam-3
caption generation on 1000 images
(:func:`benchmarks.generation_speed.time_step_generation`), ``--encoding``
the image encoder in images/s (:func:`benchmarks.encode_throughput.time_encoding`,
when its model file is found).
"""
import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if __name__ == "__main__" and ROOT not in sys.path:
    # run as a script (also the workers): the repository root makes
    # ``benchmarks`` and ``lasagne_caption`` importable from any directory
    sys.path.insert(0, ROOT)

SHAPES = ("coco", "flickr8k")
COCO = dict(batch=50, steps=16, n_tokens=10373, code_size=1000, min_len=8)
TORCH_MISSING = ("PyTorch is not installed: timing the toolkit only "
                 "(pip install -e '.[bench]' installs the peer's torch==2.13.0)")


def _rss_mib():
    """This process's peak resident memory so far, MiB (Linux: ru_maxrss is KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])


def torch_available():
    import importlib.util
    return importlib.util.find_spec("torch") is not None


# ---------------------------------------------------------------- batches

def synthetic_batches(n, batch, steps, n_tokens, code_size, min_len=8, seed=0):
    """COCO-like batches: random codes and captions #START# w... #END# of min_len..steps tokens."""
    import numpy as np
    rng = np.random.RandomState(seed)
    out = []
    for _ in range(n):
        codes = rng.randn(batch, code_size).astype("float32")
        sentences = np.full((batch, steps), -1, dtype="int32")
        lengths = rng.randint(min_len, steps + 1, size=batch)
        lengths[0] = steps          # the batch is as long as its longest caption
        for i, length in enumerate(lengths):
            sentences[i, 0] = 1                                  # #START#
            sentences[i, 1:length - 1] = rng.randint(3, n_tokens, size=length - 2)
            sentences[i, length - 1] = 2                         # #END#
        out.append((codes, sentences))
    return out


def flickr8k_batches(path, n, batch, seed=0):
    """``generate_batch`` batches of the train split, and the vocabulary size."""
    import numpy as np
    from lasagne_caption.data import generate_batch, load_dataset
    ds = load_dataset(path)
    vocab = ds.vocabulary()
    codes, captions = ds.split("train")
    rng = np.random.RandomState(seed)
    return [generate_batch(codes, captions, vocab, batch, rng) for _ in range(n)], vocab


def _save_batches(path, batches):
    import numpy as np
    arrays = {}
    for i, (codes, sentences) in enumerate(batches):
        arrays["codes_%d" % i], arrays["sentences_%d" % i] = codes, sentences
    np.savez(path, **arrays)


def _load_batches(path):
    import numpy as np
    with np.load(path) as f:
        n = len(f.files) // 2
        return [(f["codes_%d" % i], f["sentences_%d" % i]) for i in range(n)]


def _time_steps(step, batches, warmup, steps):
    times, losses = [], []
    for i in range(warmup + steps):
        codes, sentences = batches[i % len(batches)]
        t0 = time.perf_counter()
        loss = step(codes, sentences)
        dt = time.perf_counter() - t0
        if i >= warmup:
            times.append(dt)
            losses.append(loss)
    return times, losses


def train_step_flops(sentences, n_tokens, code_size, embed_size, units):
    """FLOPs of the matrix products one train step needs, forward and backward.

    Those every implementation of the same math must do: the output layer on
    the real targets only (logits, their gradient to the hidden states and to
    the weights), the recurrent product at every step (and its two gradient
    products), the input-to-gates projection (three), and the image
    projection (forward and weight gradient). Elementwise work, the softmax
    and Adam are left out, so ``flops / gemm rate`` is a lower bound.
    """
    batch, steps = sentences.shape
    real = int((sentences[:, 1:] != -1).sum())
    return (3 * 2 * real * units * n_tokens
            + 3 * 2 * batch * steps * units * 4 * units
            + 3 * 2 * batch * steps * embed_size * 4 * units
            + 2 * 2 * batch * code_size * units)


def gemm_gflops(rows, inner, cols, repeats=10):
    """Median float32 matrix-product speed of numpy's BLAS at one shape, GFLOP/s."""
    import numpy as np
    rng = np.random.RandomState(0)
    a = rng.randn(rows, inner).astype("float32")
    b = rng.randn(inner, cols).astype("float32")
    times = []
    for _ in range(repeats + 2):
        t0 = time.perf_counter()
        np.dot(a, b)
        times.append(time.perf_counter() - t0)
    return 2.0 * rows * inner * cols / _median(times[2:]) / 1e9


# ---------------------------------------------------------------- workers

def batches_key_order(batches, model):
    """The compiled train steps the batches use, in order of first use."""
    order = []
    for _, sentences in batches:
        key = model.train_function_key(sentences.shape[1])
        if key not in order:
            order.append(key)
    return order


def worker_theano(spec):
    """Build the model, save weights and batches for the torch worker, time train_step."""
    import numpy as np
    import lasagne
    import theano
    from lasagne_caption.models import NetworkConfig, SeminarModel
    from lasagne_caption.vocab import Vocabulary
    rss_start = _rss_mib()
    n_batches = spec["warmup"] + spec["steps"]
    if spec["shape"] == "coco":
        batches = synthetic_batches(n_batches, COCO["batch"], COCO["steps"], COCO["n_tokens"],
                                    COCO["code_size"], COCO["min_len"], seed=spec["seed"])
        vocab = Vocabulary(["#UNK#", "#START#", "#END#"]
                           + ["w%d" % i for i in range(COCO["n_tokens"] - 3)])
    else:
        batches, vocab = flickr8k_batches(spec["data"], n_batches, spec["batch"], seed=spec["seed"])
    lasagne.random.set_rng(np.random.RandomState(spec["seed"]))
    config = NetworkConfig(len(vocab), batches[0][0].shape[1])
    model = SeminarModel(config, vocab, learning_rate=1e-3)
    if spec.get("exchange"):
        np.savez(os.path.join(spec["exchange"], "params.npz"),
                 *model.get_param_values())
        _save_batches(os.path.join(spec["exchange"], "batches.npz"), batches)
    rss_base = _rss_mib()
    # one compiled train step per unrolled length: the first batch's is what
    # a user waits for, the others compile when their first batch comes
    keys = batches_key_order(batches, model)
    t0 = time.perf_counter()
    model.compile(keys[0])
    compile_s = time.perf_counter() - t0
    for key in keys[1:]:
        model.compile(key)
    compile_all_s = time.perf_counter() - t0
    result = dict(impl="theano", shape=spec["shape"], n_tokens=len(vocab),
                  code_size=int(batches[0][0].shape[1]), batch=int(batches[0][0].shape[0]),
                  time_steps=[int(b[1].shape[1]) for b in batches],
                  compile_s=compile_s, compile_all_s=compile_all_s, train_functions=keys,
                  blas=theano.config.blas__ldflags or "none",
                  theano_flags=os.environ.get("THEANO_FLAGS", ""),
                  compiledir=theano.config.base_compiledir,
                  threads=os.environ.get("OPENBLAS_NUM_THREADS", "default"))
    if spec.get("compile_only"):
        t0 = time.perf_counter()
        model.train_step(*batches[0])
        result["first_step_s"] = time.perf_counter() - t0
        result["peak_rss_mib"] = _rss_mib()
        return result
    t0 = time.perf_counter()
    model.compile("val_step")
    result["val_compile_s"] = time.perf_counter() - t0
    result["loss_dropout_off"] = model.val_step(*batches[0])
    times, losses = _time_steps(model.train_step, batches, spec["warmup"], spec["steps"])
    c = model.config
    timed = [batches[i % len(batches)][1] for i in range(spec["warmup"],
                                                           spec["warmup"] + spec["steps"])]
    flops = [train_step_flops(b, c.n_tokens, c.code_size, c.embed_size, c.units) for b in timed]
    real = int(np.mean([(b[:, 1:] != -1).sum() for b in timed]))
    # the output layer's products dominate: their speed here sets the floor
    result.update(gflop_per_step=float(np.median(flops)) / 1e9,
                  gemm_gflops=gemm_gflops(real, c.units, c.n_tokens))
    result.update(ms=1000 * _median(times), ms_all=[1000 * t for t in times],
                  train_losses=losses, rss_start_mib=rss_start, rss_model_mib=rss_base,
                  peak_rss_mib=_rss_mib())
    return result


def worker_torch(spec):
    import numpy as np
    import torch
    from benchmarks.torch_peer import TorchCaptionNet, TorchTrainer
    rss_start = _rss_mib()
    torch.manual_seed(spec["seed"])
    if os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    with np.load(os.path.join(spec["exchange"], "params.npz")) as f:
        values = [f["arr_%d" % i] for i in range(len(f.files))]
    batches = _load_batches(os.path.join(spec["exchange"], "batches.npz"))
    n_tokens, code_size = values[-1].shape[0], values[1].shape[0]
    units = values[-2].shape[0]              # output.W is (units, n_tokens)
    net = TorchCaptionNet(n_tokens, code_size, values[0].shape[1], units,
                          dropout=0.5, grad_clipping=10.0)   # the seminar network's (models.NetworkConfig)
    net.set_param_values(values)
    trainer = TorchTrainer(net, learning_rate=1e-3)
    loss0 = trainer.val_step(*batches[0])
    times, losses = _time_steps(trainer.train_step, batches, spec["warmup"], spec["steps"])
    return dict(impl="torch", shape=spec["shape"], torch=torch.__version__,
                threads=torch.get_num_threads(), loss_dropout_off=loss0,
                ms=1000 * _median(times), ms_all=[1000 * t for t in times],
                train_losses=losses, rss_start_mib=rss_start, peak_rss_mib=_rss_mib())


def worker_generation(spec):
    """Greedy and beam-3 generation on ``spec['images']`` codes (random or the data's)."""
    import numpy as np
    import lasagne
    from lasagne_caption.generate import CaptionGenerator
    from lasagne_caption.models import NetworkConfig, SeminarModel
    from lasagne_caption.vocab import Vocabulary
    from benchmarks.generation_speed import time_step_generation
    rng = np.random.RandomState(spec["seed"])
    if spec["shape"] == "coco":
        vocab = Vocabulary(["#UNK#", "#START#", "#END#"]
                           + ["w%d" % i for i in range(COCO["n_tokens"] - 3)])
        codes = rng.randn(spec["images"], COCO["code_size"]).astype("float32")
    else:
        from lasagne_caption.data import load_dataset
        ds = load_dataset(spec["data"])
        vocab = ds.vocabulary()
        codes = ds.codes[rng.randint(0, len(ds.codes), spec["images"])]
    lasagne.random.set_rng(np.random.RandomState(spec["seed"]))
    model = SeminarModel(NetworkConfig(len(vocab), codes.shape[1]), vocab)
    timed = time_step_generation(CaptionGenerator(model), codes, warmup=8)
    return dict(impl="generation", shape=spec["shape"], images=len(codes),
                compile_s=timed["compile_s"], greedy_s=timed["greedy"][1],
                beam3_s=timed["beam3"][1], peak_rss_mib=_rss_mib())


def _encoder_model(spec):
    if spec.get("encoder_model"):
        return spec["encoder_model"]
    from lasagne_caption.encoders import default_model_path
    from benchmarks.encode_throughput import SHARED
    path = default_model_path("mobilenet_v2")
    if os.path.isfile(path):
        return path
    folder = os.path.join(SHARED, "models", "mobilenet_v2")
    if os.path.isdir(folder):
        for name in sorted(os.listdir(folder)):
            if name.endswith(".tflite"):
                return os.path.join(folder, name)
    return path


def worker_encoding(spec):
    import numpy as np
    from lasagne_caption import encoders
    from lasagne_caption.errors import UserError
    from benchmarks.encode_throughput import time_encoding
    try:
        enc = encoders.get_encoder("mobilenet_v2", model_path=_encoder_model(spec))
    except UserError as exc:
        return dict(impl="encoding", skipped=str(exc))
    rng = np.random.RandomState(spec["seed"])
    images = rng.randint(0, 256, (spec["encode_images"], 224, 224, 3)).astype("uint8")
    timed = time_encoding(enc, images)
    return dict(impl="encoding", encoder="mobilenet_v2", images=len(images),
                compile_s=timed["compile_s"], images_per_s=timed["images_per_s"],
                peak_rss_mib=_rss_mib())


WORKERS = {"theano": worker_theano, "torch": worker_torch,
           "generation": worker_generation, "encoding": worker_encoding}


# ---------------------------------------------------------------- driver

def run_worker(kind, spec, env=None, timeout=3600, script=None):
    """Run one worker in a fresh interpreter; returns its result dict (or an error).

    ``script`` is the benchmark file whose ``--worker KIND SPEC OUT`` runs it
    (this file by default; attention_speed.py passes its own).
    """
    fd, spec_path = tempfile.mkstemp(suffix=".json", prefix="bench-spec-")
    with os.fdopen(fd, "w") as f:
        json.dump(spec, f)
    out_path = spec_path + ".out"
    # the file by its path: the workers start from any directory (see ROOT above)
    cmd = [sys.executable, script or os.path.abspath(__file__), "--worker", kind, spec_path,
           out_path]
    try:
        proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=timeout, text=True)
        if proc.returncode != 0 or not os.path.exists(out_path):
            tail = "\n".join(proc.stdout.strip().splitlines()[-8:])
            return dict(impl=kind, error="worker exited %d: %s" % (proc.returncode, tail))
        with open(out_path) as f:
            return json.load(f)
    except subprocess.TimeoutExpired:
        return dict(impl=kind, error="timed out after %d s" % timeout)
    finally:
        for p in (spec_path, out_path):
            if os.path.exists(p):
                os.remove(p)


def _env_with_flags(extra_flags, threads=None):
    env = dict(os.environ)
    if threads:
        for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[name] = str(threads)
    if extra_flags:
        env["THEANO_FLAGS"] = ",".join(x for x in (env.get("THEANO_FLAGS"), extra_flags) if x)
    return env


def _merge_round(row, impl, result):
    """Keep the first round's result; pool the step times of every round."""
    if impl not in row:
        row[impl] = result
    else:
        row[impl]["ms_all"] += result["ms_all"]
        row[impl]["peak_rss_mib"] = max(row[impl]["peak_rss_mib"], result["peak_rss_mib"])
    row[impl]["ms"] = 1000 * _median([t / 1000.0 for t in row[impl]["ms_all"]])


def bench_shape(shape, args, log, cold_compile=True):
    exchange = tempfile.mkdtemp(prefix="bench-%s-" % shape)
    spec = dict(shape=shape, steps=args.steps, warmup=args.warmup, seed=args.seed,
                batch=args.batch_size, data=args.data, exchange=exchange)
    row = dict(shape=shape, rounds=[])
    try:
        # alternate toolkit and peer: a neighbour's load then hits both sides alike
        for r in range(1, args.rounds + 1):
            log("[%s] round %d/%d: toolkit (theano) ..." % (shape, r, args.rounds))
            th = run_worker("theano", spec, _env_with_flags(args.theano_flags, args.threads))
            if "error" in th:
                log("[%s] theano worker failed: %s" % (shape, th["error"]))
                row["theano"] = th
                break
            _merge_round(row, "theano", th)
            if args.torch and torch_available():
                log("[%s] round %d/%d: PyTorch peer ..." % (shape, r, args.rounds))
                to = run_worker("torch", spec, _env_with_flags("", args.threads))
                if "error" in to:
                    row["torch"] = to
                    break
                _merge_round(row, "torch", to)
                row["rounds"].append((th["ms"], to["ms"]))
            else:
                row["torch"] = dict(impl="torch", skipped=TORCH_MISSING if args.torch
                                    else "--no-torch")
        if cold_compile and "error" not in row["theano"]:
            cold_dir = tempfile.mkdtemp(prefix="bench-theano-cold-")
            try:
                log("[%s] cold Theano compile (empty compiledir, takes minutes) ..." % shape)
                cold = dict(spec, compile_only=True, exchange=None)
                row["theano_cold"] = run_worker("theano", cold, _env_with_flags(
                    ",".join(x for x in (args.theano_flags, "base_compiledir=" + cold_dir) if x),
                    args.threads))
            finally:
                shutil.rmtree(cold_dir, ignore_errors=True)
        if args.generation:
            log("[%s] generation ..." % shape)
            row["generation"] = run_worker("generation", dict(spec, images=args.images),
                                           _env_with_flags(args.theano_flags, args.threads))
    finally:
        shutil.rmtree(exchange, ignore_errors=True)
    return row


def _fmt(x, f="%.1f"):
    return "-" if x is None else f % x


def _compile_cell(result):
    """``first`` or ``first / all`` seconds: the first batch's train step, then every length's."""
    first, total = result.get("compile_s"), result.get("compile_all_s")
    if first is None:
        return "-"
    if total is None or len(result.get("train_functions", [])) < 2:
        return "%.1f" % first
    return "%.1f / %.1f (%d lengths)" % (first, total, len(result["train_functions"]))


def _ratio_cell(t_ms, p_ms, rounds):
    """The pooled ratio, then the range of the per-round ratios."""
    if not (t_ms and p_ms):
        return "-"
    cell = "%.2f" % (t_ms / p_ms)
    if len(rounds) > 1:
        ratios = [a / b for a, b in rounds]
        cell += " (rounds %.2f–%.2f)" % (min(ratios), max(ratios))
    return cell


def markdown(rows, encoding=None, torch_note=None):
    lines = ["| shape | batch × T | vocab | toolkit ms/step | PyTorch ms/step | toolkit / PyTorch "
             "| loss toolkit | loss PyTorch | loss diff | peak RSS toolkit MiB | peak RSS PyTorch MiB "
             "| compile cached s | compile cold s | GFLOP/step | BLAS GFLOP/s | floor ms "
             "| toolkit / floor |",
             "|" + "---|" * 17]
    notes = []
    for row in rows:
        th, to, cold = row.get("theano", {}), row.get("torch", {}), row.get("theano_cold", {})
        if "error" in th:
            notes.append("%s: toolkit failed: %s" % (row["shape"], th["error"]))
            continue
        for name, part in (("PyTorch", to), ("cold compile", cold)):
            if "error" in part:
                notes.append("%s: %s failed: %s" % (row["shape"], name, part["error"]))
        ts = th.get("time_steps", [0])
        tdesc = "%d × %d" % (th["batch"], max(ts)) if min(ts) == max(ts) else \
            "%d × %d..%d" % (th["batch"], min(ts), max(ts))
        t_ms, p_ms = th.get("ms"), to.get("ms")
        l1, l2 = th.get("loss_dropout_off"), to.get("loss_dropout_off")
        floor = (1000 * th["gflop_per_step"] / th["gemm_gflops"]
                 if th.get("gemm_gflops") else None)
        lines.append("| %s | %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s "
                     "| %s | %s | %s | %s |" % (
            row["shape"], tdesc, th["n_tokens"], _fmt(t_ms), _fmt(p_ms),
            _ratio_cell(t_ms, p_ms, row.get("rounds", [])),
            _fmt(l1, "%.6f"), _fmt(l2, "%.6f"),
            _fmt(abs(l1 - l2) if l1 is not None and l2 is not None else None, "%.1e"),
            _fmt(th.get("peak_rss_mib"), "%.0f"), _fmt(to.get("peak_rss_mib"), "%.0f"),
            _compile_cell(th), _compile_cell(cold), _fmt(th.get("gflop_per_step"), "%.2f"),
            _fmt(th.get("gemm_gflops"), "%.0f"), _fmt(floor),
            _fmt(t_ms / floor if t_ms and floor else None, "%.2f")))
        if "skipped" in to:
            notes.append(to["skipped"])
    gen_rows = [r for r in rows if "generation" in r]
    if gen_rows:
        lines += ["", "| shape | generation images | compile s | greedy s | greedy img/s "
                  "| beam-3 s | beam-3 img/s |", "|" + "---|" * 7]
        for r in gen_rows:
            g = r["generation"]
            if "skipped" in g or "error" in g:
                notes.append("generation (%s): %s" % (r["shape"], g.get("skipped") or g.get("error")))
                continue
            lines.append("| %s | %d | %.1f | %.2f | %.0f | %.2f | %.0f |" % (
                r["shape"], g["images"], g["compile_s"], g["greedy_s"],
                g["images"] / g["greedy_s"], g["beam3_s"], g["images"] / g["beam3_s"]))
    if encoding is not None:
        if "skipped" in encoding or "error" in encoding:
            notes.append("encoding: %s" % (encoding.get("skipped") or encoding.get("error")))
        else:
            lines += ["", "| encoder | images | compile s | images/s |", "|---|---|---|---|",
                      "| %s | %d | %.1f | %.1f |" % (encoding["encoder"], encoding["images"],
                                                     encoding["compile_s"],
                                                     encoding["images_per_s"])]
    lines += ["", "Median of the timed steps after warm-up (every round's steps pooled; "
              "toolkit and PyTorch run alternately, one round each in turn), dropout on; losses from the same "
              "initial weights on the same batch with dropout off; peak RSS = the worker "
              "process's ru_maxrss (each implementation runs in its own process). Compile "
              "cached = building the first batch's train step with the persistent cache "
              "filled; cold = with an empty base_compiledir. The LSTM is unrolled for "
              "lengths padded to a multiple of 8, one compiled step per length: 'first / "
              "all' is the first batch's compile, then the total for every length the "
              "timed batches needed. Floor = the step's matrix-product FLOPs "
              "(bench.train_step_flops: output layer on real targets, LSTM, projections; "
              "median over the timed batches) at the BLAS speed numpy measures here for "
              "the output layer's shape; elementwise work, softmax and Adam are not in it."]
    for row in rows:
        th, to = row.get("theano", {}), row.get("torch", {})
        if "threads" in th or "threads" in to:
            lines.append("Threads (%s): toolkit OpenBLAS %s, PyTorch %s." % (
                row["shape"], th.get("threads", "-"), to.get("threads", "-")))
    loads = [r.get("load_average") for r in rows if r.get("load_average") is not None]
    if loads:
        lines.append("Load average at start: %.1f (the machine has %d cores)."
                     % (loads[0], os.cpu_count() or 1))
    lines += ["Note: " + n for n in dict.fromkeys(notes)]
    return "\n".join(lines)


def parser():
    p = argparse.ArgumentParser(
        prog="python benchmarks/bench.py",
        description="Time the toolkit's compiled Theano train step against the same network "
                    "in PyTorch (benchmarks/torch_peer.py), side by side, each in its own "
                    "subprocess; prints a markdown table.")
    p.add_argument("--shapes", default="coco,flickr8k",
                   help="comma-separated: coco (synthetic seminar COCO shapes: batch 50, 16 "
                        "steps, 10,373 words, 1000-d codes) and/or flickr8k (the prepared "
                        "data in --data) (default: %(default)s)")
    p.add_argument("--data", default="data/flickr8k",
                   help="prepared Flickr8k folder (default: %(default)s)")
    p.add_argument("--steps", type=int, default=20,
                   help="timed steps per round (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=3,
                   help="toolkit and PyTorch run alternately this many times; the medians "
                        "pool every round's steps (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=50,
                   help="flickr8k batch size (coco is always 50) (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-cold-compile", dest="cold_compile", action="store_false",
                   help="skip timing the Theano compile with an empty compile cache (minutes)")
    p.add_argument("--no-torch", dest="torch", action="store_false",
                   help="time the toolkit only")
    p.add_argument("--theano-flags", default="",
                   help="extra THEANO_FLAGS for the toolkit's workers, e.g. openmp=True")
    p.add_argument("--threads", type=int, default=None,
                   help="threads for both sides (OMP_NUM_THREADS, OPENBLAS_NUM_THREADS, "
                        "torch.set_num_threads); default: the libraries' own (all cores). "
                        "On a busy machine 1 is fairer: spinning OpenMP threads collapse")
    p.add_argument("--generation", action="store_true",
                   help="also time greedy and beam-3 caption generation (lasagne_caption.generate)")
    p.add_argument("--images", type=int, default=1000, help="images for --generation")
    p.add_argument("--encoding", action="store_true",
                   help="also time image encoding, images/s (lasagne_caption.encoders)")
    p.add_argument("--encode-images", type=int, default=64, help="images for --encoding")
    p.add_argument("--encoder-model", default=None, help="MobileNetV2 .tflite for --encoding")
    p.add_argument("--out", metavar="FILE.md", help="also write the markdown table here")
    p.add_argument("--json", metavar="FILE", nargs="?", const="-",
                   help="write all results as JSON to FILE (stdout if no FILE)")
    p.add_argument("--worker", nargs=3, metavar=("KIND", "SPEC", "OUT"), help=argparse.SUPPRESS)
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    if args.worker:
        kind, spec_path, out_path = args.worker
        import lasagne_caption  # noqa: F401  (compat layer before theano)
        with open(spec_path) as f:
            spec = json.load(f)
        result = WORKERS[kind](spec)
        with open(out_path, "w") as f:
            json.dump(result, f)
        return 0
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    for s in shapes:
        if s not in SHAPES:
            parser().error("unknown shape %r (choose from %s)" % (s, ", ".join(SHAPES)))
    if "flickr8k" in shapes and not os.path.isdir(args.data):
        print("%s: no prepared Flickr8k folder (make data, or --data PATH); skipping flickr8k"
              % args.data, file=sys.stderr)
        shapes.remove("flickr8k")
    if args.torch and not torch_available():
        print(TORCH_MISSING, file=sys.stderr)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    load = os.getloadavg()[0]
    log("load average %.1f on %d cores%s" % (load, os.cpu_count() or 1,
        ": other processes are running, timings will be noisy" if load > 0.5 else ""))
    rows = [bench_shape(s, args, log, cold_compile=args.cold_compile) for s in shapes]
    for row in rows:
        row["load_average"] = load
    encoding = None
    if args.encoding:
        log("encoding ...")
        encoding = run_worker("encoding", dict(seed=args.seed, encode_images=args.encode_images,
                                               encoder_model=args.encoder_model),
                              _env_with_flags(args.theano_flags, args.threads))
    table = markdown(rows, encoding)
    print(table)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(table + "\n")
    if args.json:
        doc = json.dumps(dict(rows=rows, encoding=encoding), indent=1)
        if args.json == "-":
            print(doc)
        else:
            with open(args.json, "w", encoding="utf-8") as f:
                f.write(doc + "\n")
    ok = all("error" not in r.get("theano", {}) for r in rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
