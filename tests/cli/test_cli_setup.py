"""`fetch` (against a local server on 127.0.0.1 only), `convert`, `build`, `info`."""
from __future__ import annotations

import functools
import http.server
import json
import socket
import threading
import zipfile
from pathlib import Path

import pytest

from engine.fetch import ASSETS


@pytest.fixture
def server(tmp_path):
    """Serves tmp_path/www over HTTP on 127.0.0.1; yields (base URL, www folder)."""
    www = tmp_path / "www"
    www.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(www)))
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", www
    httpd.shutdown()
    httpd.server_close()


def publish(www: Path, asset: str, data: bytes) -> None:
    p = www / ASSETS[asset].path
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)


def release_zip(tmp_path: Path) -> bytes:
    z = tmp_path / "release.zip"
    with zipfile.ZipFile(z, "w") as f:
        f.writestr("deploy_network.prototxt", "name: 'stand-in'\n")
        f.writestr("3dmm_cnn_resnet_101.caffemodel", b"\0" * 100)
    return z.read_bytes()


def test_fetch_both_assets(cli, server, tmp_path, shared_dir):
    base, www = server
    # The topology file's checksum is pinned, so the server must serve the real file.
    publish(www, "topology", (shared_dir / "mod_struct_expr.mat").read_bytes())
    publish(www, "network", release_zip(tmp_path))
    dest = tmp_path / "downloads"
    r = cli("fetch", "--base-url", base, "--dest", dest)
    assert r.rc == 0, r.err
    assert (dest / "mod_struct_expr.mat").read_bytes() == (shared_dir / "mod_struct_expr.mat").read_bytes()
    assert (dest / "deploy_network.prototxt").read_text() == "name: 'stand-in'\n"  # extracted
    assert f"sha256 {ASSETS['topology'].sha256} (verified)" in r.out
    assert "no published checksum; pin this one" in r.out  # the zip has none
    assert "Basel Face Model" in r.out and "01_MorphableModel.mat" in r.out  # what cannot be fetched
    r = cli("fetch", "topology", "--base-url", base, "--dest", dest)
    assert r.rc == 0 and "topology: already present" in r.out


def test_fetch_checksum_mismatch_and_server_down(cli, server, tmp_path):
    base, www = server
    publish(www, "topology", b"not the release's file")
    publish(www, "network", release_zip(tmp_path))
    dest = tmp_path / "downloads"
    r = cli("fetch", "--base-url", base, "--dest", dest, "-q")
    assert r.rc == 1
    assert "sha256 mismatch for mod_struct_expr.mat" in r.err
    assert (dest / "3dmm_cnn_resnet_101.zip").is_file()  # the other asset still came
    assert sorted(p.name for p in dest.iterdir() if "mod_struct" in p.name) == []  # no bad or partial file
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = cli("fetch", "--base-url", f"http://127.0.0.1:{port}", "--dest", tmp_path / "d2", "--timeout", "5")
    assert r.rc == 1
    assert r.err.count("cannot connect") == 2 and "Traceback" not in r.err


def test_fetch_unknown_asset(cli, tmp_path):
    r = cli("fetch", "weights", "--dest", tmp_path)
    assert r.rc == 1 and "unknown asset 'weights'" in r.err


def test_convert_nothing_to_convert(cli, tmp_path):
    r = cli("convert", "--network-dir", tmp_path / "card")
    assert r.rc == 1
    assert "nothing to convert" in r.err and "run `fetch`" in r.err


def test_convert_corrupt_caffemodel_leaves_nothing(cli, tmp_path, shared_dir):
    card = tmp_path / "card"
    bad = tmp_path / "3dmm_cnn_resnet_101.caffemodel"
    bad.write_bytes(b"\x0a\xff\xff\xff\x0f truncated")
    r = cli("convert", "--prototxt", shared_dir / "deploy_network.prototxt", "--caffemodel", bad,
            "--mean", shared_dir / "mean.binaryproto", "--network-dir", card)
    assert r.rc == 1
    assert r.err.strip().splitlines()[-1].startswith("engine3dmm: error: ") and str(bad) in r.err
    assert "Traceback" not in r.err
    assert list(card.iterdir()) == []  # no weights, no ONNX, no temporary


def test_convert_bfm_files_are_checked(cli, tmp_path, shared_dir):
    bfm = tmp_path / "01_MorphableModel.mat"
    bfm.write_bytes(b"MATLAB 5.0 MAT-file, but cut short")
    card = tmp_path / "card"
    r = cli("convert", "--bfm", bfm, "--topology", shared_dir / "mod_struct_expr.mat", "--network-dir", card)
    assert r.rc == 1 and str(bfm) in r.err and "Traceback" not in r.err
    assert list(card.iterdir()) == []
    r = cli("convert", "--bfm", bfm, "--network-dir", card)
    assert r.rc == 1 and "--topology: not given and no mod_struct_expr.mat" in r.err


def test_build_says_what_is_missing(cli):
    from engine import _core

    if _core.has_tensorrt():
        pytest.skip("TensorRT and a GPU are present here: build would really build")
    r = cli("build")
    assert r.rc == 1
    assert r.err.strip() in {
        "engine3dmm: error: build: TensorRT is not installed: pip install tensorrt (needs an NVIDIA GPU and driver); "
        "on CPU-only machines use --runner onnxruntime instead, no build needed",
        "engine3dmm: error: build: no usable NVIDIA GPU (or engine._C was built without CUDA): a TensorRT engine "
        "is built for one specific GPU, on that GPU"}


def test_info_reports_runners_and_synthetic_models(cli, tmp_path):
    from engine.runners import available_runners

    r = cli("info", "--json", "--network-dir", tmp_path)
    report = json.loads(r.out)
    assert r.rc == 0, report["problems"]
    assert report["runners"] == available_runners() and report["auto_runner"] == available_runners()[0]
    assert report["network"]["status"] == "SYNTHETIC" and report["morphable_model"]["status"] == "SYNTHETIC"
    assert "cpu_kernels" in report["compiled_core"]
    text = cli("doctor", "--network-dir", tmp_path).out  # the alias, human-readable
    assert "network:         SYNTHETIC" in text and "runners:" in text


def test_info_recognises_converted_weights(cli, tmp_path):
    # What `convert` writes (our safetensors file, not synthetic) is reported as official.
    from engine.network.synthetic import make_synthetic
    from engine.network.weights import save_weights

    weights, mean, _ = make_synthetic(0)
    source = {"caffemodel": {"file": "3dmm_cnn_resnet_101.caffemodel", "sha256": "ab" * 32}}
    save_weights(tmp_path / "cnn3dmm.safetensors", weights, mean, {"synthetic": False, "source": source})
    r = cli("info", "--network-dir", tmp_path)
    assert r.rc == 0, r.out
    assert "network:         official  converted from 3dmm_cnn_resnet_101.caffemodel (sha256 abababab" in r.out
