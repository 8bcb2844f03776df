"""Encode many photos on a Dask cluster: shards, a manifest, runs that resume.

For a folder (or a list file) of, say, 100,000 photos::

    python -m lasagne_caption.encoders.distributed PHOTOS --out OUT_DIR \\
        [--scheduler tcp://HOST:8786 | --workers 2] [--tap logits] [--model PATH] \\
        [--shard-size 256] [--batch-size 32] [--overwrite]

or, from a notebook::

    run = encode_on_cluster("photos/", "out/", client=None, tap="logits", shard_size=256)
    codes = np.load(run.codes_path)            # float32 (N, *tap shape), N = photos encoded

How it works
------------
* The photos are sorted and cut into **shards** of ``shard_size`` consecutive
  photos; each shard is one Dask task. A worker compiles its encoder **once**
  (a per-process cache keyed by encoder, options, model path and model
  sha256, see :func:`worker_encoder`), then encodes shard after shard with
  :meth:`~lasagne_caption.encoders.base.ImageEncoder.encode`
  (``skip_unreadable=True``).
* ``OUT_DIR/manifest.json`` (the sorted photo paths, the encoder and its
  options, the model file's name, size and sha256, the tap and its shape, the
  shard size, ``keep_aspect``) is
  written before anything else. A rerun with the same manifest encodes only
  the shards that are missing; a different manifest is refused (one line)
  unless ``overwrite=True`` (``--overwrite``), which starts over.
* The client writes each shard as it arrives, atomically
  (:func:`~lasagne_caption.files.atomic_write`), to
  ``OUT_DIR/shards/shard-00012.npz``: ``codes`` float32 ``(m, *shape)``,
  ``index``/``paths``/``names`` of the ``m`` photos encoded, ``failed_index``/
  ``failed_path``/``failed_message`` of the unreadable ones, and the shard
  number and manifest digest. Codes travel back through Dask, so only the
  client needs ``OUT_DIR``; the workers need the photos and the model file at
  the same paths (or a shared filesystem) and lasagne-caption installed.
* A worker that dies mid-shard: Dask runs the shard again elsewhere (the
  nanny restarts the worker). A shard file is written by the client once per
  finished task, whole or not at all, and holds each of its photos once, so
  nothing is lost and nothing is counted twice. The same codes give the same
  file byte for byte (no time stamps), so a shard encoded again by an encoder
  that computes the same codes in every process gives the same file.
* At the end the shards are gathered, in path order, into ``OUT_DIR/codes.npy``
  (streamed shard by shard, never all in memory), ``OUT_DIR/names.txt`` (the
  photos' paths relative to their common folder: file names for a folder) and
  ``OUT_DIR/failed.txt`` (``path<TAB>message`` of each unreadable photo), each
  written atomically.

Dask (``dask`` and ``distributed``) is an optional extra: this module imports
without it, and using it says ``pip install -e ".[dask]"``.
"""
import argparse
import collections
import contextlib
import hashlib
import json
import logging
import os
import socket
import sys
import threading
import uuid
import zipfile

import numpy as np

from ..errors import UserError, run_cli
from ..files import atomic_write, exclusive_lock, file_digest, remove_stale_temporaries
from .preprocess import IMAGE_EXTENSIONS, list_images
from .registry import default_model_path, get_encoder

__all__ = ["encode_on_cluster", "ClusterRun", "collect_photos", "photo_names", "shard_ranges",
           "shard_path", "make_manifest", "manifest_digest", "worker_encoder", "encode_shard",
           "main"]

DASK_MISSING = ('encoding on a Dask cluster needs the dask extra (dask and distributed): '
                'pip install -e ".[dask]" in the lasagne-caption folder')

MANIFEST_FORMAT = "lasagne-caption encode_on_cluster 1"
MANIFEST = "manifest.json"
SHARDS = "shards"
CODES, NAMES, FAILED = "codes.npy", "names.txt", "failed.txt"
LOCK = "encode.lock"

# the members of a shard file (np.load(shard)[name])
SHARD_ARRAYS = ("codes", "index", "paths", "names", "failed_index", "failed_path",
                "failed_message", "shard", "manifest")


