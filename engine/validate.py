"""Build the CPU variants of a network and validate them: the numbers `auto` chooses by.

A room of its own, above the runners: it runs them (engine.runners), decodes meshes with a
morphable model (engine.morphable, engine.decode) and writes the network's variant card
(engine.network.variants), so it can live in none of those rooms without an upward import.
The CLI calls it after `convert` (unless `--no-variants`) and for `engine3dmm validate`.

`validate_variants(model)`:

1. faces: calibration and validation sets of real face crops, disjoint (engine.network.faces:
   the built-in split, plus a user's folder, its faces alternating between the two);
2. int8: ONNX Runtime static quantisation of the float32 graph, calibrated on the
   calibration faces (engine.network.quantize);
3. every variant (onnxruntime fp32 and int8; torch-cpu fp32 and bf16 when PyTorch is
   installed) runs the validation faces; each is compared with onnxruntime fp32 (compare):
   coefficients in sd (the network's unit: Basel Face Model standard deviations), the
   decoded meshes with the morphable model a run would use (vertices in mm, colours in
   levels), and the descriptor's cosine error;
4. each variant is timed here at batch 1 and 8, in alternating rounds (a shared machine's
   load then hits all alike);
5. the card (engine.network.variants) is written next to the ONNX graphs. Variants this run
   did not rebuild (`precisions`) keep their results from the previous card when these still
   hold (`_keep_previous`): the same weights, validation faces (their sha256), morphable
   model, CPU, thread count and library version, and, for int8, its file unchanged. Otherwise
   one warning names what is dropped and why.

Synthetic weights go through the same steps; the card says `synthetic: true`.
"""
from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path

import numpy as np

from engine.errors import EngineError, UnavailableError
from engine.network import variants as V

log = logging.getLogger("engine.validate")

