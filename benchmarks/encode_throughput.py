"""Encode N Flickr8k photos with the Lasagne MobileNetV2 and the reference runtime.

Run from the repository (or give this file's path from any directory)::

    python benchmarks/encode_throughput.py [-n 200] [--model PATH]
        [--ref-python /work/venv-ref/bin/python] [--float] [--batch-size 32]

Prints images/s of the Lasagne encoder (after compilation) and of the
reference TFLite runtime (``ai-edge-litert``, run in its own venv through a
subprocess because it needs numpy >= 2), top-1 agreement and the Pearson
correlation of logits / pooled features against the reference run and against
the shared codes (``codes/mobilenet_v2_{logits,pool}.npy``).

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


def ref_worker(args):
    """Run the .tflite with ai-edge-litert (or tflite-runtime) on a list of photos."""
    import numpy as np
    from PIL import Image
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        from tflite_runtime.interpreter import Interpreter
    paths = open(args.paths).read().split("\n")
    paths = [p for p in paths if p]
    images = np.stack([np.asarray(Image.open(p).convert("RGB").resize((224, 224)), np.uint8)
                       for p in paths])
    it = Interpreter(model_path=args.model, num_threads=args.threads)
    it.allocate_tensors()
    inp = it.get_input_details()[0]
    details = {d["name"]: d for d in it.get_tensor_details()}
    lg = details["MobilenetV2/Logits/Squeeze1"]
    pl = details["MobilenetV2/Logits/AvgPool"]
    logits = np.zeros((len(paths), 1001), np.float32)
    pool = np.zeros((len(paths), 1280), np.float32)
    t = time.time()
    for i, img in enumerate(images):
        it.set_tensor(inp["index"], img[None])
        it.invoke()
        s, z = lg["quantization"]
        logits[i] = s * (it.get_tensor(lg["index"]).reshape(-1).astype(np.float32) - z)
        s, z = pl["quantization"]
        pool[i] = s * (it.get_tensor(pl["index"]).reshape(-1).astype(np.float32) - z)
    dt = time.time() - t
    np.savez(args.out, logits=logits, pool=pool, seconds=dt)


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


def corr_rows(a, b):
    import numpy as np
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    return (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=200, help="number of Flickr8k photos")
    p.add_argument("--model", default=os.path.join(
        SHARED, "models", "mobilenet_v2", "mobilenet_v2_1.0_224_quant.tflite"))
    p.add_argument("--ref-python", default=os.environ.get(
        "LASAGNE_CAPTION_REF_PYTHON", "/work/venv-ref/bin/python"),
        help="python of a venv with ai-edge-litert (skip the reference if missing)")
    p.add_argument("--float", action="store_true", help="no activation fake-quant")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=2, help="reference runtime threads")
    p.add_argument("--ref-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--paths", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.ref_worker:
        return ref_worker(args)

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
    shared_pool = np.load(os.path.join(flickr, "codes", "mobilenet_v2_pool.npy"),
                          mmap_mode="r")[:args.n].astype(np.float32)

    enc = get_encoder("mobilenet_v2", args.model, fake_quant=not args.float)
    t = time.time()
    images = np.stack([load_image(q) for q in paths])
    load_s = time.time() - t
    timed = time_encoding(enc, images, batch_size=args.batch_size)
    codes = timed["codes"]
    print("lasagne  (fake_quant=%s): %d photos, %.2f images/s (forward only; compile and "
          "2-image warm-up %.1f s, image loading %.1f s)" % (not args.float, args.n,
                                                              timed["images_per_s"],
                                                              timed["compile_s"], load_s))

    refs = [("shared codes", shared_logits, shared_pool)]
    if os.path.exists(args.ref_python):
        with tempfile.TemporaryDirectory() as tmp:
            plist = os.path.join(tmp, "paths.txt")
            with open(plist, "w") as f:
                f.write("\n".join(paths))
            out = os.path.join(tmp, "ref.npz")
            subprocess.check_call([args.ref_python, os.path.abspath(__file__), "--ref-worker",
                                   "--paths", plist, "--out", out, "--model", args.model,
                                   "--threads", str(args.threads)])
            r = np.load(out)
            print("reference (ai-edge-litert, %d threads): %.2f images/s"
                  % (args.threads, args.n / float(r["seconds"])))
            refs.insert(0, ("reference run", r["logits"], r["pool"]))
    else:
        print("reference runtime: skipped (no %s)" % args.ref_python)

    report = {}
    for label, lg, pl in refs:
        agree = int((codes["logits"].argmax(1) == lg.argmax(1)).sum())
        cl, cp = corr_rows(codes["logits"], lg), corr_rows(codes["pool"], pl)
        print("vs %-13s top-1 %d/%d; logits r median %.5f min %.5f; pool r median %.5f "
              "min %.5f" % (label, agree, args.n, np.median(cl), cl.min(), np.median(cp),
                            cp.min()))
        report[label] = dict(top1=agree, n=args.n, logits_r_median=float(np.median(cl)),
                             logits_r_min=float(cl.min()), pool_r_median=float(np.median(cp)),
                             pool_r_min=float(cp.min()))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
