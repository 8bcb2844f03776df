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
import urllib.error
import urllib.parse
import urllib.request

from tqdm import tqdm

from ..errors import UserError
from ..files import file_digest
from .archives import copy_stream, copy_to_file, extract

BASE_URL = "https://github.com/jbrownlee/Datasets/releases/download/Flickr8k/"
TEXT_ZIP, PHOTO_ZIP = "Flickr8k_text.zip", "Flickr8k_Dataset.zip"
TEXT_MD5 = {
    "Flickr8k.token.txt": "e898e3ced284f72589f239c4f6301778",
    "Flickr_8k.devImages.txt": "d4348c27e43a7a7c667fc1e1af1a17ca",
    "Flickr_8k.testImages.txt": "80b71e57cb3e4187f4b8068489fbc74a",
    "Flickr_8k.trainImages.txt": "cfaa3c7cf0e98c3db5331ae3e084d0ad",
}
# what to do about a broken zip: it is ours, fetched again once deleted
AGAIN = "; delete it and run again"


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
                copy_stream(response, f, bar)
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
        with open(source, "rb") as f:
            copy_to_file(f, part, source.stat().st_size, dest.name)
    except OSError as exc:
        raise UserError("%s: cannot copy to %s (%s)" % (source, part, exc.strerror or exc))
    part.rename(dest)
    return dest


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
    extract(zips[TEXT_ZIP], "zip", source, lambda n: n.endswith(".txt"), "text",
            required=tuple(TEXT_MD5), advice=AGAIN)
    for name, expected in TEXT_MD5.items():
        path = source / name
        actual = file_digest(path, "md5")
        if actual != expected:
            path.unlink()
            raise UserError("%s: md5 mismatch for %s (expected %s, got %s); delete the zip and run again"
                            % (zips[TEXT_ZIP], name, expected, actual))
    extract(zips[PHOTO_ZIP], "zip", source / "images", lambda n: n.lower().endswith(".jpg"),
            "photos", advice=AGAIN)
    return source
