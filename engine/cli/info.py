"""`info` / `doctor`: what is installed and usable, and which models are active.

Each probe is guarded: a broken piece is reported as a problem (and makes the exit
code 1), never a crash, since this is the command people run when something is wrong.
TensorRT is never imported here (creating its objects without a driver can crash);
its version comes from the package metadata.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import platform
import sys
from pathlib import Path

PACKAGES = (("numpy", "numpy"), ("pillow", "PIL"), ("torch", "torch"), ("onnxruntime", "onnxruntime"),
            ("onnx", "onnx"), ("tensorrt", "tensorrt"), ("cuda-python", "cuda"), ("opencv", "cv2"),
            ("dlib", "dlib"), ("face-recognition-models", "face_recognition_models"), ("pyarrow", "pyarrow"),
            ("safetensors", "safetensors"), ("tqdm", "tqdm"), ("ray", "ray"))  # ray: the [serve] extra
_DIST = {"pillow": ("pillow", "Pillow"), "opencv": ("opencv-python-headless", "opencv-python"),
         "dlib": ("dlib-bin", "dlib"), "onnxruntime": ("onnxruntime", "onnxruntime-gpu"),
         "tensorrt": ("tensorrt", "tensorrt-cu12", "tensorrt-cu13", "tensorrt_cu12", "tensorrt_cu13"),
         "cuda-python": ("cuda-python", "cuda-bindings")}


def _version(name: str, module: str) -> str | None:
    if importlib.util.find_spec(module) is None:
        return None
    for dist in _DIST.get(name, (name,)):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "installed"


def _guard(problems: list[str], what: str, fn):
    try:
        return fn()
    except Exception as e:  # reported, not raised: see module docstring
        problems.append(f"{what}: {e}")
        return None


def _network(args, problems):
    from engine.cli.common import check_network_dir
    from engine.network.resolve import WEIGHTS_FILE, locate_model_dir

    folder, origin = locate_model_dir(args.network_dir)
    weights = folder / WEIGHTS_FILE
    out = {"folder": str(folder), "folder_from": origin, "weights": str(weights) if weights.is_file() else None}
    try:  # the rule every run applies to a folder the user named: say here what a run would refuse
        check_network_dir(args)
    except Exception as e:
        problems.append(f"network: {e}")
        out.update(status="NOT A MODEL CARD", detail=str(e))
        return out
    if not weights.is_file():
        out.update(status="SYNTHETIC", detail=f"no {WEIGHTS_FILE}: the built-in synthetic weights are used "
                                              "(meaningless coefficients); run `fetch` then `convert`")
        out["variants"] = _variants(folder, problems)
        return out
    from engine.network.weights import load_weights

    try:
        _, _, meta = load_weights(weights)  # validates every tensor name and shape
    except Exception as e:
        problems.append(f"network: {e}")
        out.update(status="BROKEN", detail=str(e))
        return out
    if meta.get("synthetic"):
        out.update(status="SYNTHETIC", detail="synthetic weights file")
        out["variants"] = _variants(folder, problems)
        return out
    from engine.network.convert import CHANNEL_MEAN_COST, verify_source
    from engine.network.fp16 import Fp16Plan
    from engine.network.resolve import CHANNEL_MEAN, mean_kind

    kind = mean_kind(meta)
    official, why = verify_source(meta.get("source"))
    # "official" only when the source files' sha256 prove it; anything else is just converted.
    out.update(status="official" if official else "converted", verified=official, verification=why,
               detail=_source_text(meta.get("source")), mean=kind)
    if kind == CHANNEL_MEAN:
        out["status"] += ", PER-CHANNEL MEAN"
        out["detail"] += (f"; converted without the release's mean image (--channel-mean): {CHANNEL_MEAN_COST} "
                          "compared with the release")
    plan = Fp16Plan.from_json(str(meta.get("fp16_plan", "")))
    if plan is not None:
        out["float16"] = plan.summary()
    out["variants"] = _variants(folder, problems)
    return out


def _variants(folder: Path, problems) -> dict:
    """The CPU variants of the weights this card runs (engine.network.variants): the card's
    file, each variant's validated errors and speed, whether it can run here (the runners'
    own check, engine.network.variants.unusable_reason: "usable" or "not usable here: why"),
    and what `auto` picks at the default budget. Loading the weights to check the card's
    freshness takes a second."""
    from engine.network import variants as V
    from engine.network.resolve import resolve_model
    from engine.runners import available_runners

    if not any(folder.glob("*.variants.json")):  # cheap: no weights need loading to say so
        return {"status": "none", "detail": "no variants built: `engine3dmm validate` builds and measures them"}
    try:
        model = resolve_model(folder)
        card, problem = V.load_card(model)
        if card is None:
            return {"card": str(V.card_path(model)), "status": "NOT USABLE" if problem else "none",
                    "detail": problem or "no variants built: `engine3dmm validate` builds and measures them"}
        cpu = [r for r in available_runners() if r in V.CPU_RUNNERS]
        choice = V.choose(model, cpu[0] if cpu else "onnxruntime", explicit_runner=False, precision=None,
                          available=cpu)
        entries = []
        for e in card.entries():
            item = {k: e.get(k) for k in ("runner", "precision", "status", "why", "errors", "speed",
                                          "validation_faces", "calibration_faces", "file") if e.get(k) is not None}
            if e.get("status") == "ok":  # null: it runs here
                item["unusable_here"] = V.unusable_reason(card, e, cpu)
                item["usable"] = item["unusable_here"] is None
            entries.append(item)
        return {"card": str(card.path), "status": "validated", "synthetic": card.synthetic,
                "built": card.data.get("built"), "build_seconds": card.data.get("build_seconds"),
                "machine": card.data.get("machine"), "calibration": card.data.get("calibration"),
                "validation": card.data.get("validation"), "budget_sd": V.DEFAULT_MAX_ERROR,
                "auto": f"{choice.runner} {choice.precision}", "entries": entries,
                "lines": V.summary_lines(card, available=cpu)}
    except Exception as e:  # reported, not raised: see module docstring
        problems.append(f"variants: {e}")
        return {"status": "BROKEN", "detail": str(e)}


def _source_text(source) -> str:
    """'converted from X.caffemodel (sha256 1234abcd...)' from the weights' metadata."""
    cm = source.get("caffemodel") if isinstance(source, dict) else None
    if not isinstance(cm, dict):
        return f"converted weights ({json.dumps(source)})"
    return f"converted from {cm.get('file')} (sha256 {str(cm.get('sha256'))[:16]}...)"


