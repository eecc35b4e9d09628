"""The whole door, as a user walks it (issue 8, section 1): `fetch` from a server (a local
one on 127.0.0.1 serving the face_swap zip with a FULL-SIZE caffemodel), `convert` with
no arguments, `reconstruct` on a real photo; the coefficients equal the network run
directly on the same crop. `convert` and `reconstruct` run in fresh processes where
PyTorch cannot be imported: the lean CPU install (ONNX Runtime) is enough for both.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.static_server import serving

from caffe_reference import to_caffe_blobs
from engine.fetch import ASSETS
from engine.network import caffe_io

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
FACE_SWAP_NAMES = {"prototxt": "3dmm_cnn_resnet_101_deploy.prototxt", "caffemodel": "3dmm_cnn_resnet_101.caffemodel",
                   "mean": "3dmm_cnn_resnet_101_mean.binaryproto"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    www = tmp_path_factory.mktemp("www")
    with serving(www) as url:
        yield url, www


def engine_without_torch(*argv, cwd: Path) -> subprocess.CompletedProcess:
    """`engine3dmm ARGV` in a fresh interpreter in which `import torch` fails."""
    code = ("import sys; sys.modules['torch'] = None\n"
            "from engine.cli import main\n"
            "rc = main(sys.argv[1:])\n"
            "assert sys.modules.get('torch') is None, 'PyTorch was imported'\n"
            "sys.exit(rc)")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", code, *map(str, argv)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=900)


def test_fetch_convert_reconstruct_from_the_face_swap_zip(server, tmp_path, shared_dir, synthetic_model, capsys):
    base, www = server
    # The release as face_swap mirrors it, with a full-size caffemodel (the real
    # architecture's shapes; the synthetic weights stand in for the trained ones).
    blobs = to_caffe_blobs(synthetic_model.weights, factor=2.0)
    # ... with the ImageNet head the release's training started from: Caffe ignores it, so do we
    blobs["fc1000"] = [np.ones((1000, 2048), np.float32), np.zeros(1000, np.float32)]
    staging = tmp_path / "staging"
    staging.mkdir()
    caffe_io.write_caffemodel(staging / FACE_SWAP_NAMES["caffemodel"], blobs)
    assert (staging / FACE_SWAP_NAMES["caffemodel"]).stat().st_size > 170e6
    zip_path = www / ASSETS["network"].path
    zip_path.parent.mkdir(parents=True)
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_STORED) as z:
        z.write(staging / FACE_SWAP_NAMES["caffemodel"], FACE_SWAP_NAMES["caffemodel"])
        z.write(shared_dir / "deploy_network.prototxt", FACE_SWAP_NAMES["prototxt"])
        z.write(shared_dir / "mean.binaryproto", FACE_SWAP_NAMES["mean"])
    (staging / FACE_SWAP_NAMES["caffemodel"]).unlink()
    card = tmp_path / "card"

    from engine.cli import main

    # 1. fetch (the CLI, from the local server)
    assert main(["fetch", "network", "--base-url", base, "--network-dir", str(card)]) == 0
    out = capsys.readouterr().out
    assert "network: downloaded" in out and all(f"extracted {card / 'downloads' / n}" in out
                                                for n in FACE_SWAP_NAMES.values())
    # 2. convert with no file arguments: found by role under card/downloads
    r = engine_without_torch("convert", "--network-dir", card, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "warning" not in r.stderr.lower(), r.stderr  # normal progress is not a warning
    assert f"reading {card / 'downloads' / FACE_SWAP_NAMES['caffemodel']}" in r.stderr
    # it says which file it took for each role, what it left out, and that nothing proves these
    # are the official weights (the project knows no sha256 of the official caffemodel)
    for role, name in FACE_SWAP_NAMES.items():
        assert f"{role + ':':11} {card / 'downloads' / name} (found under {card / 'downloads'})\n" in r.stderr
    assert "ignored, as Caffe does: 1 caffemodel layer(s) the network does not use (fc1000)" in r.stderr
    assert ("cnn3dmm.safetensors: converted (not verified: the official caffemodel's sha256 is not known to this "
            "project)") in r.stderr
    assert "official" not in r.stdout
    converted = r
    r = engine_without_torch("info", "--json", "--network-dir", card, cwd=tmp_path)
    network = json.loads(r.stdout)["network"]
    assert network["status"] == "converted" and network["verified"] is False
    assert network["variants"]["status"] == "validated" and network["variants"]["synthetic"] is False
    assert {p.name for p in card.iterdir()} == {"downloads", "cnn3dmm.safetensors", "cnn3dmm.fp32.onnx",
                                               "cnn3dmm.fp16.onnx", "cnn3dmm.int8.onnx", "cnn3dmm.variants.json"}
    # the CPU variants, validated on the converted weights; without PyTorch bf16 is unavailable, said so
    assert "variants: " in converted.stdout and "onnxruntime int8: max " in converted.stdout
    assert "auto picks onnxruntime" in converted.stdout
    variants = {(e["runner"], e["precision"]): e for e in json.loads((card / "cnn3dmm.variants.json").read_text())["variants"]}
    assert variants["onnxruntime", "int8"]["status"] == "ok"
    assert variants["torch-cpu", "bf16"]["status"] == "unavailable" and "PyTorch is not installed" in variants[
        "torch-cpu", "bf16"]["why"]
    assert "torch-cpu bf16: not built (PyTorch is not installed" in converted.stdout
    # 3. reconstruct a real photo
    from PIL import Image
    from skimage.data import astronaut

    photo = tmp_path / "astronaut.png"
    Image.fromarray(astronaut()).save(photo)
    r = engine_without_torch("reconstruct", photo, "-o", tmp_path / "out", "--network-dir", card,
                             "--runner", "onnxruntime", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    prov = summary["provenance"]
    assert prov["network_synthetic"] is False and prov["network_mean"] == "image"
    assert prov["network_fingerprint"] == synthetic_fingerprint_with_real_mean(synthetic_model, shared_dir)
    coeffs = np.load(tmp_path / "out" / summary["faces"][0]["files"]["coeffs"])

    # The network run directly on the same crop: the ONNX Runtime runner, and the exact
    # (unfused) PyTorch module as an independent implementation.
    from engine.pipeline.reconstructor import Reconstructor
    from engine.runners import create_runner

    with Reconstructor(runner="onnxruntime", network_dir=card) as rec:
        (face,) = list(rec.reconstruct([str(photo)], keep_crops=True, decode=False))
        crop = face.crop.copy()
    with create_runner("onnxruntime", card) as runner:
        direct = runner.run(crop[None])[0]
    torch = pytest.importorskip("torch")
    from engine.network.resolve import resolve_model
    from engine.network.torch_model import build

    model = resolve_model(card, allow_synthetic=False)
    net = build(model.weights, model.mean, fused=False, synthetic=False)
    with torch.inference_mode():
        reference = net(torch.from_numpy(crop[None])).numpy()[0]
    sd = float(np.std(reference))
    assert sd > 0.1
    assert np.abs(coeffs - direct).max() < 1e-5 * sd
    assert np.abs(coeffs - reference).max() < 1e-4 * sd


def synthetic_fingerprint_with_real_mean(synthetic_model, shared_dir) -> str:
    """What the converted weights must be: the synthetic set (factor 2 is exact in binary)
    with the release's mean image."""
    from engine.network.resolve import weights_fingerprint

    return weights_fingerprint(synthetic_model.weights, caffe_io.read_mean(shared_dir / "mean.binaryproto"))
