"""Pieces every run-type subcommand shares: the failure report, progress bars,
input expansion, output folders and JSON files, and building the Reconstructor.
(Output file names: engine.pipeline.naming.)"""
from __future__ import annotations

import json
import logging
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Iterable

from engine.errors import InputError, UnavailableError

ENV_MAX_PIXELS = "ENGINE3DMM_MAX_PIXELS"


class TqdmHandler(logging.Handler):
    """Log lines printed through tqdm.write, so they never tear a progress bar."""

    def __init__(self, prog: str):
        super().__init__()
        self.prog = prog

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(f"{self.prog}: {record.levelname.lower()}: {record.getMessage()}", file=sys.stderr)
        except Exception:
            self.handleError(record)


def say(message: str) -> None:
    """A line on stderr that coexists with a progress bar."""
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)


# The signals that stop a run the way Ctrl-C does: SIGINT (Ctrl-C) and SIGTERM (what `timeout`,
# `docker stop`, Slurm and Kubernetes send before they kill). Exit code 128 + the signal's number.
STOP_SIGNALS = ("SIGINT", "SIGTERM")
_SIGNAL_WORDS = {"SIGINT": "Ctrl-C", "SIGTERM": "SIGTERM"}


class Interrupted(KeyboardInterrupt):
    """A stop signal (STOP_SIGNALS) arrived. A KeyboardInterrupt, so every path that already keeps
    finished work on Ctrl-C (atomic writes removing their temporaries, the pipeline stopping its
    threads, reconstruct's summary, embed's save and merge) does the same for SIGTERM."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = int(signum)


def interruption(e: BaseException) -> tuple[str, str, int]:
    """(signal name, words for messages, exit code) of a KeyboardInterrupt: an Interrupted names
    its signal; a plain one (Python's own Ctrl-C handler) is SIGINT."""
    import signal

    signum = e.signum if isinstance(e, Interrupted) else int(signal.SIGINT)
    name = signal.Signals(signum).name
    return name, _SIGNAL_WORDS.get(name, name), 128 + signum


class StopSignals:
    """Within the block, each stop signal raises Interrupted(signum) in the main thread (where
    Python runs signal handlers). A signal whose handler is not the default is left alone: a
    program started with it ignored (`nohup`, `cmd &` in a script ignores SIGINT) keeps ignoring
    it, and a host program's own handler stays. Handlers are put back when the block ends.

    hold(): from then on a signal is only recorded, and raised when the block ends (for a pair of
    renames that must both happen). Elsewhere than in the main thread this does nothing.

    received: the first stop signal that arrived (None if none). The Interrupted a signal raises
    can come out as another error: raised inside an extension module's import (pybind11 turns
    it into an ImportError, e.g. onnxruntime's, which a runner reports as "needs ONNX
    Runtime"), so main() asks this, not the error, whether the run was interrupted."""

    def __enter__(self):
        import signal
        import threading

        self.received: int | None = None
        self.pending: int | None = None
        self.holding = False
        self.saved: dict = {}
        if threading.current_thread() is not threading.main_thread():
            return self
        _ACTIVE.append(self)
        for name in STOP_SIGNALS:
            s = getattr(signal, name)
            current = signal.getsignal(s)
            if current in (signal.SIG_DFL, signal.default_int_handler) or isinstance(current, _Handler):
                self.saved[s] = signal.signal(s, _Handler(self))
        return self

    def hold(self) -> None:
        self.holding = True

    def __exit__(self, kind, value, tb):
        import signal

        for s, h in self.saved.items():
            signal.signal(s, h)
        if _ACTIVE and _ACTIVE[-1] is self:
            _ACTIVE.pop()
        if self.pending is not None and kind is None:
            raise Interrupted(self.pending)
        return False


_ACTIVE: list[StopSignals] = []  # the main thread's StopSignals blocks, innermost last


def stop_received() -> int | None:
    """The stop signal the innermost active StopSignals block received, or None: what an error
    seen while it is active may really be (see StopSignals.received)."""
    return next((b.received for b in reversed(_ACTIVE) if b.received is not None), None)


def as_interruption(e: BaseException) -> BaseException:
    """`e`, or the Interrupted it stands for when a stop signal arrived during the run."""
    sig = stop_received()
    return Interrupted(sig) if sig is not None and not isinstance(e, KeyboardInterrupt) else e


class _Handler:
    """StopSignals' handler (a class, so that a nested StopSignals knows it for ours)."""

    def __init__(self, owner: StopSignals):
        self.owner = owner

    def __call__(self, signum, frame):
        if self.owner.received is None:
            self.owner.received = int(signum)
        if self.owner.holding:
            self.owner.pending = signum
            return
        raise Interrupted(signum)


class Report:
    """Per-input failures: printed as they happen (which input, why) and kept for the
    JSON summary and the exit code. A failure never stops the run.

    A video's frames are one input: the failures of its frames are kept one by one (the summary
    lists each frame), but the terminal says each distinct message once per input, with how many
    frames had it, when the input's failures end (the next input's failure, or `flush()`, which
    the commands call when an input ends and when the run ends)."""

    def __init__(self, prog: str = "engine3dmm"):
        self.prog = prog
        self.failures: list[dict] = []
        self._source: str | None = None  # the input whose frame failures are held
        self._frames: dict[str, list] = {}  # its messages -> the frames that had each, in order

    def fail(self, source, message: str, **extra) -> None:
        source = str(source)
        self.failures.append({"source": source, "error": message, **extra})
        if source != self._source:
            self.flush()
        if extra.get("frame") is None:
            self._say(source, message, "")
            return
        self._source = source
        self._frames.setdefault(message, []).append(extra["frame"])

    def flush(self) -> None:
        """Say the held frame failures of the last input (once per message, with its frames)."""
        for message, frames in self._frames.items():
            shown = ", ".join(map(str, frames[:5])) + (", ..." if len(frames) > 5 else "")
            self._say(self._source, message, f" (frame {shown})" if len(frames) == 1
                      else f" ({len(frames)} frames: {shown})")
        self._source, self._frames = None, {}

    def _say(self, source: str, message: str, where: str) -> None:
        # Engine messages already start with the file name; do not repeat it.
        text = message if message.startswith(source) else f"{source}: {message}"
        say(f"{self.prog}: failed: {text}{where}")

    @property
    def exit_code(self) -> int:
        return 1 if self.failures else 0


def progress(total: int | None, unit: str, desc: str, quiet: bool):
    """A tqdm bar on stderr that appears only after a second (short runs stay clean)
    and never when stderr is not a terminal (logs, pipes, tests)."""
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, desc=desc, file=sys.stderr, delay=1.0, leave=False,
                disable=quiet or not sys.stderr.isatty(), dynamic_ncols=True)


