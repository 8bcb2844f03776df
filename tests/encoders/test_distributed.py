"""lasagne_caption.encoders.distributed: encoding photos in shards on a Dask cluster.

One LocalCluster of 2 worker processes serves the module's tests: each worker
compiles MobileNetV2 once (Theano's compile folder comes from THEANO_FLAGS,
which ``import lasagne_caption`` set in this process and the workers inherit,
so their compile is a cache hit). Photos: 12 Flickr8k photos and a text file
named ``broken.jpg``, in shards of 4 (the last shard holds only the broken file).

Codes are compared with one-process ``encoder.encode`` of the same photos:
**exactly** (bit for bit) with the same batches (4 photos; the shards are
batched as one process batches the whole list), and to float32 rounding
(1e-5 relative to the largest code) with all 12 photos in one batch, where
the BLAS may sum in another order.

The encoder runs with its defaults (:data:`OPTIONS` is empty): MobileNetV2's
NHWC C ops give the same codes whatever the batch, the process and the number
of threads, so the workers' codes equal the test process's.
"""
import functools
import json
import logging
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from lasagne_caption.encoders import distributed as dist
from lasagne_caption.encoders import get_encoder
from lasagne_caption.encoders.preprocess import list_images
from lasagne_caption.errors import UserError
from lasagne_caption.files import file_digest

N_PHOTOS = 12


#: get_encoder options of the tests: the defaults (codes equal in every process)
OPTIONS = {}


@pytest.fixture(scope="module")
def photos(tmp_path_factory, flickr8k_dir):
    """A folder of 12 Flickr8k photos and one file that is not an image."""
    folder = tmp_path_factory.mktemp("photos")
    for name in sorted(os.listdir(flickr8k_dir / "images"))[:N_PHOTOS]:
        shutil.copy(flickr8k_dir / "images" / name, folder / name)
    (folder / "broken.jpg").write_text("not a photo")
    return folder


@pytest.fixture(scope="module")
def reference(mobilenet_path, photos):
    """One-process encoding of the same photos: (codes by tap, names, failed paths, codes
    by tap in batches of 32)."""
    mobilenet = get_encoder("mobilenet_v2", mobilenet_path, **OPTIONS).compile()
    paths = list_images(photos)
    result = mobilenet.encode(paths, taps=("logits", "pool"), batch_size=4, progress=False,
                              skip_unreadable=True)
    one_batch = mobilenet.encode(paths, taps=("logits", "pool"), batch_size=32, progress=False,
                                 skip_unreadable=True)
    return (dict(result), [os.path.basename(paths[i]) for i in result.kept],
            [item for _, item, _ in result.failed], dict(one_batch))


def _compile(model_path, sha256):
    """Build and compile this worker's encoder (what its first shard would do)."""
    dist.worker_encoder("mobilenet_v2", model_path, sha256, OPTIONS)


@pytest.fixture(scope="module")
def client(mobilenet_path):
    """A LocalCluster of 2 worker processes (1 thread each) shared by the tests here.

    The workers start compiling their encoder at once, while this process
    compiles the reference's.
    """
    distributed = pytest.importorskip(
        "distributed", reason='the dask extra is not installed (pip install -e ".[dask]")')
    # set by `import lasagne_caption` (compat) unless the user chose one; the
    # worker processes inherit it and reuse the compiled C code
    assert "compiledir" in os.environ.get("THEANO_FLAGS", "")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0",
                                  silence_logs=logging.ERROR) as cluster:
        with distributed.Client(cluster) as c:
            sha256 = file_digest(mobilenet_path)
            warm = [c.submit(_compile, str(mobilenet_path), sha256, workers=[w], pure=False)
                    for w in c.scheduler_info()["workers"]]
            yield c
            del warm


def encode(client, photos, out, mobilenet_path, **kwargs):
    options = dict(client=client, model_path=mobilenet_path, tap="logits", shard_size=4,
                   batch_size=4, progress=False, encoder_options=OPTIONS)
    options.update(kwargs)
    return dist.encode_on_cluster(photos, out, **options)


