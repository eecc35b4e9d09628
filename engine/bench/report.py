"""The benchmark's outputs: the console table, the targets verdict and the Markdown file."""
from __future__ import annotations

import datetime
import json
import os
import re

from engine.bench.measure import ROW_KEYS, Machine, Row, Skip
from engine.fileio import atomic_write

# Targets (issue 4, same runner and batch): pipelined stages against the network alone. Issue 11:
# JPEG files with known boxes -> meshes through the device input (device_input) at least 90% of
# the network's throughput; cpu_input, the same through the CPU input path, for comparison.
TARGETS = {"network_decode": 0.95, "end_to_end": 0.90, "end_to_end_pose": 0.90, "cpu_input": 0.90,
           "device_input": 0.90}
# Issue 9 section 6: the pose fit, batched, per face.
POSE_TARGET_MS = 0.5
# Issue 8 section 4: one photo of 81 megapixels, one face, in under 5 s and 1.5 GB.
HUGE_TARGET_S, HUGE_TARGET_MIB = 5.0, 1536
# The stages end_to_end chains (each measured alone: preprocess and write on one CPU core), and
# those device_input chains (device_preprocess: nvJPEG + the crop kernel; it writes no file).
_PER_FACE_STAGES = ("preprocess", "network", "decode", "write")
_DEVICE_PER_FACE_STAGES = ("device_preprocess", "network", "decode")


def table(rows: list[Row]) -> str:
    """The console table, headed by the models the rows ran (a synthetic one says SYNTHETIC:
    the label is the runner's and the morphable model's own, see engine.bench.cli)."""
    models = list(dict.fromkeys(r.model for r in rows if r.runner != "dlib"))
    title = [f"Model: {m}" for m in models]
    if any("SYNTHETIC" in m for m in models):
        title.append("SYNTHETIC: placeholder weights or model (same architecture, so the same speed; the "
                     "outputs are meaningless)")
    head = ("stage", "runner", "device", "prec", "batch", "p50 ms", "p99 ms", "faces/s", "peak RSS MiB", "GPU MiB")
    body = [(r.stage, r.runner, r.device, r.precision, str(r.batch), f"{r.latency_ms_p50:.1f}",
             f"{r.latency_ms_p99:.1f}", f"{r.throughput_per_s:.2f}",
             "-" if r.peak_rss_mib is None else f"{r.peak_rss_mib:.0f}",
             "-" if r.peak_gpu_mib is None else f"{r.peak_gpu_mib:.0f}") for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:<{w}}}" if i < 4 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return "\n".join([*title, fmt.format(*head), fmt.format(*("-" * w for w in widths)),
                      *(fmt.format(*b) for b in body)])


def _groups(rows: list[Row]) -> dict[tuple[str, int], dict[str, Row]]:
    """Rows by (runner and, for a CPU variant, its precision; batch)."""
    g: dict[tuple[str, int], dict[str, Row]] = {}
    for r in rows:
        if r.stage != "detect":
            who = r.runner if r.precision in ("fp32", "-") or r.device != "cpu" else f"{r.runner} {r.precision}"
            g.setdefault((who, r.batch), {})[r.stage] = r
    return g


def analysis(rows: list[Row]) -> list[dict]:
    """Per runner and batch: each target's ratio, the stage that bounds end_to_end (and
    device_input), and what the CPU input path costs in cores. The one place these numbers are
    computed: `verdicts` words them, the JSON holds them (key "analysis").

    Keys: runner, batch, device, network_faces_per_s; targets {stage: {ratio, target, pass}};
    pose_ms_per_face; ms_per_face {stage: ms} and end_to_end_bound_by (the slowest stage alone,
    per face: preprocess and write on one core); device_ms_per_face and device_input_bound_by (the
    same with device_preprocess for preprocess); cpu_input_ms_per_face (JPEG decode + crop on one
    core) and cpu_input_cores (cores the CPU input path needs to keep up with the network at its
    measured throughput: network faces/s x CPU input seconds per face); on a GPU
    cpu_cores_to_keep_gpu_busy (preprocess + write per face x network faces/s). A key is absent
    when its rows were not measured: ms_per_face and end_to_end_bound_by need the end_to_end row
    and each stage it chains; device_ms_per_face and device_input_bound_by the device_input row
    and each of its stages."""
    out = []
    for (runner, batch), st in _groups(rows).items():
        net = st.get("network")
        if net is None:
            continue
        a: dict = {"runner": runner, "batch": batch, "device": net.device,
                   "network_faces_per_s": net.throughput_per_s, "targets": {}}
        for stage, target in TARGETS.items():
            if stage in st:
                ratio = st[stage].throughput_per_s / net.throughput_per_s
                a["targets"][stage] = {"ratio": ratio, "target": target, "pass": ratio >= target}
        if "pose" in st:
            a["pose_ms_per_face"] = 1e3 / st["pose"].throughput_per_s
        for key, chain, names in (("", "end_to_end", _PER_FACE_STAGES),
                                  ("device_", "device_input", _DEVICE_PER_FACE_STAGES)):
            # Only of a chain that was measured, from all of its stages measured alone: a bound
            # named from some of them, or for a run that never ran, would be a guess.
            if chain in st and all(s in st for s in names):
                per_face = {s: 1e3 / st[s].throughput_per_s for s in names}
                a[f"{key}ms_per_face"] = per_face
                a[f"{chain}_bound_by"] = max(per_face, key=per_face.get)
        if "preprocess" in st:
            a["cpu_input_ms_per_face"] = 1e3 / st["preprocess"].throughput_per_s
            a["cpu_input_cores"] = net.throughput_per_s / st["preprocess"].throughput_per_s
        if net.device == "cuda":
            cpu_s = sum(1.0 / st[s].throughput_per_s for s in ("preprocess", "write") if s in st)
            a["cpu_cores_to_keep_gpu_busy"] = cpu_s * net.throughput_per_s
        out.append(a)
    return out