def apply_max_pixels(value: int | None) -> None:
    """Decompression-bomb limit for this process: --max-pixels, else $ENGINE3DMM_MAX_PIXELS,
    else Pillow's default. engine.images reads Pillow's limit at load time."""
    if value is None:
        env = os.environ.get(ENV_MAX_PIXELS)
        if not env:
            return
        try:
            value = int(env)
        except ValueError:
            raise InputError(f"${ENV_MAX_PIXELS}: expected a positive integer, found {env!r}") from None
        if value < 1:
            raise InputError(f"${ENV_MAX_PIXELS}: expected a positive integer, found {env!r}")
    from PIL import Image

    _SAVED_MAX_PIXELS.append(Image.MAX_IMAGE_PIXELS)
    Image.MAX_IMAGE_PIXELS = value


_SAVED_MAX_PIXELS: list = []


def restore_max_pixels() -> None:
    """Undo apply_max_pixels (main() runs inside test sessions and host programs too)."""
    if _SAVED_MAX_PIXELS:
        from PIL import Image

        Image.MAX_IMAGE_PIXELS = _SAVED_MAX_PIXELS[0]
        _SAVED_MAX_PIXELS.clear()


def prepare_output_dir(path: str | os.PathLike) -> Path:
    """Create the output folder and prove it is writable now, before any model loads:
    a run that cannot write anything should fail in a second, not after the first batch.
    The folders it creates are remembered: a run that stops with an error before writing
    anything leaves none of them behind (`remove_unused_output_dirs`, called by main)."""
    p = Path(path)
    missing = []  # the folders this call creates, outermost first
    q = p
    while not q.exists() and q != q.parent:
        missing.insert(0, q)
        q = q.parent
    try:
        p.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise InputError(f"{p}: output path exists and is not a folder") from None
    except OSError as e:
        raise InputError(f"{p}: cannot create the output folder: {e.strerror or e}") from None
    _CREATED_DIRS.extend(m for m in missing if m.is_dir())
    try:
        fd, probe = tempfile.mkstemp(prefix=".engine3dmm-probe.", dir=p)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise InputError(f"{p}: output folder is not writable: {e.strerror or e}") from None
    return p


