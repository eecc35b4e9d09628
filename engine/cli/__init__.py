"""The command line: `python -m engine ...` (also installed as `engine3dmm`).

`main(argv)` parses, runs one subcommand and returns the exit code:
0 every input succeeded, 1 something failed (per-input failures, or an engine error
such as a corrupt model file, or the machine running out of memory: one line, never a
traceback), 2 usage error (argparse), 130 interrupted by Ctrl-C (SIGINT), 143 stopped by SIGTERM
(what `timeout`, `docker stop`, Slurm and Kubernetes send): both stop the run the same way
(engine.cli.common.StopSignals), keeping what is finished. A run stopped by an error before it
wrote anything leaves no output folder behind.

Only argparse and the engine's error classes are imported here, so `--help` is fast;
each subcommand imports what it needs (numpy, the pipeline, PyTorch...) when it runs.
"""
from __future__ import annotations

import importlib
import logging
import sys
import traceback
import warnings

from engine.cli.parser import build_parser
from engine.errors import EngineError

PROG = "engine3dmm"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2  # interrupted: 128 + the signal (130 SIGINT, 143 SIGTERM; common.StopSignals)


def _setup_logging(quiet: bool, verbose: bool):
    """Engine log records (e.g. 'using SYNTHETIC weights') go to stderr, above any
    progress bar. --quiet keeps errors only; --verbose shows the engine's info lines.
    Returns a function that puts the logger back as it was (main() may be called from a
    host program or a test session, whose logging must not change)."""
    from engine.cli.common import TqdmHandler

    log = logging.getLogger("engine")
    saved = (list(log.handlers), log.level, log.propagate)
    handler = TqdmHandler(PROG)
    log.handlers = [handler]
    log.setLevel(logging.ERROR if quiet else (logging.DEBUG if verbose else logging.WARNING))
    log.propagate = False  # one line per record, whatever the host program configured

    def restore():
        log.handlers, log.propagate = saved[0], saved[2]
        log.setLevel(saved[1])

    return restore


def _conflicting_options(args) -> str | None:
    """Options that cannot work together, refused before anything runs (exit 2): the pose, the
    posed mesh, the picture and the .pts files need the 68 landmarks in a photo, which an
    already-cropped input (--cropped) does not have."""
    if getattr(args, "cropped", False):
        wanted = [opt for opt, dest in (("--pose", "pose"), ("--pose-camera", "pose_camera"), ("--posed", "posed"),
                                        ("--render", "render"), ("--landmarks", "landmarks"))
                  if getattr(args, dest, None)]
        if wanted:
            return (f"{', '.join(wanted)}: need each face's 68 landmarks in its photo; --cropped inputs are "
                    "already-cropped faces, which have none (give the photos, with --boxes for your own boxes "
                    "or landmarks)")
    return _compile_conflict(args) or _precision_conflict(args) or _device_input_conflict(args)


CPU_RUNNERS = ("onnxruntime", "torch-cpu")  # engine.network.variants.CPU_RUNNERS
GPU_RUNNERS = ("torch-cuda", "tensorrt")  # the runners --device-input on can feed


def _or(items) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


def _compile_conflict(args) -> str | None:
    """--compile needs a PyTorch runner (engine.runners.create_runner says the same to the API);
    --compile-mode applies with --compile only."""
    from engine.cli.parser import COMPILABLE_RUNNERS

    if getattr(args, "compile_mode", None) and not getattr(args, "compile", False):
        return f"--compile-mode {args.compile_mode}: applies with --compile only (add --compile or drop --compile-mode)"
    if not getattr(args, "compile", False):
        return None
    runner = getattr(args, "runner", "auto")
    if runner not in ("auto",) + COMPILABLE_RUNNERS:
        return (f"--compile: torch.compile applies to the PyTorch runners ({', '.join(COMPILABLE_RUNNERS)}, or "
                f"auto); --runner {runner} cannot compile: drop --compile or use --runner torch-cpu / torch-cuda")
    if getattr(args, "precision", None) == "int8":
        return ("--compile --precision int8: int8 is an ONNX Runtime graph (the onnxruntime runner), which "
                "torch.compile cannot compile: use --precision fp32 or bf16 (torch-cpu) or drop --compile")
    return None


def _precision_conflict(args) -> str | None:
    """A --precision the named --runner does not run (fp16 on a CPU runner, int8 off onnxruntime,
    bf16 on onnxruntime or tensorrt): engine.network.variants.check_precision, the API's and the
    service's own check, with its advice for these options (--compile included)."""
    from engine.errors import InputError
    from engine.network.variants import PRECISIONS_OF, check_precision

    runner, precision = getattr(args, "runner", "auto"), getattr(args, "precision", None)
    if runner == "auto" or precision in (None, "auto"):
        return None  # which runner runs is this machine's to say: create_runner checks it
    try:
        check_precision(runner, True, precision, list(PRECISIONS_OF), compile=bool(getattr(args, "compile", False)))
    except InputError as e:
        return str(e)
    return None


