"""CPU variants of the network and the model card that validates them; which one a run uses.

A variant is a (runner, precision) pair: `onnxruntime fp32` (the float32 graph), `onnxruntime
int8` (engine.network.quantize), `torch-cpu fp32` and `torch-cpu bf16` (PyTorch's bfloat16
trunk; ONNX Runtime's x86 CPU provider has no bfloat16 kernels: Conv and MatMul in bfloat16
fail to load, NOT_IMPLEMENTED, checked with ONNX Runtime 1.32 and onnxruntime#28768).
`engine.validate` measures each against float32 on held-out real faces, and times it
on this machine; the results go into the model card `<tag>.variants.json` next to the ONNX
graphs (`cnn3dmm.variants.json`, or `cnn3dmm.synthetic-seed0.variants.json` for the
synthetic weights), with the weights' sha256 and each variant file's sha256.

Choice (`choose`): without an explicit precision, the fastest variant whose validated max
coefficient error is within the budget (DEFAULT_MAX_ERROR sd, or `max_error`) among the
runners allowed; an explicit precision always wins (its validated error is reported). A
requested variant that cannot be used gives a warning saying why and float32 instead, never an
error: no PyTorch (bf16), a CPU without the instructions it needs (engine.network.cpu_features),
and for int8, whose file is the variant, no fresh card or a file missing, changed or unreadable.
bf16 is built from the weights when loaded, so without a card it still runs, with a warning
that its error on these weights is unknown. `unusable_reason` is the one check of whether a
card's variant can run here: `choose` falls back by it, `info` and `validate` show it.

fp16 is no CPU precision: the CPU runners refuse it (InputError naming int8 and bf16, the
validated CPU variants). ONNX Runtime's x86 provider computes a float16 graph in float32 (no
faster), no card validates it, and running it would write the 87 MB float16 graph.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import NO_SUCH_PATH, EngineError, InputError, describe_path, said_once

log = logging.getLogger("engine.network")

CARD_FORMAT = "engine3dmm-network-variants"
CARD_VERSION = 1
CARD_MAX_BYTES = 1 << 20
DEFAULT_MAX_ERROR = 0.05  # sd: the largest coefficient error `auto` accepts by default
VARIANT_PRECISIONS = ("int8", "bf16")  # what `validate` builds beside float32
RUNNER_OF = {"int8": "onnxruntime", "bf16": "torch-cpu"}
CPU_RUNNERS = ("onnxruntime", "torch-cpu")
PRECISIONS_OF = {"onnxruntime": ("fp32", "int8"), "torch-cpu": ("fp32", "bf16"),
                 "torch-cuda": ("fp16", "bf16", "fp32"), "tensorrt": ("fp16", "fp32")}
HASH_DIGITS = 12  # a sha256 quoted in a message: enough to tell two apart at a glance
ERROR_KEYS = ("coeff_max_sd", "coeff_p99_sd", "vertex_max_mm", "vertex_mean_mm", "color_max_levels",
              "color_mean_levels", "cosine_max", "cosine_mean")
_warned: set[str] = set()


def short_hash(value) -> str:
    """A sha256 as messages quote it: its first HASH_DIGITS hex digits and '...' ('none' when
    absent, the text itself, shortened, when it is no hash)."""
    if value is None:
        return "none"
    text = str(value)
    return text[:HASH_DIGITS] + "..." if len(text) > HASH_DIGITS else repr(text)


def card_path(model) -> Path:
    """The model card of `model`'s variants (a ResolvedModel)."""
    return Path(model.model_dir) / f"{model.tag}.variants.json"


def variant_file(model, precision: str) -> Path:
    """Where the ONNX file of an ONNX Runtime variant lives (`<tag>.<precision>.onnx`)."""
    return Path(model.model_dir) / f"{model.tag}.{precision}.onnx"


def check_max_error(max_error) -> float:
    """The budget in sd: DEFAULT_MAX_ERROR for None, else a finite number > 0 (InputError)."""
    if max_error is None:
        return DEFAULT_MAX_ERROR
    try:
        v = float(max_error)
    except (TypeError, ValueError):
        v = float("nan")
    if not (math.isfinite(v) and v > 0) or isinstance(max_error, bool):
        raise InputError(f"max_error: expected a number of coefficient sd > 0, found {max_error!r}")
    return v


@dataclass
class Card:
    """A read, fresh model card: its path and its JSON content."""

    path: Path
    data: dict

    def entries(self) -> list[dict]:
        return [e for e in self.data.get("variants", []) if isinstance(e, dict)]

    def entry(self, runner: str, precision: str) -> dict | None:
        return next((e for e in self.entries() if e.get("runner") == runner and e.get("precision") == precision),
                    None)

    @property
    def synthetic(self) -> bool:
        return bool(self.data.get("synthetic"))