_CREATED_DIRS: list[Path] = []


def remove_unused_output_dirs() -> None:
    """Remove the folders prepare_output_dir created in this process that are still empty
    (innermost first): a run stopped by an error before its first file leaves no trace."""
    for d in reversed(_CREATED_DIRS):
        try:
            d.rmdir()  # only ever removes an empty folder
        except OSError:
            pass
    _CREATED_DIRS.clear()


def forget_output_dirs() -> None:
    """The run is over: its folders stay, whatever they hold."""
    _CREATED_DIRS.clear()


def expand_each(inputs: Iterable[str], report: Report, *, recursive: bool,
                roots: dict | None = None) -> list[Path]:
    """Files from every input argument: images and videos (engine.images.expand_input). A
    missing file or an empty folder is reported as that input's failure, and so is each entry of
    a folder that could not be searched (a dangling link, an unreadable sub-folder); the others
    still run. Sub-folders left out (without --recursive) are counted in one warning. `roots`, when
    given, receives {str(file): the folder argument it was found in (or None)}, for --boxes."""
    import logging

    from engine.images import expand_input, unsearched_warning

    out: list[Path] = []
    seen: set[str] = set()
    expansions = []
    for item in inputs:
        try:
            found = expand_input(item, recursive=recursive)
        except InputError as e:
            report.fail(item, str(e))
            continue
        expansions.append(found)
        for q, why in found.skipped:  # a dangling link, an unreadable sub-folder: a failure of its own
            report.fail(q, why)
        for q in found.files:
            key = os.path.normpath(os.path.abspath(q))
            if key not in seen:
                seen.add(key)
                out.append(q)
                if roots is not None:
                    roots[str(q)] = None if found.root is None else str(found.root)
    warning = unsearched_warning(expansions)
    if warning:
        logging.getLogger("engine.cli").warning(warning)
    return out


def source_key(source) -> str:
    """How a result's `source` is matched to an input path (absolute, normalised)."""
    return os.path.normpath(os.path.abspath(os.fspath(source)))


_STREAMED = "\x00streamed:{}\x00"


def write_json(path: Path, data: dict) -> None:
    """`data` as indented JSON (compact lists), atomically. A top-level value that is an
    iterable other than a list, tuple, dict or string (e.g. reconstruct's FaceList) is written
    as a list item by item, one item per line, never held whole in memory. NaN and infinity
    are not JSON: one in `data` raises ValueError (a bug where it was made), never an invalid file."""
    from engine.fileio import atomic_write

    streamed = {k: v for k, v in data.items()
                if hasattr(v, "__iter__") and not isinstance(v, (list, tuple, dict, str, bytes))}
    plain = {k: (_STREAMED.format(k) if k in streamed else v) for k, v in data.items()}
    text = compact_json(json.dumps(plain, indent=1, default=json_default, allow_nan=False))
    with atomic_write(path, "w") as f:
        for key, items in streamed.items():
            before, text = text.split(json.dumps(_STREAMED.format(key)), 1)
            f.write(before + "[")
            for i, item in enumerate(items):
                f.write(("," if i else "") + "\n  " + json.dumps(item, default=json_default, allow_nan=False))
            f.write("\n ]")
        f.write(text + "\n")


# A JSON string (skipped, never rewritten) or a list holding no string, list or object.
_JSON_STRING_OR_FLAT_LIST = re.compile(r'"(?:[^"\\]|\\.)*"|\[[^\[\]{}"]*\]')


