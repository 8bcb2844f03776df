"""Small sources written by hand, shared by the tests of :mod:`lasagne_caption.data`.

Seminar-format files (a Python 2 pickle and a tar.gz) are written here byte for byte.
"""
import struct
import sys
import zipfile

import numpy as np
from hypothesis import HealthCheck, settings

from lasagne_caption.vocab import tokenize

PROPERTY = settings(max_examples=80, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def py2_pickle(entries):
    """Protocol-2 bytes as Python 2 writes a list of lists of ``str``."""
    out = [b"\x80\x02]("]                      # PROTO 2, EMPTY_LIST, MARK
    for entry in entries:
        out.append(b"](")
        for text in entry:
            raw = text.encode("latin1")
            out.append(b"U" + bytes([len(raw)]) + raw if len(raw) < 256  # SHORT_BINSTRING
                       else b"T" + struct.pack("<i", len(raw)) + raw)    # BINSTRING
        out.append(b"e")                        # APPENDS
    return b"".join(out) + b"e."


CAPTIONS = {
    "a.jpg": ["A dog runs on the grass .", "The dog is running.", "A brown dog runs"],
    "b.jpg": ["Two men play football .", "Men on a field", "A dog and two men."],
    "c.jpg": ["A girl climbs the stairs.", "A child on stairs", "A girl, a dog."],
    "d.jpg": ["A man's bike .", "A bike and a dog", "Two bikes"],
}


def flickr_folder(root, captions=CAPTIONS, codes=None):
    """A small Flickr8k-form source folder."""
    (root / "codes").mkdir(parents=True)
    lines = ["%s#%d\t%s" % (name, i, c) for name, caps in captions.items() for i, c in enumerate(caps)]
    (root / "Flickr8k.token.txt").write_text("\n".join(lines) + "\n")
    names = list(captions)
    for split, part in (("train", names[:2]), ("dev", names[2:3]), ("test", names[3:])):
        (root / ("Flickr_8k.%sImages.txt" % split)).write_text("\n".join(part) + "\n")
    (root / "codes" / "image_names.txt").write_text("\n".join(names) + "\n")
    codes = np.arange(len(names) * 5, dtype="float16").reshape(-1, 5) if codes is None else codes
    np.save(root / "codes" / "mobilenet_v2_logits.npy", codes)
    return root


def seminar_folder(root, captions=CAPTIONS, pickled=None):
    root.mkdir(parents=True)
    np.save(root / "image_codes.npy", np.ones((len(captions), 1000), "float32"))
    entries = [[" ".join(tokenize(c)) for c in caps] for caps in captions.values()]
    (root / "caption_tokens.pcl").write_bytes(pickled or py2_pickle(entries))
    return root


def all_tokens(ds):
    return [c for img in ds.captions for c in img]


def corrupt(path, how):
    if how == "truncate":
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    else:
        how(path)


def prepare_cli(*argv):
    """``python -m lasagne_caption.data ARGV`` in a subprocess: (exit code, stdout, stderr)."""
    import subprocess
    out = subprocess.run([sys.executable, "-m", "lasagne_caption.data"] + [str(a) for a in argv],
                         capture_output=True, text=True)
    return out.returncode, out.stdout, out.stderr


def make_zip(path, members):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, body in members.items():
            zf.writestr(name, body)
    return path.read_bytes()


def flickr_photo_folder(root, flickr8k_dir, n_train=24, n_dev=8, n_test=8, broken=False):
    """A Flickr8k-form folder with real photos in images/ and no codes/: the first
    photos of each official split list, their captions and split lists restricted to
    them; ``broken=True`` adds ``broken.jpg`` (not a JPEG) with captions, in train."""
    import shutil
    chosen = {}
    for split, n in (("train", n_train), ("dev", n_dev), ("test", n_test)):
        lines = (flickr8k_dir / ("Flickr_8k.%sImages.txt" % split)).read_text().split()
        chosen[split] = [name for name in lines if (flickr8k_dir / "images" / name).exists()][:n]
    (root / "images").mkdir(parents=True)
    for names in chosen.values():
        for name in names:
            shutil.copy(flickr8k_dir / "images" / name, root / "images" / name)
    every = {name for names in chosen.values() for name in names}
    token_lines = [line for line in (flickr8k_dir / "Flickr8k.token.txt").read_text().splitlines()
                   if line.split("#")[0] in every]
    if broken:
        (root / "images" / "broken.jpg").write_bytes(b"not a jpeg")
        token_lines += ["broken.jpg#0\tA broken photo .", "broken.jpg#1\tNothing to see ."]
        chosen["train"] = chosen["train"] + ["broken.jpg"]
    (root / "Flickr8k.token.txt").write_text("\n".join(token_lines) + "\n")
    for split, names in chosen.items():
        (root / ("Flickr_8k.%sImages.txt" % split)).write_text("\n".join(names) + "\n")
    return root
