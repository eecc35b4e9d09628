"""The command line: `python -m engine ...` (also installed as `engine3dmm`).

`main(argv)` parses, runs one subcommand and returns the exit code:
0 every input succeeded, 1 something failed (per-input failures, or an engine error
such as a corrupt model file), 2 usage error (argparse), 130 interrupted (Ctrl-C).

Only argparse and the engine's error classes are imported here, so `--help` is fast;
each subcommand imports what it needs (numpy, the pipeline, PyTorch...) when it runs.
"""
from __future__ import annotations

import importlib
import logging
import sys
import traceback

from engine.cli.parser import build_parser
from engine.errors import EngineError

PROG = "engine3dmm"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


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
    quiet, verbose = bool(getattr(args, "quiet", False)), bool(getattr(args, "verbose", False))
    restore_logging = _setup_logging(quiet, verbose)
    module, func = args.handler.split(":")
    try:
        return int(getattr(importlib.import_module(module), func)(args))
    except KeyboardInterrupt:
        # Every file is written to a temporary name and renamed when complete, and the
        # temporary is removed when an exception (this one too) passes through, so what
        # is on disk now is only finished files.
        print(f"{PROG}: interrupted (Ctrl-C); finished outputs were kept, no partial files were left",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except EngineError as e:
        if verbose:
            traceback.print_exc()
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return EXIT_FAILED
    except BrokenPipeError:  # e.g. `engine3dmm info | head`: not an error of ours
        return EXIT_OK
    finally:
        restore_logging()
        from engine.cli.common import restore_max_pixels

        restore_max_pixels()
