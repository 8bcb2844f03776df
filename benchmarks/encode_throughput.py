"""Time the toolkit's MobileNetV2 encoder against PyTorch and the int8 reference, side by side.

Run from the repository (or give this file's path from any directory)::

    python benchmarks/encode_throughput.py [-n 200] [--threads 1] [--batch-size 32]
        [--rounds 3] [--ref-python ../venv-ref/bin/python] [--float]
        [--no-torch] [--no-previous] [--out FILE.md] [--json FILE]

On the same ``-n`` Flickr8k photos (decoded once, by the toolkit), with the
same number of threads for every implementation, one process:

* **toolkit**: the encoder as ``get_encoder("mobilenet_v2")`` builds it
  (the fast path: fused depthwise C op, 1x1 convolutions as GEMMs on NHWC;
  activations fake-quantised unless ``--float``);
* **toolkit, previous path**: ``depthwise_impl="groups", conv_impl="corrmm"``
  (the network before the fast path; timed in the first round only, it is
  slow), the reference of agreement when the int8 runtime is missing;
* **PyTorch float32** (``benchmarks/torch_mobilenet_v2.py``): the same
  network and weights (read by ``read_tflite_weights``, batch norm already
  folded), NCHW and channels-last, ``torch.inference_mode``;
* **int8 reference** (``ai-edge-litert``), when ``--ref-python`` names a
  python that has it (it needs numpy >= 2, so it runs in its own venv, in a
  subprocess, on the same decoded pixels, one image per invoke).

The toolkit and PyTorch are timed alternately for ``--rounds`` rounds (the
order rotating), each round encoding all photos in batches of
``--batch-size``; images/s is the median over rounds and the speed ratio is
taken within each round (toolkit images/s / PyTorch images/s: above 1, the
toolkit is faster). Threads: ``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``,
``MKL_NUM_THREADS``, ``torch.set_num_threads`` and the reference's
``num_threads`` are all set to ``--threads`` (above 1, the toolkit's C ops
share their blocks among OpenMP threads; their BLAS calls stay on one thread).
The load average is printed: the machine may be shared.

Agreement: top-1 equal count and the median / minimum Pearson r of the logits
against the int8 reference run (or, without it, the previous toolkit path),
against the previous toolkit path, and against the shared codes
(``codes/mobilenet_v2_logits.npy``, made by the reference runtime).

With ``--ref-worker`` this file is the reference worker itself (run by the
reference venv's Python; it imports neither theano nor lasagne_caption).

:func:`time_encoding` is the one timing of the toolkit's encoder:
``python benchmarks/bench.py --encoding`` uses it too.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SHARED = os.environ.get("LASAGNE_CAPTION_SHARED", os.path.join(os.path.dirname(ROOT), "shared"))
#: python of a virtual environment with ai-edge-litert (which needs numpy 2), beside the clone
REF_PYTHON = os.environ.get("LASAGNE_CAPTION_REF_PYTHON",
                            os.path.join(os.path.dirname(ROOT), "venv-ref", "bin", "python"))


def add_model_options(parser, ref_help):
    """``--model`` (MobileNetV2's .tflite in shared/) and ``--ref-python``; grid_agreement.py too."""
    parser.add_argument("--model", default=os.path.join(
        SHARED, "models", "mobilenet_v2", "mobilenet_v2_1.0_224_quant.tflite"))
    parser.add_argument("--ref-python", default=REF_PYTHON,
                        help=ref_help + " (default: %(default)s, or $LASAGNE_CAPTION_REF_PYTHON)")


def ref_worker(args):
    """Run the .tflite with ai-edge-litert (or tflite-runtime) on uint8 images (N, 224, 224, 3)."""
    import numpy as np
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        from tflite_runtime.interpreter import Interpreter
    images = np.load(args.images)
    it = Interpreter(model_path=args.model, num_threads=args.threads)
    it.allocate_tensors()
    inp = it.get_input_details()[0]
    details = {d["name"]: d for d in it.get_tensor_details()}
    lg = details["MobilenetV2/Logits/Squeeze1"]
    pl = details["MobilenetV2/Logits/AvgPool"]
    logits = np.zeros((len(images), 1001), np.float32)
    pool = np.zeros((len(images), 1280), np.float32)
    it.set_tensor(inp["index"], images[:1])       # warm-up
    it.invoke()
    t = time.perf_counter()
    for i, img in enumerate(images):
        it.set_tensor(inp["index"], img[None])
        it.invoke()
        s, z = lg["quantization"]
        logits[i] = s * (it.get_tensor(lg["index"]).reshape(-1).astype(np.float32) - z)
        s, z = pl["quantization"]
        pool[i] = s * (it.get_tensor(pl["index"]).reshape(-1).astype(np.float32) - z)
    dt = time.perf_counter() - t
    np.savez(args.out_npz, logits=logits, pool=pool, seconds=dt)


def time_encoding(enc, images, batch_size=32, warmup=2):
    """Time ``enc.encode`` on uint8 ``images`` (N, 224, 224, 3), after compiling it.

    ``enc`` is an encoder of :func:`lasagne_caption.encoders.get_encoder`;
    only its ``encode(images, batch_size=..., progress=False)`` is used. The
    first ``warmup`` images are encoded first (compiles the network and warms
    it up: ``compile_s``), then all of them are timed (``seconds``,
    ``images_per_s``). Returns those and the ``codes`` of all the images.
    """
    t = time.perf_counter()
    enc.encode(images[:warmup], batch_size=batch_size, progress=False)
    compile_s = time.perf_counter() - t
    t = time.perf_counter()
    codes = enc.encode(images, batch_size=batch_size, progress=False)
    seconds = time.perf_counter() - t
    return dict(codes=codes, compile_s=compile_s, seconds=seconds,
                images_per_s=len(images) / seconds)


def time_torch(net, images, batch_size=32, warmup=2):
    """The same measurement as :func:`time_encoding` for a :class:`TorchMobileNetV2`."""
    import numpy as np
    t = time.perf_counter()
    net.encode(images[:warmup])
    compile_s = time.perf_counter() - t
    t = time.perf_counter()
    parts = [net.encode(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
    seconds = time.perf_counter() - t
    codes = {"logits": np.concatenate([p[0] for p in parts]),
             "pool": np.concatenate([p[1] for p in parts])}
    return dict(codes=codes, compile_s=compile_s, seconds=seconds,
                images_per_s=len(images) / seconds)


def corr_rows(a, b):
    import numpy as np
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    return (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))


def agreement(logits, ref_logits):
    """top-1 equal count, median / min Pearson r of the rows, max |difference| / max |ref|."""
    import numpy as np
    r = corr_rows(logits, ref_logits)
    return dict(top1=int((logits.argmax(1) == ref_logits.argmax(1)).sum()), n=len(logits),
                r_median=float(np.median(r)), r_min=float(r.min()),
                max_rel_diff=float(np.abs(logits - ref_logits).max() / np.abs(ref_logits).max()))


def set_threads(threads):
    """Thread counts for every library, before any of them is imported.

    The toolkit's encoder ops thread with OpenMP when ``OMP_NUM_THREADS`` is
    above 1 (:func:`lasagne_caption.encoders.ops.default_openmp`).
    """
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)


def run_reference(args, images):
    """Codes and seconds of the int8 reference runtime, or None if its python is missing."""
    import numpy as np
    if not args.ref_python or not os.path.exists(args.ref_python):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "images.npy")
        np.save(path, images)
        out = os.path.join(tmp, "ref.npz")
        subprocess.check_call([args.ref_python, os.path.abspath(__file__), "--ref-worker",
                               "--images", path, "--out-npz", out, "--model", args.model,
                               "--threads", str(args.threads)])
        r = np.load(out)
        return dict(codes={"logits": r["logits"], "pool": r["pool"]},
                    seconds=float(r["seconds"]), images_per_s=len(images) / float(r["seconds"]))


