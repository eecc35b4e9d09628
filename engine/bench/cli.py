"""Command line of the benchmark.

    python -m engine.bench                       # every available runner, batch sizes 1 8 32 (GPU: + 128)
    python -m engine.bench --quick               # default runner, batch 1 and 8, under a minute
    python -m engine.bench --runners onnxruntime --batch-sizes 1 4 --json out.json --markdown out.md
    python -m engine.bench --runners onnxruntime --precisions fp32 int8   # a validated CPU variant's rows
    python -m engine.bench --stages detect huge    # the detection rows only (astronaut, 81-megapixel photo)
    python -m engine.bench --runners torch-cpu --compile   # the PyTorch runners compiled (torch.compile, Inductor)
"""
from __future__ import annotations

import argparse
import importlib.util
import logging
import shlex
import sys
import time

from engine.bench import measure, report
from engine.bench import stages as S
from engine.errors import EngineError

DEFAULT_BATCHES_CPU = (1, 8, 32)
DEFAULT_BATCHES_GPU = (1, 8, 32, 128)
QUICK_BATCHES = (1, 8)
STAGE_GROUPS = ("detect", "huge", "runners", "pose", "device")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m engine.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="fewer iterations, batch sizes 1 and 8, the default runner only (under a minute)")
    p.add_argument("--runners", nargs="+", metavar="NAME",
                   help="runners to measure (default: every available one; --quick: the default one)")
    p.add_argument("--precisions", nargs="+", metavar="P", choices=("fp32", "fp16", "bf16", "int8"),
                   help="CPU runners: the precisions to measure (default: fp32 and every CPU variant validated for "
                        "the weights and usable here, engine3dmm validate; --quick: what auto picks); each row "
                        "notes the variant's validated error; one the runner would not run (no validated variant: "
                        "it falls back to fp32) is skipped, with the reason in the tables")
    p.add_argument("--batch-sizes", nargs="+", type=int, metavar="B", help="batch sizes (default 1 8 32; GPU + 128)")
    p.add_argument("--compile", action="store_true",
                   help="the PyTorch runners compiled with torch.compile (Inductor; rows say 'compiled'): each batch "
                        "size compiles once, before its timed calls (default runners: the PyTorch ones available)")
    p.add_argument("--compile-mode", choices=("default", "max-autotune"),
                   help="with --compile: Inductor's mode (default: max-autotune on a GPU, default on the CPU)")
    p.add_argument("--json", metavar="PATH",
                   help="write the rows as JSON, with the analysis and the rows asked for but skipped, each with why")
    p.add_argument("--markdown", metavar="PATH",
                   help="write a Markdown table with the machine, the skipped rows (and why) and the targets")
    p.add_argument("--network-dir", metavar="DIR", help="model card folder with the converted network weights (default: $ENGINE3DMM_MODEL_DIR, the checkout's models/cnn3dmm, or the per-user folder)")
    p.add_argument("--model", metavar="PATH", help="morphable model file (default: the built-in synthetic model)")
    p.add_argument("--workers", type=int, default=2, help="prep worker threads of end_to_end (default 2)")
    p.add_argument("--basis-dtype", choices=("fp32", "fp16"), default="fp32",
                   help="storage of the morphable model bases in the decoder (default fp32, the Reconstructor's)")
    p.add_argument("--note", action="append", default=[], help="a line added to the Markdown notes")
    p.add_argument("--stages", nargs="+", choices=STAGE_GROUPS, metavar="GROUP",
                   help="which rows: detect (dlib on astronaut), huge (an 81-megapixel photo, detect_81mp and "
                        "reconstruct_81mp, each in a child process), runners (every runner and batch size), pose "
                        "(per runner and batch size: the pose fit alone, and end_to_end_pose, end_to_end with "
                        "--pose, in the paired rounds), device (preprocess and write alone; on GPU runners also "
                        "device_preprocess, nvJPEG + the crop kernel alone, and in the paired rounds cpu_input and "
                        "device_input: JPEG files + boxes -> meshes in memory through the CPU and the device input "
                        "paths; elsewhere the reason they are skipped) (default: all; --quick: detect runners "
                        "device)")
    p.add_argument("--huge-max-sides", nargs="+", type=int, default=[2048], metavar="PX",
                   help="detect_81mp: one row per detector max side (0: full resolution, the old behaviour: "
                        "about 25 s and 4.6 GB on 2 cores) (default: 2048, the engine's default)")
    return p


