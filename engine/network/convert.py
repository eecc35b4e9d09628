"""`convert_caffe`: the release's three files -> the model card's artifacts.

Writes into `out_dir` (default: engine.network.resolve.default_model_dir(), created when
needed): `cnn3dmm.safetensors` (our weight file, with the source files'
sha256, the kind of mean and the float16 plan in its metadata) and the fp32 and fp16
ONNX graphs. Every write is atomic. Needs numpy, protobuf and safetensors, plus onnx for
the graphs; never PyTorch.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from engine.errors import InputError
from engine.network import caffe_io
from engine.network import weights as W

log = logging.getLogger("engine.network")

CAFFEMODEL = "3dmm_cnn_resnet_101.caffemodel"
# sha256 of the official release files, by the authors' names (models/cnn3dmm/manifest.json
# lists the same; a test checks that they agree). Embedded here, not read from the manifest,
# because an installed package has no model card beside it. None: not known to this project.
OFFICIAL_SHA256: dict[str, str | None] = {
    "deploy_network.prototxt": "c8ed5e80b212399494d8a0e81b0e694bb729cebce0e87ba873163cd5839c8545",
    "mean.binaryproto": "bbada1be647a623972f25077e9083738418152efc8284ccf8bba872e095dba22",
    # No copy of the caffemodel has been verified against the authors' release yet: until its
    # sha256 is recorded here (and in the manifest), no conversion can be called official.
    CAFFEMODEL: None,
}
NOT_VERIFIED = "not verified: the official caffemodel's sha256 is not known to this project"
# What using the per-channel mean instead of the mean image costs (issue 8: measured on a
# full-size model).
CHANNEL_MEAN_COST = "outputs move by up to about 10% of their spread"


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _megabytes(path) -> str:
    try:
        return f"{Path(path).stat().st_size / 1e6:.0f} MB"
    except OSError:
        return "size unknown"


def verify_source(source) -> tuple[bool, str]:
    """(official, why) for converted weights, from the sha256 of the source files that
    `convert_caffe` recorded in their metadata (`source`). Official means the caffemodel and
    the mean image are byte for byte the release's; a prototxt may differ in spelling (it is
    checked to compute the same network). While the official caffemodel's sha256 is unknown
    (OFFICIAL_SHA256[CAFFEMODEL] is None, as today), nothing is official: `why` is NOT_VERIFIED."""
    source = source if isinstance(source, dict) else {}
    cm = source.get("caffemodel") if isinstance(source.get("caffemodel"), dict) else {}
    mean = source.get("mean") if isinstance(source.get("mean"), dict) else {}
    known = (OFFICIAL_SHA256[CAFFEMODEL] or "").lower() or None
    found = cm.get("sha256")
    if known is None:
        return False, NOT_VERIFIED
    if not found:
        return False, "not verified: the weights do not record the sha256 of the caffemodel they came from"
    if str(found).lower() != known:
        return False, (f"not the official caffemodel: sha256 {str(found)[:16]}... differs from the release's "
                       f"{known[:16]}...")
    if not mean.get("file"):
        return False, "the official caffemodel, converted with the per-channel mean instead of the release's mean image"
    if str(mean.get("sha256", "")).lower() != OFFICIAL_SHA256["mean.binaryproto"]:
        return False, "the official caffemodel, but the mean image differs from the release's (sha256)"
    return True, "verified: the caffemodel and the mean image match the release's sha256"


def ignored_summary(off_path, ignored) -> str | None:
    """One line saying which layers a conversion leaves out (as Caffe does), or None when
    none; the full lists are logged at info level."""
    def names(items) -> str:
        items = sorted(items)
        return ", ".join(items[:3]) + (", ..." if len(items) > 3 else "")

    parts = []
    if off_path:
        parts.append(f"{len(off_path)} prototxt layer(s) that do not feed the output ({names(off_path)})")
    if ignored:
        parts.append(f"{len(ignored)} caffemodel layer(s) the network does not use ({names(ignored)})")
    return "ignored, as Caffe does: " + "; ".join(parts) + " (-v lists them all)" if parts else None


def check_prototxt(prototxt):
    """Parse and validate a deploy prototxt (cheap: do it before the long caffemodel read);
    returns the caffe_net.NetMatch. Warns when it is not byte for byte the release's file."""
    net = caffe_io.read_prototxt(prototxt)
    match = caffe_io.validate_prototxt(net, prototxt)
    official = OFFICIAL_SHA256["deploy_network.prototxt"]
    if file_sha256(prototxt) != official:
        log.warning("%s differs from the official deploy_network.prototxt (sha256 %s); it computes the same "
                    "network, so converting anyway%s", prototxt, official,
                    f" (layers renamed: {len(match.renamed)})" if match.renamed else "")
    if match.off_path:
        log.info("%s: layers that do not feed the output (ignored): %s", prototxt, ", ".join(match.off_path))
    return match