def require_dask():
    """The ``distributed`` module; :class:`UserError` saying how to install it if missing."""
    try:
        import distributed
    except ImportError as exc:
        raise UserError("%s (%s)" % (DASK_MISSING, exc))
    return distributed


# ---- the photos, the shards, the manifest (client side, no Dask needed)

def read_list_file(path):
    """Paths listed in a text file: one a line, blank lines and ``#`` comments skipped.

    Relative paths are relative to the list file's folder.
    """
    path = os.path.abspath(os.fspath(path))
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except UnicodeDecodeError:
        raise UserError("%s is neither a folder, a photo nor a text file listing photos" % path)
    except OSError as exc:
        raise UserError("cannot read the list of photos %s (%s)" % (path, exc.strerror or exc))
    return [_resolve(line.strip(), os.path.dirname(path)) for line in lines
            if line.strip() and not line.strip().startswith("#")]


def _resolve(path, base):
    """``path`` made absolute against ``base`` (user-expanded, normalised).

    >>> _resolve("a/../b.jpg", "/photos")
    '/photos/b.jpg'
    >>> _resolve("/x/c.jpg", "/photos")
    '/x/c.jpg'
    """
    return os.path.normpath(os.path.join(base, os.path.expanduser(path)))


def collect_photos(photos):
    """The photos to encode: sorted, unique, absolute paths.

    ``photos``: a folder (its image files, by extension; not its subfolders),
    a photo file, a text file listing photos (see :func:`read_list_file`), or
    a sequence of paths. Raises :class:`UserError` if there is nothing to
    encode. Whether each file is a readable image is found out when encoding.
    """
    if isinstance(photos, (str, bytes, os.PathLike)):
        p = os.path.abspath(os.path.expanduser(os.fsdecode(photos)))
        if os.path.isdir(p):
            paths = list_images(p)
        elif not os.path.exists(p):
            raise UserError("%s does not exist (give a folder of photos or a list file)" % p)
        elif p.lower().endswith(IMAGE_EXTENSIONS):
            paths = [p]
        else:
            paths = read_list_file(p)
    else:
        paths = [_resolve(os.fsdecode(x), os.getcwd()) for x in photos]
    paths = sorted(set(paths))
    if not paths:
        raise UserError("no photos to encode in %s (looked for files ending in %s)"
                        % (photos, " ".join(IMAGE_EXTENSIONS)))
    for path in paths:
        if "\n" in path or "\r" in path:
            raise UserError("photo path %r has a line break: rename the file" % path)
    return paths


def photo_names(paths):
    """The names of ``names.txt``: each path relative to the photos' common folder.

    >>> photo_names(["/d/a/1.jpg", "/d/a/2.jpg"])
    ['1.jpg', '2.jpg']
    >>> photo_names(["/d/a/1.jpg", "/d/b/c/2.jpg"])
    ['a/1.jpg', 'b/c/2.jpg']
    """
    if not paths:
        return []
    root = os.path.commonpath([os.path.dirname(p) for p in paths])
    return [os.path.relpath(p, root) for p in paths]


def shard_ranges(n, shard_size):
    """``[(start, stop)]`` of the shards of ``n`` photos: consecutive, ``shard_size`` each.

    >>> shard_ranges(10, 4)
    [(0, 4), (4, 8), (8, 10)]
    >>> shard_ranges(0, 4)
    []
    """
    shard_size = int(shard_size)
    if shard_size < 1:
        raise UserError("the shard size must be at least 1, got %d" % shard_size)
    return [(start, min(start + shard_size, n)) for start in range(0, n, shard_size)]


def shard_path(out_dir, shard):
    """The file of shard number ``shard`` in ``out_dir``.

    >>> shard_path("out", 12)
    'out/shards/shard-00012.npz'
    """
    return os.path.join(os.fspath(out_dir), SHARDS, "shard-%05d.npz" % shard)


def model_identity(model_path):
    """What identifies a model file: its name, size and sha256."""
    return {"file": os.path.basename(model_path), "size": os.path.getsize(model_path),
            "sha256": file_digest(model_path)}


