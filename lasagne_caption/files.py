"""Writing files so that a crash never leaves half of one, locks, and file digests.

Temporary files
---------------
:func:`atomic_write` writes ``PATH`` through a temporary file beside it named
``PATH.<pid>-<start>.<random>.tmp``: ``pid`` is the writer's process id and
``start`` its start time (clock ticks since boot, from ``/proc``; the name has
only ``<pid>`` where ``/proc`` is missing). A ``kill -9`` during a save leaves
that temporary behind; :func:`remove_stale_temporaries` removes the ones whose
writer is no longer running, and never those of a live process (same pid and
same start time). The check is made on this machine's process table, so it
assumes that the processes writing into one folder run on the same machine and
in the same pid namespace (one container).
"""
import contextlib
import errno
import hashlib
import os
import pathlib
import re
import tempfile

from .errors import UserError

# the name of a temporary of PATH is BASENAME + "." + what this matches;
# the random part is mkstemp's (8 characters of [a-z0-9_])
_TEMPORARY = re.compile(r"(\d+)(?:-(\d+))?\.[a-z0-9_]{8}\.tmp")
_ANY_TEMPORARY = re.compile(r".+\.(\d+)(?:-(\d+))?\.[a-z0-9_]{8}\.tmp")


def _start_time(pid):
    """Start time of process ``pid`` in clock ticks since boot (None: unknown/gone)."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            stat = f.read()
    except OSError:
        return None
    try:
        # the command name (field 2) may hold spaces and parentheses: count after the last ')'
        return int(stat[stat.rindex(b")") + 2:].split()[19])
    except (ValueError, IndexError):
        return None


_OWN = {}


def _own_tag():
    """``<pid>-<start>`` of this process (re-read after a fork)."""
    pid = os.getpid()
    if _OWN.get("pid") != pid:
        start = _start_time(pid)
        _OWN.update(pid=pid, tag="%d" % pid if start is None else "%d-%d" % (pid, start))
    return _OWN["tag"]


def temporary_prefix(path, pid=None, start=None):
    """The prefix of the temporaries of ``path`` written by a process.

    ``pid``/``start`` default to this process; tests use them to make the
    name a dead process would have used.
    """
    base = os.path.basename(os.fspath(path))
    if pid is None:
        return "%s.%s." % (base, _own_tag())
    return "%s.%d." % (base, pid) if start is None else "%s.%d-%d." % (base, pid, start)


def current_umask():
    """The process umask, read without changing it where ``/proc`` allows."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)   # no /proc: the classic set-and-restore
    os.umask(mask)
    return mask


def atomic_write(path, write, text=False):
    """Call ``write(file)`` on a temporary file beside ``path``, fsync, rename.

    Readers see the old file or the new one, never a mix; a failure leaves
    the old file and removes the temporary; a kill leaves a temporary that
    :func:`remove_stale_temporaries` recognises. ``text=True`` opens the file
    as UTF-8 text instead of bytes.

    The file gets the permissions ``open()`` would give it: those of the file
    it replaces, or ``0o666`` minus the umask for a new file (not
    ``mkstemp``'s ``0o600``).
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    try:
        mode = os.stat(path).st_mode & 0o7777
    except OSError:
        mode = 0o666 & ~current_umask()
    fd, tmp = tempfile.mkstemp(prefix=temporary_prefix(path), suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, mode)
        with (os.fdopen(fd, "w", encoding="utf-8", newline="") if text
              else os.fdopen(fd, "wb")) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)   # make the rename itself durable
    finally:
        os.close(dir_fd)


def _writer_is_alive(pid, start):
    if pid == os.getpid():
        own = _start_time(pid)
        return start is None or own is None or own == start
    if os.path.exists("/proc/self/stat"):
        actual = _start_time(pid)
        if actual is None:
            return os.path.exists("/proc/%d" % pid)   # unreadable stat: assume alive
        return start is None or actual == start       # another start: the pid was reused
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:   # EPERM: someone else's live process
        return True
    return True


def remove_stale_temporaries(path):
    """Remove temporaries of ``path`` (or, for a folder, of any file in it) left by dead writers.

    Only names made by :func:`atomic_write` are considered
    (``NAME.<pid>-<start>.<random>.tmp``), only regular files are removed, and
    only when the process that wrote them is gone (its pid is not running, or
    runs a process started at another time). Temporaries of live processes,
    this one included, are left alone.

    Returns
    -------
    list of str
        The removed paths.
    """
    path = os.path.abspath(os.fspath(path))
    if os.path.isdir(path):
        directory, base = path, None
    else:
        directory, base = os.path.dirname(path), os.path.basename(path)
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    removed = []
    for name in names:
        if base is not None:
            if not name.startswith(base + "."):
                continue
            match = _TEMPORARY.fullmatch(name[len(base) + 1:])
        else:
            match = _ANY_TEMPORARY.fullmatch(name)
        if match is None:
            continue
        pid, start = int(match.group(1)), match.group(2)
        if _writer_is_alive(pid, None if start is None else int(start)):
            continue
        full = os.path.join(directory, name)
        try:
            if not os.path.isfile(full) or os.path.islink(full):
                continue
            os.unlink(full)
            removed.append(full)
        except FileNotFoundError:
            pass
    return removed


@contextlib.contextmanager
def exclusive_lock(path, what):
    """Hold an exclusive ``flock`` on the file ``path`` for the ``with`` block.

    A second process (or a second lock in this one) gets a one-line
    :class:`UserError` instead of waiting. The lock file is removed on exit;
    the kernel releases the lock if the process dies, and the next holder
    takes the lock file over.

    Parameters
    ----------
    path : str
        The lock file, e.g. ``data/flickr8k.lock``.
    what : str
        What is being protected, for the message (``"data/flickr8k"``).
    """
    import fcntl
    path = os.fspath(path)
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~current_umask())
        except OSError as exc:
            raise UserError("%s: cannot create the lock file (%s)" % (path, exc.strerror))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise UserError("%s is being written by another process (it holds %s); "
                                "wait for it to finish" % (what, path))
            raise UserError("%s: cannot lock (%s)" % (path, exc.strerror))
        # the previous holder may have removed the file between our open and
        # flock: then we locked a file nobody else sees; start over
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    content = os.read(fd, 64)
    if content and not re.fullmatch(rb"\d+\n", content):
        os.close(fd)   # a file of the user's that happens to have the name: leave it
        raise UserError("%s exists and is not a lock file of this toolkit; move it away"
                        % path)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, ("%d\n" % os.getpid()).encode(), 0)
        yield path
    finally:
        try:
            os.unlink(path)   # while still holding the lock: see the check above
        except OSError:
            pass
        os.close(fd)


def is_safe_archive_member(name):
    """Whether an archive member's name stays inside the folder it is extracted to.

    Refuses absolute names (``/etc/x``, ``\\x``), ``..`` components and
    drive letters or other ``:``-names (``C:x``): tar and zip path traversal.
    """
    parts = pathlib.PurePosixPath(name).parts
    return not name.startswith(("/", "\\")) and ".." not in parts and ":" not in name


def file_digest(path, algorithm="sha256"):
    """Hex digest of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
