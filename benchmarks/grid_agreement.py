"""The toolkit's grid tap against the reference runtime's own Conv_1 tensor.

Run from the repository (or give this file's path from any directory)::

    .venv/bin/python benchmarks/grid_agreement.py [-n 100] [--model PATH]
        [--ref-python ../venv-ref/bin/python] [--json OUT.json]

N Flickr8k photos (the first N of ``codes/image_names.txt``) are loaded once
with the toolkit's :func:`~lasagne_caption.encoders.preprocess.load_image`
(224x224 RGB uint8) and saved as one ``.npy``; the reference TFLite runtime
(``ai-edge-litert``, in its own venv, run through a subprocess because it
needs numpy >= 2) runs the ``.tflite`` on exactly those pixels with
``experimental_preserve_all_tensors=True`` and saves the uint8 output of
``Conv_1`` (7x7x1280, after ReLU6) and of ``expanded_conv_16/project``
(7x7x320, Conv_1's input), with their scale / zero point. The toolkit encodes
the same pixels (``encode(images, taps=("grid", "block16"))``).

Per photo: the Pearson correlation of the two dequantised maps, the mean
absolute difference in units of the tensor's quantisation step, and the
fraction of the 62,720 (15,680) values whose uint8 codes are exactly equal
after re-quantising the toolkit's map with the same scale / zero point (and
within one step). Printed: median and minimum over the photos; the whole
report as JSON (``--json``). Also checked in the reference run itself:
its ``AvgPool`` tensor is the mean of its ``Conv_1`` map (re-quantised); and
the toolkit's ``Conv_1`` alone (its dequantised weights, float math, rounding
to the output grid) applied to the reference's own ``block16`` tensor, which
separates ``Conv_1`` from the differences it inherits from upstream layers.

With ``--ref-worker`` this file is the reference worker (run by the
reference venv's Python; it imports neither theano nor lasagne_caption).
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
if ROOT not in sys.path:   # run as a script: the repository root, for benchmarks.*
    sys.path.insert(0, ROOT)
from benchmarks.encode_throughput import SHARED, add_model_options  # noqa: E402

# tap -> (TFLite scope of its tensor, per-image NHWC shape)
TENSORS = {"grid": ("MobilenetV2/Conv_1/", (7, 7, 1280)),
           "block16": ("MobilenetV2/expanded_conv_16/project/", (7, 7, 320)),
           "pool": ("MobilenetV2/Logits/AvgPool", (1, 1, 1280))}


def ref_worker(args):
    """Run the .tflite with ai-edge-litert on uint8 images (N, 224, 224, 3) from a .npy."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter
    images = np.load(args.images)
    it = Interpreter(model_path=args.model, num_threads=args.threads,
                     experimental_preserve_all_tensors=True)
    it.allocate_tensors()
    inp = it.get_input_details()[0]
    found = {}
    for d in it.get_tensor_details():
        for tap, (scope, shape) in TENSORS.items():
            if d["name"].startswith(scope) and tuple(d["shape"]) == (1,) + shape \
                    and d["dtype"] == np.uint8 and tap not in found:
                found[tap] = d
    missing = sorted(set(TENSORS) - set(found))
    if missing:
        raise SystemExit("reference worker: no uint8 tensor found for %s" % missing)
    out = {tap: np.zeros((len(images),) + TENSORS[tap][1], np.uint8) for tap in TENSORS}
    t = time.time()
    for i, img in enumerate(images):
        it.set_tensor(inp["index"], img[None])
        it.invoke()
        for tap, d in found.items():
            out[tap][i] = it.get_tensor(d["index"])[0]
    seconds = time.time() - t
    for tap in TENSORS:
        np.save(os.path.join(args.out, tap + ".npy"), out[tap])
    meta = {tap: {"name": d["name"], "scale": float(d["quantization"][0]),
                  "zero_point": int(d["quantization"][1])} for tap, d in found.items()}
    meta["seconds"] = seconds
    with open(os.path.join(args.out, "meta.json"), "w") as f:
        json.dump(meta, f)
    return 0


def _corr(a, b):
    import numpy as np
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    return (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))