def _fmt_agree(a):
    if a is None:
        return "-"
    return "%d/%d, r %.5f (min %.5f)" % (a["top1"], a["n"], a["r_median"], a["r_min"])


def markdown(report):
    """The result table (markdown) of :func:`main`'s report."""
    lines = ["| implementation | images/s (median) | rounds | threads | batch | "
             "speed / best PyTorch | vs %s: top-1, logits r median (min) | "
             "vs previous toolkit: top-1, r, max rel. diff | vs shared codes: top-1, r |"
             % report["agreement_ref"],
             "|---|---|---|---|---|---|---|---|---|"]
    for row in report["rows"]:
        ratio = row.get("ratio")
        ratio = ("%.2f (rounds %s)" % (ratio["median"], ", ".join("%.2f" % v for v in
                                                                   ratio["rounds"]))
                 if ratio else "-")
        prev = row.get("vs_previous")
        prev = "-" if prev is None else "%d/%d, %.5f, %.1e" % (
            prev["top1"], prev["n"], prev["r_median"], prev["max_rel_diff"])
        lines.append("| %s | %.1f | %d | %s | %s | %s | %s | %s | %s |" % (
            row["name"], row["images_per_s"], len(row["rounds"]), row["threads"], row["batch"],
            ratio, _fmt_agree(row.get("vs_ref")), prev, _fmt_agree(row.get("vs_shared"))))
    lines.append("")
    lines.append("%d Flickr8k photos; load average %.2f at start, %.2f at the end (%d cores); "
                 "%s." % (report["n"], report["load_start"], report["load_end"],
                          os.cpu_count() or 0, report["note"]))
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=200, help="number of Flickr8k photos")
    add_model_options(p, "python of a venv with ai-edge-litert (the int8 reference; skipped "
                         "if missing)")
    p.add_argument("--float", action="store_true", help="toolkit without activation fake-quant")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=1,
                   help="threads of every implementation (default 1)")
    p.add_argument("--rounds", type=int, default=3, help="alternating timing rounds")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch peer")
    p.add_argument("--no-previous", action="store_true",
                   help="skip the previous toolkit path (groups + corrmm)")
    p.add_argument("--out", help="also write the table to this markdown file")
    p.add_argument("--json", help="also write the numbers to this JSON file")
    p.add_argument("--ref-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--images", help=argparse.SUPPRESS)
    p.add_argument("--out-npz", dest="out_npz", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.ref_worker:
        return ref_worker(args)
    if args.n < 1 or args.batch_size < 1 or args.threads < 1 or args.rounds < 1:
        p.error("-n, --batch-size, --threads and --rounds must be at least 1")

    set_threads(args.threads)
    load_start = os.getloadavg()[0]
    sys.path.insert(0, ROOT)
    import numpy as np
    import lasagne_caption  # noqa: F401
    from lasagne_caption.encoders import get_encoder
    from lasagne_caption.encoders.preprocess import load_image

    flickr = os.path.join(SHARED, "data", "flickr8k")
    names = open(os.path.join(flickr, "codes", "image_names.txt")).read().split()[:args.n]
    paths = [os.path.join(flickr, "images", n) for n in names]
    shared_logits = np.load(os.path.join(flickr, "codes", "mobilenet_v2_logits.npy"),
                            mmap_mode="r")[:args.n].astype(np.float32)
    t = time.time()
    images = np.stack([load_image(q) for q in paths])
    print("decoded %d photos in %.1f s; load average %.2f" % (len(images), time.time() - t,
                                                              load_start), flush=True)

    fq = not args.float
    impls = [("toolkit", "theano", get_encoder("mobilenet_v2", args.model, fake_quant=fq))]
    if not args.no_torch:
        import torch
        torch.set_num_threads(args.threads)
        from benchmarks.torch_mobilenet_v2 import TorchMobileNetV2
        for layout, cl in (("NCHW", False), ("channels-last", True)):
            impls.append(("PyTorch float32 (%s)" % layout, "torch",
                          TorchMobileNetV2.from_tflite(args.model, channels_last=cl)))
    results = {name: [] for name, _, _ in impls}
    ratios = {name: [] for name, _, _ in impls}
    codes = {}
    for r in range(args.rounds):
        order = impls[r % len(impls):] + impls[:r % len(impls)]
        speeds = {}
        for name, kind, impl in order:
            timer = time_encoding if kind == "theano" else time_torch
            timed = timer(impl, images, batch_size=args.batch_size)
            codes[name] = timed["codes"]
            results[name].append(timed["images_per_s"])
            speeds[name] = timed["images_per_s"]
            print("round %d: %-28s %6.1f images/s (warm-up %.1f s)"
                  % (r + 1, name, timed["images_per_s"], timed["compile_s"]), flush=True)
        torch_speeds = [v for k, v in speeds.items() if k.startswith("PyTorch")]
        if torch_speeds:
            ratios["toolkit"].append(speeds["toolkit"] / max(torch_speeds))

    rows = []
    for name, kind, _ in impls:
        rows.append(dict(name=name, images_per_s=float(np.median(results[name])),
                         rounds=results[name], threads=args.threads, batch=args.batch_size,
                         ratio=(dict(median=float(np.median(ratios[name])),
                                     rounds=ratios[name]) if ratios[name] else None)))
    previous = None
    if not args.no_previous:
        enc = get_encoder("mobilenet_v2", args.model, fake_quant=fq, depthwise_impl="groups",
                          conv_impl="corrmm")
        timed = time_encoding(enc, images, batch_size=args.batch_size)
        previous = codes["toolkit, previous path"] = timed["codes"]
        print("toolkit, previous path: %.1f images/s (one round)" % timed["images_per_s"],
              flush=True)
        rows.append(dict(name="toolkit, previous path (groups + corrmm)",
                         images_per_s=timed["images_per_s"], rounds=[timed["images_per_s"]],
                         threads=args.threads, batch=args.batch_size, ratio=None,
                         key="toolkit, previous path"))
    ref = run_reference(args, images)
    if ref is not None:
        codes["int8 reference"] = ref["codes"]
        rows.append(dict(name="int8 reference (ai-edge-litert)", images_per_s=ref["images_per_s"],
                         rounds=[ref["images_per_s"]], threads=args.threads, batch=1,
                         ratio=None, key="int8 reference"))
        print("int8 reference: %.1f images/s" % ref["images_per_s"], flush=True)
    else:
        print("int8 reference: skipped (no %s)" % args.ref_python, flush=True)

    ref_logits, ref_name = ((ref["codes"]["logits"], "int8 reference") if ref is not None else
                            (previous["logits"], "previous toolkit") if previous is not None
                            else (None, "-"))
    for row in rows:
        lg = codes[row.get("key", row["name"])]["logits"]
        row["vs_ref"] = agreement(lg, ref_logits) if ref_logits is not None else None
        row["vs_previous"] = agreement(lg, previous["logits"]) if previous is not None else None
        row["vs_shared"] = agreement(lg, shared_logits)
    report = dict(n=args.n, rows=rows, agreement_ref=ref_name, load_start=load_start,
                  load_end=os.getloadavg()[0],
                  note="toolkit fake_quant=%s; PyTorch is float32 (no fake quantisation); "
                       "the int8 reference runs one image per invoke on the same pixels" % fq)
    table = markdown(report)
    print(table)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(table + "\n")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
