"""Streaming bytes into files, and the one safe way to take files out of an archive.

Both ``prepare seminar`` (a ``data.tar.gz``) and ``download flickr8k`` (two
zips) unpack through :func:`extract`; every copy of a file's bytes in this
package (archive members, a seminar folder's files, a local mirror's zips,
an HTTP response) goes through :func:`copy_stream`.
"""
import pathlib
import tarfile
import zipfile

from tqdm import tqdm

from ..errors import UserError
from ..files import is_safe_archive_member

CHUNK = 1 << 20   # bytes read and written at a time


def copy_stream(src, out, bar=None):
    """Copy the file object ``src`` to the file object ``out``, updating the tqdm ``bar``.

    >>> import io
    >>> out = io.BytesIO()
    >>> copy_stream(io.BytesIO(b"abc"), out)
    >>> out.getvalue()
    b'abc'
    """
    for chunk in iter(lambda: src.read(CHUNK), b""):
        out.write(chunk)
        if bar is not None:
            bar.update(len(chunk))


def copy_to_file(src, dst, size, desc):
    """Stream the file object ``src`` into a new file ``dst`` under a byte progress bar.

    The bar (``desc``, ``size`` bytes expected) shows only on a terminal and
    is removed when done.
    """
    with open(dst, "wb") as out, tqdm(total=size, unit="B", unit_scale=True, desc=desc,
                                      disable=None, leave=False) as bar:
        copy_stream(src, out, bar)


def _entries(opened):
    """``(name, is_file, size, member)`` of every member of an open tar or zip."""
    if isinstance(opened, tarfile.TarFile):
        return [(m.name, m.isfile(), m.size, m) for m in opened.getmembers()]
    return [(i.filename, not i.is_dir(), i.file_size, i) for i in opened.infolist()]


def _open_member(opened, member):
    return opened.extractfile(member) if isinstance(opened, tarfile.TarFile) else opened.open(member)


def extract(archive, kind, target_dir, keep, desc, required=(), part_files=True, advice=""):
    """Stream the files of a tar or zip archive whose base name passes ``keep`` into ``target_dir``.

    * An archive with any absolute, ``..`` or drive-letter member name
      (:func:`lasagne_caption.files.is_safe_archive_member`) is refused
      outright, before anything is written.
    * Member paths are never output paths: a file is written as
      ``target_dir / BASE_NAME`` (the last member wins when two share a base
      name). Directories, links and ``__MACOSX`` entries are skipped.
    * Every name in ``required`` must be among the kept files, else nothing
      is written.
    * Bytes are streamed in 1 MiB chunks under one progress bar; with
      ``part_files`` each file is written as ``NAME.part`` and renamed when
      complete (for a folder that is not itself a staging folder).

    Parameters
    ----------
    archive : path
    kind : str
        ``"tar"`` (any compression :mod:`tarfile` reads) or ``"zip"``.
    target_dir : pathlib.Path
        Created if missing.
    keep : callable
        base name -> bool.
    desc : str
        Label of the progress bar.
    required : sequence of str
        Base names the archive must hold.
    part_files : bool
    advice : str
        Appended to the message about a truncated or broken archive.

    Returns
    -------
    list of pathlib.Path
        The files written, in archive order.

    Raises
    ------
    UserError
        An unsafe member name, a required file missing, an archive that
        cannot be read, is truncated or is not a ``kind`` archive.
    """
    if kind not in ("tar", "zip"):
        raise ValueError("kind must be 'tar' or 'zip', not %r" % (kind,))
    target_dir = pathlib.Path(target_dir)
    target_dir.mkdir(parents=True, exist_ok=True)
    try:
        with (tarfile.open(archive) if kind == "tar" else zipfile.ZipFile(archive)) as opened:
            entries = _entries(opened)
            bad = [name for name, _, _, _ in entries if not is_safe_archive_member(name)]
            if bad:
                raise UserError("%s: refused, unsafe member path %r" % (archive, bad[0]))
            chosen = {}
            for name, is_file, size, member in entries:
                base = pathlib.PurePosixPath(name).name
                if is_file and base and "__MACOSX" not in name and keep(base):
                    chosen[base] = size, member
            for name in required:
                if name not in chosen:
                    raise UserError("%s: no %s in the archive" % (archive, name))
            written = []
            with tqdm(total=sum(size for size, _ in chosen.values()), unit="B", unit_scale=True,
                      desc=desc, disable=None, leave=False) as bar:
                for base, (size, member) in chosen.items():
                    target = target_dir / base
                    partial = target.with_name(base + ".part") if part_files else target
                    with _open_member(opened, member) as src, open(partial, "wb") as out:
                        copy_stream(src, out, bar)
                    if part_files:
                        partial.replace(target)
                    written.append(target)
    except OSError as exc:  # also tarfile.ReadError's cousins: gzip/zlib/EOF
        raise UserError("%s: cannot read archive (%s)" % (archive, exc.strerror or exc))
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as exc:
        raise UserError("%s: truncated or not a %s (%s)%s"
                        % (archive, "tar archive" if kind == "tar" else "zip", exc, advice))
    return written
