"""engine.fetch against a local HTTP server on 127.0.0.1 (never the internet).

The server below is written here, with its own HTTP Range support, and can be told
to cut transfers short or to ignore Range requests.
"""
from __future__ import annotations

import hashlib
import http.server
import socket
import stat
import threading
import time
import zipfile
from pathlib import Path
from urllib.parse import urlparse

import pytest

from engine import fetch as fetch_mod
from engine.errors import BackendError, InputError, ModelFileError
from engine.fetch import ASSETS, bfm_instructions, download, extract_zip, fetch, sha256_file


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        srv = self.server
        srv.requests.append((self.path, self.headers.get("Range")))
        if self.path in srv.redirects:  # like GitHub release assets -> a storage host
            self.send_response(302)
            self.send_header("Location", srv.redirects[self.path])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = srv.files.get(self.path)
        if data is None:
            self.send_error(404, "Not Found")
            return
        start, status = 0, 200
        rng = self.headers.get("Range")
        if rng and not srv.ignore_range:
            assert rng.startswith("bytes=") and rng.endswith("-"), rng
            start = int(rng[len("bytes="):-1])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        body = data[start:]
        self.send_response(status)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if srv.truncate_at is not None:
            body = body[: max(0, srv.truncate_at - start)]  # promise everything, send less, hang up
        # Record before writing: the client can finish reading and return before this
        # handler thread runs another line, so a count taken after the write races.
        srv.bodies.append(len(body))
        self.wfile.write(body)


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.files, srv.requests, srv.bodies, srv.redirects = {}, [], [], {}
    srv.truncate_at, srv.ignore_range = None, False
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    t.start()
    srv.base = f"http://127.0.0.1:{srv.server_address[1]}"
    yield srv
    srv.shutdown()
    srv.server_close()