def load_card(model) -> tuple[Card | None, str | None]:
    """(card, None) when `model`'s card exists and was built from these weights by this
    version; (None, None) when there is none; (None, why) when it is no file (a folder...),
    unreadable, of another version or stale (other weights)."""
    from engine.fileio import read_json

    path = card_path(model)
    kind = describe_path(path)
    if kind == NO_SUCH_PATH:
        return None, None
    if kind != "a file":
        return None, (f"{path} is {kind}, not a variant card file (move it away: `engine3dmm validate` "
                      "writes the card there)")
    try:
        data = read_json(path, max_bytes=CARD_MAX_BYTES)
    except EngineError as e:
        return None, f"the variant card is unreadable: {e}"
    if not isinstance(data, dict) or data.get("format") != CARD_FORMAT:
        found = (f"format {str(data.get('format'))[:40]!r}" if isinstance(data, dict)
                 else f"a JSON {type(data).__name__}")
        return None, f"{path}: not a variant card of this engine (expected format {CARD_FORMAT!r}, found {found})"
    if data.get("version") != CARD_VERSION:
        return None, (f"{path}: made by another version of the engine (card version {str(data.get('version'))[:20]}, "
                      f"this one reads {CARD_VERSION})")
    if data.get("weights_sha256") != model.fingerprint:
        return None, (f"{path} is stale: its variants were built from other weights (the card's sha256 "
                      f"{short_hash(data.get('weights_sha256'))}, these weights' {short_hash(model.fingerprint)})")
    bad = schema_problem(data)
    if bad:
        return None, f"{path}: {bad}; not as `engine3dmm validate` writes it (run it again)"
    return Card(path, data), None


def _number(v, positive: bool = False) -> bool:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
    return ok and (v > 0 or not positive)


def _text(v) -> bool:
    return isinstance(v, str) and len(v) < 4096


def schema_problem(data: dict) -> str | None:
    """What in a card's content is not what validate writes (field, expected, found), or None.
    Every field `choose`, `info` and the benchmark read is checked, so a damaged or hand-edited
    card is refused whole (and float32 runs) rather than half-used."""
    for key in ("weights", "built"):
        if key in data and not _text(data[key]):
            return f"field {key!r}: expected text"
    if "build_seconds" in data and not _number(data["build_seconds"]):
        return "field 'build_seconds': expected a number >= 0"
    for key in ("calibration", "validation"):
        part = data.get(key)
        if part is not None and not (isinstance(part, dict) and _text(part.get("what", ""))
                                     and isinstance(part.get("faces", 0), int) and not isinstance(part.get("faces", 0), bool)):
            return f"field {key!r}: expected {{'faces': int, 'what': text}}"
    machine = data.get("machine")
    if machine is not None and not (isinstance(machine, dict) and _text(machine.get("cpu", ""))
                                    and isinstance(machine.get("flags", []), list)
                                    and all(_text(f) for f in machine.get("flags", []))):
        return "field 'machine': expected {'cpu': text, 'flags': [text], ...}"
    entries = data.get("variants")
    if not isinstance(entries, list) or len(entries) > 16:
        return f"field 'variants': expected a list of at most 16 entries, found {type(entries).__name__}"
    for i, e in enumerate(entries):
        where = f"variants[{i}]"
        if not isinstance(e, dict):
            return f"{where}: expected an object, found {type(e).__name__}"
        if e.get("runner") not in CPU_RUNNERS or e.get("precision") not in ("fp32",) + VARIANT_PRECISIONS:
            return f"{where}: expected a CPU runner and precision, found {str(e.get('runner'))[:40]!r} {str(e.get('precision'))[:40]!r}"
        if not _text(e.get("status")) or not _text(e.get("why", "")):
            return f"{where}: 'status' and 'why' must be text"
        for key in ("file", "sha256"):
            if key in e and not _text(e[key]):
                return f"{where}.{key}: expected text"
        if "validation_faces" in e and not (isinstance(e["validation_faces"], int) and e["validation_faces"] > 0):
            return f"{where}.validation_faces: expected a positive integer"
        errors = e.get("errors")
        if e["status"] == "ok" and not (isinstance(errors, dict) and all(_number(errors.get(k)) for k in ERROR_KEYS)):
            return f"{where}.errors: expected a number >= 0 for each of {', '.join(ERROR_KEYS)}"
        speed = e.get("speed")
        if speed is not None and not (isinstance(speed, dict) and all(_number(v, True) for v in speed.values())):
            return f"{where}.speed: expected numbers > 0"
    return None