def compare(ours, ref_q, scale, zero_point):
    """Per-photo agreement of float maps ``ours`` (N, ...) with uint8 ``ref_q`` (N, ...)."""
    import numpy as np
    from lasagne_caption.data.dataset import dequantize_codes, quantize_codes
    n = len(ours)
    ours = np.asarray(ours, np.float32).reshape(n, -1)
    ref_q = ref_q.reshape(n, -1)
    ref = dequantize_codes(ref_q, scale, zero_point)
    ours_q = quantize_codes(ours, scale, zero_point)
    step_diff = np.abs(ours_q.astype(np.int32) - ref_q.astype(np.int32))
    r = _corr(ours, ref)
    mad = np.abs(ours - ref).mean(1) / scale
    equal = (step_diff == 0).mean(1)
    within1 = (step_diff <= 1).mean(1)
    # ReLU6 zeros dominate the grid: the same fraction over values where either side is not zero
    live = (ours_q != zero_point) | (ref_q != zero_point)
    equal_live = ((step_diff == 0) & live).sum(1) / np.maximum(live.sum(1), 1)
    summary = {"photos": n, "scale": scale, "zero_point": zero_point,
               "r_median": float(np.median(r)), "r_min": float(r.min()),
               "mean_abs_diff_steps_median": float(np.median(mad)),
               "mean_abs_diff_steps_max": float(mad.max()),
               "mean_abs_diff_steps_all": float(mad.mean()),
               "exact_uint8_fraction_all": float(equal.mean()),
               "exact_uint8_fraction_median": float(np.median(equal)),
               "exact_uint8_fraction_min": float(equal.min()),
               "exact_uint8_fraction_nonzero_median": float(np.median(equal_live)),
               "exact_uint8_fraction_nonzero_min": float(equal_live.min()),
               "nonzero_fraction": float(live.mean()),
               "within_one_step_fraction_all": float(within1.mean()),
               "max_step_diff": int(step_diff.max())}
    return summary


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=100, help="number of Flickr8k photos (default 100)")
    add_model_options(p, "python of a venv with ai-edge-litert")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=1, help="reference runtime threads")
    p.add_argument("--json", help="also write the report here")
    p.add_argument("--encoder-kwargs", default="{}",
                   help='JSON options of get_encoder("mobilenet_v2", ...), e.g. '
                        '\'{"depthwise_impl": "groups", "conv_impl": "corrmm"}\'')
    p.add_argument("--ref-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--images", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.ref_worker:
        return ref_worker(args)

    sys.path.insert(0, ROOT)
    import numpy as np
    import lasagne_caption  # noqa: F401
    from lasagne_caption.data.dataset import quantize_codes
    from lasagne_caption.data.prepare import grid_quantization
    from lasagne_caption.encoders import get_encoder
    from lasagne_caption.encoders.mobilenet_v2 import read_tflite_weights
    from lasagne_caption.encoders.preprocess import load_image

    if not os.path.exists(args.ref_python):
        raise SystemExit("no reference python %s (python3 -m venv ../venv-ref && "
                         "../venv-ref/bin/pip install ai-edge-litert==2.3.0 numpy pillow)"
                         % args.ref_python)
    flickr = os.path.join(SHARED, "data", "flickr8k")
    names = open(os.path.join(flickr, "codes", "image_names.txt")).read().split()[:args.n]
    images = np.stack([load_image(os.path.join(flickr, "images", n)) for n in names])

    with tempfile.TemporaryDirectory() as tmp:
        np.save(os.path.join(tmp, "images.npy"), images)
        subprocess.check_call([args.ref_python, os.path.abspath(__file__), "--ref-worker",
                               "--images", os.path.join(tmp, "images.npy"), "--out", tmp,
                               "--model", args.model, "--threads", str(args.threads)])
        with open(os.path.join(tmp, "meta.json")) as f:
            ref_meta = json.load(f)
        ref = {tap: np.load(os.path.join(tmp, tap + ".npy")) for tap in TENSORS}

    encoder_kwargs = json.loads(args.encoder_kwargs)
    enc = get_encoder("mobilenet_v2", args.model, **encoder_kwargs)
    t = time.time()
    codes = enc.encode(images, taps=("grid", "block16", "pool"), batch_size=args.batch_size,
                       progress=False)
    toolkit_s = time.time() - t

    report = {"photos": len(names), "first": names[0], "last": names[-1],
              "encoder_kwargs": encoder_kwargs,
              "reference_seconds": ref_meta["seconds"], "toolkit_seconds_with_compile": toolkit_s}
    ours_scale = grid_quantization(args.model, "grid")
    report["grid_quantization_toolkit"] = list(ours_scale)
    for tap in ("grid", "block16"):
        m = ref_meta[tap]
        report[tap] = dict(compare(codes[tap], ref[tap], m["scale"], m["zero_point"]),
                           tensor=m["name"])
    # in the reference run itself: AvgPool == the mean of Conv_1's map, re-quantised
    g, pm = ref_meta["grid"], ref_meta["pool"]
    ref_grid = (ref["grid"].astype(np.float32) - g["zero_point"]) * np.float32(g["scale"])
    mean_q = quantize_codes(ref_grid.mean((1, 2)), pm["scale"], pm["zero_point"])
    pool_q = ref["pool"].reshape(len(names), -1)
    diff = np.abs(mean_q.astype(np.int32) - pool_q.astype(np.int32))
    report["reference_pool_vs_mean_of_grid"] = {
        "exact_uint8_fraction": float((diff == 0).mean()), "max_step_diff": int(diff.max())}
    report["toolkit_pool_vs_mean_of_grid_max_abs"] = float(
        np.abs(codes["grid"].mean((1, 2)) - codes["pool"]).max())
    # the toolkit's Conv_1 alone (dequantised weights, float math, ReLU6, rounding to the
    # output grid) on the reference's own block16: isolates Conv_1 from upstream differences
    params, out_quant, _ = read_tflite_weights(args.model)
    b = ref_meta["block16"]
    block16 = (ref["block16"].astype(np.float32) - b["zero_point"]) * np.float32(b["scale"])
    w, bias = params["Conv_1"]
    y = np.clip(block16.reshape(-1, w.shape[1]) @ w[:, :, 0, 0].T + bias, 0, 6)
    q = quantize_codes(y, *out_quant["Conv_1"]).reshape(ref["grid"].shape)
    diff = np.abs(q.astype(np.int32) - ref["grid"].astype(np.int32))
    report["conv_1_alone_on_reference_block16"] = {
        "exact_uint8_fraction": float((diff == 0).mean()), "max_step_diff": int(diff.max())}

    print("%d Flickr8k photos (%s .. %s), the toolkit's taps (encoder options %s) vs "
          "ai-edge-litert's tensors" % (len(names), names[0], names[-1], encoder_kwargs or "default"))
    for tap in ("grid", "block16"):
        s = report[tap]
        print("%-8s %s (scale %.6g, zero point %d)" % (tap, s["tensor"], s["scale"],
                                                       s["zero_point"]))
        print("   correlation per photo: median %.6f, min %.6f" % (s["r_median"], s["r_min"]))
        print("   mean |difference| in quantisation steps: median %.4f, max %.4f (all %.4f)"
              % (s["mean_abs_diff_steps_median"], s["mean_abs_diff_steps_max"],
                 s["mean_abs_diff_steps_all"]))
        print("   uint8 codes exactly equal after re-quantising: %.4f of all values (per photo "
              "median %.4f, min %.4f); within one step %.4f; largest difference %d steps"
              % (s["exact_uint8_fraction_all"], s["exact_uint8_fraction_median"],
                 s["exact_uint8_fraction_min"], s["within_one_step_fraction_all"],
                 s["max_step_diff"]))
        print("   where either side is not the zero point (%.3f of the values): exactly equal "
              "per photo median %.4f, min %.4f" % (s["nonzero_fraction"],
                                                   s["exact_uint8_fraction_nonzero_median"],
                                                   s["exact_uint8_fraction_nonzero_min"]))
    print("toolkit grid quantisation from the .tflite parser: scale %.6g, zero point %d"
          % tuple(ours_scale))
    r = report["reference_pool_vs_mean_of_grid"]
    print("reference AvgPool vs its own Conv_1 map averaged and re-quantised: %.4f equal, "
          "largest difference %d steps" % (r["exact_uint8_fraction"], r["max_step_diff"]))
    print("toolkit pool vs mean of its grid: max |difference| %.3g"
          % report["toolkit_pool_vs_mean_of_grid_max_abs"])
    r = report["conv_1_alone_on_reference_block16"]
    print("the toolkit's Conv_1 applied to the reference's block16: %.4f of the uint8 grid "
          "values equal, largest difference %d steps" % (r["exact_uint8_fraction"],
                                                         r["max_step_diff"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
