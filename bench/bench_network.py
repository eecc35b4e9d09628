"""Benchmark the network runners and their CPU variants: latency p50/p99, throughput, error.

    python bench/bench_network.py --json bench/results/network_cpu.json --md bench/results/network_cpu.md \
        --variants-json bench/results/network_variants_cpu.json --variants-md bench/results/network_variants_cpu.md
    python bench/bench_network.py --second-model ...   # the same on an independently built full-size model
    python bench/bench_network.py --compile-times      # torch.compile's time in a first and a second process

Compiled rows (issue 11): torch-cpu fp32 and bf16 and torch-cuda fp16 (alone and inside the
runner's CUDA graphs) compiled with torch.compile (Inductor, engine.runners.torch_compile),
each with its error against the float32 reference like every row, and `compile s`: the time
of its first call at that batch size (the compilation, from Inductor's cache or not, as the
`how` field says). `--compile-times` measures the compilation in two fresh child processes
sharing an empty cache folder: the first compiles everything, the second reads the cache.

For every runner available on this machine (plus the PyTorch eager float32 reference,
the exact unfused module, row runner "torch-eager"), and every CPU variant validated for
the weights (onnxruntime int8, torch-cpu bf16: engine.validate, run first when the
weights have no fresh variant card), at batch 1, 8, 32 on CPU (and 128 on GPU). Runners are
timed in `--rounds` passes, a block of calls each, so that load from other processes on a
shared machine hits all of them alike. `max_abs_err` is the largest difference from the
float32 reference over the batch, in coefficient units (standard deviations); the table also
gives it relative to the coefficients' sd, and each variant's validated max error (on the
held-out faces, from the variant card). Inputs: real faces (the built-in validation faces,
engine.network.faces; repeated to fill batch 32). Weights: --model-dir's, else the default
card's converted ones, else the synthetic set in a scratch card under the user's cache (the
checkout's card is not written to); --second-model: an independently built full-size model
(second_model below).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.fileio import atomic_write  # noqa: E402
from engine.network import variants as V  # noqa: E402
from engine.network.resolve import WEIGHTS_FILE, default_model_dir, resolve_model, synthetic_cache_dir  # noqa: E402
from engine.runners import available_runners, create_runner  # noqa: E402
from engine.runners.torch_compile import COMPILE_MODES  # noqa: E402

SECOND_SEED = 1
SECOND_RECIPE = 1  # bump when second_model changes: its cached weights are rebuilt


def second_model(folder: Path) -> Path:
    """An independently built full-size model in `folder` (built once, cached), unlike the
    built-in synthetic weights (seed 0, per-channel mean, BatchNorm and fc_ftnew calibrated on
    16 photo-like crops of seed 0) in three ways: seed 1; the release's mean image
    (../shared/cnn3dmm/mean.binaryproto, when present); BatchNorm statistics and fc_ftnew's
    scale calibrated on 33 real faces (engine.network.faces' "model" split: disjoint from the
    int8 calibration and the validation faces) plus 16 photo-like colour crops of seed 1 (on
    the grey faces alone the colour astronaut's coefficients reach 38, sd 13: a model no
    trained network resembles). Same architecture, so the same speed."""
    import numpy as np

    from engine.network import caffe_io, faces
    from engine.network.synthetic import calibration_crops, make_synthetic
    from engine.network.weights import load_weights, save_weights

    path = folder / WEIGHTS_FILE
    if path.is_file():
        try:
            if str(load_weights(path)[2].get("second_recipe")) == str(SECOND_RECIPE):
                return folder
        except Exception:
            pass
    mean_file = Path(__file__).resolve().parents[2] / "shared" / "cnn3dmm" / "mean.binaryproto"
    mean = caffe_io.read_mean(mean_file) if mean_file.is_file() else None
    crops, _ = faces.builtin_faces("model")
    crops = np.concatenate([crops, calibration_crops(SECOND_SEED, n=16, mean=mean)])
    print(f"building the second, independent model in {folder} (a numpy calibration pass, about a minute)",
          flush=True)
    w, mean, meta = make_synthetic(SECOND_SEED, mean=mean, crops=crops)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {**meta, "second_recipe": SECOND_RECIPE, "mean_image": "release" if mean_file.is_file() else "per-channel",
            "source": f"independently built benchmark model (seed {SECOND_SEED}, BatchNorm calibrated on 33 real "
                      "faces + 16 photo-like crops); NOT the trained 3DMM-CNN"}
    save_weights(path, w, mean, meta)
    return folder


def model_folder(args) -> Path:
    """The card the benchmark runs (module docstring): never the checkout's synthetic card."""
    if args.second_model:
        return second_model(synthetic_cache_dir() / "bench-second-model")
    if args.model_dir:
        return Path(args.model_dir)
    if (default_model_dir() / WEIGHTS_FILE).is_file():
        return default_model_dir()
    folder = synthetic_cache_dir() / "bench-synthetic"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def machine() -> str:
    cpu = platform.processor() or "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        flags = open("/proc/cpuinfo").read()
        isa = [f for f in ("avx512f", "avx512_bf16", "amx_bf16", "avx512_vnni") if f" {f}" in flags]
    except OSError:
        isa = []
    return f"{cpu}, {os.cpu_count()} logical CPUs ({', '.join(isa)}), {platform.system()} {platform.release()}"