def make_manifest(paths, encoder, model, tap, tap_shape, shard_size, keep_aspect=False,
                  encoder_options=None):
    """The manifest of a run: everything its codes depend on (a JSON-ready dict).

    ``model`` is :func:`model_identity` of the model file; ``encoder_options``
    the keyword arguments of ``get_encoder``. The batch size is left out: it
    changes how photos are grouped, not which photos are encoded.

    >>> m = make_manifest(["/p/a.jpg"], "mobilenet_v2", {"file": "m.tflite", "size": 1,
    ...                   "sha256": "00"}, "logits", (1001,), 256)
    >>> same = manifest_digest(m) == manifest_digest(json.loads(json.dumps(m)))
    >>> m["tap_shape"], m["n_photos"], same
    ([1001], 1, True)
    """
    return {"format": MANIFEST_FORMAT, "encoder": encoder,
            "encoder_options": dict(sorted((encoder_options or {}).items())),
            "model": dict(model), "tap": tap,
            "tap_shape": [int(s) for s in tap_shape], "shard_size": int(shard_size),
            "keep_aspect": bool(keep_aspect), "n_photos": len(paths),
            "paths": [os.fspath(p) for p in paths]}


def manifest_digest(manifest):
    """sha256 of the manifest's canonical JSON: the run's identity, stored in every shard."""
    text = json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _difference(old, new):
    """What differs between two manifests, in words (for the refusal).

    >>> a = {"tap": "logits", "paths": ["/a.jpg"]}
    >>> _difference(a, dict(a, tap="pool"))
    'tap logits, not pool'
    >>> _difference(a, dict(a, paths=["/a.jpg", "/b.jpg"]))
    'photo list (1 photos, not 2)'
    """
    if not isinstance(old, dict):
        return "manifest (unreadable)"
    labels = [("format", "format"), ("encoder", "encoder"),
              ("encoder_options", "encoder options"), ("tap", "tap"),
              ("tap_shape", "tap shape"), ("shard_size", "shard size"),
              ("keep_aspect", "keep-aspect setting")]
    for key, label in labels:
        if old.get(key) != new.get(key):
            return "%s %s, not %s" % (label, old.get(key), new.get(key))
    if old.get("model") != new.get("model"):
        o, n = old.get("model") or {}, new.get("model") or {}
        return "model file (%s sha256 %.12s, not %s sha256 %.12s)" % (
            o.get("file"), o.get("sha256"), n.get("file"), n.get("sha256"))
    if old.get("paths") != new.get("paths"):
        o, n = old.get("paths") or [], new.get("paths") or []
        if len(o) != len(n):
            return "photo list (%d photos, not %d)" % (len(o), len(n))
        first = next(i for i, (a, b) in enumerate(zip(o, n)) if a != b)
        return "photo list (photo %d is %s, not %s)" % (first, o[first], n[first])
    return "manifest"


# ---- the workers' side

_ENCODERS = {}   # (encoder, model path, sha256, options JSON) -> (encoder, lock)
_ENCODERS_LOCK = threading.Lock()
_BUILDS = collections.Counter()   # encoders built by this process, by key


def _where():
    """This process, for messages: ``worker tcp://... (host, pid N)``."""
    try:
        from distributed import get_worker
        address = get_worker().address
    except (ImportError, ValueError):
        address = "process"
    return "%s (%s, pid %d)" % (address, socket.gethostname(), os.getpid())


def worker_encoder(encoder, model_path, model_sha256=None, options=None):
    """This process's encoder, built and compiled on first use, then reused.

    The cache is per process, so a Dask worker (one process) compiles the
    encoder once, whatever number of shards it runs; Theano's own compile
    cache (``THEANO_FLAGS``' ``base_compiledir``, inherited by local workers)
    makes that compile fast after the first run on a machine. ``model_sha256``
    (the client's model file) is checked against this machine's file;
    ``options`` are keyword arguments of ``get_encoder``.

    Returns ``(encoder, lock)``: the lock serialises calls to one compiled
    function (Theano functions are not thread-safe); a worker with more
    threads gains nothing, use more worker processes instead.
    """
    options = dict(options or {})
    key = (encoder, os.fspath(model_path), model_sha256, json.dumps(options, sort_keys=True))
    with _ENCODERS_LOCK:
        entry = _ENCODERS.get(key)
        if entry is None:
            try:
                enc = get_encoder(encoder, model_path, **options)
            except UserError as exc:
                raise UserError("worker %s: %s" % (_where(), exc))
            if model_sha256 is not None and file_digest(model_path) != model_sha256:
                raise UserError("worker %s: model file %s is not the client's (sha256 %.12s...): "
                                "every worker needs the same model file at the same path"
                                % (_where(), model_path, model_sha256))
            entry = _ENCODERS[key] = (enc.compile(), threading.Lock())
            _BUILDS[key] += 1
    return entry