def file_problem(card: Card, entry: dict) -> str | None:
    """Why the variant file of `entry` cannot be used (missing, not a file, changed since
    validation, another weights' file), each saying what was expected and what was found; or
    None (also when the variant has no file)."""
    from engine.network.convert import file_sha256
    from engine.network.onnx_export import read_metadata

    name = entry.get("file")
    if entry.get("precision") == "int8":  # the runner loads the card's own tag's file (variant_file)
        tag = card.path.name[:-len(".variants.json")]
        if name != f"{tag}.int8.onnx":
            return f"{card.path}: the int8 variant's file should be {tag}.int8.onnx, the card names {str(name)[:80]!r}"
    if not name:
        return None
    name = str(name)
    if Path(name).name != name or name in (".", "..") or "\0" in name:
        return f"{card.path}: variant file {name[:80]!r} is not a file name in the card's folder"
    path = card.path.parent / name
    kind = describe_path(path)
    if kind == NO_SUCH_PATH:
        return f"{path} is missing (run `engine3dmm validate` to build it again)"
    if kind != "a file":
        return f"{path} is {kind}, not the variant's ONNX file (run `engine3dmm validate` to build it again)"
    try:
        found = file_sha256(path)
        if found != entry.get("sha256"):
            return (f"{path} changed since it was validated (sha256 {short_hash(found)} differs from the card's "
                    f"{short_hash(entry.get('sha256'))}); run `engine3dmm validate`")
        meta = read_metadata(path)
    except Exception as e:  # unreadable or not ONNX: the same answer, never a crash
        return f"{path} is unreadable ({type(e).__name__}: {said_once(path, e)})"
    if meta.get("weights_sha256") != card.data.get("weights_sha256"):
        return (f"{path} was built from other weights (its weights_sha256 {short_hash(meta.get('weights_sha256'))}, "
                f"the card's {short_hash(card.data.get('weights_sha256'))}); run `engine3dmm validate`")
    return None


def errors_text(entry: dict) -> str:
    """'max 0.031 sd (p99 0.012), vertices max 0.41 mm (mean 0.05), colour max 2 levels,
    cosine error max 3.1e-05 on 34 faces' from a card entry."""
    e = entry.get("errors") or {}
    if not e:
        return "not validated"
    return (f"max {e['coeff_max_sd']:.3g} sd (p99 {e['coeff_p99_sd']:.3g}), vertices max {e['vertex_max_mm']:.3g} mm "
            f"(mean {e['vertex_mean_mm']:.2g}), colour max {e['color_max_levels']:.0f} levels (mean "
            f"{e['color_mean_levels']:.2g}), descriptor cosine error max {e['cosine_max']:.2g} on "
            f"{entry.get('validation_faces', '?')} held-out faces")


def speed_text(entry: dict) -> str:
    s = entry.get("speed") or {}
    if "batch1_ms" not in s:
        return "speed not measured"
    return f"{s['batch1_ms']:.1f} ms per face at batch 1, {s.get('batch8_ms_per_face', float('nan')):.1f} at batch 8"


def label(entry: dict) -> str:
    return f"{entry.get('runner')} {entry.get('precision')}"


@dataclass
class Choice:
    """What a run uses: a runner and a precision (None: the runner's default), the card entry
    that validated it, one line for the user (`note`) and a warning when a requested variant
    could not be used (and float32 runs instead) or runs unvalidated (`warning`)."""

    runner: str
    precision: str | None
    entry: dict | None = None
    note: str | None = None
    warning: str | None = None
    card: Card | None = field(default=None, repr=False)

    @property
    def variant(self) -> dict | None:
        """What provenance records: the variant and its validated errors (None without a card)."""
        if self.entry is None:
            return None
        return {"runner": self.runner, "precision": self.precision, "errors": dict(self.entry.get("errors") or {}),
                "validation_faces": self.entry.get("validation_faces"), "card": str(self.card.path) if self.card else None,
                "synthetic_weights": bool(self.card.synthetic) if self.card else None}


def machine_problem(runner: str, precision: str, available: list[str]) -> str | None:
    """Why this machine cannot run `runner` `precision` (the runner missing, the CPU lacking
    the instructions the precision needs), or None. Part of unusable_reason; `choose` asks it
    alone for a variant without a card entry."""
    from engine.network.cpu_features import missing

    if runner not in available:
        hint = " (PyTorch is not installed)" if runner == "torch-cpu" else ""
        return f"{runner} {precision} needs the {runner} runner, not available here{hint}"
    lacks = missing(str(precision))
    if lacks:
        return f"this CPU cannot run {runner} {precision} as validated: {lacks}"
    return None