def check_outputs(out, reference, tap="logits"):
    codes, names, failed, one_batch = reference
    got = np.load(out / "codes.npy")
    assert got.dtype == np.float32 and got.shape == codes[tap].shape
    # bit for bit as one process in the same batches of 4; to float32 rounding as one
    # process with its 12 photos in one batch (the BLAS may sum in another order)
    np.testing.assert_array_equal(got, codes[tap])
    np.testing.assert_allclose(got, one_batch[tap], rtol=1e-5,
                               atol=1e-5 * np.abs(one_batch[tap]).max())
    assert (out / "names.txt").read_text().splitlines() == names
    lines = (out / "failed.txt").read_text().splitlines()
    assert [line.split("\t")[0] for line in lines] == failed
    assert "broken.jpg" in lines[0] and "not an image" in lines[0]


def shard_files(out):
    return sorted((out / "shards").glob("shard-*.npz"))


def test_two_workers_give_the_codes_of_one_process(client, photos, reference, mobilenet_path,
                                                   tmp_path):
    out = tmp_path / "out"
    run = encode(client, photos, out, mobilenet_path)
    check_outputs(out, reference)
    assert (run.n_photos, run.n_encoded, run.n_shards) == (N_PHOTOS + 1, N_PHOTOS, 4)
    assert run.shards_encoded == [0, 1, 2, 3]
    assert [p.rsplit("/", 1)[1] for p, _ in run.failed] == ["broken.jpg"]
    # compiled once per worker process, however many shards it ran
    assert run.encoder_builds and set(run.encoder_builds.values()) == {1}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["tap"] == "logits" and manifest["shard_size"] == 4
    assert manifest["encoder"] == "mobilenet_v2" and manifest["encoder_options"] == OPTIONS
    assert manifest["paths"] == list_images(photos)
    assert manifest["model"]["sha256"] and manifest["model"]["file"] == mobilenet_path.name
    assert [p.name for p in shard_files(out)] == ["shard-%05d.npz" % i for i in range(4)]
    with np.load(out / "shards" / "shard-00003.npz") as last:   # only the broken file
        assert last["codes"].shape == (0, 1001) and list(last["failed_index"]) == [12]
        assert str(last["failed_path"][0]).endswith("broken.jpg")
    with np.load(out / "shards" / "shard-00001.npz") as second:
        assert list(second["index"]) == [4, 5, 6, 7]
        assert list(second["names"]) == reference[1][4:8]


def _die_once(marker_dir, shard, paths):
    """Kill this worker process the first time shard 1 runs (a marker file says it did)."""
    marker = os.path.join(marker_dir, "killed-shard-%d" % shard)
    if shard == 1 and not os.path.exists(marker):
        with open(marker, "w") as f:
            f.write("%d\n" % os.getpid())
        os._exit(13)


def test_a_worker_killed_mid_run_loses_nothing(client, photos, reference, mobilenet_path,
                                               tmp_path):
    out = tmp_path / "out"
    workers_before = set(client.scheduler_info()["workers"])
    run = encode(client, photos, out, mobilenet_path,
                 before_shard=functools.partial(_die_once, str(tmp_path)))
    killed = tmp_path / "killed-shard-1"
    assert killed.is_file()                       # the worker did die running shard 1 ...
    assert run.shards_encoded == [0, 1, 2, 3]     # ... and Dask ran it again elsewhere
    check_outputs(out, reference)
    assert run.n_encoded == N_PHOTOS and set(run.encoder_builds.values()) == {1}
    client.wait_for_workers(2, timeout=120)       # the nanny replaced the dead worker
    assert set(client.scheduler_info()["workers"]) != workers_before


def test_a_rerun_encodes_only_the_missing_shard(client, photos, reference, mobilenet_path,
                                                tmp_path):
    out = tmp_path / "out"
    encode(client, photos, out, mobilenet_path)
    before = {p.name: p.stat().st_mtime_ns for p in shard_files(out)}
    lost = out / "shards" / "shard-00002.npz"
    content = lost.read_bytes()
    lost.unlink()                                  # interrupted: shard 2 never written ...
    (out / "codes.npy").unlink()                   # ... nor the gathered outputs
    (out / "names.txt").unlink()
    run = encode(client, photos, out, mobilenet_path)
    assert run.shards_encoded == [2]
    after = {p.name: p.stat().st_mtime_ns for p in shard_files(out)}
    assert {k: v for k, v in after.items() if k != lost.name} == \
        {k: v for k, v in before.items() if k != lost.name}
    assert lost.read_bytes() == content            # same input, same file
    check_outputs(out, reference)
    run = encode(client, photos, out, mobilenet_path)     # all done: only gathers
    assert run.shards_encoded == [] and run.encoder_builds == {}
    check_outputs(out, reference)