def encode_shard(shard, start, paths, encoder, model_path, model_sha256, tap,
                 batch_size=32, keep_aspect=False, encoder_options=None, before_shard=None):
    """Encode one shard (photos ``start .. start + len(paths)``) on this worker.

    ``before_shard(shard, paths)``, if given, runs first (tests use it to
    kill a worker mid-run). Returns a dict: ``codes`` float32 ``(m, *shape)``,
    ``index`` (the m photos' global indices), ``failed`` ``[(index, path,
    message)]``, and ``worker``/``builds`` (this process and how many
    encoders it has built: 1 however many shards it ran).
    """
    if before_shard is not None:
        before_shard(shard, list(paths))
    enc, lock = worker_encoder(encoder, model_path, model_sha256, encoder_options)
    with lock:
        result = enc.encode(list(paths), taps=tap, batch_size=batch_size, progress=False,
                            skip_unreadable=True, keep_aspect=keep_aspect)
    return {"shard": shard, "codes": result[tap],
            "index": [start + i for i in result.kept],
            "failed": [(start + i, os.fspath(item), message)
                       for i, item, message in result.failed],
            "worker": "%s pid %d" % (socket.gethostname(), os.getpid()),
            "builds": sum(_BUILDS.values())}


# ---- shard files

def _write_npz(f, arrays):
    """``np.savez`` into file object ``f``, byte for byte the same for the same arrays.

    (``np.savez`` stamps each member with the current time.)
    """
    with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            with zf.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


def _strings(values):
    return np.array([str(v) for v in values], dtype=str) if len(values) \
        else np.zeros(0, dtype="<U1")


def _check_result(out, shard, start, stop, tap_shape):
    """The worker's answer for a shard, checked: every photo once, codes of the right shape."""
    codes = np.ascontiguousarray(out["codes"], dtype=np.float32)
    index = np.asarray(out["index"], dtype=np.int64)
    failed_index = np.asarray([i for i, _, _ in out["failed"]], dtype=np.int64)
    if codes.shape != (len(index),) + tuple(tap_shape):
        raise RuntimeError("shard %d: the worker returned codes %s for %d photos, expected %s"
                           % (shard, codes.shape, len(index), (len(index),) + tuple(tap_shape)))
    if sorted(index.tolist() + failed_index.tolist()) != list(range(start, stop)):
        raise RuntimeError("shard %d: the worker's photos are not photos %d to %d, each once"
                           % (shard, start, stop - 1))
    return codes, index, failed_index


def write_shard(out_dir, shard, start, stop, out, paths, names, digest, tap_shape):
    """Write a worker's answer for ``shard`` to its file, atomically."""
    codes, index, failed_index = _check_result(out, shard, start, stop, tap_shape)
    arrays = {"codes": codes, "index": index,
              "paths": _strings([paths[i] for i in index]),
              "names": _strings([names[i] for i in index]),
              "failed_index": failed_index,
              "failed_path": _strings([p for _, p, _ in out["failed"]]),
              "failed_message": _strings([m for _, _, m in out["failed"]]),
              "shard": np.int64(shard), "manifest": np.str_(digest)}
    atomic_write(shard_path(out_dir, shard), lambda f: _write_npz(f, arrays))


