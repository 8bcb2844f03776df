"""lasagne_caption.files: atomic writes, their permissions, stale temporaries, locks."""
import os
import stat
import subprocess
import sys

import pytest

from lasagne_caption import files
from lasagne_caption.errors import UserError
from lasagne_caption.files import (atomic_write, exclusive_lock, remove_stale_temporaries,
                                   temporary_prefix)


def dead_pid():
    """The pid of a process that has exited (and was reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def mode_of(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("umask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_write_gives_the_umask_permissions_like_open(tmp_path, umask, expected):
    old = os.umask(umask)
    try:
        atomic_write(tmp_path / "new.bin", lambda f: f.write(b"x"))
        with open(tmp_path / "by_open.bin", "wb") as f:
            f.write(b"x")
        assert files.current_umask() == umask
    finally:
        os.umask(old)
    assert mode_of(tmp_path / "new.bin") == expected == mode_of(tmp_path / "by_open.bin")


def test_atomic_write_keeps_the_mode_of_the_file_it_replaces(tmp_path):
    path = tmp_path / "shared.txt"
    path.write_text("old")
    os.chmod(path, 0o640)
    atomic_write(path, lambda f: f.write("new"), text=True)
    assert path.read_text() == "new" and mode_of(path) == 0o640


def test_temporary_names_carry_the_writer_and_failures_leave_nothing(tmp_path):
    seen = []

    def write(f):
        seen.extend(os.listdir(tmp_path))
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "a.params", write)
    assert os.listdir(tmp_path) == []
    assert seen[0].startswith("a.params.%d" % os.getpid()) and seen[0].endswith(".tmp")
    assert seen[0].startswith(temporary_prefix(tmp_path / "a.params"))


def fake_temporary(folder, name, pid, start=123):
    path = folder / (temporary_prefix(name, pid, start) + "abcd_123.tmp")
    path.write_bytes(b"half a file")
    return path


def test_remove_stale_temporaries_only_removes_dead_writers_files(tmp_path):
    dead = dead_pid()
    stale = fake_temporary(tmp_path, "run.params", dead)
    stale_no_start = fake_temporary(tmp_path, "run.params", dead, start=None)
    other_file_stale = fake_temporary(tmp_path, "run.loss.png", dead)
    # this process, under its real start time: a write in progress, kept
    own = tmp_path / (temporary_prefix("run.params") + "zzzzzzzz.tmp")
    own.write_bytes(b"")
    # a live process (a sleeping child) under its real start time: kept
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = fake_temporary(tmp_path, "run.params", child.pid, files._start_time(child.pid))
        # the same pid but another start time: the pid was reused, the writer is dead
        reused = fake_temporary(tmp_path, "run.params", child.pid, files._start_time(child.pid) + 1)
        user_files = [tmp_path / n for n in ("run.params", "run.params.tmp", "notes.123.tmp",
                                             "run.params.%d.abc.tmp" % dead)]
        for p in user_files:
            p.write_text("mine")
        removed = remove_stale_temporaries(tmp_path / "run.params")
        assert sorted(removed) == sorted(map(str, [stale, stale_no_start, reused]))
        assert other_file_stale.exists()            # another file's temporary: not asked for
        assert remove_stale_temporaries(tmp_path) == [str(other_file_stale)]  # a folder: all
        assert live.exists() and own.exists() and all(p.exists() for p in user_files)
    finally:
        child.kill()
        child.wait()
    assert remove_stale_temporaries(tmp_path / "run.params") == [str(live)]
    assert own.exists()
    assert remove_stale_temporaries(tmp_path / "missing" / "x") == []


def test_a_killed_writer_leaves_a_temporary_that_is_then_removed(tmp_path):
    # a real writer killed in the middle of atomic_write
    script = ("import os, signal, sys\n"
              "from lasagne_caption.files import atomic_write\n"
              "def write(f):\n"
              "    f.write(b'x' * 1000); f.flush()\n"
              "    os.kill(os.getpid(), signal.SIGKILL)\n"
              "atomic_write(sys.argv[1], write)\n")
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "w.params")])
    assert proc.wait() == -9
    left = os.listdir(tmp_path)
    assert len(left) == 1 and left[0].startswith("w.params.%d-" % proc.pid)
    assert remove_stale_temporaries(tmp_path / "w.params") == [str(tmp_path / left[0])]
    assert os.listdir(tmp_path) == []


def test_exclusive_lock_refuses_a_second_holder_and_is_released(tmp_path):
    lock = tmp_path / "out.lock"
    with exclusive_lock(lock, "out"):
        assert lock.exists()
        with pytest.raises(UserError, match="out is being written by another process"):
            with exclusive_lock(lock, "out"):
                pass
        # another process too
        code = ("import sys\nfrom lasagne_caption.files import exclusive_lock\n"
                "from lasagne_caption.errors import UserError\n"
                "try:\n    exclusive_lock(sys.argv[1], 'out').__enter__()\n"
                "except UserError as e:\n    print(e); sys.exit(3)\n")
        out = subprocess.run([sys.executable, "-c", code, str(lock)], capture_output=True,
                             text=True)
        assert out.returncode == 3 and "another process" in out.stdout
    assert not lock.exists()
    with exclusive_lock(lock, "out"):   # free again
        pass
