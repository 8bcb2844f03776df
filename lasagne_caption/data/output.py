"""The folder a prepare command writes: checked, locked, staged, then renamed into place.

:class:`DatasetOutput` decides whether ``--out`` may be written at all (it
must not overlap an input; an existing folder is replaced only with
``--force`` and only when it is a dataset ``prepare`` made), holds
``OUT.lock`` while a prepare runs, cleans up after a killed run, and hands
out the staging folder that :func:`~lasagne_caption.data.dataset.write_dataset`
writes into.
"""
import contextlib
import os
import pathlib
import shutil
import tempfile

from ..errors import UserError
from ..files import current_umask, exclusive_lock
from .dataset import DATASET_FILES, _describe_dataset
from .readers import _warn


def _inside(inner, outer):
    """Whether real path ``inner`` is ``outer`` or below it."""
    return os.path.commonpath([inner, outer]) == outer


class DatasetOutput:
    """The folder a prepare command writes, checked before anything is read.

    * ``--out`` must not be, contain or lie inside any input (the source, the
      codes, the names, the encoder model);
    * an existing ``--out`` is replaced only with ``force`` and only when it
      is a dataset this package made (its ``dataset.json``) holding nothing but
      the layout's files; an empty folder is used as is; anything else is
      refused;
    * while the ``with`` block runs, ``OUT.lock`` is locked (``flock``): a
      second process preparing into the same folder gets a one-line error;
    * :meth:`staging` gives a ``OUT.tmp-XXXX`` folder renamed to ``OUT`` only
      on success, so a failure or a kill never leaves a half-written dataset
      under the name and never touches the old one.
    """

    def __init__(self, out_dir, force=False, inputs=()):
        if out_dir is None or not os.fspath(out_dir).strip():
            raise UserError("the output folder (--out) is empty")
        self.given = os.fspath(out_dir)
        self.out = pathlib.Path(os.path.abspath(self.given))
        self.force = force
        self.inputs = [os.fspath(p) for p in inputs if p is not None]
        self.summary = None
        self.check()

    def check(self):
        """Refuse an output that overlaps an input or that must not be replaced."""
        real_out = os.path.realpath(self.out)
        for given in self.inputs:
            real_in = os.path.realpath(given)
            if real_in == real_out:
                raise UserError("--out %s is the input %s itself; choose another output folder"
                                % (self.given, given))
            if _inside(real_out, real_in):
                raise UserError("--out %s is inside the input %s; choose an output folder "
                                "outside it" % (self.given, given))
            if _inside(real_in, real_out):
                raise UserError("--out %s contains the input %s; replacing it would delete "
                                "the input, choose another output folder" % (self.given, given))
        self.summary = None
        if os.path.islink(self.out):
            raise UserError("--out %s is a symbolic link; give the folder itself" % self.given)
        if not os.path.lexists(self.out):
            return
        if not self.out.is_dir():
            raise UserError("--out %s exists and is not a folder; refusing to replace it"
                            % self.given)
        try:
            empty = not os.listdir(self.out)
        except OSError as exc:
            raise UserError("--out %s: cannot list it (%s)" % (self.given, exc.strerror or exc))
        if empty:
            return
        summary, problem = _describe_dataset(self.out)
        if problem:
            raise UserError("--out %s already exists and %s; refusing to replace it, "
                            "choose another output folder" % (self.given, problem))
        if not self.force:
            raise UserError("--out %s already exists (%s); use --force to replace it"
                            % (self.given, summary))
        self.summary = summary

    def _siblings(self, kind):
        prefix = self.out.name + kind
        try:
            names = os.listdir(self.out.parent)
        except OSError:
            return []
        return [self.out.parent / n for n in names
                if n.startswith(prefix) and len(n) == len(prefix) + 8]

    def __enter__(self):
        try:
            self.out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError("--out %s: cannot create %s (%s)"
                            % (self.given, self.out.parent, exc.strerror or exc))
        self._lock = exclusive_lock(str(self.out) + ".lock", self.given)
        self._lock.__enter__()
        try:
            self._recover()
            self.check()   # again, now that no other prepare can change it
        except BaseException:
            self._lock.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, kind, exc, tb):
        self._lock.__exit__(kind, exc, tb)
        return False

    def _recover(self):
        """Clean up after a prepare that was killed (we hold the lock: it is dead)."""
        if not os.path.lexists(self.out):
            # killed between moving the old dataset aside and moving the new one in
            old = [p for p in self._siblings(".old-") if _describe_dataset(p)[1] is None]
            if old:
                old[0].rename(self.out)
                print("restored %s from %s, left by an interrupted run" % (self.given, old[0].name))
        for leftover in self._siblings(".tmp-") + self._siblings(".old-"):
            if leftover.is_dir() and not leftover.is_symlink() and \
                    all(n in DATASET_FILES for n in os.listdir(leftover)):
                _remove_dataset_files(leftover)

    @contextlib.contextmanager
    def staging(self):
        """A fresh folder to write the dataset into; it becomes ``OUT`` on success."""
        tmp = pathlib.Path(tempfile.mkdtemp(prefix=self.out.name + ".tmp-", dir=self.out.parent))
        os.chmod(tmp, 0o777 & ~current_umask())   # as mkdir would, not mkdtemp's 0700
        try:
            yield tmp
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        old = None
        try:
            if os.path.lexists(self.out) and os.listdir(self.out):
                old = self.out.with_name(tmp.name.replace(".tmp-", ".old-"))
                self.out.rename(old)
            tmp.rename(self.out)   # replaces an empty folder
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if old is not None and not os.path.lexists(self.out):
                old.rename(self.out)
            raise UserError("--out %s: cannot move the new dataset into place (%s)"
                            % (self.given, exc.strerror or exc))
        if old is not None:
            if not _remove_dataset_files(old):
                _warn("%s: the previous dataset was kept in %s (something was added to it "
                      "meanwhile)" % (self.given, old))
            print("replaced %s in %s" % (self.summary or "the previous dataset", self.given))


def _remove_dataset_files(folder):
    """Delete the layout's files in ``folder`` and the folder, nothing else."""
    for name in DATASET_FILES:
        try:
            (folder / name).unlink()
        except FileNotFoundError:
            pass
    try:
        folder.rmdir()
    except OSError:
        return False
    return True