def read_shard(out_dir, shard, start, stop, digest, tap_shape, codes=False):
    """A finished shard's arrays (``codes`` only if asked), or None if it is not finished.

    Not finished: missing, unreadable, of another manifest, or not covering
    photos ``start .. stop - 1`` exactly once.
    """
    try:
        with np.load(shard_path(out_dir, shard), allow_pickle=False) as z:
            if str(z["manifest"]) != digest or int(z["shard"]) != shard:
                return None
            meta = {k: z[k] for k in ("index", "failed_index", "failed_path", "failed_message")}
            if codes:
                meta["codes"] = z["codes"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    covered = sorted(meta["index"].tolist() + meta["failed_index"].tolist())
    if covered != list(range(start, stop)):
        return None
    if codes and meta["codes"].shape != (len(meta["index"]),) + tuple(tap_shape):
        return None
    return meta


# ---- the run

ClusterRun = collections.namedtuple(
    "ClusterRun", "out_dir codes_path names_path failed_path n_photos n_encoded failed "
                  "n_shards shards_encoded encoder_builds")
ClusterRun.__doc__ = """What :func:`encode_on_cluster` did.

``codes_path``/``names_path``/``failed_path``: the gathered outputs;
``n_photos`` listed, ``n_encoded`` rows of codes, ``failed`` ``[(path,
message)]`` of the unreadable photos; ``n_shards`` in all, ``shards_encoded``
the shard numbers encoded by this call (the others were already done);
``encoder_builds`` ``{worker: encoders built by that worker process}`` of the
workers that ran shards in this call (1 each: compiled once per worker).
"""


def _prepare_out_dir(out_dir, manifest, overwrite):
    """Write the manifest first; refuse another run's folder unless ``overwrite``."""
    os.makedirs(os.path.join(out_dir, SHARDS), exist_ok=True)
    remove_stale_temporaries(out_dir)
    remove_stale_temporaries(os.path.join(out_dir, SHARDS))
    path = os.path.join(out_dir, MANIFEST)
    if os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as f:
                old = json.load(f)
        except (OSError, ValueError):
            old = "unreadable"
        if old == manifest and not overwrite:
            return                      # the same run: go on with its shards
        if old != manifest and not overwrite:
            raise UserError("%s holds another run (%s); pass --overwrite to start over, "
                            "or choose another --out" % (out_dir, _difference(old, manifest)))
        start_over = True
    else:
        # no manifest: leftover shards are reused only if they carry this manifest's digest
        if not overwrite and any(os.path.exists(os.path.join(out_dir, n))
                                 for n in (CODES, NAMES)):
            raise UserError("%s holds %s or %s but no %s: not a folder of this command; "
                            "choose another --out or pass --overwrite"
                            % (out_dir, CODES, NAMES, MANIFEST))
        start_over = overwrite
    if start_over:   # nothing of an earlier run may be taken for this one's
        shards = os.path.join(out_dir, SHARDS)
        for name in os.listdir(shards):
            if name.startswith("shard-") and name.endswith(".npz"):
                os.unlink(os.path.join(shards, name))
        for name in (CODES, NAMES, FAILED, MANIFEST):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(out_dir, name))
    atomic_write(path, lambda f: f.write(json.dumps(manifest, indent=1, ensure_ascii=False)
                                         + "\n"), text=True)


@contextlib.contextmanager
def _cluster(client, n_workers):
    """``client``, or a Client of a new LocalCluster of ``n_workers`` processes (closed after)."""
    if client is not None:
        yield client
        return
    distributed = require_dask()
    n_workers = int(n_workers)
    if n_workers < 1:
        raise UserError("--workers must be at least 1, got %d" % n_workers)
    with distributed.LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                                  dashboard_address=":0", silence_logs=logging.ERROR) as cluster:
        with distributed.Client(cluster) as local:
            yield local


def _run_shards(client, todo, ranges, paths, names, digest, out_dir, job, tap_shape,
                retries, progress, done_photos):
    """Submit the shards of ``todo`` and write each as it completes.

    Returns ``({worker: encoders built}, [shards encoded])``.
    """
    distributed = require_dask()
    from tqdm import tqdm
    run = uuid.uuid4().hex[:8]   # keys of this call only: no clash with a released earlier run
    futures = {}
    for shard in todo:
        start, stop = ranges[shard]
        key = "encode-shard-%05d-%s-%s" % (shard, digest[:8], run)
        future = client.submit(encode_shard, shard, start, paths[start:stop], key=key,
                               retries=retries, **job)
        futures[future.key] = future
    builds, encoded = {}, []
    try:
        with tqdm(total=len(paths), initial=done_photos, disable=not progress,
                  desc="encoding photos", unit="photo") as bar:
            for future in distributed.as_completed(list(futures.values())):
                try:
                    out = future.result()
                except distributed.KilledWorker as exc:
                    raise UserError("a shard killed every worker that ran it (%s); the finished "
                                    "shards are kept: rerun the same command to go on" % exc)
                shard = out["shard"]
                start, stop = ranges[shard]
                write_shard(out_dir, shard, start, stop, out, paths, names, digest, tap_shape)
                builds[out["worker"]] = out["builds"]
                encoded.append(shard)
                del futures[future.key]
                bar.update(stop - start)
    finally:
        if futures:   # an error or Ctrl-C: stop the rest; the written shards stay
            client.cancel(list(futures.values()))
    return builds, sorted(encoded)