def verdicts(rows: list[Row]) -> list[str]:
    """One line per runner and batch (from `analysis`): each target's ratio and PASS/FAIL, the
    stage that bounds end_to_end, the cores the CPU input path needs, and on a GPU how many CPU
    cores would keep the GPU busy; then the 81-megapixel rows."""
    lines = []
    for a in analysis(rows):
        parts = [f"{stage} {t['ratio']:.1%} of network ({'PASS' if t['pass'] else 'FAIL'}, target {t['target']:.0%})"
                 for stage, t in a["targets"].items()]
        if "pose_ms_per_face" in a:
            ms = a["pose_ms_per_face"]
            parts.append(f"pose {ms:.3f} ms per face ({'PASS' if ms < POSE_TARGET_MS else 'FAIL'}, "
                         f"target < {POSE_TARGET_MS:g} ms)")
        for key, what in (("", "end_to_end"), ("device_", "device_input")):
            per_face = a.get(f"{key}ms_per_face")
            if per_face:
                cost = ", ".join(f"{s} {v:.3g}" for s, v in per_face.items())
                parts.append(f"{what} bound by {a[what + '_bound_by']} (ms per face, each stage alone: {cost})")
        if a["device"] == "cpu" and "network" in a.get("ms_per_face", {}):
            per_face = a["ms_per_face"]
            side = sum(v for s, v in per_face.items() if s != "network")
            parts.append(f"the other stages need {side / per_face['network']:.0%} of the network's time "
                         f"on the same cores")
        if "cpu_input_cores" in a:
            parts.append(f"the CPU input path (JPEG decode + crop, {a['cpu_input_ms_per_face']:.2f} ms per face per "
                         f"core) needs {a['cpu_input_cores']:.2f} cores to keep up with the network's "
                         f"{a['network_faces_per_s']:.0f} faces/s")
        if "cpu_cores_to_keep_gpu_busy" in a:
            parts.append(f"CPU cores to keep the GPU busy: {a['cpu_cores_to_keep_gpu_busy']:.1f} "
                         f"(preprocess + write per face x network faces/s)")
        lines.append(f"{a['runner']} batch {a['batch']}: " + "; ".join(parts))
    for r in rows:
        if r.stage.endswith("_81mp"):
            t, mem = r.latency_ms_p50 / 1e3, r.peak_rss_mib
            side = re.search(r"max side \d+|full resolution", r.note)
            lines.append(f"{r.stage} ({r.runner}{', ' + side.group(0) if side else ''}): "
                         f"{t:.2f} s ({'PASS' if t < HUGE_TARGET_S else 'FAIL'}, target < {HUGE_TARGET_S:g} s), "
                         f"peak RSS {'-' if mem is None else f'{mem:.0f}'} MiB "
                         f"({'PASS' if mem is not None and mem < HUGE_TARGET_MIB else 'FAIL'}, "
                         f"target < {HUGE_TARGET_MIB} MiB)")
    return lines


def write_json(path: str | os.PathLike, rows: list[Row], machine: Machine, skipped: list[Skip] = ()) -> None:
    """The rows, the analysis, and "skipped": the rows asked for and not measured, each
    {stages, runner, precision, reason, batches} (batches [] : every batch size)."""
    doc = {"machine": machine.describe(), "date": _now(), "row_keys": list(ROW_KEYS),
           "rows": [r.as_dict() for r in rows], "analysis": analysis(rows),
           "skipped": [s.as_dict() for s in skipped]}
    with atomic_write(path, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


def markdown(rows: list[Row], machine: Machine, command: str, notes: list[str], skipped: list[Skip] = ()) -> str:
    out = ["# `python -m engine.bench` results", "",
           f"- Machine: {machine.describe()}", f"- Date: {_now()}", f"- Command: `{command}`",
           f"- Model: {next((r.model for r in rows if r.runner != 'dlib'), '-')}", *[f"- {n}" for n in notes], "",
           "| stage | runner | device | precision | batch | p50 ms | p99 ms | faces/s | peak RSS MiB | GPU MiB | note |",
           "|---|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        out.append(f"| {r.stage} | {r.runner} | {r.device} | {r.precision} | {r.batch} | {r.latency_ms_p50:.1f} | "
                   f"{r.latency_ms_p99:.1f} | {r.throughput_per_s:.2f} | "
                   f"{'-' if r.peak_rss_mib is None else f'{r.peak_rss_mib:.0f}'} | "
                   f"{'-' if r.peak_gpu_mib is None else f'{r.peak_gpu_mib:.0f}'} | {r.note} |")
    if skipped:
        out += ["", "Not measured (asked for, skipped):", "", *[f"- {s.describe()}" for s in skipped]]
    out += ["", "## Targets", "", *[f"- {v}" for v in verdicts(rows)], ""]
    return "\n".join(out)


def write_markdown(path, rows, machine, command, notes, skipped: list[Skip] = ()) -> None:
    with atomic_write(path, "w") as f:
        f.write(markdown(rows, machine, command, notes, skipped))


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
