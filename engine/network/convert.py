"""`convert_caffe`: the release's three files -> the model card's artifacts.

Writes into `out_dir`: `cnn3dmm.safetensors` (our weight file, with the source files'
sha256 in its metadata) and the fp32 and fp16 ONNX graphs. Every write is atomic.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from engine.errors import InputError
from engine.network import caffe_io
from engine.network import weights as W

log = logging.getLogger("engine.network")

# sha256 of the official release files (models/cnn3dmm/manifest.json lists the same).
OFFICIAL_SHA256 = {
    "deploy_network.prototxt": "c8ed5e80b212399494d8a0e81b0e694bb729cebce0e87ba873163cd5839c8545",
    "mean.binaryproto": "bbada1be647a623972f25077e9083738418152efc8284ccf8bba872e095dba22",
}


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def convert_caffe(prototxt, caffemodel, mean=None, out_dir=None, *, onnx: bool = True) -> dict[str, Path]:
    """Convert the release's Caffe files; returns {"weights": path, "onnx_fp32": ..., "onnx_fp16": ...}.

    `mean` may be None: the per-channel mean of the release is then used (and recorded)."""
    from engine.network.resolve import WEIGHTS_FILE, default_model_dir, resolve_model

    out_dir = Path(out_dir) if out_dir is not None else default_model_dir()
    if not out_dir.is_dir():
        raise InputError(f"out_dir: folder {out_dir} does not exist")
    net = caffe_io.read_prototxt(prototxt)
    caffe_io.validate_prototxt(net, prototxt)
    weights = W.from_caffe_blobs(caffe_io.read_caffemodel(caffemodel), str(caffemodel))
    mean_img = caffe_io.read_mean(mean) if mean is not None else W.channel_mean_image()
    source = {"prototxt": {"file": Path(prototxt).name, "sha256": file_sha256(prototxt)},
              "caffemodel": {"file": Path(caffemodel).name, "sha256": file_sha256(caffemodel)},
              "mean": ({"file": Path(mean).name, "sha256": file_sha256(mean)} if mean is not None
                       else {"file": None, "note": "per-channel mean (B, G, R) used; no mean file given"})}
    official = OFFICIAL_SHA256["deploy_network.prototxt"]
    if source["prototxt"]["sha256"] != official:
        log.warning("%s differs from the official deploy_network.prototxt (sha256 %s); it describes the same "
                    "network, so converting anyway", prototxt, official)
    out = {"weights": out_dir / WEIGHTS_FILE}
    W.save_weights(out["weights"], weights, mean_img, {"synthetic": False, "source": source})
    log.warning("wrote converted weights %s", out["weights"])
    if onnx:
        model = resolve_model(out_dir, allow_synthetic=False)
        for p in ("fp32", "fp16"):
            out[f"onnx_{p}"] = model.onnx_path(p)
    return out