def unusable_reason(card: Card, entry: dict, available: list[str]) -> str | None:
    """Why a card entry cannot run here (not built, its runner missing, the CPU lacking its
    instructions, its file missing or changed), or None: the one check that `choose` falls back
    by and `info` and `validate` show (summary_lines)."""
    if entry.get("status") != "ok":
        return f"{label(entry)} was not built: {entry.get('why', 'unknown reason')}"
    return (machine_problem(str(entry.get("runner")), str(entry.get("precision")), available)
            or file_problem(card, entry))


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        log.warning("%s", message)


def _fp32_runner(runner: str, explicit_runner: bool, available: list[str]) -> str:
    if explicit_runner and "fp32" in PRECISIONS_OF.get(runner, ()):
        return runner
    return next((r for r in CPU_RUNNERS if r in available), runner)


def choose(model, runner: str, *, explicit_runner: bool, precision: str | None, max_error=None,
           available: list[str], compile: bool = False) -> Choice:
    """The (runner, precision) a run uses: see the module docstring. `runner` is the name
    already resolved from "auto" (`explicit_runner` says whether the user named it);
    `available`: engine.runners.available_runners(). InputError for a precision the named
    runner cannot run."""
    budget = check_max_error(max_error)
    check_precision(runner, explicit_runner, precision, available, compile=compile)
    if precision in (None, "auto"):
        if runner not in CPU_RUNNERS:
            return Choice(runner, None)  # GPU runners: their own default (fp16)
        return _auto(model, runner, explicit_runner, budget, available)
    if precision not in VARIANT_PRECISIONS:  # fp32 anywhere, fp16 on a GPU runner
        return Choice(runner, precision)
    if not explicit_runner:
        gpu_bf16 = precision == "bf16" and runner == "torch-cuda"
        runner = runner if gpu_bf16 else RUNNER_OF[precision]
        if gpu_bf16:
            return Choice(runner, precision)
    return _explicit(model, runner, explicit_runner, precision, budget, available)


def check_precision(runner: str, explicit_runner: bool, precision: str | None, available: list[str], *,
                    compile: bool = False) -> None:
    """InputError for a precision the runner cannot run: fp16 on a CPU runner, or a precision the
    runner the user named does not support (before any model is loaded; `choose` checks it too).
    With `compile` (torch.compile) the advice names only what a PyTorch runner runs: int8 is an
    ONNX Runtime graph, which torch.compile cannot compile."""
    if precision == "fp16" and runner in CPU_RUNNERS:
        cpu = ("bf16 or fp32 (torch-cpu, compiled)" if compile else
               "int8 (onnxruntime) or bf16 (torch-cpu), the variants `engine3dmm validate` measures against "
               "float32 on these weights, or fp32")
        raise InputError(
            f"precision fp16: the CPU runners do not run float16 (the {runner} runner supports "
            f"{list(PRECISIONS_OF[runner])}): fp16 is the GPU runners' precision ("
            + ("torch-cuda" if compile else "tensorrt, torch-cuda")
            + ("" if any(r not in CPU_RUNNERS for r in available) else "; this machine has none")
            + f"). On the CPU use --precision {cpu}")
    if precision not in (None, "auto") and explicit_runner and precision not in PRECISIONS_OF.get(runner, ()):
        if compile and precision == "int8":
            advice = " (int8 is an ONNX Runtime graph, which torch.compile cannot compile: use --precision fp32 " \
                     "or bf16 (torch-cpu) or drop --compile)"
        elif precision in RUNNER_OF:
            advice = f" (use --runner {RUNNER_OF[precision]} or auto)"
        else:
            advice = ""
        raise InputError(f"precision: the {runner} runner supports {list(PRECISIONS_OF.get(runner, ()))}, "
                         f"found {precision!r}{advice}")