class EagerReference:
    """The exact unfused PyTorch module in float32 eager mode: the reference and the baseline."""

    name, precision = "torch-eager", "fp32"

    def __init__(self, model, device="cpu"):
        import torch

        from engine.network.torch_model import build

        if device == "cuda":  # a float32 baseline must not silently use TF32
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        self.torch, self.device = torch, device
        self.net = build(model.weights, model.mean, fused=False, synthetic=model.synthetic).to(device)

    def run(self, crops):
        torch = self.torch
        with torch.inference_mode():
            out = self.net(torch.from_numpy(crops).to(self.device))
            return out.cpu().numpy()  # .cpu() waits for the GPU, so timings include it

    def close(self):
        self.net = None


def configs(threads, gpu: bool, cpu: bool = True, card=None, compile_mode=None, compiled: str = "with",
            runners=None):
    """(runner name, create_runner kwargs) pairs to benchmark on this machine; the int8 variant
    when the variant card has a usable one. `compiled`: "with" the compiled PyTorch rows,
    "without" them, or "only" them (to --append to a table); `compile_mode` None: the device's
    default (engine.runners.torch_compile.check_args); `runners`: only these names (None: all)."""
    out = [c for c in _configs(threads, gpu, cpu, card, compile_mode)
           if compiled == "with" or (compiled == "only") == bool(c[1].get("compile"))]
    return [c for c in out if runners is None or c[0] in runners]


def _configs(threads, gpu, cpu, card, compile_mode):
    names = available_runners()
    out = []
    comp = dict(compile=True) if compile_mode is None else dict(compile=True, compile_mode=compile_mode)
    if not cpu:
        names = [n for n in names if n not in ("onnxruntime", "torch-cpu")]
    if "onnxruntime" in names:
        out.append(("onnxruntime", dict(threads=threads, precision="fp32")))
        e = card.entry("onnxruntime", "int8") if card is not None else None
        if e is not None and V.unusable_reason(card, e, names) is None:
            out.append(("onnxruntime", dict(threads=threads, precision="int8")))
    if "torch-cpu" in names:
        out.append(("torch-cpu", dict(threads=threads, precision="fp32")))
        out.append(("torch-cpu", dict(threads=threads, precision="bf16")))
        out.append(("torch-cpu", dict(threads=threads, precision="fp32", **comp)))
        out.append(("torch-cpu", dict(threads=threads, precision="bf16", **comp)))
    if gpu and "torch-cuda" in names:
        out.append(("torch-cuda", dict(precision="fp16", cuda_graphs=False)))
        out.append(("torch-cuda", dict(precision="fp16", cuda_graphs=True)))
        # the same bucket graphs: the second runner reuses the first one's compilation (in-process)
        out.append(("torch-cuda", dict(precision="fp16", cuda_graphs=False, **comp)))
        out.append(("torch-cuda", dict(precision="fp16", cuda_graphs=True, **comp)))
    if gpu and "tensorrt" in names:
        out.append(("tensorrt", dict(precision="fp16")))
    return out


