"""Download mode against a tiny HTTP server on 127.0.0.1 (nothing else is reachable)."""
import http.server
import random
import threading

import pytest

from lasagne_caption.data import download
from lasagne_caption.data.download import PHOTO_ZIP, TEXT_MD5, TEXT_ZIP, fetch_flickr8k
from lasagne_caption.errors import UserError
from tests.data.helpers import make_zip


class Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.files`` with ``Range: bytes=N-`` support; records Range headers."""

    def do_GET(self):
        body = self.server.files.get(self.path.lstrip("/"))
        if body is None:
            self.send_error(404)
            return
        start = 0
        wanted = self.headers.get("Range")
        self.server.ranges.append(wanted)
        if wanted:
            start = int(wanted.split("=")[1].rstrip("-"))
            self.send_response(206)
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, len(body) - 1, len(body)))
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        self.wfile.write(body[start:])

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.files, httpd.ranges = {}, []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd, "http://127.0.0.1:%d/" % httpd.server_port
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def zips(flickr8k_dir, tmp_path):
    """The real text files (their md5s are known) and three fake photos."""
    texts = {"Flickr8k_text/" + n: (flickr8k_dir / n).read_bytes() for n in TEXT_MD5}
    texts["__MACOSX/._Flickr8k.token.txt"] = b"junk"
    photos = {"Flicker8k_Dataset/%d.jpg" % i: random.Random(i).randbytes(5000) for i in range(3)}
    return (make_zip(tmp_path / "t.zip", texts), make_zip(tmp_path / "p.zip", photos))


def test_fetch_resumes_and_checks_text(server, zips, tmp_path, flickr8k_dir):
    httpd, url = server
    httpd.files = {TEXT_ZIP: zips[0], PHOTO_ZIP: zips[1]}
    dest = tmp_path / "downloads"
    dest.mkdir()
    (dest / (PHOTO_ZIP + ".part")).write_bytes(zips[1][:1000])  # an interrupted earlier run
    source = fetch_flickr8k(dest, base_url=url)
    assert httpd.ranges == [None, "bytes=1000-"]
    assert (dest / PHOTO_ZIP).read_bytes() == zips[1] and not (dest / (PHOTO_ZIP + ".part")).exists()
    assert sorted(p.name for p in (source / "images").iterdir()) == ["0.jpg", "1.jpg", "2.jpg"]
    token = source / "Flickr8k.token.txt"
    assert token.read_bytes() == (flickr8k_dir / "Flickr8k.token.txt").read_bytes()
    fetch_flickr8k(dest, base_url=url)  # complete files are not fetched again
    assert len(httpd.ranges) == 2


def test_checksum_mismatch(server, tmp_path, flickr8k_dir):
    httpd, url = server
    texts = {n: (flickr8k_dir / n).read_bytes() for n in TEXT_MD5}
    texts["Flickr8k.token.txt"] += b"one more line\n"
    httpd.files = {TEXT_ZIP: make_zip(tmp_path / "t.zip", texts), PHOTO_ZIP: b""}
    with pytest.raises(UserError, match="md5 mismatch for Flickr8k.token.txt .expected e898e3ce"):
        fetch_flickr8k(tmp_path / "dl", base_url=url)
    assert not (tmp_path / "dl" / "flickr8k" / "Flickr8k.token.txt").exists()


def test_offline_and_http_errors(server, tmp_path):
    httpd, url = server
    with pytest.raises(UserError, match="cannot reach http://127.0.0.1:1/x.zip: .*by hand and use --source"):
        download.download("http://127.0.0.1:1/x.zip", tmp_path / "x.zip", timeout=5)
    with pytest.raises(UserError, match="HTTP error 404"):
        download.download(url + "missing.zip", tmp_path / "missing.zip")
    assert list(tmp_path.iterdir()) == []


def test_a_local_folder_or_file_url_is_a_source(zips, tmp_path, flickr8k_dir):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / TEXT_ZIP).write_bytes(zips[0])
    (mirror / PHOTO_ZIP).write_bytes(zips[1])
    for base, dest in ((str(mirror), tmp_path / "a"), (mirror.as_uri() + "/", tmp_path / "b")):
        source = fetch_flickr8k(dest, base_url=base)
        assert (source / "Flickr8k.token.txt").read_bytes() == \
            (flickr8k_dir / "Flickr8k.token.txt").read_bytes()
        assert sorted(p.name for p in (source / "images").iterdir()) == ["0.jpg", "1.jpg", "2.jpg"]
        assert not list(dest.glob("*.part"))
    (mirror / PHOTO_ZIP).unlink()
    with pytest.raises(UserError, match="Flickr8k_Dataset.zip: no such file .the --base-url"):
        fetch_flickr8k(tmp_path / "c", base_url=str(mirror))


@pytest.mark.parametrize("base, message", [
    ("/no/such/mirror", "--base-url /no/such/mirror: no such folder"),
    ("ftp://example.org/flickr", "unsupported address"),
    ("file://otherhost/x", "only local file:// URLs"),
])
def test_bad_base_urls_are_one_line_errors(tmp_path, base, message):
    with pytest.raises(UserError, match=message):
        fetch_flickr8k(tmp_path / "dl", base_url=base)
    assert not (tmp_path / "dl").exists()


def test_cli_download_from_a_missing_folder_is_one_line(tmp_path):
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-m", "lasagne_caption.data", "download", "flickr8k",
                          "--base-url", str(tmp_path / "none"), "--dest", str(tmp_path / "dl"),
                          "--out", str(tmp_path / "ds")], capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "no such folder" in out.stderr