def convert_caffe(prototxt, caffemodel, mean=None, out_dir=None, *, onnx: bool = True,
                  channel_mean: bool = False, progress=None) -> dict[str, Path]:
    """Convert the release's Caffe files; returns {"weights": path, "onnx_fp32": ..., "onnx_fp16": ...}.

    The CPU variants (int8, bf16) are built and validated on the new weights afterwards, by
    engine.validate.validate_variants(resolve_model(out_dir)) (about a minute; the CLI's `convert`
    does it unless `--no-variants`): they run the runners, a room above this one, so `auto`
    then chooses from measurements on these weights.

    `mean`: the release's mean.binaryproto. The mean image is part of the network, so
    converting without it is refused unless `channel_mean=True` asks for the release's
    per-channel mean (B, G, R) instead; such a model says so in its metadata, `describe()`,
    `info` and every result's provenance. `progress(message)`: told, one line each, before
    each long step (the cheap checks of the prototxt and the mean come first) and which
    layers are left out (ignored_summary). Whether the result is the official network:
    verify_source(metadata["source"]). Errors: InputError
    (arguments), ModelFileError (files), each naming the file."""
    from engine.network import fp16
    from engine.network.resolve import CHANNEL_MEAN, MEAN_IMAGE, WEIGHTS_FILE, default_model_dir, resolve_model

    if out_dir is not None and not Path(out_dir).is_dir():
        raise InputError(f"out_dir: folder {out_dir} does not exist")
    # The default card (a per-user folder in an installed package) is created once there is
    # something to write into it.
    out_dir = Path(out_dir) if out_dir is not None else default_model_dir()
    if mean is None and not channel_mean:
        raise InputError("mean: not given; the mean image (mean.binaryproto) is part of the network. Pass it, "
                         f"or channel_mean=True to use the release's per-channel mean instead ({CHANNEL_MEAN_COST})")
    if mean is not None and channel_mean:
        raise InputError(f"mean: {mean} given together with channel_mean=True; pass one of them")
    say = progress or (lambda message: None)
    match = check_prototxt(prototxt)
    mean_img = caffe_io.read_mean(mean) if mean is not None else W.channel_mean_image()
    say(f"reading {caffemodel} ({_megabytes(caffemodel)})")
    ignored: set[str] = set()
    blobs = caffe_io.read_caffemodel(caffemodel, layers=set(match.layer_names.values()), ignored=ignored)
    weights = W.from_caffe_blobs(blobs, str(caffemodel), match.layer_names)
    del blobs
    summary = ignored_summary(match.off_path, ignored)
    if summary:
        say(summary)
    source = {"prototxt": {"file": Path(prototxt).name, "sha256": file_sha256(prototxt)},
              "caffemodel": {"file": Path(caffemodel).name, "sha256": file_sha256(caffemodel)},
              "mean": ({"file": Path(mean).name, "sha256": file_sha256(mean)} if mean is not None
                       else {"file": None, "note": f"per-channel mean (B, G, R) {W.channel_mean_bgr()}, asked for "
                                                   f"explicitly: not the release's mean image ({CHANNEL_MEAN_COST})"})}
    if channel_mean:
        log.warning("converting with the per-channel mean instead of the release's mean image: %s; every result "
                    "made with these weights says so", CHANNEL_MEAN_COST)
    say("checking which layers fit float16 (a forward pass over real face crops, seconds)")
    plan = fp16.make_plan(W.fuse(weights), mean_img)
    out = {"weights": out_dir / WEIGHTS_FILE}
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{out_dir}: cannot create the model card folder: {e.strerror or e}") from None
    W.save_weights(out["weights"], weights, mean_img,
                   {"synthetic": False, "source": source, "mean_kind": CHANNEL_MEAN if channel_mean else MEAN_IMAGE,
                    "fp16_plan": plan.to_json()})
    log.info("wrote converted weights %s", out["weights"])
    official, why = verify_source(source)
    say(f"{out['weights'].name}: {'the official network' if official else 'converted'} ({why})")
    if not onnx:  # else the float16 export says it
        fp16.log_plan(plan, f"{out['weights'].name}: float16")
    if onnx:
        say("writing the float32 and float16 ONNX graphs")
        model = resolve_model(out_dir, allow_synthetic=False)
        for p in ("fp32", "fp16"):
            out[f"onnx_{p}"] = model.onnx_path(p)
    return out
