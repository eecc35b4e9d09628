"""`fetch`, `convert`, `build`: getting from a fresh clone to the official model.

    fetch   -> models/cnn3dmm/downloads/ (network release zip, extracted; topology .mat)
    convert -> models/cnn3dmm/cnn3dmm.safetensors (+ ONNX fp32/fp16), and with the user's
               Basel Face Model, models/cnn3dmm/<MORPHABLE_CACHE> (the decode-ready cache)
    build   -> the TensorRT engine next to the ONNX files (cached per GPU and TensorRT version)
"""
from __future__ import annotations

import sys
from pathlib import Path

from engine.cli import common as C
from engine.cli.common import Report, progress, say
from engine.errors import EngineError, InputError

CAFFE_FILES = {"prototxt": "deploy_network.prototxt", "caffemodel": "3dmm_cnn_resnet_101.caffemodel",
               "mean": "mean.binaryproto"}
BFM_FILES = {"bfm": "01_MorphableModel.mat", "topology": "mod_struct_expr.mat"}


def _model_dir(args) -> Path:
    from engine.network.resolve import default_model_dir

    return Path(args.network_dir) if getattr(args, "network_dir", None) else default_model_dir()


def morphable_cache_path(model_dir: Path) -> Path:
    """Where `convert --bfm` writes the trimmed Basel Face Model; reconstruct and info
    pick it up from there (engine.cli.common.default_morphable)."""
    return model_dir / C.MORPHABLE_CACHE_FILE


def _find(folder: Path, name: str) -> Path | None:
    """A downloaded file by name, at the top of `folder` or anywhere below (archives
    sometimes wrap their files in a folder)."""
    if not folder.is_dir():
        return None
    top = folder / name
    if top.is_file():
        return top
    return next(iter(sorted(folder.rglob(name))), None)


# --------------------------------------------------------------------------- fetch


def run_fetch(args) -> int:
    from engine import fetch as F

    names = args.assets or list(F.ASSETS)
    unknown = [n for n in names if n not in F.ASSETS]
    if unknown:
        raise InputError(f"fetch: unknown asset {unknown[0]!r}, expected one of {', '.join(F.ASSETS)}")
    dest = Path(args.dest) if args.dest else _model_dir(args) / "downloads"
    report = Report()
    for name in names:
        asset = F.ASSETS[name]
        bar = progress(None, "B", name, args.quiet)
        bar.unit_scale = True

        def cb(done, total, bar=bar):
            if total is not None and bar.total != total:
                bar.total = total
            bar.update(done - bar.n)

        try:
            with bar:
                res = F.fetch([name], dest, base_url=args.base_url, timeout=args.timeout, progress=cb)[name]
        except EngineError as e:  # one asset failing does not stop the others
            report.fail(asset.url(args.base_url), str(e))
            continue
        state = "already present" if res.skipped else "downloaded"
        pinned = "verified" if asset.sha256 else "no published checksum; pin this one"
        print(f"{name}: {state}: {res.path}\n  sha256 {res.sha256} ({pinned})")
        for p in res.extracted:
            print(f"  extracted {p}")
    if not args.quiet:
        print("\nNext: the Basel Face Model (not downloadable automatically):\n")
        print(F.bfm_instructions(dest))
        print("Then convert the network: python -m engine convert   (looks in " f"{dest})")
    return report.exit_code


# --------------------------------------------------------------------------- convert


def _pick(args, key: str, downloads: Path, required: bool) -> Path | None:
    given = getattr(args, key)
    if given:
        p = Path(given)
        if not p.is_file():
            raise InputError(f"--{key} {p}: no such file")
        return p
    found = _find(downloads, CAFFE_FILES.get(key) or BFM_FILES[key])
    if found is None and required:
        name = CAFFE_FILES.get(key) or BFM_FILES[key]
        raise InputError(f"--{key}: not given and no {name} under {downloads}; run `fetch` or pass --{key} FILE")
    return found


def run_convert(args) -> int:
    model_dir = _model_dir(args)
    downloads = Path(args.downloads) if args.downloads else model_dir / "downloads"
    bfm_asked = bool(args.bfm or args.topology)
    caffe_asked = bool(args.prototxt or args.caffemodel or args.mean)
    if not (bfm_asked or caffe_asked):  # no file named: convert whatever `fetch` and the user put there
        caffe_asked = _find(downloads, CAFFE_FILES["caffemodel"]) is not None
        bfm_asked = _find(downloads, BFM_FILES["bfm"]) is not None
        if not (caffe_asked or bfm_asked):
            raise InputError(f"convert: nothing to convert: no {CAFFE_FILES['caffemodel']} or {BFM_FILES['bfm']} "
                             f"under {downloads}; run `fetch`, or pass --prototxt/--caffemodel/--mean or --bfm/--topology")
    if not model_dir.is_dir():
        try:
            model_dir.mkdir(parents=True)
        except OSError as e:
            raise InputError(f"{model_dir}: cannot create the model card folder: {e.strerror or e}") from None
    if caffe_asked:
        from engine.network import convert_caffe

        proto = _pick(args, "prototxt", downloads, True)
        caffemodel = _pick(args, "caffemodel", downloads, True)
        mean = _pick(args, "mean", downloads, False)
        say(f"converting {caffemodel} (this reads about 170 MB and takes a minute)")
        out = convert_caffe(proto, caffemodel, mean, model_dir, onnx=not args.no_onnx)
        for what, p in out.items():
            print(f"{what}: {p}")
    if bfm_asked:
        from engine.morphable import load_model

        bfm = _pick(args, "bfm", downloads, True)
        topo = _pick(args, "topology", downloads, True)
        model = load_model(bfm, mod_struct_mat=topo)
        target = morphable_cache_path(model_dir)
        model.save_cache(target)
        print(f"morphable model: {target} ({model.num_vertices} vertices, {model.num_faces} faces)")
    return 0


# --------------------------------------------------------------------------- build


def run_build(args) -> int:
    import importlib.util

    from engine import _core
    from engine.errors import UnavailableError

    # Say exactly what is missing before anything touches TensorRT (see DESIGN.md: never
    # create TensorRT objects without a working device).
    if importlib.util.find_spec("tensorrt") is None:
        raise UnavailableError("build: TensorRT is not installed: pip install tensorrt (needs an NVIDIA GPU "
                               "and driver); on CPU-only machines use --runner onnxruntime instead, no build needed")
    if not _core.has_cuda():
        raise UnavailableError("build: no usable NVIDIA GPU (or engine._C was built without CUDA): a TensorRT "
                               "engine is built for one specific GPU, on that GPU")
    from engine.runners import create_runner

    say("building the TensorRT engine (minutes the first time; cached afterwards)")
    with create_runner("tensorrt", _model_dir(args), max_batch=args.max_batch, precision=args.precision,
                       opt_batch=args.opt_batch) as r:
        print(f"TensorRT engine: {getattr(r, 'engine_path', '?')}")
        if r.synthetic:
            print("note: built from the SYNTHETIC weights; run `convert` first for the trained network",
                  file=sys.stderr)
    return 0