def _gather(out_dir, paths, names, ranges, digest, tap_shape):
    """Shards -> codes.npy (streamed), names.txt, failed.txt, all atomic. Returns (n, failed)."""
    metas = []
    for shard, (start, stop) in enumerate(ranges):
        meta = read_shard(out_dir, shard, start, stop, digest, tap_shape)
        if meta is None:
            raise RuntimeError("shard %d (%s) is missing or not this run's after encoding"
                               % (shard, shard_path(out_dir, shard)))
        metas.append(meta)
    index = np.concatenate([m["index"] for m in metas]).astype(np.int64)
    failed = [(str(p), str(msg)) for m in metas
              for p, msg in zip(m["failed_path"], m["failed_message"])]
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype("<f4")), "fortran_order": False,
              "shape": (len(index),) + tuple(tap_shape)}

    def write_codes(f):
        np.lib.format.write_array_header_1_0(f, header)
        for shard, (start, stop) in enumerate(ranges):
            meta = read_shard(out_dir, shard, start, stop, digest, tap_shape, codes=True)
            if meta is None:
                raise RuntimeError("shard %d changed while being gathered" % shard)
            f.write(np.ascontiguousarray(meta["codes"], dtype="<f4").tobytes())

    atomic_write(os.path.join(out_dir, CODES), write_codes)
    atomic_write(os.path.join(out_dir, NAMES),
                 lambda f: f.writelines(names[i] + "\n" for i in index), text=True)
    atomic_write(os.path.join(out_dir, FAILED),
                 lambda f: f.writelines("%s\t%s\n" % (p, " ".join(m.split())) for p, m in failed),
                 text=True)
    return len(index), failed