def _explicit(model, runner, explicit_runner, precision, budget, available) -> Choice:
    """An explicit int8 or bf16. int8 is a file: it runs only as validated (a fresh card, its
    file unchanged). bf16 is built from the weights at load: it runs whenever this machine can,
    and says when no card has validated it."""
    fp32 = _fp32_runner(runner, explicit_runner, available)

    def fallback(why: str) -> Choice:
        return Choice(fp32, "fp32", card=card, warning=f"--precision {precision}: {why}; running float32 ({fp32})")

    card, problem = load_card(model)
    entry = card.entry(runner, precision) if card is not None else None
    if entry is None or entry.get("status") != "ok":
        why = machine_problem(runner, precision, available)
        if why:
            return fallback(why)
        if card is None:
            why = problem or (f"no validated variants for these weights in {card_path(model).parent} (no "
                              f"{card_path(model).name}; `engine3dmm validate` builds them)")
        elif entry is None:
            has = ", ".join(label(e) for e in card.entries()) or "no variant"
            why = (f"the card {card.path} has no {runner} {precision} entry (it has {has}; `engine3dmm validate "
                   f"--variants {precision}` measures it)")
        else:
            why = f"{label(entry)} was not built: {entry.get('why', 'unknown reason')}"
        if precision == "int8":
            return fallback(why)
        return Choice(runner, precision, card=card, warning=(
            f"--precision {precision}: running {runner} {precision} unvalidated: {why}; its error against float32 "
            "on these weights is unknown"))
    why = unusable_reason(card, entry, available)
    if why:
        return fallback(why)
    err = float(entry["errors"]["coeff_max_sd"])
    within = "within" if err <= budget else "OVER"
    note = (f"{label(entry)} (asked for): validated {errors_text(entry)}; {within} the {budget:g} sd budget"
            + ("; SYNTHETIC weights" if card.synthetic else ""))
    return Choice(runner, precision, entry, note, card=card)


def _auto(model, runner, explicit_runner, budget, available) -> Choice:
    from engine.network.cpu_features import cpu_name

    card, problem = load_card(model)
    if card is None:
        if problem:
            _warn_once(f"{problem}; running float32")
        return Choice(runner, "fp32")
    allowed = [runner] if explicit_runner else [r for r in CPU_RUNNERS if r in available]
    timed = [e for e in card.entries() if e.get("runner") in allowed and (e.get("speed") or {}).get("batch1_ms")]
    timed.sort(key=lambda e: float(e["speed"]["batch1_ms"]))
    over, unusable = [], []
    for e in timed:
        err = (e.get("errors") or {}).get("coeff_max_sd")
        if e.get("status") == "ok" and (err is None or float(err) > budget):
            over.append(f"{label(e)} max {float(err):.3g} sd" if err is not None else f"{label(e)} not validated")
            continue
        why = unusable_reason(card, e, available)
        if why:
            unusable.append(why)
            continue
        note = (f"auto: {label(e)}, the fastest variant within the {budget:g} sd budget ({speed_text(e)}; "
                f"validated max {float(err):.3g} sd)")
        if over:
            note += "; over the budget: " + ", ".join(over)
        if e.get("precision") != "fp32" and card.synthetic:
            note += "; SYNTHETIC weights"
        timed_on = (card.data.get("machine") or {}).get("cpu")
        if timed_on and timed_on != cpu_name():
            note += f"; speeds timed on {timed_on}, not this CPU (`engine3dmm validate` times them here)"
        for u in unusable:
            if "was not built" not in u and "not available here" not in u:
                _warn_once(f"{u}; using the next fastest variant")
        return Choice(e["runner"], e["precision"], e, note, card=card)
    return Choice(runner, "fp32", card=card, note="auto: float32 (the card times no variant of this runner)")


def write_card(model, data: dict) -> Path:
    """Write `data` as `model`'s card (atomic), with the format, version and weights' sha256."""
    from engine.fileio import atomic_write

    path = card_path(model)
    doc = {"format": CARD_FORMAT, "version": CARD_VERSION, "weights_sha256": model.fingerprint, **data}
    with atomic_write(path, "w") as f:
        json.dump(doc, f, indent=1, allow_nan=False)
        f.write("\n")
    _warned.clear()
    return path


def usability_text(card: Card, entry: dict, available: list[str]) -> str:
    """'usable' or 'not usable here: <why>' (unusable_reason: what a run would say)."""
    why = unusable_reason(card, entry, available)
    return "usable" if why is None else f"not usable here: {why}"


def summary_lines(card: Card, budget: float = DEFAULT_MAX_ERROR, available: list[str] | None = None) -> list[str]:
    """One line per variant of a card (for `info` and `validate`): its validated errors, speed,
    whether it is within `budget`, and, given the `available` runners, whether it can run here
    (usability_text)."""
    lines = []
    for e in card.entries():
        if e.get("status") != "ok":
            lines.append(f"{label(e)}: not built ({e.get('why')})")
            continue
        err = (e.get("errors") or {}).get("coeff_max_sd")
        mark = "" if err is None else (" [within budget]" if float(err) <= budget else " [over budget]")
        use = "" if available is None else f"; {usability_text(card, e, available)}"
        lines.append(f"{label(e)}: {errors_text(e)}; {speed_text(e)}{mark}{use}")
    return lines