def compact_json(text: str) -> str:
    """Indented JSON with every list of plain values (boxes, 198 coefficients) on one line:
    readable and short. Strings are matched as whole tokens first, so text inside them (a path
    like "Photos [ 2019 ]/a.jpg") is never touched."""
    def one(m: re.Match) -> str:
        t = m.group(0)
        return t if t.startswith('"') else "[" + " ".join(t[1:-1].split()) + "]"

    return _JSON_STRING_OR_FLAT_LIST.sub(one, text)


def json_default(o):
    import numpy as np

    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer, np.bool_)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    return str(o)


def save_npy(path: Path, array) -> None:
    import numpy as np

    from engine.fileio import atomic_write

    with atomic_write(path) as f:
        np.save(f, array, allow_pickle=False)


def detector_mode(args) -> str | None:
    """What the pipeline uses to find faces: None when the caller's boxes or crops decide."""
    if getattr(args, "cropped", False) or getattr(args, "boxes", None):
        return None
    return args.detector


def load_boxes_arg(args, inputs=None):
    """--boxes read and matched to the run's inputs (engine.box_match: the one rule), or None.

    inputs: the run's files, each a path or a (path, folder argument) pair; when None they
    are listed again from the command's arguments (INPUT..., or verify's A and B) without a
    word, and where there are none to list (evaluate) the pipeline matches the boxes to the
    files it is given. Messages use the CLI's words (--boxes, --cropped). A sidecar that
    cannot be read is an InputError: call this before creating anything."""
    if not getattr(args, "boxes", None):
        return None
    from engine.box_match import match_boxes
    from engine.detect import load_boxes

    if inputs is None and getattr(args, "_matched_boxes", None) is not None:
        return args._matched_boxes  # read once per run: its warnings are said once
    sidecar = load_boxes(args.boxes)
    if inputs is not None:
        return match_boxes(sidecar, inputs, option="--boxes")
    args._matched_boxes = match_boxes(sidecar, _listed_again(args), option="--boxes")
    return args._matched_boxes


def _listed_again(args):
    """(file, folder argument) of every input the command's arguments name, quietly (the
    failures and warnings were said when the run expanded them), or None when the command
    has no such arguments."""
    from engine.images import expand_input

    given = getattr(args, "inputs", None)
    if given is None and getattr(args, "first", None) is not None:
        given = [args.first, args.second]
    if given is None:
        return None
    out = []
    for item in given:
        try:
            found = expand_input(item, recursive=bool(getattr(args, "recursive", False)))
        except InputError:
            continue
        out.extend((str(f), None if found.root is None else str(found.root)) for f in found.files)
    return out


def check_model_arg(args, *, decode: bool) -> None:
    """--model checked before anything is created: it must be a model file by its content
    (engine.morphable.loading.model_file_kind: .e3dmm, MATLAB .mat or HDF5 .h5), also where it
    is not used; without meshes (--no-mesh) it is not used, and a warning says so."""
    model = getattr(args, "model", None)
    if not model:
        return
    from engine.morphable.loading import model_file_kind

    model_file_kind(model)  # ModelFileError: missing, a folder, text, an image...
    if not decode:
        import logging

        logging.getLogger("engine.cli").warning(
            f"--model {model} is not used: --no-mesh writes coefficients only, and no mesh is decoded")


def batch_size(args) -> int:
    """--batch-size, else 1 for a live camera (a frame must not wait for others to fill a
    batch), else the default."""
    from engine.cli.parser import DEFAULT_BATCH

    if args.batch_size:
        return args.batch_size
    return 1 if getattr(args, "camera", None) is not None else DEFAULT_BATCH


def device_input_choice(args):
    """--device-input auto|on|off as Reconstructor(device_input=) takes it."""
    from engine.pipeline.device_input import from_words

    return from_words(getattr(args, "device_input", "auto"))