def _device_input_conflict(args) -> str | None:
    """--device-input on decodes and crops on the GPU, into a CUDA runner's input: a CPU runner
    (named, or the one --precision int8 runs on) cannot take it."""
    if getattr(args, "device_input", "auto") != "on":
        return None
    runner, precision = getattr(args, "runner", "auto"), getattr(args, "precision", None)
    if runner in CPU_RUNNERS:
        return (f"--device-input on: the device input decodes and crops on the GPU for a CUDA runner "
                f"({', '.join(GPU_RUNNERS)}); --runner {runner} runs on the CPU: use --runner "
                f"{_or(GPU_RUNNERS + ('auto',))}, or --device-input auto / off")
    if runner == "auto" and precision == "int8":
        return ("--device-input on: the device input decodes and crops on the GPU for a CUDA runner "
                f"({', '.join(GPU_RUNNERS)}); --precision int8 runs on onnxruntime, on the CPU: use --precision "
                "fp16, bf16 or fp32, or --device-input auto / off")
    return None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(PROG)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2): return it instead of exiting
        return int(e.code or 0) if not isinstance(e.code, str) else EXIT_USAGE
    if not getattr(args, "handler", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    if getattr(args, "inputs", None) == [] and getattr(args, "camera", None) is None:
        try:  # `reconstruct` takes its inputs as files, a camera, or both: not neither
            args.subparser.error("give at least one INPUT or --camera INDEX")
        except SystemExit:
            return EXIT_USAGE
    conflict = _conflicting_options(args)
    if conflict:
        try:
            args.subparser.error(conflict)
        except SystemExit:
            return EXIT_USAGE
    quiet, verbose = bool(getattr(args, "quiet", False)), bool(getattr(args, "verbose", False))
    restore_logging = _setup_logging(quiet, verbose)
    module, func = args.handler.split(":")
    from engine import images
    from engine.cli import common

    # Messages of the library in the command line's words; put back afterwards (a host program's
    # or a test session's own calls must keep the API's words).
    hints = (images.set_limit_hint(f"--max-pixels / ${common.ENV_MAX_PIXELS}"),
             images.set_recursive_hint("--recursive"))
    finished = False
    stops = common.StopSignals()

    def interrupted(e: BaseException) -> int:
        # Every file is written to a temporary name and renamed when complete, and the
        # temporary is removed when an exception (this one too) passes through, so what
        # is on disk now is only finished files.
        _, words, code = common.interruption(e)
        print(f"{PROG}: interrupted ({words}); finished outputs were kept, no partial files were left",
              file=sys.stderr)
        return code

    try:
        with warnings.catch_warnings(), stops:
            # Pillow warns below its hard limit; our own limit has refused such an image with a
            # message of its own (engine.images), so its warning would only say it twice.
            warnings.filterwarnings("ignore", message=r"Image size \(\d+ pixels\) exceeds limit")
            code = int(getattr(importlib.import_module(module), func)(args))
        finished = True
        if stops.received is not None and code != EXIT_OK:  # the signal came out as an input's failure
            return interrupted(common.Interrupted(stops.received))
        return code
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (common.Interrupted)
        return interrupted(e)
    except (EngineError, MemoryError) as e:
        if getattr(stops, "received", None) is not None:  # the signal came out as another error (StopSignals)
            return interrupted(common.Interrupted(stops.received))
        return _failed(e, verbose)
    except BrokenPipeError:  # e.g. `engine3dmm info | head`: not an error of ours
        finished = True
        return EXIT_OK
    finally:
        if finished:
            common.forget_output_dirs()
        else:
            common.remove_unused_output_dirs()  # only folders this run created and left empty
        images.set_limit_hint(hints[0])
        images.set_recursive_hint(hints[1])
        restore_logging()
        common.restore_max_pixels()


def _failed(e: BaseException, verbose: bool) -> int:
    """One line for an error that stopped the run (a traceback only with -v)."""
    if isinstance(e, MemoryError):  # one line, as every other error: a traceback helps no user here
        if verbose:
            traceback.print_exc()
        detail = f" ({e})" if str(e) else ""
        print(f"{PROG}: error: out of memory{detail}; finished outputs were kept. Try a smaller --batch-size, "
              "fewer --workers, or smaller images (--max-pixels)", file=sys.stderr)
        return EXIT_FAILED
    if verbose:
        traceback.print_exc()
    print(f"{PROG}: error: {e}", file=sys.stderr)
    return EXIT_FAILED