def _log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class _Said(logging.Handler):
    """The warnings engine.runners logs while it is installed (why a runner fell back)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())

    def __enter__(self):
        logging.getLogger("engine.runners").addHandler(self)
        return self

    def __exit__(self, *exc):
        logging.getLogger("engine.runners").removeHandler(self)
        return False


def run(args) -> tuple[list[measure.Row], list[measure.Skip], measure.Machine]:
    """The rows measured, the rows asked for and skipped (each with its reason), the machine."""
    from engine.morphable import load_model
    from engine.pipeline import Reconstructor
    from engine.runners import GPU_RUNNERS, available_runners, create_runner

    budget = measure.QUICK if args.quick else measure.FULL
    stages = args.stages or (("detect", "runners", "device") if args.quick else STAGE_GROUPS)
    available = available_runners()
    if not available:
        raise EngineError("no network runner is available: pip install onnxruntime onnx (CPU) or torch")
    names = args.runners or (available[:1] if args.quick else available)
    if args.compile or args.compile_mode:
        names = _compilable(args, names, available)
    gpu_any = any(n in GPU_RUNNERS for n in names)
    batches = args.batch_sizes or (QUICK_BATCHES if args.quick else DEFAULT_BATCHES_GPU if gpu_any
                                   else DEFAULT_BATCHES_CPU)
    if any(b < 1 for b in batches):
        raise EngineError(f"--batch-sizes: expected positive integers, found {batches}")
    missing = [n for n in names if n not in available]
    if missing:
        raise EngineError(f"--runners: {missing} not available on this machine; available: {available}")
    rows: list[measure.Row] = []
    skipped: list[measure.Skip] = []

    def skip(stages_, runner, precision, reason, batch=None):
        s = measure.add_skip(skipped, measure.Skip(tuple(stages_), runner, precision or "-", reason,
                                                   () if batch is None else (batch,)))
        _log(s.describe())

    work = S.workload()
    has_dlib = importlib.util.find_spec("dlib") is not None
    if "detect" in stages and not has_dlib:
        skip(("detect",), "dlib", "-", "dlib is not installed (pip install dlib)")
    if "detect" in stages and has_dlib:
        row = S.detect(work, budget)
        rows.append(row)
        _log(f"detect: {row.latency_ms_p50:.1f} ms per image")
    if "huge" in stages and any(m != 0 and m < 32 for m in args.huge_max_sides):
        raise EngineError(f"--huge-max-sides: expected 0 or integers >= 32, found {args.huge_max_sides}")
    if "huge" in stages and not has_dlib:
        skip((f"detect_{huge_mp()}mp", f"reconstruct_{huge_mp()}mp"), "dlib", "-",
             "dlib is not installed (pip install dlib): the photo's face is found by dlib")
    if "huge" in stages and has_dlib:
        from engine.bench import huge

        rows += huge.rows(names[0], [m or None for m in args.huge_max_sides], log=_log)
    if not {"runners", "pose", "device"} & set(stages):
        return rows, skipped, measure.machine(gpu_any)
    model = load_model(args.model)
    single = {"preprocess": S.preprocess, "decode": S.decode, "write": S.write, "pose": S.pose}
    compiled = " compiled" if args.compile else ""

    def runner_skip(name, precision, reason):
        skip(S.row_stages(stages, device_rows=name in GPU_RUNNERS), name + compiled, precision, reason)

    for name, precision in S.runner_configs(names, args.network_dir, args.precisions, args.quick, skip=runner_skip):
        _log(f"runner {name} {precision or ''}: loading")
        with _Said() as said:
            runner = create_runner(name, args.network_dir, max_batch=max(batches), precision=precision,
                                   compile=args.compile, compile_mode=args.compile_mode)
        # A requested precision the runner does not run is not measured under its name.
        wanted = [precision] if precision else list(args.precisions or [])
        for p in (p for p in wanted if p != runner.precision):
            runner_skip(name, p, (f"{name} fell back to {runner.precision}: " + "; ".join(said.messages))
                        if precision else f"--precisions applies to the CPU runners; {name} runs its default, "
                        f"{runner.precision}, measured as such")
        if precision and runner.precision != precision:
            runner.close()
            continue
        label = S.model_label(runner.synthetic, model.metadata.get("name"), model.synthetic)
        try:
            for b in batches:
                # device_input=False: end_to_end is the CPU input path; the device group measures
                # the device input beside it (device_input).
                with Reconstructor(runner=runner, model=model, batch_size=b, detector=None, workers=args.workers,
                                   basis_dtype=args.basis_dtype, device_input=False) as rec:
                    ctx = S.Context(rec, b, work, budget, label)
                    for stage in S.row_stages(stages):
                        if stage in single:
                            rows.append(single[stage](ctx))
                            _log(_short(rows[-1]))
                    drec = None
                    if "device" in stages:
                        drec, why = S.device_reconstructor(ctx)
                        if drec is None:
                            skip(S.DEVICE_STAGES, ctx.runner_name, ctx.precision, why, b)
                    try:
                        if drec is not None:
                            rows.append(S.device_preprocess(ctx, drec))
                            _log(_short(rows[-1]))
                        rows += _paired_rounds(ctx, budget, pose="pose" in stages, plain="runners" in stages,
                                               drec=drec)
                    finally:
                        if drec is not None:
                            drec.close()
        finally:
            runner.close()
    return rows, skipped, measure.machine(gpu_any)


def huge_mp() -> int:
    from engine.bench.huge import SIDE

    return round(SIDE * SIDE / 1e6)


def _compilable(args, names: list[str], available: list[str]) -> list[str]:
    """--compile: the runners to measure compiled (EngineError for one that cannot compile)."""
    from engine.runners import COMPILABLE

    if args.compile_mode and not args.compile:
        raise EngineError(f"--compile-mode {args.compile_mode}: applies with --compile only")
    if args.runners:
        bad = [n for n in names if n not in COMPILABLE]
        if bad:
            raise EngineError(f"--compile: torch.compile applies to the PyTorch runners {list(COMPILABLE)}; {bad} "
                              "cannot compile")
        return names
    names = [n for n in available if n in COMPILABLE][:1 if args.quick else None]
    if not names:
        raise EngineError("--compile needs a PyTorch runner (torch-cuda or torch-cpu): pip install torch")
    return names


def _paired_rounds(ctx: S.Context, budget: measure.Budget, pose: bool = False,
                   plain: bool = True, drec=None) -> list[measure.Row]:
    """network, network_decode and end_to_end (and with `pose` end_to_end_pose, end_to_end with
    the pose fit; with `drec`, a Reconstructor with the device input: cpu_input and device_input,
    JPEG files -> meshes in memory through ctx.rec and drec) in alternating rounds: the targets
    compare their throughputs, and on a shared machine the background load drifts over minutes,
    so each round measures all of them under about the same load. `plain` False: network and
    end_to_end_pose only (and, with `drec`, cpu_input and device_input)."""
    per_batch = min(S.network_once(ctx) for _ in range(budget.warmup))
    calls = max(1, budget.iterations_for(per_batch) // budget.rounds)
    lo, hi = budget.pipelined_batches
    # +1: n batches give n - 1 steady-state intervals
    batches = max(lo, budget.batches_for(per_batch) // budget.rounds) + 1
    got: dict[str, list] = {"network": []}
    if plain:
        got.update(network_decode=[], end_to_end=[])
    if drec is not None:
        got.update(cpu_input=[], device_input=[])
    if pose:
        got["end_to_end_pose"] = []
    for r in range(budget.rounds):
        got["network"].append(S.network(ctx, calls))
        if plain:
            got["network_decode"].append(S.network_decode(ctx, batches))
            got["end_to_end"].append(S.end_to_end(ctx, batches))
        if drec is not None:
            got["cpu_input"].append(S.end_to_end(ctx, batches, write=False))
            got["device_input"].append(S.end_to_end(ctx, batches, rec=drec, write=False))
        if pose:
            got["end_to_end_pose"].append(S.end_to_end(ctx, batches, pose=True))
        _log(f"{ctx.runner_name} {ctx.precision} batch {ctx.batch}: round {r + 1}/{budget.rounds} done")
    notes = {"network": "host crops -> host coefficients" + S.validated_note(ctx.rec.runner),
             "network_decode": "crops -> meshes in memory, pipelined (network thread + decode)",
             "end_to_end": f"JPEG files + boxes -> PLY files, Reconstructor with {ctx.rec.workers} prep workers",
             "end_to_end_pose": f"end_to_end with reconstruct --pose (boxes with landmarks), "
                                f"{ctx.rec.workers} prep workers"}
    if drec is not None:
        notes["cpu_input"] = (f"JPEG files + boxes -> meshes in memory (no PLY writes), the CPU input path, "
                              f"{ctx.rec.workers} prep workers")
        notes["device_input"] = (f"cpu_input with the device input ({drec.device_input.backend.name}), "
                                 f"{ctx.rec.workers} prep workers reading files and headers; "
                                 f"{S.device_crop_difference(ctx, drec)}")
    rows = [S.rounds_row(ctx, stage, samples, notes[stage]) for stage, samples in got.items()]
    for row in rows:
        _log(_short(row))
    return rows


def _short(r: measure.Row) -> str:
    return (f"{r.stage} {r.runner} {r.precision} batch {r.batch}: p50 {r.latency_ms_p50:.1f} ms, "
            f"{r.throughput_per_s:.2f} faces/s ({r.iterations} iterations)")


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    for key in ("runners", "precisions", "batch_sizes", "stages", "huge_max_sides"):
        if getattr(args, key):  # each asked once is measured once, in the order asked
            setattr(args, key, list(dict.fromkeys(getattr(args, key))))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    t0 = time.perf_counter()
    try:
        rows, skipped, mach = run(args)
    except EngineError as e:
        print(f"engine.bench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("engine.bench: interrupted", file=sys.stderr)
        return 130
    print(f"Machine: {mach.describe()}")
    print(report.table(rows))
    print()
    for line in report.verdicts(rows):
        print(line)
    for s in skipped:
        print(f"Skipped: {s.describe()}")
    print(f"\n({time.perf_counter() - t0:.0f} s)")
    command = shlex.join(["python", "-m", "engine.bench", *(argv if argv is not None else sys.argv[1:])])
    notes = [*args.note, "Pipelined stages: latency = interval between consecutive batch completions "
             "(the pipeline's period per batch); throughput = steady state, first completion to last.",
             "Single stages: latency per batch call; throughput = faces / total time of the timed calls."]
    if args.json:
        report.write_json(args.json, rows, mach, skipped)
    if args.markdown:
        report.write_markdown(args.markdown, rows, mach, command, notes, skipped)
    return 0