def test_another_manifest_is_refused_unless_overwrite(client, photos, reference,
                                                      mobilenet_path, tmp_path):
    out = tmp_path / "out"
    encode(client, photos, out, mobilenet_path)
    manifest = (out / "manifest.json").read_bytes()
    with pytest.raises(UserError, match=r"another run \(tap logits, not pool\).*--overwrite") \
            as exc:
        encode(client, photos, out, mobilenet_path, tap="pool")
    assert "\n" not in str(exc.value)
    with pytest.raises(UserError, match=r"shard size 4, not 5"):
        encode(client, photos, out, mobilenet_path, shard_size=5)
    assert (out / "manifest.json").read_bytes() == manifest
    check_outputs(out, reference)                  # untouched
    run = encode(client, photos, out, mobilenet_path, tap="pool", overwrite=True)
    assert run.shards_encoded == [0, 1, 2, 3]
    check_outputs(out, reference, tap="pool")
    assert json.loads((out / "manifest.json").read_text())["tap"] == "pool"


def test_the_command_on_a_running_scheduler(client, photos, reference, mobilenet_path, tmp_path,
                                            capsys):
    out = tmp_path / "out"
    address = client.scheduler_info()["address"]
    assert dist.main([str(photos), "--out", str(out), "--scheduler", address,
                      "--model", str(mobilenet_path), "--shard-size", "4", "--batch-size", "4",
                      "--no-progress"]
                     + ["--encoder-option=%s=%s" % kv for kv in OPTIONS.items()]) == 0
    printed = capsys.readouterr().out
    assert "encoded 12 of 13 photos" in printed and "4 shards, 4 encoded now" in printed
    check_outputs(out, reference)


def test_a_list_file_of_photos(photos, tmp_path):
    (tmp_path / "sub").mkdir()
    listing = tmp_path / "sub" / "photos.txt"
    paths = list_images(photos)
    rel = os.path.relpath(paths[1], listing.parent)
    listing.write_text("# my photos\n%s\n\n%s\n%s\n" % (paths[0], rel, paths[0]))
    assert dist.collect_photos(listing) == paths[:2]          # sorted, unique, absolute
    assert dist.collect_photos(photos) == paths
    assert dist.collect_photos([paths[3], paths[2]]) == paths[2:4]
    assert dist.collect_photos(paths[0]) == paths[:1]         # one photo
    assert dist.photo_names(paths[:2]) == [os.path.basename(p) for p in paths[:2]]
    with pytest.raises(UserError, match="does not exist"):
        dist.collect_photos(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no photos to encode"):
        dist.collect_photos(tmp_path / "empty")


def test_the_help_explains_every_option():
    parser = dist.build_parser()
    text = parser.format_help()
    for action in parser._actions:
        assert action.help, action.option_strings
        for option in action.option_strings:
            assert option in text
    for option in ("--out", "--scheduler", "--workers", "--tap", "--model", "--shard-size",
                   "--batch-size", "--overwrite"):
        assert option in text


def test_without_dask_the_command_says_how_to_install_it(photos, tmp_path):
    """The module imports without dask; the command then fails with one line."""
    code = ("import runpy, sys\n"
            "sys.modules['distributed'] = sys.modules['dask'] = None   # as if not installed\n"
            "sys.argv = ['distributed', sys.argv[1], '--out', sys.argv[2]]\n"
            "runpy.run_module('lasagne_caption.encoders.distributed', run_name='__main__')\n")
    r = subprocess.run([sys.executable, "-c", code, str(photos), str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert 'pip install -e ".[dask]"' in lines[0]
    assert not (tmp_path / "out").exists()


def test_the_default_local_cluster(tmp_path):
    """Without a client: a LocalCluster of processes with one thread each, closed after."""
    pytest.importorskip("distributed")
    with dist._cluster(None, 1) as local:
        workers = local.scheduler_info()["workers"]
        assert len(workers) == 1 and [w["nthreads"] for w in workers.values()] == [1]
        assert os.getpid() not in local.run(os.getpid).values()  # worker processes
    assert local.status == "closed"
    with pytest.raises(UserError, match="at least 1"):
        with dist._cluster(None, 0):
            pass
