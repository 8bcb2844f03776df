"""Download mode: fetch Flickr8k for users with internet access.

Downloads resume: bytes go to ``NAME.part`` and a rerun asks the server for
the rest with an HTTP ``Range`` header; the file is renamed to ``NAME`` once
complete.

The zips themselves are NOT checksummed (their md5s are not published).
What is checked is the text that matters for reproducibility: the
extracted ``Flickr8k.token.txt`` and split lists must match the md5s below,
copied from the project's reference data (``shared/data/MD5SUMS``). The
photos are not checked; a broken zip fails to open.

The source (``--base-url``) is an ``http://`` or ``https://`` address, or a
local folder holding the two zips (a path or a ``file://`` URL), which is
copied from instead.
"""
import http.client
import os
import pathlib
import shutil
import urllib.error
import urllib.parse
import urllib.request
import zipfile

from tqdm import tqdm

from .errors import UserError
from .files import file_digest, is_safe_archive_member

BASE_URL = "https://github.com/jbrownlee/Datasets/releases/download/Flickr8k/"
TEXT_ZIP, PHOTO_ZIP = "Flickr8k_text.zip", "Flickr8k_Dataset.zip"
TEXT_MD5 = {
    "Flickr8k.token.txt": "e898e3ced284f72589f239c4f6301778",
    "Flickr_8k.devImages.txt": "d4348c27e43a7a7c667fc1e1af1a17ca",
    "Flickr_8k.testImages.txt": "80b71e57cb3e4187f4b8068489fbc74a",
    "Flickr_8k.trainImages.txt": "cfaa3c7cf0e98c3db5331ae3e084d0ad",
}


def download(url, dest, timeout=60):
    """Fetch ``url`` to ``dest``, resuming a previous ``dest.part``.

    Returns
    -------
    pathlib.Path
        ``dest`` (untouched if it already exists).

    Raises
    ------
    UserError
        The server cannot be reached, answers with an error, or the
        connection drops (rerun to resume).
    """
    dest = pathlib.Path(dest)
    if dest.exists():
        return dest
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError("%s: cannot create the folder (%s)" % (dest.parent, exc.strerror or exc))
    part = dest.with_name(dest.name + ".part")
    local = _local_path(url)
    if local is not None:
        return _copy_local(local, dest, part)
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": "bytes=%d-" % have} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing after our bytes: the .part is whole
            part.rename(dest)
            return dest
        raise UserError("%s: HTTP error %d %s" % (url, exc.code, exc.reason))
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise UserError("cannot reach %s: %s; download it by hand and use --source"
                        % (url, getattr(exc, "reason", exc)))
    except ValueError as exc:   # http.client.InvalidURL and friends
        raise UserError("%s: not a valid URL (%s)" % (url, exc))
    with response:
        if have and response.status != 206:  # the server ignored Range: start over
            have = 0
        total = None if response.length is None else response.length + have
        try:
            with open(part, "ab" if have else "wb") as f, tqdm(
                    total=total, initial=have, unit="B", unit_scale=True,
                    desc=dest.name, disable=None) as bar:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    f.write(chunk)
                    bar.update(len(chunk))
        except (OSError, http.client.HTTPException) as exc:
            raise UserError("%s: download interrupted (%s); run again to resume" % (url, exc))
    if total is not None and part.stat().st_size != total:
        raise UserError("%s: got %d of %d bytes; run again to resume" % (url, part.stat().st_size, total))
    part.rename(dest)
    return dest


def _local_path(url):
    """The file a ``file://`` URL or a plain path names; None for http(s).

    Raises UserError for other URL schemes.
    """
    parts = urllib.parse.urlsplit(str(url))
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        return None
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise UserError("%s: only local file:// URLs are supported (no host)" % url)
        return pathlib.Path(urllib.request.url2pathname(parts.path))
    if scheme == "" or os.path.exists(str(url)):   # "a:b/folder" is a path too
        return pathlib.Path(url)
    raise UserError("%s: unsupported address; give an http:// or https:// URL, or a local "
                    "folder (a path or file:// URL)" % url)


def _copy_local(source, dest, part):
    """Copy a local file to ``dest`` through ``dest.part``."""
    if not source.is_file():
        raise UserError("%s: no such file (the --base-url folder must hold %s and %s)"
                        % (source, TEXT_ZIP, PHOTO_ZIP))
    try:
        shutil.copyfile(source, part)
    except OSError as exc:
        raise UserError("%s: cannot copy to %s (%s)" % (source, part, exc.strerror or exc))
    part.rename(dest)
    return dest


def _extract(archive, keep, target_dir, desc):
    """Stream the members whose base name passes ``keep`` into ``target_dir``.

    Member paths are never used as output paths (only base names), and an
    archive with absolute or ``..`` names is refused outright.
    """
    target_dir.mkdir(parents=True, exist_ok=True)
    written = []
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            bad = [i.filename for i in infos if not is_safe_archive_member(i.filename)]
            if bad:
                raise UserError("%s: refused, unsafe member path %r" % (archive, bad[0]))
            infos = [i for i in infos if not i.is_dir() and "__MACOSX" not in i.filename
                     and keep(os.path.basename(i.filename))]
            for info in tqdm(infos, desc=desc, unit="file", disable=None, leave=False):
                target = target_dir / os.path.basename(info.filename)
                tmp = target.with_name(target.name + ".part")
                with zf.open(info) as src, open(tmp, "wb") as out:
                    for chunk in iter(lambda: src.read(1 << 20), b""):
                        out.write(chunk)
                tmp.replace(target)
                written.append(target)
    except (zipfile.BadZipFile, EOFError) as exc:
        raise UserError("%s: truncated or not a zip (%s); delete it and run again" % (archive, exc))
    return written


def fetch_flickr8k(dest, base_url=BASE_URL):
    """Download and unpack Flickr8k into ``dest/flickr8k`` (text files + ``images/``).

    Parameters
    ----------
    dest : path
        Folder for the zips and the unpacked source.
    base_url : str
        Where ``Flickr8k_text.zip`` and ``Flickr8k_Dataset.zip`` live: an
        http(s) URL, or a local folder (path or ``file://`` URL).

    Returns
    -------
    pathlib.Path
        The source folder, for :func:`lasagne_caption.data.prepare_flickr8k`.
        It has no ``codes/``: its photos still need an image encoder.

    Raises
    ------
    UserError
        Unreachable server, broken zip, or a text file whose md5 differs.
    """
    dest = pathlib.Path(dest)
    source = dest / "flickr8k"
    local = _local_path(base_url)
    if local is not None and not local.is_dir():
        raise UserError("--base-url %s: no such folder (give an http(s):// URL or a folder "
                        "holding %s and %s)" % (base_url, TEXT_ZIP, PHOTO_ZIP))
    zips = {name: download(str(local / name) if local is not None
                           else base_url.rstrip("/") + "/" + name, dest / name)
            for name in (TEXT_ZIP, PHOTO_ZIP)}
    texts = _extract(zips[TEXT_ZIP], lambda n: n.endswith(".txt"), source, "text")
    for name, expected in TEXT_MD5.items():
        path = source / name
        if path not in texts:
            raise UserError("%s: no %s in the archive" % (zips[TEXT_ZIP], name))
        actual = file_digest(path, "md5")
        if actual != expected:
            path.unlink()
            raise UserError("%s: md5 mismatch for %s (expected %s, got %s); delete the zip and run again"
                            % (zips[TEXT_ZIP], name, expected, actual))
    _extract(zips[PHOTO_ZIP], lambda n: n.lower().endswith(".jpg"), source / "images", "photos")
    return source