def encode_on_cluster(photos, out_dir, client=None, encoder="mobilenet_v2", model_path=None,
                      tap="logits", shard_size=256, batch_size=32, n_workers=2,
                      keep_aspect=False, overwrite=False, progress=True, retries=2,
                      encoder_options=None, before_shard=None):
    """Encode photos on a Dask cluster into ``out_dir``; resumes an interrupted run.

    Parameters
    ----------
    photos : folder, photo, list file or sequence of paths
        See :func:`collect_photos`; the photos are encoded in sorted path order.
    out_dir : str
        Gets ``manifest.json``, ``shards/``, then ``codes.npy``, ``names.txt``
        and ``failed.txt`` (see the module's doc). Only this process writes it.
    client : distributed.Client, optional
        A connected client (``Client("tcp://host:8786")``); None: a
        ``LocalCluster`` of ``n_workers`` processes of one thread each,
        closed at the end.
    encoder, model_path : str
        The encoder's registry name and model file (None: its default path);
        every worker needs the same file at the same path.
    encoder_options : dict, optional
        Keyword arguments of ``get_encoder`` (JSON values; part of the
        manifest), e.g. ``{"fake_quant": False}`` for MobileNetV2.
    tap : str
        The feature tap to keep (one of the encoder's taps).
    shard_size : int
        Photos per task and per shard file.
    batch_size : int
        Photos per forward pass on a worker.
    keep_aspect : bool
        Centre-crop instead of stretching (see ``load_image``).
    overwrite : bool
        Start over in an ``out_dir`` that holds another run (or this one).
    progress : bool
        A tqdm bar of photos done (on stderr).
    retries : int
        Times Dask reruns a shard whose task raised (a worker that dies is
        always replaced, up to Dask's ``allowed-failures``).
    before_shard : callable, optional
        ``before_shard(shard, paths)``, run on the worker before each shard
        (instrumentation, tests).

    Returns
    -------
    ClusterRun
    """
    paths = collect_photos(photos)
    require_dask()
    batch_size = int(batch_size)
    if batch_size < 1:
        raise UserError("the batch size must be at least 1, got %d" % batch_size)
    ranges = shard_ranges(len(paths), shard_size)
    model_path = os.path.abspath(os.path.expanduser(
        os.fspath(model_path) if model_path is not None else default_model_path(encoder)))
    encoder_options = dict(encoder_options or {})
    try:
        json.dumps(encoder_options)
        # checks the name, the options and the file; compiles nothing
        enc = get_encoder(encoder, model_path, **encoder_options)
    except TypeError as exc:
        raise UserError("bad encoder options %s for %s (%s)" % (encoder_options, encoder, exc))
    if not isinstance(tap, str):
        raise UserError("tap must be one tap name, not %r" % (tap,))
    enc.check_taps(tap)
    tap_shape = tuple(int(s) for s in enc.tap_shapes[tap])
    model = model_identity(model_path)
    manifest = make_manifest(paths, encoder, model, tap, tap_shape, shard_size, keep_aspect,
                             encoder_options)
    digest = manifest_digest(manifest)
    names = photo_names(paths)
    out_dir = os.path.abspath(os.path.expanduser(os.fspath(out_dir)))
    os.makedirs(out_dir, exist_ok=True)
    with exclusive_lock(os.path.join(out_dir, LOCK), out_dir):
        _prepare_out_dir(out_dir, manifest, overwrite)
        todo = [s for s, (start, stop) in enumerate(ranges)
                if read_shard(out_dir, s, start, stop, digest, tap_shape) is None]
        done_photos = len(paths) - sum(ranges[s][1] - ranges[s][0] for s in todo)
        builds, encoded = {}, []
        if todo:
            job = {"encoder": encoder, "model_path": model_path, "model_sha256": model["sha256"],
                   "tap": tap, "batch_size": batch_size, "keep_aspect": bool(keep_aspect),
                   "encoder_options": encoder_options,
                   "before_shard": before_shard}
            with _cluster(client, n_workers) as c:
                builds, encoded = _run_shards(c, todo, ranges, paths, names, digest, out_dir,
                                              job, tap_shape, int(retries), progress, done_photos)
        n_encoded, failed = _gather(out_dir, paths, names, ranges, digest, tap_shape)
    return ClusterRun(out_dir, os.path.join(out_dir, CODES), os.path.join(out_dir, NAMES),
                      os.path.join(out_dir, FAILED), len(paths), n_encoded, failed, len(ranges),
                      encoded, builds)


# ---- the command

