"""`fetch`, `convert`, `build`: getting from a fresh clone (or install) to the official model.

The model card folder CARD is --network-dir, else engine.network.resolve.default_model_dir()
($ENGINE3DMM_MODEL_DIR, the checkout's models/cnn3dmm, or ~/.local/share/engine3dmm/cnn3dmm).

    fetch    -> CARD/downloads/ (network release zip, extracted; topology .mat)
    convert  -> CARD/cnn3dmm.safetensors (+ ONNX fp32/fp16), and with the user's
                Basel Face Model, CARD/<MORPHABLE_CACHE> (the decode-ready cache); then validate
    validate -> CARD/cnn3dmm.int8.onnx and CARD/cnn3dmm.variants.json: the CPU variants and
                their errors against float32 (engine.validate)
    build    -> the TensorRT engine next to the ONNX files (cached per GPU and TensorRT version)
"""
from __future__ import annotations

import sys
from pathlib import Path

from engine.cli import common as C
from engine.cli.common import Report, progress, say
from engine.errors import EngineError, InputError

# The release's Caffe files, found by role (extension) under the downloads folder whatever
# their names: face_swap's zip holds 3dmm_cnn_resnet_101.caffemodel, 3dmm_cnn_resnet_101_deploy.
# prototxt and 3dmm_cnn_resnet_101_mean.binaryproto; the authors' page deploy_network.prototxt
# and mean.binaryproto. Among several candidates only those of the right content count.
CAFFE_ROLES = {"prototxt": ".prototxt", "caffemodel": ".caffemodel", "mean": ".binaryproto"}
BFM_FILES = {"bfm": "01_MorphableModel.mat", "topology": "mod_struct_expr.mat"}


def _model_dir(args) -> Path:
    """The model card folder: --network-dir, else the default (engine.network.resolve.locate_model_dir).
    Not checked here: `convert` and `fetch` create it; `validate` and `build` check it first
    (engine.cli.common.check_network_dir)."""
    from engine.network.resolve import locate_model_dir

    return locate_model_dir(getattr(args, "network_dir", None))[0]


def morphable_cache_path(model_dir: Path) -> Path:
    """Where `convert --bfm` writes the trimmed Basel Face Model; reconstruct and info
    pick it up from there (engine.cli.common.default_morphable)."""
    from engine.network.resolve import MORPHABLE_CACHE_FILE

    return model_dir / MORPHABLE_CACHE_FILE


