"""Train a tiny demo checkpoint for ``apply_trained_model.ipynb`` (CI, first look).

    python notebooks/make_demo_model.py OUT_DIR

prepares Flickr8k (MobileNetV2 logits, so photos can be encoded) from the
shared data folder into ``OUT_DIR/flickr8k`` and trains a very small network
for a few batches: its captions are nonsense, it only lets the notebook run
top to bottom. Then::

    LASAGNE_CAPTION_CHECKPOINT=OUT_DIR/demo_net.params jupyter nbconvert --execute ...
"""
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def shared_dir():
    """``../shared`` beside the project root (override: LASAGNE_CAPTION_SHARED)."""
    return pathlib.Path(os.environ.get("LASAGNE_CAPTION_SHARED", ROOT.parent / "shared"))


def build_demo_model(out_dir, shared=None):
    """Prepare the data and train; returns the checkpoint path (reused if it exists)."""
    out_dir = pathlib.Path(out_dir)
    checkpoint = out_dir / "demo_net.params"
    if checkpoint.exists():
        return checkpoint
    shared = pathlib.Path(shared or shared_dir())
    data = out_dir / "flickr8k"
    if not data.exists():
        subprocess.run([sys.executable, "-m", "lasagne_caption.data", "prepare", "flickr8k",
                        "--source", str(shared / "data" / "flickr8k"), "--out", str(data)],
                       check=True)
    subprocess.run([sys.executable, "-m", "lasagne_caption.train", "--data", str(data),
                    "--epochs", "2", "--batches-per-epoch", "5", "--val-batches", "1",
                    "--units", "16", "--embed-size", "8", "--checkpoint", str(checkpoint)],
                   check=True)
    return checkpoint


if __name__ == "__main__":
    print(build_demo_model(sys.argv[1] if len(sys.argv) > 1 else ROOT / "demo"))