def payload(n=300_000, seed=7) -> bytes:
    return hashlib.sha256(str(seed).encode()).digest() * (n // 32) + b"tail"


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def test_download_success(server, tmp_path):
    data = payload()
    server.files["/f.bin"] = data
    seen = []
    out = download(server.base + "/f.bin", tmp_path / "f.bin", sha256=sha(data), progress=lambda d, t: seen.append((d, t)))
    assert out == tmp_path / "f.bin" and out.read_bytes() == data
    assert not (tmp_path / "f.bin.partial").exists()
    assert seen[-1] == (len(data), len(data))


def test_checksum_mismatch(server, tmp_path):
    server.files["/f.bin"] = payload()
    wrong = "0" * 64
    with pytest.raises(ModelFileError) as e:
        download(server.base + "/f.bin", tmp_path / "f.bin", sha256=wrong)
    msg = str(e.value)
    assert server.base + "/f.bin" in msg and wrong in msg and sha(payload()) in msg
    assert not (tmp_path / "f.bin").exists() and not (tmp_path / "f.bin.partial").exists()


def test_truncated_transfer_then_resume(server, tmp_path):
    data = payload()
    server.files["/f.bin"] = data
    server.truncate_at = 100_000
    with pytest.raises(BackendError, match=rf"truncated: expected {len(data)} bytes, received 100000") as e:
        download(server.base + "/f.bin", tmp_path / "f.bin", sha256=sha(data))
    assert "run again to resume" in str(e.value)
    assert not (tmp_path / "f.bin").exists()
    assert (tmp_path / "f.bin.partial").read_bytes() == data[:100_000]
    server.truncate_at = None
    download(server.base + "/f.bin", tmp_path / "f.bin", sha256=sha(data))
    assert (tmp_path / "f.bin").read_bytes() == data
    assert server.requests[-1] == ("/f.bin", "bytes=100000-")
    assert server.bodies[-1] == len(data) - 100_000  # only the missing part travelled


def test_resume_from_existing_partial(server, tmp_path):
    data = payload()
    server.files["/f.bin"] = data
    (tmp_path / "f.bin.partial").write_bytes(data[:12345])
    download(server.base + "/f.bin", tmp_path / "f.bin", sha256=sha(data))
    assert (tmp_path / "f.bin").read_bytes() == data
    assert server.requests == [("/f.bin", "bytes=12345-")]
    assert server.bodies[-1] == len(data) - 12345


def test_resume_through_a_redirect(server, tmp_path):
    data = payload()
    server.files["/storage/f.bin"] = data
    server.redirects["/release/f.bin"] = server.base + "/storage/f.bin"
    (tmp_path / "f.bin.partial").write_bytes(data[:5000])
    download(server.base + "/release/f.bin", tmp_path / "f.bin", sha256=sha(data))
    assert (tmp_path / "f.bin").read_bytes() == data
    assert server.requests == [("/release/f.bin", "bytes=5000-"), ("/storage/f.bin", "bytes=5000-")]


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    data = payload()
    server.files["/f.bin"] = data
    server.ignore_range = True
    (tmp_path / "f.bin.partial").write_bytes(b"garbage that must not stay in front")
    download(server.base + "/f.bin", tmp_path / "f.bin", sha256=sha(data))
    assert (tmp_path / "f.bin").read_bytes() == data


def test_complete_partial_answered_416(server, tmp_path):
    data = payload()
    server.files["/f.bin"] = data
    (tmp_path / "f.bin.partial").write_bytes(data)
    download(server.base + "/f.bin", tmp_path / "f.bin", sha256=sha(data))
    assert (tmp_path / "f.bin").read_bytes() == data
    # Without a checksum a 416 cannot prove completeness: start over, say so.
    (tmp_path / "g.bin.partial").write_bytes(data)
    server.files["/g.bin"] = data
    with pytest.raises(BackendError, match="HTTP 416"):
        download(server.base + "/g.bin", tmp_path / "g.bin")
    assert not (tmp_path / "g.bin.partial").exists()


def test_http_error(server, tmp_path):
    with pytest.raises(BackendError, match=r"/missing\.bin: HTTP 404"):
        download(server.base + "/missing.bin", tmp_path / "m.bin")
    assert not (tmp_path / "m.bin").exists()


def test_server_down(tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: connection refused
    with pytest.raises(BackendError, match=rf"127\.0\.0\.1:{port}/f\.bin: cannot connect"):
        download(f"http://127.0.0.1:{port}/f.bin", tmp_path / "f.bin", timeout=5)


def test_silent_server_times_out(tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)  # accepts the connection (kernel backlog) but never answers
    try:
        t = time.monotonic()
        with pytest.raises(BackendError, match="0.5 s"):
            download(f"http://127.0.0.1:{s.getsockname()[1]}/f.bin", tmp_path / "f.bin", timeout=0.5)
        assert time.monotonic() - t < 5
    finally:
        s.close()


def test_destination_folder_must_exist(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        download("http://127.0.0.1:9/x", tmp_path / "no" / "x")


# --------------------------------------------------------------------------- zips


def _zip(path: Path, members: dict[str, bytes], symlink: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            z.writestr(info, "/etc/passwd")
    return path


def test_extract_zip(tmp_path):
    z = _zip(tmp_path / "ok.zip", {"a.txt": b"A", "sub/b.txt": b"B", "sub/": b""})
    out = extract_zip(z, tmp_path / "t")
    assert [p.relative_to(tmp_path / "t").as_posix() for p in out] == ["a.txt", "sub/b.txt"]
    assert (tmp_path / "t" / "sub" / "b.txt").read_bytes() == b"B"


@pytest.mark.parametrize(
    "members,link",
    [
        ({"ok.txt": b"x", "../evil.txt": b"x"}, None),
        ({"ok.txt": b"x", "sub/../../evil.txt": b"x"}, None),
        ({"ok.txt": b"x", "/abs/evil.txt": b"x"}, None),
        ({"ok.txt": b"x", "..\\evil.txt": b"x"}, None),
        ({"ok.txt": b"x"}, "link"),
    ],
)
def test_extract_zip_refuses_escapes_before_writing_anything(tmp_path, members, link):
    z = _zip(tmp_path / "bad.zip", members, symlink=link)
    target = tmp_path / "deep" / "t"
    target.mkdir(parents=True)
    with pytest.raises(InputError, match=r"bad\.zip: member .* refusing to extract"):
        extract_zip(z, target)
    assert list(target.iterdir()) == []
    assert not (tmp_path / "deep" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()


def test_extract_zip_size_limit_and_corrupt_archive(tmp_path):
    z = _zip(tmp_path / "big.zip", {"a.bin": b"\0" * 10_000})
    with pytest.raises(InputError, match="expands to 10000 bytes, limit is 100"):
        extract_zip(z, tmp_path / "t", max_total_bytes=100)
    (tmp_path / "junk.zip").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ModelFileError, match=r"junk\.zip: not a readable zip"):
        extract_zip(tmp_path / "junk.zip", tmp_path / "t")


# --------------------------------------------------------------------------- fetch()


def _serve_network_zip(server, tmp_path) -> dict[str, bytes]:
    files = {"3dmm_cnn_resnet_101.caffemodel": payload(50_000, 1), "deploy_network.prototxt": b"name: 'x'\n",
             "mean.binaryproto": payload(1_000, 2)}
    z = _zip(tmp_path / "release.zip", files)
    server.files["/" + ASSETS["network"].path] = z.read_bytes()
    return files


def test_fetch_network_release(server, tmp_path):
    files = _serve_network_zip(server, tmp_path)
    dest = tmp_path / "models"
    res = fetch(["network"], dest, base_url=server.base)["network"]
    assert res.path == dest / "3dmm_cnn_resnet_101.zip" and not res.skipped
    assert res.sha256 == sha256_file(res.path)
    assert sorted(p.name for p in res.extracted) == sorted(files)
    for name, data in files.items():
        assert (dest / name).read_bytes() == data
    n = len(server.requests)
    again = fetch(["network"], dest, base_url=server.base)["network"]
    assert again.skipped and len(server.requests) == n  # already complete: no request


def test_fetch_verifies_the_topology_checksum(server, tmp_path):
    server.files["/" + ASSETS["topology"].path] = b"not the release's file"
    with pytest.raises(ModelFileError, match=ASSETS["topology"].sha256):
        fetch(["topology"], tmp_path, base_url=server.base)
    assert not (tmp_path / "mod_struct_expr.mat").exists()


def test_fetch_real_topology_file(server, tmp_path, shared_dir):
    real = (shared_dir / "mod_struct_expr.mat").read_bytes()
    server.files["/" + ASSETS["topology"].path] = real
    res = fetch(["topology"], tmp_path, base_url=server.base)["topology"]
    assert res.sha256 == ASSETS["topology"].sha256 and res.path.read_bytes() == real


def test_fetch_arguments_and_default_urls():
    with pytest.raises(InputError, match="unknown asset 'weights'"):
        fetch(["weights"], ".")
    assert ASSETS["network"].url() == (
        "https://github.com/YuvalNirkin/face_swap/releases/download/0.9/3dmm_cnn_resnet_101.zip"
    )
    # pinned to the commit that added the file, not to a branch that can move
    commit = "c4b0eb1f91357a6395833ace1df7343d2f680463"
    assert ASSETS["topology"].url() == (
        f"https://raw.githubusercontent.com/anhttran/3dmm_cnn/{commit}/3DMM_model/mod_struct_expr.mat")
    assert ASSETS["topology"].url("http://mirror/") == f"http://mirror/anhttran/3dmm_cnn/{commit}/3DMM_model/mod_struct_expr.mat"


def test_bfm_instructions(monkeypatch, tmp_path):
    text = bfm_instructions("models/x")
    for needle in ("https://faces.dmi.unibas.ch/bfm/", "01_MorphableModel.mat", "models/x", "register", "convert"):
        assert needle in text
    assert fetch_mod.ASSETS["topology"].sha256 in text
    # the commands repeat the user's folder options, so they act on the same folders
    text = bfm_instructions("card/downloads", options="--network-dir card")
    assert "engine3dmm fetch topology --network-dir card\n" in text
    assert "engine3dmm convert --network-dir card (reads" in text
    # no folder given: the default model card's downloads folder, wherever it is
    monkeypatch.setenv("ENGINE3DMM_MODEL_DIR", str(tmp_path / "card"))
    assert f"Put 01_MorphableModel.mat in {tmp_path / 'card' / 'downloads'}." in bfm_instructions()


def test_fetch_offline_says_where_to_put_a_file_downloaded_elsewhere(tmp_path, shared_dir):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there: as offline as a test can be
    for name in ("topology", "network"):
        with pytest.raises(BackendError) as err:
            fetch([name], tmp_path, base_url=f"http://127.0.0.1:{port}", timeout=5)
        target = (tmp_path / ASSETS[name].filename).resolve()
        msg = str(err.value)
        assert "cannot connect" in msg and f"save it as {target}" in msg and ASSETS[name].url() in msg
    # ... and a rerun does use a file put there by hand (checked against the pinned sha256)
    (tmp_path / "mod_struct_expr.mat").write_bytes((shared_dir / "mod_struct_expr.mat").read_bytes())
    res = fetch(["topology"], tmp_path, base_url=f"http://127.0.0.1:{port}", timeout=5)["topology"]
    assert res.skipped and res.sha256 == ASSETS["topology"].sha256
    _zip(tmp_path / "3dmm_cnn_resnet_101.zip", {"a/3dmm_cnn_resnet_101_deploy.prototxt": b"x"})
    res = fetch(["network"], tmp_path, base_url=f"http://127.0.0.1:{port}", timeout=5)["network"]
    assert res.skipped and [p.name for p in res.extracted] == ["3dmm_cnn_resnet_101_deploy.prototxt"]


def test_a_bad_file_placed_by_hand_gets_advice(tmp_path):
    with socket.socket() as s:  # nothing listens there: offline
        s.bind(("127.0.0.1", 0))
        offline = f"http://127.0.0.1:{s.getsockname()[1]}"
    zip_path = tmp_path / ASSETS["network"].filename
    zip_path.write_bytes(b"<html>a saved web page, not the zip</html>")
    with pytest.raises(ModelFileError) as err:
        fetch(["network"], tmp_path, base_url=offline, timeout=5)
    assert str(err.value) == (
        f"{zip_path}: not a readable zip archive: File is not a zip file; delete {zip_path} and run fetch again to "
        f"download it anew, or download {ASSETS['network'].url()} elsewhere and save it as {zip_path.resolve()}; "
        "running fetch again then uses that file (and extracts it)")
    # an unsafe archive and a corrupt member get the same advice
    _zip(zip_path, {"../evil.txt": b"x"})
    with pytest.raises(InputError, match=r"escapes the target folder; .*; delete .* and run fetch again"):
        fetch(["network"], tmp_path, base_url=offline, timeout=5)
    # a wrong topology file: offline, the message says the file there is not the release's
    topo = tmp_path / ASSETS["topology"].filename
    topo.write_bytes(b"not the release's file")
    with pytest.raises(BackendError) as err:
        fetch(["topology"], tmp_path, base_url=offline, timeout=5)
    assert (f"The file now at {topo} is not the release's (sha256 {sha(topo.read_bytes())}, expected "
            f"{ASSETS['topology'].sha256}). To install it by hand, download") in str(err.value)


def test_extract_zip_advice_is_only_about_the_archive(tmp_path):
    (tmp_path / "junk.zip").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ModelFileError, match=r"junk\.zip: not a readable zip archive: .*; get a new one$"):
        extract_zip(tmp_path / "junk.zip", tmp_path / "t", bad_archive_advice="get a new one")
    z = _zip(tmp_path / "big.zip", {"a.bin": b"\0" * 10_000})
    with pytest.raises(InputError, match="limit is 100; get a new one$"):
        extract_zip(z, tmp_path / "t", max_total_bytes=100, bad_archive_advice="get a new one")


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: connection refused
    return port


@pytest.mark.parametrize("how", ["offline", "HTTP 404", "truncated empty body"])
def test_a_failed_fetch_leaves_no_folder_or_file_it_created(server, tmp_path, how):
    """A fetch that fails before any byte arrives leaves nothing it created, folders included
    (the CLI's models/cnn3dmm/downloads/ was left behind empty)."""
    base = f"http://127.0.0.1:{_closed_port()}" if how == "offline" else server.base  # 404: no files served
    if how == "truncated empty body":
        server.files[urlparse(ASSETS["topology"].url()).path] = payload()
        server.truncate_at = 0  # promises the whole file, sends nothing, hangs up
    (tmp_path / "kept").mkdir()  # a folder that was there before stays
    dest = tmp_path / "kept" / "models" / "cnn3dmm" / "downloads"
    with pytest.raises(BackendError):
        fetch(["topology"], dest, base_url=base, timeout=5)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["kept"]


def test_the_cli_fetch_offline_leaves_no_downloads_folder(tmp_path, capsys):
    from engine.cli import main

    card = tmp_path / "models" / "cnn3dmm"
    code = main(["fetch", "--network-dir", str(card), "--base-url", f"http://127.0.0.1:{_closed_port()}",
                 "--timeout", "5"])
    assert code == 1, capsys.readouterr().err
    assert not (tmp_path / "models").exists()


def test_a_partial_download_keeps_its_folder_to_resume(server, tmp_path):
    server.files[urlparse(ASSETS["topology"].url()).path] = payload()
    server.truncate_at = 1000
    dest = tmp_path / "new" / "downloads"
    with pytest.raises(BackendError, match="partial file kept"):
        fetch(["topology"], dest, base_url=server.base, timeout=5)
    assert (dest / (ASSETS["topology"].filename + ".partial")).stat().st_size == 1000