def _downloaded(folder: Path) -> list[Path]:
    """Finished files under `folder`, recursively (archives sometimes wrap their files in a
    folder); not the hidden temporaries of unfinished writes nor `.partial` downloads."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")
                  and not p.name.endswith(".partial"))


def _find(folder: Path, name: str) -> Path | None:
    """A downloaded file by name, at the top of `folder` or anywhere below."""
    top = folder / name
    if top.is_file():
        return top
    return next((p for p in _downloaded(folder) if p.name == name), None)


def _fits_role(path: Path, role: str) -> bool:
    """Whether a candidate file holds what its role needs (cheap: the prototxt and the mean are small)."""
    from engine.network import caffe_io

    try:
        if role == "prototxt":
            caffe_io.validate_prototxt(caffe_io.read_prototxt(path), path)
        else:
            caffe_io.read_mean(path)
    except EngineError:
        return False
    return True


def find_caffe_file(downloads: Path, role: str) -> Path | None:
    """The one file of `role` ("prototxt", "caffemodel", "mean") under `downloads`, or None.
    Several candidates: those whose content fits the role (prototxt, mean); still several:
    an InputError listing them."""
    found = [p for p in _downloaded(downloads) if p.name.lower().endswith(CAFFE_ROLES[role])]
    if len(found) > 1 and role != "caffemodel":  # a caffemodel is too big to open just to choose
        fitting = [p for p in found if _fits_role(p, role)]
        found = fitting or found
    if len(found) > 1:
        raise InputError(f"--{role}: {len(found)} candidate *{CAFFE_ROLES[role]} files under {downloads}: "
                         + ", ".join(str(p) for p in found) + f"; pass --{role} FILE to pick one")
    return found[0] if found else None


# --------------------------------------------------------------------------- fetch


def _options(args, *, downloads: Path | None = None) -> str:
    """The folder options the user gave, to repeat in a suggested command: `--network-dir N`
    when given, `--downloads D` when D is not where `convert` would look anyway."""
    import shlex

    opts = []
    if getattr(args, "network_dir", None):
        opts.append(f"--network-dir {shlex.quote(str(args.network_dir))}")
    if downloads is not None and downloads != _model_dir(args) / "downloads":
        opts.append(f"--downloads {shlex.quote(str(downloads))}")
    return " ".join(opts)


def run_fetch(args) -> int:
    from engine import fetch as F

    names = args.assets or list(F.ASSETS)
    unknown = [n for n in names if n not in F.ASSETS]
    if unknown:
        raise InputError(f"fetch: unknown asset {unknown[0]!r}, expected one of {', '.join(F.ASSETS)}")
    dest = Path(args.downloads) if args.downloads else _model_dir(args) / "downloads"
    report = Report()
    fetched = {}
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
        fetched[name] = res
        state = "already present" if res.skipped else "downloaded"
        pinned = "verified" if asset.sha256 else "no published checksum; pin this one"
        print(f"{name}: {state}: {res.path}\n  sha256 {res.sha256} ({pinned})")
        for p in res.extracted:
            print(f"  extracted {p}")
    if not args.quiet:
        _next_steps(args, dest, fetched)
    return report.exit_code


def _next_steps(args, dest: Path, fetched: dict) -> None:
    """What is left to do after `fetch` (`fetched`: {asset: FetchResult} of this run), with the
    user's folder options; every step already done is left out. Convert the network when its
    files are there and it is not converted yet (or was just downloaded anew); the Basel Face
    Model steps while the model card has no converted BFM (they do not depend on any download
    succeeding), without putting the BFM in place once it is there, nor fetching the topology
    file once it is (verified)."""
    from engine import fetch as F
    from engine.network.resolve import WEIGHTS_FILE

    opts = _options(args, downloads=dest)
    card = _model_dir(args)
    steps = []
    new_network = "network" in fetched and not fetched["network"].skipped
    if _has_caffe_file(dest, "caffemodel") and (new_network or not (card / WEIGHTS_FILE).is_file()):
        steps.append(f"Convert the network: engine3dmm convert{' ' + opts if opts else ''}   (looks in {dest})")
    if not morphable_cache_path(card).is_file():
        done = {step for step, is_done in (("bfm", _find(dest, BFM_FILES["bfm"]) is not None),
                                           ("topology", "topology" in fetched or F.is_fetched("topology", dest)))
                if is_done}
        steps.append(F.bfm_instructions(dest, options=opts, done=done))
    if steps:
        print("\nNext:\n\n" + "\n\n".join(steps))


def _has_caffe_file(downloads: Path, role: str) -> bool:
    """Whether `downloads` holds at least one file of `role` (several count too)."""
    try:
        return find_caffe_file(downloads, role) is not None
    except InputError:
        return True


# --------------------------------------------------------------------------- convert


def _given(args, key: str) -> Path | None:
    """The file the user named with --KEY (None when not given). InputError (exit 1) naming the
    option, what it expects and what is there instead: a folder, nothing, a broken link..."""
    from engine.errors import NO_SUCH_PATH, describe_path

    given = getattr(args, key)
    if not given:
        return None
    p = Path(given)
    kind = describe_path(p)
    if kind != "a file":
        found = "no such file" if kind == NO_SUCH_PATH else f"found {kind}"
        raise InputError(f"--{key} {p}: expected a file, {found}")
    return p


def _how_to_get(args, what: str, downloads: Path) -> str:
    """Where the missing `what` comes from, as a command with the user's folder options where
    `fetch` can get it ("network", "topology"), and in the words `fetch` prints for the Basel
    Face Model, which it cannot get ("bfm": engine.fetch.bfm_source)."""
    from engine import fetch as F

    if what == "bfm":
        return f"{F.bfm_source()}; put it in {downloads}"
    opts = _options(args, downloads=downloads)
    return f"run `engine3dmm fetch {what}{' ' + opts if opts else ''}`"


def _pick_bfm(args, key: str, downloads: Path) -> Path:
    found = _given(args, key) or _find(downloads, BFM_FILES[key])
    if found is None:
        raise InputError(f"--{key}: not given and no {BFM_FILES[key]} under {downloads}: "
                         f"{_how_to_get(args, key, downloads)}, or pass --{key} FILE")
    return found


def _pick_caffe(args, role: str, downloads: Path, required: bool) -> Path | None:
    found = _given(args, role) or find_caffe_file(downloads, role)
    if found is None and required:
        raise InputError(f"--{role}: not given and no *{CAFFE_ROLES[role]} file under {downloads}: "
                         f"{_how_to_get(args, 'network', downloads)}, or pass --{role} FILE")
    return found


def _say_picked(args, picked: dict[str, Path], downloads: Path) -> None:
    """One line per input file, saying whether the user named it or it was found by role."""
    if args.quiet:
        return
    width = max(map(len, picked))
    for role, path in picked.items():
        how = "given" if getattr(args, role) else f"found under {downloads}"
        say(f"{role + ':':{width + 1}} {path} ({how})")


def run_convert(args) -> int:
    import logging

    from engine.network.convert import CHANNEL_MEAN_COST

    model_dir = _model_dir(args)
    downloads = Path(args.downloads) if args.downloads else model_dir / "downloads"
    expression = _given(args, "expression") if getattr(args, "expression", None) else None
    # --topology alone asks for the BFM's trimming; beside --expression it may only map the basis.
    bfm_asked = bool(args.bfm or (args.topology and not expression))
    caffe_asked = bool(args.prototxt or args.caffemodel or args.mean)
    if not (bfm_asked or caffe_asked or expression):  # no file named: convert whatever `fetch` and the user put there
        caffe_asked = find_caffe_file(downloads, "caffemodel") is not None
        bfm_asked = _find(downloads, BFM_FILES["bfm"]) is not None
        if not (caffe_asked or bfm_asked):
            raise InputError(f"convert: nothing to convert: no *.caffemodel or {BFM_FILES['bfm']} under {downloads}: "
                             f"for the network, {_how_to_get(args, 'network', downloads)}, or pass --prototxt/"
                             f"--caffemodel/--mean; {_how_to_get(args, 'bfm', downloads)}, or pass --bfm/--topology")
    picked: dict[str, Path] = {}
    if caffe_asked:  # every file found (and the cheap ones checked) before anything is written
        picked["prototxt"] = proto = _pick_caffe(args, "prototxt", downloads, True)
        picked["caffemodel"] = caffemodel = _pick_caffe(args, "caffemodel", downloads, True)
        mean = None if args.channel_mean else _pick_caffe(args, "mean", downloads, False)
        if mean is None and not args.channel_mean:
            raise InputError(f"--mean: not given and no mean image (*.binaryproto) under {downloads}; the mean image "
                             "is part of the network: pass --mean FILE, or --channel-mean to use the release's "
                             f"per-channel mean instead ({CHANNEL_MEAN_COST})")
        if mean is not None:
            picked["mean"] = mean
        else:  # --channel-mean: the user may not know that a mean image is there; say it is left out
            try:
                present = find_caffe_file(downloads, "mean")
            except InputError:  # several
                present = f"(*.binaryproto) under {downloads}"
            if present:
                logging.getLogger("engine.cli").warning(
                    "--channel-mean: ignoring the mean image %s, as asked: %s compared with the release (drop "
                    "--channel-mean to use it)", present, CHANNEL_MEAN_COST)
    if bfm_asked:
        picked["bfm"] = bfm = _pick_bfm(args, "bfm", downloads)
        picked["topology"] = topo = _pick_bfm(args, "topology", downloads)
    if expression:  # it is mapped by the release's mod_struct_expr.mat: found (and checked) now
        picked["expression"] = expression
        picked["topology"] = _pick_bfm(args, "topology", downloads)
    _say_picked(args, picked, downloads)
    variants = caffe_asked and not args.no_onnx and not args.no_variants
    if variants and args.calibration:
        _check_calibration(args.calibration)  # a typo is found before the long conversion
    if not model_dir.is_dir():
        try:
            model_dir.mkdir(parents=True)
        except OSError as e:
            raise InputError(f"{model_dir}: cannot create the model card folder: {e.strerror or e}") from None
    if caffe_asked:
        from engine.network import convert_caffe

        out = convert_caffe(proto, caffemodel, mean, model_dir, onnx=not args.no_onnx,
                            channel_mean=bool(args.channel_mean), progress=None if args.quiet else say)
        for what, p in out.items():
            print(f"{what}: {p}")
    if bfm_asked or expression:
        from engine.morphable import load_model, write_cache

        target = morphable_cache_path(model_dir)
        model = load_model(bfm, mod_struct_mat=topo) if bfm_asked else _converted_model(target)
        if expression:
            model = _with_expression(args, model, expression, downloads)
        write_cache(model, target)
        print(f"morphable model: {target} ({model.num_vertices} vertices, {model.num_faces} faces"
              + (f", {model.expression_components} expression components" if model.has_expression else "") + ")")
    if variants:  # after the Basel Face Model: the meshes compared are decoded with it
        from engine.network.resolve import resolve_model

        _validate(args, resolve_model(model_dir, allow_synthetic=False), "convert")
    return 0


def _converted_model(target: Path):
    """convert --expression alone: the Basel Face Model converted before, to add the basis to."""
    from engine.morphable import load_model

    if not target.is_file():
        raise InputError(f"--expression: no converted Basel Face Model at {target} to add it to; convert it in the "
                         f"same run: --bfm 01_MorphableModel.mat --topology mod_struct_expr.mat --expression FILE")
    return load_model(target)


def _with_expression(args, model, expression: Path, downloads: Path):
    """`model` with 3DDFA's expression basis (Model_Expression.mat) mapped by the release's
    mod_struct_expr.mat (--topology, or found under the downloads): engine.morphable.expression."""
    from engine.morphable.expression import add_expression

    return add_expression(model, expression, _pick_bfm(args, "topology", downloads))


# --------------------------------------------------------------------------- validate


def _check_calibration(folder) -> None:
    """--calibration must be a folder: InputError (exit 1) naming the option and what is there."""
    from engine.network.faces import check_folder

    check_folder(Path(folder), "--calibration")


# What each command adds to the line announcing the variants' build (about a minute): convert's
# user may not have asked for it, and can skip it; validate's user asked for exactly this.
_VARIANTS_HINT = {"convert": " (--no-variants skips this; `engine3dmm validate` redoes it later)", "validate": ""}


def _validate(args, model, command: str):
    """Build and validate the variants of `model` for `command` ("convert" or "validate": what
    the opening line suggests), print one line per variant (with whether it can run here); the
    card."""
    from engine.cli.common import default_morphable
    from engine.network import variants as V
    from engine.validate import validate_variants

    quiet = bool(getattr(args, "quiet", False))
    if not quiet:
        say(f"building and validating the CPU variants ({', '.join(args.variants)}) of the "
            f"{'SYNTHETIC' if model.synthetic else 'converted'} weights: about a minute{_VARIANTS_HINT[command]}")
    card = validate_variants(model, calibration_dir=args.calibration, precisions=tuple(args.variants),
                             morphable=default_morphable(args), threads=getattr(args, "threads", None),
                             progress=None if quiet else say)
    budget = V.check_max_error(getattr(args, "max_error", None))
    if not getattr(args, "json", False):
        print(f"variants: {card.path} (built in {card.data['build_seconds']:.0f} s"
              + ("; SYNTHETIC weights" if card.synthetic else "") + ")")
        available = _cpu_runners()
        for line in V.summary_lines(card, budget, available):
            print(f"  {line}")
        choice = V.choose(model, "onnxruntime", explicit_runner=False, precision=None, max_error=budget,
                          available=available)
        print(f"  auto picks {choice.runner} {choice.precision} (budget {budget:g} sd)")
    return card


def _cpu_runners() -> list[str]:
    from engine.runners import available_runners

    return [r for r in available_runners() if r in ("onnxruntime", "torch-cpu")]


def run_validate(args) -> int:
    import json

    from engine.network.resolve import resolve_model

    C.check_network_dir(args)
    if args.calibration:
        _check_calibration(args.calibration)
    card = _validate(args, resolve_model(_model_dir(args)), "validate")
    if args.json:
        json.dump(card.data, sys.stdout, indent=1, allow_nan=False)
        sys.stdout.write("\n")
    return 0


# --------------------------------------------------------------------------- build


def run_build(args) -> int:
    import importlib.util

    from engine import _core
    from engine.errors import UnavailableError

    C.check_network_dir(args)  # an explicit folder must be a model card (a typo is not built into)
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