class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Says the default of the options that have one (not of the flags and required ones)."""

    def _get_help_string(self, action):
        if action.default in (None, False) or action.required:
            return action.help
        return super()._get_help_string(action)


def parse_options(items):
    """``["NAME=VALUE", ...]`` -> dict; VALUE is JSON if it parses, else text.

    >>> parse_options(["fake_quant=false", "conv_impl=corrmm", "n=2"])
    {'fake_quant': False, 'conv_impl': 'corrmm', 'n': 2}
    """
    options = {}
    for item in items:
        name, eq, value = item.partition("=")
        if not eq or not name.strip():
            raise UserError("--encoder-option wants NAME=VALUE, got %r" % item)
        try:
            options[name.strip()] = json.loads(value)
        except ValueError:
            options[name.strip()] = value
    return options


def build_parser():
    p = argparse.ArgumentParser(
        prog="python -m lasagne_caption.encoders.distributed",
        formatter_class=_HelpFormatter,
        description="Encode a folder (or a list) of photos into codes on a Dask cluster, in "
                    "shards of consecutive photos; run it again after an interruption and it "
                    "encodes only the shards not yet done. Writes OUT/manifest.json first, "
                    "OUT/shards/shard-NNNNN.npz as shards finish, then OUT/codes.npy (float32, "
                    "one row per readable photo, in path order), OUT/names.txt and "
                    "OUT/failed.txt (unreadable photos: path<TAB>reason).")
    p.add_argument("photos", metavar="PHOTOS",
                   help="a folder of photos (its image files, sorted; not subfolders), or a text "
                        "file listing photo paths, one a line (relative to the list's folder; "
                        "blank lines and # comments skipped)")
    p.add_argument("--out", required=True, metavar="OUT_DIR",
                   help="output folder (only this machine writes it)")
    p.add_argument("--scheduler", metavar="ADDRESS", default=None,
                   help="address of a running Dask scheduler (tcp://HOST:8786); each worker needs "
                        "lasagne-caption installed and the photos and model file at the same "
                        "paths. Default: start a local cluster of --workers processes")
    p.add_argument("--workers", type=int, default=2, metavar="N",
                   help="worker processes of the local cluster, one thread each; each compiles "
                        "the encoder once (ignored with --scheduler)")
    p.add_argument("--encoder", default="mobilenet_v2",
                   help="encoder name (mobilenet_v2 or googlenet)")
    p.add_argument("--encoder-option", action="append", default=[], metavar="NAME=VALUE",
                   dest="encoder_options",
                   help="a keyword argument of the encoder (repeatable; VALUE read as JSON, "
                        "else as text), e.g. fake_quant=false for mobilenet_v2; part of the "
                        "manifest")
    p.add_argument("--model", default=None, metavar="PATH",
                   help="the encoder's model file (default: its file in "
                        "~/.cache/lasagne-caption/models/); same path on every worker")
    p.add_argument("--tap", default="logits",
                   help="the encoder's feature tap to keep, e.g. logits (1001 values) or pool "
                        "(1280) of mobilenet_v2; part of the manifest")
    p.add_argument("--shard-size", type=int, default=256, metavar="N",
                   help="photos per task and per shard file; part of the manifest")
    p.add_argument("--batch-size", type=int, default=32, metavar="N",
                   help="photos per forward pass on a worker")
    p.add_argument("--keep-aspect", action="store_true",
                   help="scale the shorter side and crop the centre instead of stretching")
    p.add_argument("--retries", type=int, default=2, metavar="N",
                   help="times a shard whose task raised an error is retried (a worker that "
                        "dies is replaced and its shards rerun anyway)")
    p.add_argument("--overwrite", action="store_true",
                   help="start over in an OUT_DIR that holds another run (another photo list, "
                        "model, tap or shard size); without it such a folder is refused")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    options = parse_options(args.encoder_options)
    distributed = require_dask()
    client = None
    if args.scheduler:
        try:
            client = distributed.Client(args.scheduler, timeout="20s")
        except (OSError, ValueError, TypeError) as exc:
            raise UserError("cannot connect to the Dask scheduler %s (%s)"
                            % (args.scheduler, str(exc).splitlines()[0] if str(exc) else
                               type(exc).__name__))
        if not client.scheduler_info().get("workers"):
            print("the scheduler %s has no workers yet: waiting for some (start them with "
                  "`dask worker %s --nthreads 1`)" % (args.scheduler, args.scheduler),
                  file=sys.stderr)
    try:
        run = encode_on_cluster(args.photos, args.out, client=client, encoder=args.encoder,
                                encoder_options=options,
                                model_path=args.model, tap=args.tap,
                                shard_size=args.shard_size, batch_size=args.batch_size,
                                n_workers=args.workers, keep_aspect=args.keep_aspect,
                                overwrite=args.overwrite, progress=not args.no_progress,
                                retries=args.retries)
    except KeyboardInterrupt:
        print("interrupted: the finished shards are kept in %s; run the same command again "
              "to go on" % os.path.join(args.out, SHARDS), file=sys.stderr)
        return 130
    finally:
        if client is not None:
            client.close()
    shape = np.load(run.codes_path, mmap_mode="r").shape
    print("encoded %d of %d photos: %s float32 %s, names in %s; %d unreadable (%s); "
          "%d shards, %d encoded now" % (run.n_encoded, run.n_photos, run.codes_path, shape,
                                         run.names_path, len(run.failed), run.failed_path,
                                         run.n_shards, len(run.shards_encoded)))
    return 0


if __name__ == "__main__":
    # run the package's copy of this module, not this __main__ one: the functions
    # sent to the workers must be importable there by their module's name
    from lasagne_caption.encoders.distributed import main as _main
    run_cli(_main)