def _morphable(args, problems):
    from engine.cli.common import default_morphable

    args_model = default_morphable(args)
    if args_model is None:
        return {"file": None, "status": "SYNTHETIC",
                "detail": "built-in synthetic face model; `convert --bfm ... --topology ...` makes the real one"}
    from engine.morphable import load_model

    try:
        m = load_model(args_model)
    except Exception as e:
        problems.append(f"morphable model: {e}")
        return {"file": str(args_model), "status": "BROKEN", "detail": str(e)}
    # Never "official": the Basel Face Model is each user's own registered copy, and this
    # project knows no checksum to verify it against (its metadata records the file's sha256).
    status = "SYNTHETIC" if m.synthetic else ("given" if getattr(args, "model", None) else "converted")
    return {"file": str(args_model), "status": status, "source": m.metadata.get("source"),
            "detail": f"{m.metadata.get('name')}: {m.num_vertices} vertices, {m.num_faces} faces, "
                      f"{m.shape_components}+{m.tex_components} components"}


def collect(args) -> tuple[dict, list[str]]:
    from engine import __version__, _core

    problems: list[str] = []
    report = {"engine": __version__, "python": sys.version.split()[0], "platform": platform.platform(),
              "packages": {n: _version(n, m) for n, m in PACKAGES}}
    build = _guard(problems, "compiled core", _core.build_info)
    report["compiled_core"] = build
    report["cuda_kernel_compiled"] = bool(_guard(problems, "compiled core", _core.cuda_compiled))
    report["gpu"] = bool(_guard(problems, "CUDA device", _core.has_cuda))
    report["tensorrt_usable"] = bool(_guard(problems, "TensorRT", _core.has_tensorrt))
    torch_cuda = None
    if report["packages"]["torch"]:
        def _torch():
            import torch

            return {"cuda_available": torch.cuda.is_available(), "cuda_version": torch.version.cuda,
                    "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
        torch_cuda = _guard(problems, "torch", _torch)
    report["torch_cuda"] = torch_cuda
    if report["packages"]["torch"]:
        from engine.runners.torch_compile import status

        report["torch_compile"] = _guard(problems, "torch.compile", status)  # --compile; unusable is no problem
    from engine.pipeline.device_input import machine_reason

    reason = _guard(problems, "device input", machine_reason)
    report["device_input"] = {"usable": reason is None, "detail": reason or "nvJPEG + the CUDA crop kernel, for a "
                              "CUDA runner's JPEG inputs with known boxes (--device-input)"}
    from engine.runners import available_runners

    runners = _guard(problems, "runners", available_runners) or []
    report["runners"] = runners
    report["auto_runner"] = runners[0] if runners else None
    if not runners:
        problems.append("no network runner is usable: pip install onnxruntime onnx (CPU) or torch")
    report["network"] = _network(args, problems)
    report["morphable_model"] = _morphable(args, problems)
    return report, problems


def _print(report: dict, problems: list[str]) -> None:
    w = sys.stdout.write
    w(f"engine3dmm {report['engine']}  (Python {report['python']}, {report['platform']})\n\n")
    net = report["network"]
    if net.get("verification"):
        w("network:         " + f"{net['status']} ({net['verification']})\n")
        w("                 " + f"{net['detail']}\n")
    else:
        w("network:         " + f"{net['status']}  {net['detail']}\n")
    w("                 " + f"model card {net['folder']} (from {net['folder_from']})\n")
    if report["network"].get("float16"):
        w("                 " + f"float16: {report['network']['float16']}\n")
    var = report["network"].get("variants") or {}
    if var.get("status") == "validated":
        took = f" in {var['build_seconds']:.0f} s" if var.get("build_seconds") is not None else ""
        on = f"; validated on {var['validation'].get('what')}" if var.get("validation") else ""
        w("CPU variants:    " + f"{var['card']} (built {var.get('built') or '?'}{took}"
          + (", SYNTHETIC weights" if var.get("synthetic") else "") + f"{on})\n")
        for line in var["lines"]:
            w(f"                 {line}\n")
        w("                 " + f"auto picks {var['auto']} (budget {var['budget_sd']:g} sd)\n")
    elif var:
        w("CPU variants:    " + f"{var.get('status')}: {var.get('detail')}\n")
    m = report["morphable_model"]
    w("morphable model: " + f"{m['status']}  {m['detail']}" + (f"  ({m['file']})" if m["file"] else "") + "\n")
    w("runners:         " + (", ".join(report["runners"]) or "none") + f"  (auto picks {report['auto_runner']})\n")
    w(f"GPU:             {'yes' if report['gpu'] else 'no'}"
      f"  (CUDA decode and crop kernels compiled: {'yes' if report['cuda_kernel_compiled'] else 'no'};"
      f" TensorRT usable: {'yes' if report['tensorrt_usable'] else 'no'})\n")
    tc = report["torch_cuda"]
    if tc:
        w(f"PyTorch CUDA:    {'yes' if tc['cuda_available'] else 'no'}"
          + (f" (CUDA {tc['cuda_version']}, {tc['device']})" if tc["cuda_available"] else "") + "\n")
    tcomp = report.get("torch_compile")
    if tcomp:
        w(f"torch.compile:   {'yes' if tcomp['usable'] else 'no'} ({tcomp['detail']}; --compile caches in "
          f"{tcomp['cache']})\n")
    di = report.get("device_input")
    if di:
        w(f"device input:    {'yes' if di['usable'] else 'no'} ({di['detail']})\n")
    b = report["compiled_core"]
    if b:
        w("compiled core:   " + ", ".join(f"{k}={v}" for k, v in b.items()) + "\n")
    w("\npackages:\n")
    for name, ver in report["packages"].items():
        w(f"  {name:24s} {ver or '-'}\n")
    if problems:
        w("\nproblems:\n")
        for p in problems:
            w(f"  - {p}\n")


def run(args) -> int:
    report, problems = collect(args)
    report["problems"] = problems
    if args.json:
        json.dump(report, sys.stdout, indent=1, default=str, allow_nan=False)
        sys.stdout.write("\n")
    else:
        _print(report, problems)
    return 1 if problems else 0