def make_reconstructor(args, *, decode: bool):
    """The pipeline object configured from the shared options (--det-max-side 0: full resolution)."""
    from engine.detect import DEFAULT_MAX_SIDE, DEFAULT_UPSAMPLE
    from engine.pipeline import Reconstructor

    check_network_dir(args)
    side = getattr(args, "det_max_side", DEFAULT_MAX_SIDE)
    kwargs = dict(runner=network_runner(args), network_dir=args.network_dir, batch_size=batch_size(args),
                  detector=detector_mode(args), workers=args.workers, threads=args.threads,
                  det_threshold=getattr(args, "det_threshold", None),
                  det_upsample=getattr(args, "det_upsample", DEFAULT_UPSAMPLE),
                  det_max_side=None if side == 0 else side,
                  device_input=device_input_choice(args))
    if decode:
        kwargs["model"] = default_morphable(args)
    try:
        rec = Reconstructor(**kwargs)
    except BaseException as e:
        if not isinstance(kwargs["runner"], str):
            kwargs["runner"].close()
        from engine.pipeline.device_input import DeviceInputUnavailable

        if isinstance(e, DeviceInputUnavailable):  # in the command line's words
            raise UnavailableError(f"--device-input on: {e.reason} (--device-input auto uses it where it can run, "
                                   f"off never)") from None
        raise
    if isinstance(kwargs["runner"], str) and rec.runner.precision in ("int8", "bf16"):
        _say_variant(args, rec.runner)  # auto chose a lower precision: say which, and its validated error
    return rec


def _say_variant(args, runner) -> None:
    if getattr(runner, "variant_note", None) and not getattr(args, "quiet", False):
        say(f"network: {runner.variant_note}")


def network_runner(args):
    """--runner as the Reconstructor takes it: the name, or, with --precision, --max-error or
    --compile, the runner made here (engine.runners.create_runner chooses the variant) after
    printing what runs and its validated error. An automatic choice of a lower-precision variant
    is printed too."""
    from engine.runners import runner_or_name

    runner = runner_or_name(args.runner, args.network_dir, threads=args.threads,
                            precision=getattr(args, "precision", None), max_error=getattr(args, "max_error", None),
                            compile=bool(getattr(args, "compile", False)),
                            compile_mode=getattr(args, "compile_mode", None))
    if isinstance(runner, str):
        return runner
    _say_variant(args, runner)
    if runner.compiled and not getattr(args, "quiet", False):  # else a silent pause of seconds to minutes
        say(f"network: {runner.name} {runner.precision} compiled with torch.compile (Inductor, mode "
            f"{runner.compile_mode}): the first batch of each size compiles once, 10-30 s on a CPU, minutes on a "
            f"GPU under max-autotune (less from the cache in {runner.compile_cache})")
    return runner


def check_network_dir(args) -> None:
    """The model card a command that reads one uses, checked before anything is created:
    engine.network.resolve.check_model_card, one rule for --network-dir and for
    $ENGINE3DMM_MODEL_DIR (its default): a folder the user named must be a model card, since
    silently falling back to the synthetic set would hide a typo. A card with the morphable
    model only runs the built-in SYNTHETIC network, and the run says so.
    Errors: ModelFileError naming the option or variable, the folder and what it lacks."""
    from engine.network.resolve import check_model_card

    check_model_card(getattr(args, "network_dir", None))


def default_morphable(args) -> str | None:
    """--model, else the Basel Face Model that `convert --bfm` wrote into the model card
    (--network-dir, else the default card: engine.network.resolve.default_model_dir), else
    None (the pipeline's built-in synthetic model)."""
    if getattr(args, "model", None):
        return args.model
    from engine.network.resolve import MORPHABLE_CACHE_FILE, default_model_dir

    folder = Path(args.network_dir) if getattr(args, "network_dir", None) else default_model_dir()
    cache = folder / MORPHABLE_CACHE_FILE
    return str(cache) if cache.is_file() else None


def box_list(box):
    """A result's face box as [x0, y0, x1, y1] (or None) for JSON/CSV."""
    if box is None:
        return None
    if hasattr(box, "as_tuple"):
        return [float(v) for v in box.as_tuple()]
    return [float(v) for v in list(box)[:4]]


def box_score(box):
    return float(box.score) if hasattr(box, "score") else None
