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
    # offline: where to put each file downloaded elsewhere, and no next steps that need them
    for name in ("network", "topology"):
        assert f"save it as {(tmp_path / 'd2' / ASSETS[name].filename).resolve()}" in r.err
    assert "Next:" not in r.out and "convert" not in r.out and "fetch topology" not in r.out


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


# --------------------------------------------------------------------------- convert: files by role

FACE_SWAP = ("3dmm_cnn_resnet_101_deploy.prototxt", "3dmm_cnn_resnet_101.caffemodel",
             "3dmm_cnn_resnet_101_mean.binaryproto")
AUTHORS = ("deploy_network.prototxt", "3dmm_cnn_resnet_101.caffemodel", "mean.binaryproto")
NOT_A_CAFFEMODEL = b"\x0a\xff\xff\xff\x0f truncated"


def _downloads(card: Path, shared_dir: Path, names, sub: str = "") -> tuple[Path, Path]:
    """A downloads folder holding the real prototxt and mean and a broken caffemodel, under `names`."""
    folder = card / "downloads" / sub
    folder.mkdir(parents=True)
    proto, caffemodel, mean = (folder / n for n in names)
    proto.write_bytes((shared_dir / "deploy_network.prototxt").read_bytes())
    mean.write_bytes((shared_dir / "mean.binaryproto").read_bytes())
    caffemodel.write_bytes(NOT_A_CAFFEMODEL)
    return folder, caffemodel


@pytest.mark.parametrize("names, sub", [(FACE_SWAP, ""), (AUTHORS, ""), (FACE_SWAP, "3dmm_cnn_resnet_101")])
def test_convert_finds_the_release_files_by_role(cli, tmp_path, shared_dir, names, sub):
    card = tmp_path / "card"
    folder, caffemodel = _downloads(card, shared_dir, names, sub)
    (folder / "3dmm_cnn_resnet_101.zip").write_bytes(b"PK")  # the archive itself is not a candidate
    (folder / ".x.caffemodel.1234.partial").write_bytes(b"")  # nor an unfinished write
    r = cli("convert", "--network-dir", card)
    # the prototxt and the mean were found and checked; then the caffemodel was read (and is broken)
    assert r.rc == 1 and f"reading {caffemodel}" in r.err
    assert f"{caffemodel}: not a valid Caffe weights" in r.err


def test_convert_checks_the_prototxt_before_the_long_read(cli, tmp_path, shared_dir):
    card = tmp_path / "card"
    folder, caffemodel = _downloads(card, shared_dir, AUTHORS)
    (folder / "deploy_network.prototxt").write_text((shared_dir / "deploy_network.prototxt").read_text()
                                                    .replace("num_output: 198", "num_output: 10"))
    r = cli("convert", "--network-dir", card)
    assert r.rc == 1 and "num_output expected 198, found 10" in r.err
    assert "reading" not in r.err and list(card.iterdir()) == [card / "downloads"]


def test_convert_lists_several_candidates_and_the_flag_that_picks_one(cli, tmp_path, shared_dir):
    card = tmp_path / "card"
    folder, caffemodel = _downloads(card, shared_dir, AUTHORS)
    (folder / "old").mkdir()
    (folder / "old" / "snapshot_iter_1000.caffemodel").write_bytes(NOT_A_CAFFEMODEL)
    r = cli("convert", "--network-dir", card)
    assert r.rc == 1
    assert (f"--caffemodel: 2 candidate *.caffemodel files under {card / 'downloads'}: {caffemodel}, "
            f"{folder / 'old' / 'snapshot_iter_1000.caffemodel'}; pass --caffemodel FILE to pick one") in r.err
    # a solver definition beside the deploy prototxt is not a candidate by content ...
    (folder / "old" / "snapshot_iter_1000.caffemodel").unlink()
    (folder / "solver.prototxt").write_text('net: "train_val.prototxt"\nbase_lr: 0.01\n')
    r = cli("convert", "--network-dir", card)
    assert r.rc == 1 and f"reading {caffemodel}" in r.err
    # ... but two deploy prototxts are ambiguous
    (folder / "copy_deploy.prototxt").write_bytes((shared_dir / "deploy_network.prototxt").read_bytes())
    r = cli("convert", "--network-dir", card)
    assert r.rc == 1 and "--prototxt: 2 candidate *.prototxt files" in r.err and "pass --prototxt FILE" in r.err
    r = cli("convert", "--network-dir", card, "--prototxt", folder / "copy_deploy.prototxt")
    assert r.rc == 1 and f"reading {caffemodel}" in r.err


def test_convert_without_a_mean_image_is_refused_unless_asked(cli, tmp_path, shared_dir):
    card = tmp_path / "card"
    folder, caffemodel = _downloads(card, shared_dir, AUTHORS)
    (folder / "mean.binaryproto").unlink()
    r = cli("convert", "--network-dir", card)
    assert r.rc == 1 and "reading" not in r.err
    assert "no mean image (*.binaryproto)" in r.err and "part of the network" in r.err and "--channel-mean" in r.err
    r = cli("convert", "--network-dir", card, "--channel-mean")
    assert r.rc == 1 and f"reading {caffemodel}" in r.err  # asked for: goes on
    r = cli("convert", "--network-dir", card, "--channel-mean", "--mean", shared_dir / "mean.binaryproto")
    assert r.rc == 2  # one or the other


def test_convert_caffe_api_refuses_a_missing_mean(tmp_path, shared_dir):
    from engine.errors import InputError
    from engine.network import convert_caffe

    with pytest.raises(InputError, match="mean: not given; the mean image .* channel_mean=True"):
        convert_caffe(shared_dir / "deploy_network.prototxt", tmp_path / "w.caffemodel", None, tmp_path)


def test_info_says_when_a_card_was_converted_with_the_channel_mean(cli, tmp_path):
    from engine.network.synthetic import make_synthetic
    from engine.network.weights import save_weights

    weights, mean, _ = make_synthetic(0)
    source = {"caffemodel": {"file": "3dmm_cnn_resnet_101.caffemodel", "sha256": "ab" * 32},
              "mean": {"file": None, "note": "per-channel mean"}}
    save_weights(tmp_path / "cnn3dmm.safetensors", weights, mean,
                 {"synthetic": False, "source": source, "mean_kind": "per-channel"})
    r = cli("info", "--network-dir", tmp_path)
    assert "network:         official, PER-CHANNEL MEAN  converted from 3dmm_cnn_resnet_101.caffemodel" in r.out
    assert "converted without the release's mean image" in r.out
    report = json.loads(cli("info", "--json", "--network-dir", tmp_path).out)
    assert report["network"]["mean"] == "per-channel"