def validated(card, runner) -> float | None:
    """The runner's validated max coefficient error from the variant card (None: not in it; a
    compiled runner is not what the card validated: its own error is the row's max_abs_err)."""
    mine = card is not None and runner.name != "torch-eager" and not getattr(runner, "compiled", False)
    e = card.entry(runner.name, runner.precision) if mine else None
    return None if e is None or not e.get("errors") else float(e["errors"]["coeff_max_sd"])


def bench_batch(batch, runners, iters, warmup, crops_all, rounds, card=None):
    x = crops_all[:batch]
    ref = runners[0][1].run(x)  # the float32 eager reference comes first
    times = {i: [] for i in range(len(runners))}
    errs, first = {}, {}
    for i, (_, r) in enumerate(runners):
        t = time.perf_counter()
        out = r.run(x)  # a compiled runner compiles this batch size here
        first[i] = time.perf_counter() - t
        errs[i] = float(np.abs(out - ref).max())
        for _ in range(warmup - 1):
            r.run(x)
    # `rounds` passes over the runners, a block of calls each: blocks keep one runtime's
    # worker threads from spinning while another runs; rounds spread outside load evenly.
    per_block = max(1, -(-iters // rounds))
    for _ in range(rounds):
        for i, (_, r) in enumerate(runners):
            for _ in range(per_block):
                t = time.perf_counter()
                r.run(x)
                times[i].append(time.perf_counter() - t)
    rows = []
    for i, (label, r) in enumerate(runners):
        ms = np.array(times[i]) * 1e3
        p50 = float(np.percentile(ms, 50))
        rows.append({"runner": r.name, "device": r.device, "precision": r.precision, "batch": batch,
                     "latency_ms_p50": round(p50, 3), "latency_ms_p99": round(float(np.percentile(ms, 99)), 3),
                     "throughput_per_s": round(batch / p50 * 1e3, 2), "max_abs_err": errs[i],
                     "config": label, "iters": iters, "ref_sd": float(ref.std()),
                     "min_ms": round(float(ms.min()), 3), "load_1m": round(os.getloadavg()[0], 2),
                     "validated_max_sd": validated(card, r), "compiled": bool(getattr(r, "compiled", False)),
                     "first_call_s": round(first[i], 2)})
        if rows[-1]["compiled"]:
            got = r.compile_times.get(batch) or {}
            rows[-1].update(compile_s=round(got.get("seconds", first[i]), 2), compile_how=got.get("how"),
                            compile_mode=r.compile_mode)
    return rows


def markdown(rows, header: str) -> str:
    lines = [header, "",
             "| model | runner | config | device | precision | batch | p50 ms | p99 ms | min ms | images/s (p50) | max abs err (sd units) | err / coeff sd | validated max err (sd, held-out faces) | p50 speed-up vs torch-eager (same device) | compile s (how) | load avg |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    base = {(r.get("model"), r["batch"], r["device"]): r["latency_ms_p50"] for r in rows if r["runner"] == "torch-eager"}
    for r in rows:
        v = r.get("validated_max_sd")
        lines.append(f"| {r.get('model', '-')} | {r['runner']} | {r['config']} | {r['device']} | {r['precision']} | "
                     f"{r['batch']} | {r['latency_ms_p50']:.1f} | {r['latency_ms_p99']:.1f} | "
                     f"{r.get('min_ms', float('nan')):.1f} | {r['throughput_per_s']:.1f} | "
                     f"{r['max_abs_err']:.2e} | {r['max_abs_err'] / r['ref_sd']:.3f} | "
                     f"{'-' if v is None else f'{v:.3g}'} | "
                     f"{base.get((r.get('model'), r['batch'], r['device']), float('nan')) / r['latency_ms_p50']:.2f}x | "
                     f"{_compile_cell(r)} | {r.get('load_1m', float('nan')):.1f} |")
    return "\n".join(lines + [""] + target_lines(rows) + compiled_lines(rows)) + "\n"


def _compile_cell(r) -> str:
    return "-" if r.get("compile_s") is None else f"{r['compile_s']:.1f} ({r.get('compile_how') or '?'})"


def compiled_lines(rows) -> list[str]:
    """Issue 11's comparisons, per model and batch: on the CPU, torch-cpu compiled against ONNX
    Runtime float32 (and eager torch-cpu) measured in the same run; on a GPU, the fastest
    float16 torch-cuda configuration against torch-eager float32 on the same GPU (target 3x)."""
    out = []
    for model in dict.fromkeys(r.get("model") for r in rows):
        mine = [r for r in rows if r.get("model") == model]
        for b in sorted({r["batch"] for r in mine}):
            at = [r for r in mine if r["batch"] == b]
            ort = next((r for r in at if r["runner"] == "onnxruntime" and r["precision"] == "fp32"), None)
            for c in (r for r in at if r["runner"] == "torch-cpu" and r.get("compiled")):
                eager = next((r for r in at if r["runner"] == "torch-cpu" and not r.get("compiled")
                              and r["precision"] == c["precision"]), None)
                parts = [f"{model}, batch {b}: torch-cpu {c['precision']} compiled {c['latency_ms_p50']:.1f} ms "
                         f"(error {c['max_abs_err'] / c['ref_sd']:.3g} of the coefficients' sd)"]
                if ort is not None:
                    parts.append(f"{ort['latency_ms_p50'] / c['latency_ms_p50']:.2f}x ONNX Runtime float32 "
                                 f"({ort['latency_ms_p50']:.1f} ms)")
                if eager is not None:
                    parts.append(f"{eager['latency_ms_p50'] / c['latency_ms_p50']:.2f}x eager torch-cpu "
                                 f"{eager['precision']}")
                out.append("- " + ": ".join(parts[:1]) + ("; " + ", ".join(parts[1:]) if parts[1:] else ""))
            ref = next((r for r in at if r["runner"] == "torch-eager" and r["device"] == "cuda"), None)
            gpu = [r for r in at if r["runner"] == "torch-cuda" and r["precision"] == "fp16"]
            if ref is not None and gpu:
                best = min(gpu, key=lambda r: r["latency_ms_p50"])
                ratio = ref["latency_ms_p50"] / best["latency_ms_p50"]
                out.append(f"- {model}, batch {b}: fastest torch-cuda float16 is {best['config']}: {ratio:.2f}x "
                           f"torch-eager float32 on the same GPU ({'PASS' if ratio >= 3 else 'FAIL'}, target 3x)")
    return out


def target_lines(rows, budget: float = V.DEFAULT_MAX_ERROR) -> list[str]:
    """Issue 12's target, per model: the fastest CPU variant within the budget (validated max
    error) against torch-eager float32 at batch 1, measured in the same run; and int8's ratio."""
    out = []
    for model in dict.fromkeys(r.get("model") for r in rows):
        b1 = [r for r in rows if r.get("model") == model and r["batch"] == 1 and r["device"] == "cpu"]
        eager = next((r for r in b1 if r["runner"] == "torch-eager"), None)
        if eager is None:
            continue
        ok = [r for r in b1 if r["runner"] != "torch-eager" and r.get("validated_max_sd") is not None
              and r["validated_max_sd"] <= budget]
        best = min(ok, key=lambda r: r["latency_ms_p50"], default=None)
        if best is not None:
            ratio = eager["latency_ms_p50"] / best["latency_ms_p50"]
            out.append(f"- {model}: the fastest variant within {budget:g} sd is {best['runner']} {best['precision']} "
                       f"(validated max {best['validated_max_sd']:.3g} sd): {ratio:.2f}x torch-eager float32 at batch 1 "
                       f"({'PASS' if ratio >= 4 else 'FAIL'}, target 4x)")
        for r in b1:
            if r["precision"] in V.VARIANT_PRECISIONS and r.get("validated_max_sd") is not None and r is not best:
                out.append(f"- {model}: {r['runner']} {r['precision']} is {eager['latency_ms_p50'] / r['latency_ms_p50']:.2f}x "
                           f"torch-eager at batch 1 but its validated max error is {r['validated_max_sd']:.3g} sd, "
                           f"{'within' if r['validated_max_sd'] <= budget else 'over'} the {budget:g} sd budget")
    return out


def variants_table(cards: dict) -> str:
    """The variants table: per model, each variant's validated errors, its speed when
    validated, its build time and what `auto` picks at the default budget."""
    lines = ["# CPU variants, validated against float32", "",
             "Each variant of each model, compared with ONNX Runtime float32 on held-out real faces (never the "
             "calibration ones; engine.network.faces), timed by `engine3dmm validate` on this machine. Coefficient "
             "errors in standard deviations (the network's unit); meshes decoded with the morphable model named; "
             "colour in levels of 0..255; the descriptor's error as 1 - cosine.", ""]
    for label, doc in cards.items():
        c = doc["card"]
        lines += [f"## {label}", "",
                  f"- Weights: {c['weights']} (sha256 {c['weights_sha256'][:16]}...)",
                  f"- Calibration: {c['calibration']['what']}; validation: {c['validation']['what']}",
                  f"- Morphable model: {c['morphable_model']}; coefficient spread of float32 on the validation faces: "
                  f"{c['coeff_spread_sd']:.3g} sd",
                  f"- Built {c['built']} in {c['build_seconds']:.0f} s on {c['machine']['cpu']} "
                  f"({', '.join(c['machine']['flags'])}; {c['machine']['threads']} threads; load average "
                  f"{c['machine']['load_1m']}); onnxruntime {c['versions'].get('onnxruntime')}, torch "
                  f"{c['versions'].get('torch', '-')}",
                  f"- auto at {V.DEFAULT_MAX_ERROR} sd picks: {doc['auto']}", "",
                  "| variant | status | coeff max sd | coeff p99 sd | vertex max mm | vertex mean mm | colour max | "
                  "colour mean | cosine err max | cosine err mean | ms/face b1 | ms/face b8 | build s |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for e in c["variants"]:
            er, sp = e.get("errors") or {}, e.get("speed") or {}

            def f(key, d=er, fmt=".3g"):
                return "-" if key not in d else format(d[key], fmt)
            status = e.get("status") if e.get("status") == "ok" else f"{e.get('status')}: {e.get('why')}"
            lines.append(f"| {e['runner']} {e['precision']} | {status} | {f('coeff_max_sd')} | {f('coeff_p99_sd')} | "
                         f"{f('vertex_max_mm')} | {f('vertex_mean_mm')} | {f('color_max_levels', fmt='.0f')} | "
                         f"{f('color_mean_levels')} | {f('cosine_max', fmt='.2e')} | {f('cosine_mean', fmt='.2e')} | "
                         f"{f('batch1_ms', sp, '.1f')} | {f('batch8_ms_per_face', sp, '.1f')} | "
                         f"{e.get('build_seconds', '-')} |")
        lines.append("")
    return "\n".join(lines)


def weights_of(meta: dict) -> list[str]:
    """The weights a table's rows ran, one description each: meta["weights"] is one string for a
    single run and a list once --append has merged runs (a description holds "; " itself, so
    joining them into one string could not be undone)."""
    w = meta["weights"]
    return [w] if isinstance(w, str) else list(w)


def merge_appended(old_doc: dict, rows: list[dict], meta: dict) -> list[dict]:
    """--append: this run's rows replace the table's rows of the same (model, runner, config,
    batch), the others are kept; `meta` (changed in place) gains the table's weights (each
    description once) and keeps its compile times and notes unless this run has its own."""
    key = lambda r: (r.get("model"), r["runner"], r["config"], r["batch"])  # noqa: E731
    fresh = {key(r) for r in rows}
    merged = sorted([r for r in old_doc["rows"] if key(r) not in fresh] + rows,
                    key=lambda r: (str(r.get("model")), r["batch"], r["device"]))
    meta["weights"] = list(dict.fromkeys([*weights_of(old_doc["meta"]), *weights_of(meta)]))
    for k in ("compile_times", "notes"):
        if k in old_doc["meta"]:
            meta.setdefault(k, old_doc["meta"][k])
    return merged


def write_tables(args, rows, meta, gpu: bool) -> None:
    """--json and --md from the rows and the run's meta (compile times and notes included)."""
    if args.json:
        with atomic_write(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)
    if not args.md:
        return
    start = meta.get("load_average_1m_at_start")
    header = (f"# Network runners and CPU variants, {'GPU' if gpu else 'CPU'}\n\nMachine: {meta['machine']}; "
              f"{meta['threads']} threads; torch {meta['torch']}, onnxruntime {meta.get('onnxruntime')}; "
              f"{meta['date']}; 1-minute load average "
              + (f"{start:.1f} at the start, " if start is not None else "")
              + f"{meta['load_average_1m_at_end']:.1f} at the end.\n"
              + "".join(f"Weights: {w}.\n" for w in weights_of(meta)) +
              "Latency per call (whole batch); runners timed in alternating blocks on a machine shared with other "
              "jobs. Inputs: the built-in held-out real faces (engine.network.faces, validation split).")
    notes = [f"- {n}" for n in meta.get("notes", [])] + compile_time_lines(meta.get("compile_times"))
    if notes:
        header += "\n\n" + "\n".join(notes)
    with atomic_write(args.md, "w") as f:
        f.write(markdown(rows, header))


def compile_time_lines(ct) -> list[str]:
    """The --compile-times measurement in words (meta["compile_times"])."""
    if not ct:
        return []
    per = lambda d: ", ".join(f"batch {b}: {v['seconds']:.1f} s ({v['how']})" for b, v in d.items())  # noqa: E731
    return [f"- torch.compile time, {ct['runner']} {ct['precision']} (Inductor, mode {ct['mode']}), measured "
            f"{ct['date']} at load {ct['load_1m']:.1f}, two fresh processes sharing an empty cache folder: first "
            f"process {per(ct['first'])} (process total {ct['first_total_s']:.1f} s); second process "
            f"{per(ct['second'])} (process total {ct['second_total_s']:.1f} s)"]


def compile_child(argv) -> None:
    """--compile-child RUNNER PRECISION MODE BATCHES MODEL_DIR THREADS: compile and run each batch
    size once; print {"times": {batch: {"seconds", "how"}}, "total_s"} as the last line."""
    t0 = time.perf_counter()
    name, precision, mode, batches, folder, threads = argv
    import torch

    torch.set_num_threads(int(threads))
    from engine.network.faces import builtin_faces

    batches = [int(b) for b in batches.split(",")]
    faces, _ = builtin_faces("validation")
    crops = np.concatenate([faces] * (max(batches) // len(faces) + 1))[:max(batches)]
    with create_runner(name, folder, max_batch=max(batches), precision=precision, compile=True,
                       compile_mode=None if mode == "auto" else mode) as r:
        for b in batches:
            r.run(crops[:b])
        times = {b: r.compile_times[b] for b in batches if b in r.compile_times}
        print(json.dumps({"times": times, "total_s": time.perf_counter() - t0, "mode": r.compile_mode}))


def compile_times_main(args, batches, gpu: bool):
    """torch.compile's time in a first and a second fresh process sharing an empty cache folder
    ($TORCHINDUCTOR_CACHE_DIR, a temporary one), at each batch size."""
    import subprocess
    import tempfile

    name, precision = ("torch-cuda", "fp16") if gpu else ("torch-cpu", "fp32")
    folder = model_folder(args)
    threads = args.threads or os.cpu_count()
    result = {"runner": name, "precision": precision, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "load_1m": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="e3dmm-inductor-cache-") as cache:
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
        env.pop("TRITON_CACHE_DIR", None)  # Triton's kernels go under the same fresh folder
        for which in ("first", "second"):
            cmd = [sys.executable, str(Path(__file__).resolve()), "--compile-child", name, precision,
                   args.compile_mode or "auto", ",".join(map(str, batches)), str(folder), str(threads)]
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
            if done.returncode != 0:
                sys.exit(f"bench_network.py --compile-times: the {which} process failed:\n{done.stderr[-3000:]}")
            got = json.loads(done.stdout.strip().splitlines()[-1])
            result[which] = got["times"]
            result[f"{which}_total_s"] = round(got["total_s"], 2)
            result["mode"] = got["mode"]
            print(f"{which} process: {got['times']} (total {got['total_s']:.1f} s)", flush=True)
    result["load_1m_at_end"] = os.getloadavg()[0]
    if args.json and Path(args.json).is_file():
        doc = json.loads(Path(args.json).read_text())
        doc["meta"]["compile_times"] = result
        if args.note:
            doc["meta"]["notes"] = list(dict.fromkeys([*doc["meta"].get("notes", []), *args.note]))
        write_tables(args, doc["rows"], doc["meta"], gpu)
    for line in compile_time_lines(result):
        print(line)
    return result


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", default=None, help="comma-separated (default 1,8,32 on CPU; 1,8,32,128 with a GPU)")
    ap.add_argument("--iters", type=int, default=None, help="timed calls per runner and batch size (default: 12/4/2/2 for batch 1/8/32/128)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2, help="passes over the runners per batch size")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")
    ap.add_argument("--model-dir", default=None)
    ap.add_argument("--second-model", action="store_true",
                    help="benchmark the independently built model (second_model) instead of --model-dir's weights")
    ap.add_argument("--validate", action="store_true",
                    help="build and validate the variants again (default: only when the weights have no fresh card)")
    ap.add_argument("--calibration", metavar="DIR", help="your face photos for the int8 calibration (as validate)")
    ap.add_argument("--gpu", action="store_true", help="include GPU runners (default: only when present)")
    ap.add_argument("--gpu-only", action="store_true",
                    help="only GPU runners, against the float32 eager module on the same GPU (bench/gpu_check.sh)")
    ap.add_argument("--compiled", choices=("with", "without", "only"), default=None,
                    help="the torch.compile rows: with the others, without them, or only them (beside the float32 "
                         "reference; to --append to a table) (default: with on a machine without a GPU; without "
                         "when GPU rows are measured, where each compilation takes a minute or more: ask for them)")
    ap.add_argument("--runners", nargs="+", default=None, metavar="NAME",
                    help="only these runners (beside the float32 reference), e.g. onnxruntime torch-cpu: a shorter "
                         "run for a side-by-side comparison in a quiet moment")
    ap.add_argument("--compile-mode", choices=COMPILE_MODES, default=None,
                    help="Inductor's mode for the compiled rows (default: max-autotune on a GPU, default on the CPU)")
    ap.add_argument("--compile-batches", default=None,
                    help="comma-separated batch sizes that get compiled rows (default: every one of --batches); each "
                         "is a compilation (seconds on a CPU, about a minute or more on a GPU)")
    ap.add_argument("--compile-times", action="store_true",
                    help="only measure torch.compile's time (torch-cpu, or torch-cuda with a GPU) in two fresh child "
                         "processes sharing an empty cache folder, at --batches; prints it, and with --json/--md "
                         "merges it into their meta and notes")
    ap.add_argument("--json", default=None, help="write rows as JSON here")
    ap.add_argument("--md", default=None, help="write a markdown table here")
    ap.add_argument("--append", action="store_true",
                    help="merge into an existing --json file (rows of the same model/runner/config/batch are replaced), "
                         "so batch sizes and models can be measured in separate quiet moments of a shared machine")
    ap.add_argument("--note", action="append", default=[], help="a line for the Markdown header (kept in the JSON)")
    ap.add_argument("--variants-json", default=None, help="merge this model's variant card into this JSON file")
    ap.add_argument("--variants-md", default=None, help="write the variants table (every model in --variants-json)")
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--compile-child"]:  # the child process of --compile-times
        return compile_child(argv[1:])
    args = ap.parse_args(argv)

    import torch

    from engine.network.faces import builtin_faces

    gpu = args.gpu or args.gpu_only or torch.cuda.is_available()
    if args.gpu_only and not torch.cuda.is_available():
        sys.exit("bench_network.py --gpu-only: PyTorch sees no CUDA device")
    batches = [int(b) for b in args.batches.split(",")] if args.batches else ([1, 8, 32, 128] if gpu else [1, 8, 32])
    if args.compile_times:
        return compile_times_main(args, batches, gpu)
    compile_batches = {int(b) for b in args.compile_batches.split(",")} if args.compile_batches else set(batches)
    load_at_start = os.getloadavg()[0]
    threads = args.threads or os.cpu_count()
    torch.set_num_threads(threads)
    folder = model_folder(args)
    model = resolve_model(folder)
    card = None
    if not args.gpu_only:
        from engine.validate import validate_variants

        card, problem = V.load_card(model)
        if card is None or args.validate or args.calibration:
            print(f"validating the CPU variants ({problem or 'no card yet' if card is None else 'asked'})", flush=True)
            card = validate_variants(model, calibration_dir=args.calibration, threads=threads,
                                     progress=lambda m: print(m, flush=True))
    label = ("second model (independent, seed 1)" if args.second_model
             else "synthetic seed 0" if model.synthetic else "converted weights")
    runners = [] if args.gpu_only else [("fp32 exact module, eager", EagerReference(model))]
    if gpu:  # the GPU targets compare with eager float32 on the same GPU
        runners.append(("fp32 exact module, eager", EagerReference(model, "cuda")))
    for name, kw in configs(threads, gpu, cpu=not args.gpu_only, card=card, compile_mode=args.compile_mode,
                            compiled=args.compiled or ("without" if gpu else "with"), runners=args.runners):
        r = create_runner(name, folder, max_batch=max(batches), **kw)
        label_kw = ", ".join(f"{k}={v}" for k, v in kw.items())
        runners.append((label_kw, r))
    faces, _ = builtin_faces("validation")
    crops_all = np.concatenate([faces] * (max(batches) // len(faces) + 1))[:max(batches)]
    rows = []
    for b in batches:
        iters = args.iters or {1: 12, 8: 4}.get(b, 2)
        here = [(lb, r) for lb, r in runners if b in compile_batches or not getattr(r, "compiled", False)]
        got = bench_batch(b, here, iters, args.warmup, crops_all, args.rounds, card)
        for r in got:
            r["model"] = label
            print(f"{r['runner']:12s} {r['config']:38s} b={b:3d} p50 {r['latency_ms_p50']:9.2f} ms "
                  f"{r['throughput_per_s']:9.1f}/s err {r['max_abs_err']:.2e} validated {r['validated_max_sd']} "
                  f"load {r['load_1m']}" + (f" compile {r['compile_s']} s ({r['compile_how']})" if r.get("compiled")
                                            else ""), flush=True)
        rows += got
    for _, r in runners:
        r.close()
    meta = {"machine": machine(), "threads": threads, "torch": torch.__version__,
            "weights": model.describe(), "synthetic": model.synthetic,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "load_average_1m_at_start": load_at_start, "load_average_1m_at_end": os.getloadavg()[0]}
    try:
        import onnxruntime

        meta["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    if args.json and args.append and Path(args.json).is_file():
        rows = merge_appended(json.loads(Path(args.json).read_text()), rows, meta)
    if args.note:
        meta["notes"] = list(dict.fromkeys([*meta.get("notes", []), *args.note]))
    write_tables(args, rows, meta, gpu)
    if card is not None and (args.variants_json or args.variants_md):
        cards = {}
        if args.variants_json and Path(args.variants_json).is_file():
            cards = json.loads(Path(args.variants_json).read_text())
        cpu = [n for n in available_runners() if n in V.CPU_RUNNERS]
        choice = V.choose(model, cpu[0], explicit_runner=False, precision=None, available=cpu)
        cards[label] = {"card": card.data, "auto": f"{choice.runner} {choice.precision}"}
        if args.variants_json:
            with atomic_write(args.variants_json, "w") as f:
                json.dump(cards, f, indent=1)
        if args.variants_md:
            with atomic_write(args.variants_md, "w") as f:
                f.write(variants_table(cards))
    return rows


if __name__ == "__main__":
    main()