# Timing: rounds over the variants, calls per round (after one warm-up call each).
SPEED_ROUNDS = 2
SPEED_CALLS = {1: 3, 8: 1}
# The card's order of variants; kept ones are merged back into it.
ORDER = (("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("torch-cpu", "fp32"), ("torch-cpu", "bf16"))
LIBRARY_OF = {"onnxruntime": "onnxruntime", "torch-cpu": "torch"}  # whose version a runner's numbers depend on
RELEVANT_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def compare(ref: np.ndarray, got: np.ndarray, decoder) -> dict:
    """Errors of coefficients `got` against `ref` (both float32 [N, 198]): coefficient max
    and p99 in sd, decoded vertex error max and mean in mm (Euclidean, per vertex), colour
    max and mean in levels (0..255, per channel), descriptor cosine error (1 - cosine) max
    and mean. `decoder`: an engine.decode.Decoder (the morphable model a run would use)."""
    from engine.descriptors import cosine_similarity

    d = np.abs(got.astype(np.float64) - ref.astype(np.float64))
    vmax = vsum = cmax = csum = 0.0
    count = 0
    for i in range(0, len(ref), 8):  # bounded memory: 8 meshes of each at a time
        a = decoder.decode(ref[i:i + 8], outputs=("vertices", "colors"))
        b = decoder.decode(got[i:i + 8], outputs=("vertices", "colors"))
        dist = np.linalg.norm(b.vertices.astype(np.float64) - a.vertices, axis=-1)
        dcol = np.abs(b.colors.astype(np.int16) - a.colors.astype(np.int16))
        vmax, vsum = max(vmax, float(dist.max())), vsum + float(dist.sum())
        cmax, csum = max(cmax, float(dcol.max())), csum + float(dcol.mean(axis=-1).sum())
        count += dist.size
    cos = 1.0 - cosine_similarity(got, ref)
    return {"coeff_max_sd": float(d.max()), "coeff_p99_sd": float(np.percentile(d, 99)),
            "vertex_max_mm": vmax, "vertex_mean_mm": vsum / count, "color_max_levels": cmax,
            "color_mean_levels": csum / count, "cosine_max": float(cos.max()), "cosine_mean": float(cos.mean())}


def _faces(calibration, validation, calibration_dir, detector, say):
    """(calibration crops, what, validation crops, what, why int8 cannot be built or None)."""
    from engine.network import faces

    cal, cal_what = calibration if calibration is not None else faces.builtin_faces("calibration")
    val, val_what = validation if validation is not None else faces.builtin_faces("validation")
    no_user = None
    if calibration_dir is not None:
        try:
            found = faces.folder_faces(calibration_dir, detector=detector)
            summary = found.summary()
        except UnavailableError as e:  # no dlib: the folder cannot be read as a run reads it
            found, summary = None, str(e)
        if found is None or len(found.crops) == 0:
            said = found.summary(folder=False) if found is not None else summary  # the folder is named once
            no_user = f"calibration folder {calibration_dir}: no usable face ({said})"
        else:
            say(f"calibration folder: {summary}")
            ucal, uval = found.split()
            cal, cal_what = np.concatenate([cal, ucal]), f"{cal_what}, and {len(ucal)} of your faces ({calibration_dir})"
            if len(uval):
                val = np.concatenate([val, uval])
                val_what = f"{val_what}, and {len(uval)} of your faces ({calibration_dir})"
    return cal, cal_what, val, val_what, no_user


def _runners(model, precisions, threads, int8: dict) -> list[tuple[dict, object]]:
    """[(card entry, runner or None)] for every variant, onnxruntime fp32 (the reference) first;
    an entry without a runner says why it has none. `int8`: the int8 build's entry so far."""
    from engine.runners import available_runners

    available = available_runners()
    if "onnxruntime" not in available:
        raise UnavailableError("validating variants needs ONNX Runtime (the float32 reference): "
                               "pip install onnxruntime onnx")
    wanted = [("onnxruntime", "fp32")] + ([("onnxruntime", "int8")] if "int8" in precisions else [])
    if "bf16" in precisions:  # torch-cpu's variants are timed together: `--runner torch-cpu` chooses among them
        wanted += [("torch-cpu", "fp32"), ("torch-cpu", "bf16")]
    out = []
    for runner, precision in wanted:
        entry = dict(int8) if precision == "int8" else {"runner": runner, "precision": precision}
        if runner not in available:
            why = ("PyTorch is not installed (the lean [cpu] install): pip install torch" if runner == "torch-cpu"
                   else f"the {runner} runner is not available")
            out.append(({**entry, "status": "unavailable", "why": why}, None))
            continue
        if entry.get("status", "ok") != "ok":
            out.append((entry, None))
            continue
        try:
            r = _make(model, runner, precision, threads)
        except EngineError as e:
            out.append(({**entry, "status": "unavailable", "why": str(e)}, None))
            continue
        out.append(({**entry, "status": "ok"}, r))
    return out


def _make(model, runner: str, precision: str, threads):
    if runner == "onnxruntime":
        from engine.runners.ort import OrtRunner

        return OrtRunner(model, max_batch=8, threads=threads, precision=precision)
    from engine.runners.torch_runner import TorchCpuRunner

    return TorchCpuRunner(model, max_batch=8, threads=threads, precision=precision)


def _speeds(runners, crops: np.ndarray) -> dict[int, dict[int, float]]:
    """{index: {1: ms per face at batch 1, 8: ms per face at batch 8}}, medians over
    SPEED_ROUNDS alternating rounds."""
    times: dict[int, dict[int, list]] = {i: {1: [], 8: []} for i in range(len(runners))}
    x8 = crops[:8] if len(crops) >= 8 else np.concatenate([crops] * (8 // len(crops) + 1))[:8]
    inputs = {1: crops[:1], 8: x8}
    for r in runners:  # warm-up: each batch size once (oneDNN and ONNX Runtime set up per shape)
        for x in inputs.values():
            r.run(x)
    for _ in range(SPEED_ROUNDS):
        for b, calls in SPEED_CALLS.items():
            for i, r in enumerate(runners):
                for _ in range(calls):
                    t = time.perf_counter()
                    r.run(inputs[b])
                    times[i][b].append((time.perf_counter() - t) * 1e3 / b)
    return {i: {b: float(np.median(v)) for b, v in d.items()} for i, d in times.items()}


def faces_sha256(crops: np.ndarray) -> str:
    """sha256 of face crops float32 [N, 3, 224, 224] (C order): what identifies a validation set."""
    return hashlib.sha256(np.ascontiguousarray(crops, np.float32).tobytes()).hexdigest()


def morphable_sha256(mm) -> str:
    """sha256 of what the compared meshes are decoded from (means and bases, shape and colour)."""
    h = hashlib.sha256()
    for name in ("shape_mean", "shape_basis", "tex_mean", "tex_basis"):
        h.update(np.ascontiguousarray(getattr(mm, name), np.float32).tobytes())
    return h.hexdigest()


def _variant_option(entry: dict) -> str:
    """The `--variants` value that rebuilds `entry` (torch-cpu fp32 is measured with bf16)."""
    return "int8" if entry.get("precision") == "int8" else "bf16"


def _keep_previous(model, rebuilt: list[dict], now: dict, say) -> tuple[list[dict], dict | None]:
    """(entries of the previous card that this run did not rebuild and that still hold, the
    previous card's "calibration" when its int8 entry is kept, else None). They hold when the
    card is fresh (same weights: engine.network.variants.load_card) and was measured on the
    same validation faces, morphable model, CPU and thread count as `now`, with the same
    version of the entry's runner library, and an int8 entry's file is unchanged. What is
    kept is said (progress); what cannot be kept is one warning naming it and why."""
    old, _ = V.load_card(model)
    if old is None:  # none, or stale/unreadable: nothing of it is valid for these weights
        return [], None
    done = {(e["runner"], e["precision"]) for e in rebuilt}
    candidates = []  # what validate builds and this run did not, once each (a hand-edited card may repeat one)
    for e in old.entries():
        pair = (e.get("runner"), e.get("precision"))
        if pair in ORDER and pair not in done:
            done.add(pair)
            candidates.append(e)
    if not candidates:
        return [], None
    d = old.data
    val = d.get("validation") or {}  # dicts, or absent: engine.network.variants.schema_problem
    machine = d.get("machine") or {}
    versions = d.get("versions") if isinstance(d.get("versions"), dict) else {}  # not checked by the schema
    reasons = []
    if val.get("sha256") is None:
        reasons.append("the previous card does not identify the faces they were validated on")
    elif val.get("sha256") != now["validation_sha256"]:
        reasons.append(f"they were validated on other faces ({val.get('what')}; this run: {now['validation_what']})")
    if d.get("morphable_model_sha256") != now["morphable_sha256"]:
        reasons.append(f"their meshes were decoded with another morphable model ({d.get('morphable_model')}; this "
                       f"run: {now['morphable_model']})")
    if machine.get("cpu") != now["cpu"] or machine.get("threads") != now["threads"]:
        reasons.append(f"they were timed on {machine.get('cpu')} with {machine.get('threads')} threads (this run: "
                       f"{now['cpu']}, {now['threads']} threads)")
    kept, dropped = [], []
    for e in candidates:
        lib = LIBRARY_OF.get(e.get("runner"))
        was, is_ = versions.get(lib), now["versions"].get(lib)
        why = "; ".join(reasons) or (
            f"measured with {lib} {was}, this is {is_}" if was != is_ else
            V.file_problem(old, e) if e.get("status") == "ok" else None)
        (dropped if why else kept).append((e, why))
    if dropped:
        again = sorted({_variant_option(e) for e, _ in dropped} | {_variant_option(e) for e in rebuilt
                                                                   if e["precision"] != "fp32"})
        log.warning("%s: not keeping %s from the previous validation: %s; `engine3dmm validate --variants %s` "
                    "measures %s again", old.path.name, ", ".join(V.label(e) for e, _ in dropped),
                    "; ".join(dict.fromkeys(w for _, w in dropped)), " ".join(again),
                    "it" if len(dropped) == 1 else "them")
    if kept:
        say(f"keeping {', '.join(V.label(e) for e, _ in kept)} from the previous validation (measured "
            f"{kept[0][0].get('measured', d.get('built', '?'))} on the same weights, faces, morphable model and CPU)")
    int8_kept = any(e.get("precision") == "int8" for e, _ in kept)
    return [{**e, "measured": e.get("measured", d.get("built"))} for e, _ in kept], (
        d.get("calibration") if int8_kept else None)


def validate_variants(model, *, calibration_dir=None, precisions=V.VARIANT_PRECISIONS, calibration=None,
                      validation=None, morphable=None, threads: int | None = None, detector=None,
                      progress=None) -> V.Card:
    """Build and validate the CPU variants of `model` (a ResolvedModel) and write its card;
    returns the card (engine.network.variants.Card). Takes tens of seconds (int8 calibration,
    each variant on each validation face, the timing); the card records how long.

    calibration_dir: a folder of the user's own photos (faces found as a run finds them) added
        to the built-in faces; one without a usable face builds no int8 variant (a warning says
        why; runs then use float32). calibration, validation: (crops, description) pairs
        replacing the built-in sets (tests use small ones). morphable: the morphable model (a
        MorphableModel, a file, or None: the model card's converted Basel Face Model when present,
        else the synthetic one) that decodes the meshes compared. progress(message): told before
        each long step. precisions: the variants to build ("int8", "bf16"); the others keep their
        results from the previous card where these still hold (module docstring, step 5), or are
        dropped with a warning. Errors: InputError (a calibration_dir that is no folder), EngineError
        from the float32 graph's export; a variant that fails is recorded as such in the card."""
    from engine.morphable import MorphableModel, load_model
    from engine.network import cpu_features, quantize
    from engine.network.convert import file_sha256

    say = progress or (lambda message: None)
    t_start = time.perf_counter()
    precisions = tuple(p for p in V.VARIANT_PRECISIONS if p in precisions)
    cal, cal_what, val, val_what, no_user = _faces(calibration, validation, calibration_dir, detector, say)
    if no_user:
        log.warning("%s: the int8 variant is not built; runs use float32", no_user)
    fp32_path = model.onnx_path("fp32")
    int8 = {"runner": "onnxruntime", "precision": "int8"}
    if no_user:
        int8.update(status="not built", why=no_user)
    elif "int8" in precisions:
        say(f"building the int8 variant: ONNX Runtime static quantisation calibrated on {len(cal)} faces (seconds)")
        t = time.perf_counter()
        path = V.variant_file(model, "int8")
        try:
            quantize.build_int8(fp32_path, path, cal, {
                "weights_sha256": model.fingerprint, "synthetic": str(model.synthetic).lower(),
                "source": model.describe(), "calibration": cal_what})
            int8.update(status="ok", file=path.name, sha256=file_sha256(path), recipe=quantize.RECIPE,
                        build_seconds=round(time.perf_counter() - t, 1), calibration_faces=len(cal))
        except EngineError as e:
            int8.update(status="failed", why=str(e))
    if isinstance(morphable, MorphableModel):
        mm = morphable
    else:
        if morphable is None:
            from engine.network.resolve import MORPHABLE_CACHE_FILE  # the card's converted Basel Face Model

            card_bfm = Path(model.model_dir) / MORPHABLE_CACHE_FILE
            morphable = card_bfm if card_bfm.is_file() else None
        mm = load_model(morphable)
    from engine.decode import Decoder

    decoder = Decoder(mm)
    say(f"validating the variants against float32 on {len(val)} held-out faces ({val_what})")
    made = _runners(model, precisions, threads, int8)
    entries = [e for e, _ in made]
    live = [(e, r) for e, r in made if r is not None]
    try:
        ref = None
        for entry, runner in live:
            got = runner.run(val)
            if ref is None:  # onnxruntime fp32 comes first: the reference
                ref = got
            if not np.all(np.isfinite(got)):
                entry.update(status="failed", why=f"non-finite outputs on {int((~np.isfinite(got)).any(1).sum())} "
                                                  "validation faces")
                continue
            entry["errors"] = compare(ref, got, decoder)
            entry["validation_faces"] = len(val)
            entry["needs"] = list(cpu_features.NEEDS.get(entry["precision"], ()))
        timed = [(e, r) for e, r in live if e.get("status") == "ok"]
        say(f"timing {len(timed)} variants on this machine (batch 1 and 8)")
        speeds = _speeds([r for _, r in timed], val)
        for i, (entry, _) in enumerate(timed):
            entry["speed"] = {"batch1_ms": round(speeds[i][1], 2), "batch8_ms_per_face": round(speeds[i][8], 2)}
    finally:
        for _, runner in live:
            runner.close()
    flags = cpu_features.cpu_flags() or frozenset()
    built = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    for entry in entries:
        entry["measured"] = built
    now = {"validation_sha256": faces_sha256(val), "validation_what": val_what,
           "morphable_sha256": morphable_sha256(mm),
           "morphable_model": str(mm.metadata.get("name")) + (" (SYNTHETIC)" if mm.synthetic else ""),
           "cpu": cpu_features.cpu_name(), "threads": threads or os.cpu_count(), "versions": _versions()}
    kept, kept_calibration = _keep_previous(model, entries, now, say)
    entries = sorted(entries + kept, key=lambda e: ORDER.index((e["runner"], e["precision"])))
    data = {
        "weights": model.describe(), "synthetic": bool(model.synthetic),
        "built": built,
        "build_seconds": round(time.perf_counter() - t_start, 1),
        "machine": {"cpu": now["cpu"], "flags": [f for f in RELEVANT_FLAGS if f in flags],
                    "threads": now["threads"], "load_1m": round(os.getloadavg()[0], 2)},
        "versions": now["versions"],
        "calibration": kept_calibration or {"faces": len(cal), "what": cal_what},
        "validation": {"faces": len(val), "what": val_what, "disjoint_from_calibration": True,
                       "sha256": now["validation_sha256"]},
        "reference": "onnxruntime fp32",
        "coeff_spread_sd": float(np.std(ref)) if ref is not None else None,
        "morphable_model": now["morphable_model"],
        "morphable_model_sha256": now["morphable_sha256"],
        "variants": entries,
    }
    path = V.write_card(model, data)
    card, _ = V.load_card(model)
    say(f"{path.name}: variants validated in {data['build_seconds']:.0f} s")
    return card


def _versions() -> dict:
    import importlib.util

    from engine import __version__
    from engine.network.quantize import onnxruntime_version

    out = {"engine": __version__, "onnxruntime": onnxruntime_version()}
    try:
        if importlib.util.find_spec("torch") is not None:
            import torch

            out["torch"] = torch.__version__
    except (ImportError, ValueError):  # not installed, or blocked (sys.modules["torch"] = None)
        pass
    return out
