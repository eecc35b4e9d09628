"""`embed`: `Reconstructor.embed` as a Ray Data job, across the cores or GPUs of a Ray cluster.

The input files become a Ray Dataset (`ray.data.from_items`, one row per file); `map_batches`
runs them through a pool of actors (`_EmbedActor`), each holding one long-lived Reconstructor:
one actor per GPU (`num_gpus=1`) when the cluster has GPUs and the runner can use one (auto,
torch-cuda, tensorrt: engine.runners.can_use_gpu, the rule serve's replicas follow), else CPU actors with `threads`
network threads each (`num_cpus=threads`). Each batch of files comes back as one block of
rows: one per face (its coefficients, box and score) and one per failed input or frame (its
error), never dropped. The driver turns the rows back into `FaceResult`s, in input order, so
a caller consumes them exactly as it consumes `Reconstructor.embed`: `engine3dmm embed --ray`
writes them with the same chunks, progress record and merged files as the single-process
command (engine.cli.embed), so a rerun, with or without Ray, skips what is done.

Caller-given boxes (`boxes`, `embed --boxes`) are read and matched to the inputs once, on the
driver (engine.box_match's rule: a key's relative path means the caller's working directory or
the sidecar's folder, and some levels need every input's name, which no actor has). What the
match decided for an input (its boxes, or its error: an ambiguous key, a bad entry) travels in
that input's row; an actor's Reconstructor reads it back through `_ShippedBoxes`, so each face
is checked, cropped and fails as it would in one process, and no actor holds the whole sidecar.

Where files must be: every node reads the input files and the model card at the same paths as
the driver (a shared file system, or the same image on every node). The model card is
`network_dir` when given, else `$ENGINE3DMM_MODEL_DIR`, else the default folder
(engine.network.resolve.default_model_dir), resolved on each node: set the variable, or pass
`network_dir`, to a path that every node can read. A node without the card would run the
SYNTHETIC network; the driver refuses rows whose network differs from the first ones
(engine.cli.embed.Store.check_identity), so such a mix never lands in one table.

Ray is imported inside functions only: `import engine` stays light, and Ray is an optional
extra (`pip install -e ".[distributed]"`: Ray Data, with pandas and pyarrow).
"""
from __future__ import annotations

import json
import logging
import math
import os
import pickle
from collections.abc import Iterator

import numpy as np

from engine.box_match import MatchedBoxes
from engine.distributed.cluster import raise_actor_failure
from engine.errors import BackendError, InputError, UnavailableError

# The columns of a result row (the map_batches output); one row per face, failed input or frame.
ROW_COLUMNS = ("source", "face_index", "frame", "has_box", "x0", "y0", "x1", "y1", "score", "box_kind",
               "coeffs", "error", "provenance")
NO_FRAME = -1  # `frame` of a still image (Arrow columns have one type: None is kept as this)
COEFFS = 198


def require_ray():
    """The ray module, with Ray Data importable (it needs pandas and pyarrow too); else UnavailableError."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise UnavailableError("--ray needs Ray Data (ray with pandas and pyarrow): pip install 'ray[data]' (the 'distributed' extra)") from None
    return ray


class _ShippedBoxes(MatchedBoxes):
    """The driver's box match (engine.box_match), for the inputs of one actor batch: `decided`
    maps an input's absolute path to what `MatchedBoxes.for_input` gave on the driver, (key,
    boxes as the mapping holds them), or (_FAILED, message) where it raised (raised again here,
    when the pipeline asks after reading the image, as in one process); no entry: no boxes. `label`, `option` and `path` are the driver's, so every message reads alike."""

    def __init__(self, decided: dict, label: str, option: str | None, path: str | None):
        super().__init__({}, option=option)
        self.label, self.path, self._decided = label, path, decided

    @property
    def complete(self) -> bool:
        return True  # matched over every input of the run, on the driver

    def for_input(self, name, root=None):
        hit = self._decided.get(os.path.normpath(os.path.abspath(os.fspath(name))))
        if hit is not None and hit[0] is _FAILED:
            raise InputError(hit[1])
        return hit


_FAILED = None  # the key of a shipped decision that is an error (a real key is a string)


def _match_boxes(boxes, given: dict[str, str]) -> MatchedBoxes | None:
    """`boxes` (a sidecar path, a mapping, a MatchedBoxes) matched to the run's inputs as
    Reconstructor.embed matches them for a list of inputs (the one rule, on this process's
    working directory): a sidecar is read here, once; a complete MatchedBoxes (the CLI's) is
    taken as it is. InputError for a sidecar that cannot be read or a value that is no mapping."""
    if boxes is None:
        return None
    from engine.pipeline import Reconstructor
    from engine.pipeline.inputs import list_inputs

    names = list(given.values())
    return Reconstructor._match(boxes, names, list_inputs(names))[0]


def _shipped(matched: MatchedBoxes | None, given: dict[str, str]) -> dict[str, bytes] | None:
    """{absolute path: its match decision, pickled}, for the inputs that have one (None: no
    boxes). Each row carries only its own input's boxes."""
    if matched is None:
        return None
    out = {}
    for absolute, name in given.items():
        try:
            hit = matched.for_input(name)
        except InputError as e:  # an ambiguous key or a bad entry: that input's failure, on its actor
            hit = (_FAILED, str(e))
        if hit is None:
            continue
        try:
            out[absolute] = pickle.dumps(hit, protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, TypeError, AttributeError) as e:
            raise InputError(f"boxes[{hit[0]!r}]: cannot be sent to the Ray actors ({type(e).__name__}: {e}); "
                             "give FaceBoxes or (x0, y0, x1, y1) tuples") from None
    return out


class _EmbedActor:
    """One Reconstructor kept for the actor's life; called with batches of input paths (and,
    with boxes, each input's pickled match decision: column "boxes", b"" for none)."""

    def __init__(self, reconstructor: dict, precision=None, max_error=None, cropped=False,
                 frame_step=1, max_frames=None, boxes_label: tuple | None = None, compile=False,
                 compile_mode=None):
        from engine.pipeline import Reconstructor
        from engine.runners import runner_or_name

        kwargs = dict(reconstructor)
        # the variant is chosen, and the network compiled, where it runs: the actor's own runner
        kwargs["runner"] = runner_or_name(kwargs.get("runner", "auto"), kwargs.get("network_dir"),
                                          threads=kwargs.get("threads"), precision=precision, max_error=max_error,
                                          compile=compile, compile_mode=compile_mode)
        self.rec = Reconstructor(**kwargs)
        self.options = {"cropped": cropped, "frame_step": frame_step, "max_frames": max_frames}
        self.boxes_label = boxes_label  # (label, option, path) of the driver's boxes; None: no boxes

    def __call__(self, batch: dict) -> dict:
        paths = [str(p) for p in batch["path"]]
        options = dict(self.options)
        if self.boxes_label is not None:
            decided = {p: pickle.loads(bytes(b)) for p, b in zip(paths, batch["boxes"]) if len(b)}
            options["boxes"] = _ShippedBoxes(decided, *self.boxes_label)
        rows = []
        try:
            for r in self.rec.embed(paths, **options):
                rows.append(_row(r))
        except Exception as e:  # noqa: BLE001 - the whole batch failed: each input gets the error, none dropped
            done = {row["source"] for row in rows}
            rows += [_error_row(p, f"{type(e).__name__}: {e}", self.rec.provenance) for p in paths if p not in done]
        return _columns(rows)


def _row(r) -> dict:
    box = r.box
    return {"source": str(r.source), "face_index": int(r.face_index),
            "frame": NO_FRAME if r.frame is None else int(r.frame),
            "has_box": box is not None,
            **{k: float(getattr(box, k)) if box is not None else 0.0 for k in ("x0", "y0", "x1", "y1", "score")},
            "box_kind": box.kind if box is not None else "",
            "coeffs": (np.zeros(COEFFS, np.float32) if r.coeffs is None
                       else np.asarray(r.coeffs, np.float32).reshape(COEFFS)),
            "error": "" if r.error is None else str(r.error),
            "provenance": json.dumps(r.provenance or {}, default=str)}


def _error_row(source: str, error: str, provenance: dict) -> dict:
    return {"source": source, "face_index": -1, "frame": NO_FRAME, "has_box": False, "x0": 0.0, "y0": 0.0,
            "x1": 0.0, "y1": 0.0, "score": 0.0, "box_kind": "", "coeffs": np.zeros(COEFFS, np.float32),
            "error": error or "failed", "provenance": json.dumps(provenance or {}, default=str)}


def _columns(rows: list[dict]) -> dict:
    """Rows as the numpy columns of one output block (coeffs: float32 [n, 198])."""
    cols = {c: [r[c] for r in rows] for c in ROW_COLUMNS}
    out = {c: np.array(cols[c], dtype=object if c in ("source", "box_kind", "error", "provenance") else None)
           for c in ROW_COLUMNS if c != "coeffs"}
    out["face_index"] = out["face_index"].astype(np.int64).reshape(-1)
    out["frame"] = out["frame"].astype(np.int64).reshape(-1)
    out["has_box"] = out["has_box"].astype(bool).reshape(-1)
    for c in ("x0", "y0", "x1", "y1", "score"):
        out[c] = out[c].astype(np.float64).reshape(-1)
    for c in ("source", "box_kind", "error", "provenance"):
        out[c] = np.array([str(v) for v in cols[c]], dtype=str) if rows else np.zeros(0, dtype=str)
    out["coeffs"] = np.stack(cols["coeffs"]).astype(np.float32) if rows else np.zeros((0, COEFFS), np.float32)
    return out


def _results(block: dict, given: dict[str, str]) -> Iterator:
    """One output block back as FaceResults (the driver's side of _columns); `given` maps the
    absolute path an actor read back to the path as the caller gave it."""
    from engine.detect import FaceBox
    from engine.pipeline import FaceResult

    provenance_cache: dict[str, dict] = {}
    for i in range(len(block["source"])):
        text = str(block["provenance"][i])
        prov = provenance_cache.setdefault(text, json.loads(text))
        error = str(block["error"][i]) or None
        box = None
        if bool(block["has_box"][i]):
            box = FaceBox(*(float(block[k][i]) for k in ("x0", "y0", "x1", "y1", "score")),
                          kind=str(block["box_kind"][i]))
        frame = int(block["frame"][i])
        source = str(block["source"][i])
        if error and source in given and error.startswith(source):  # the message names the file as given
            error = given[source] + error[len(source):]
        yield FaceResult(given.get(source, source), int(block["face_index"][i]), None if frame == NO_FRAME else frame,
                         box=box, coeffs=None if error else np.array(block["coeffs"][i], np.float32),
                         error=error, provenance=dict(prov))


def _connect(ray, address: str | None, num_cpus: int | None, quiet: bool = False) -> bool:
    """Join `address` ("auto", "ray://host:10001", "host:6379"), or start a local Ray when it is
    None (no dashboard); reuse one already initialised in this process. Returns whether this
    call started it (and so must shut it down). An address where nothing answers fails in
    seconds (engine.distributed.cluster.check_reachable), not after Ray's connection timeout.
    quiet: Ray's own INFO lines and warnings off. The actors' and raylets' own log lines never
    reach this terminal (log_to_driver=False: an actor's failure is raised here as one engine
    error, `_run`; the lines stay in Ray's session logs, /tmp/ray/session_latest/logs)."""
    if ray.is_initialized():
        return False
    import logging

    from engine.distributed.cluster import check_reachable

    logs = {"log_to_driver": False, **({"logging_level": logging.ERROR} if quiet else {})}
    if address in (None, "local"):
        ray.init(num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False, configure_logging=quiet, **logs)
    else:
        check_reachable(address, "--ray")
        try:
            ray.init(address=address, configure_logging=quiet, **logs)
        except ConnectionError as e:
            raise BackendError(f"--ray {address}: cannot join the Ray cluster ({e})") from None
    return True


class _QuietFailures(logging.Filter):
    """On Ray Data's console handlers during a job: its error records (a failed actor's whole
    traceback, "Full stack trace: ...") stay in its log file only; the failure reaches the
    caller as one engine error (raise_actor_failure)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR


def _pool(ray, actors: int | None, threads: int | None, gpus: bool | None, runner: str = "auto",
          device_input="auto") -> tuple[dict, int]:
    """The actors' resources and their number: one per GPU when the cluster has GPUs (unless
    gpus=False), else CPU actors of `threads` cores each, as many as the cluster's CPUs hold.
    UnavailableError, before any actor starts, when the actors would get no GPU but `runner` or
    device_input=True needs one (Ray hides every GPU from an actor that reserves none)."""
    total = ray.cluster_resources()
    n_gpus = int(total.get("GPU", 0))
    if _gpu_actors(n_gpus, gpus, runner, device_input, "the Ray cluster"):
        return {"num_gpus": 1}, actors or n_gpus
    per = threads or 1
    return {"num_cpus": per}, actors or max(1, int(total.get("CPU", 1)) // per)


def _gpu_actors(n_gpus: int, gpus: bool | None, runner: str, device_input, cluster: str) -> bool:
    """Whether the actors are GPU actors on `cluster` of `n_gpus` GPUs (gpus=None: when it has
    any); BackendError / UnavailableError when gpus=True, `runner` or device_input=True needs a
    GPU it does not give them."""
    if gpus is None:  # a CPU runner named by the user holds no GPU: it would only keep it from others
        from engine.runners import can_use_gpu

        gpus = n_gpus > 0 and can_use_gpu(runner)
    if gpus and n_gpus < 1:
        raise BackendError(f"distributed embed: gpus=True, but {cluster} has no GPU")
    if not gpus:
        _check_gpu_need(runner, device_input, f"{cluster} has no GPU, so the actors run on CPUs" if n_gpus < 1
                        else "gpus=False gives the actors none")
    return gpus


def _local_gpus(ray) -> int | None:
    """The GPUs a local Ray started here would have (Ray's own count: CUDA_VISIBLE_DEVICES, the
    NVIDIA driver), or None when Ray's private API for it is not there (then the cluster's
    count, once started, is checked)."""
    try:
        from ray._private.accelerators import get_accelerator_manager_for_resource

        return int(get_accelerator_manager_for_resource("GPU").get_current_node_num_accelerators())
    except Exception:  # noqa: BLE001 - a private API of Ray's: any change of it only defers the check
        return None


def _check_gpu_need(runner: str, device_input, why: str) -> None:
    """UnavailableError when `runner` or device_input=True needs a GPU the actors will not have (`why`)."""
    from engine.runners import GPU_RUNNERS

    if runner in GPU_RUNNERS:
        raise UnavailableError(f"distributed embed: runner {runner} (--runner) needs a GPU in each actor; {why}")
    if device_input is True:
        raise UnavailableError(f"distributed embed: device_input=True (--device-input on) needs a GPU in each "
                               f"actor, and a CUDA runner (torch-cuda, tensorrt); {why}")


def check_options(runner: str, precision, max_error, compile, compile_mode, device_input, gpus) -> None:
    """What the driver can refuse before Ray starts, as each actor would refuse it after loading:
    an unknown runner or precision, a precision the runner cannot run, a bad max_error, a runner
    that cannot compile, and a GPU need the actors can never meet (device_input=True with a CPU
    runner; a GPU runner or device_input=True with gpus=False). InputError / UnavailableError."""
    from engine.network.variants import check_max_error, check_precision
    from engine.runners import PRECISIONS, RUNNER_NAMES, check_compile

    if not (device_input is True or device_input is False or device_input == "auto"):
        raise InputError(f"distributed embed: device_input: expected 'auto', 'on', 'off', True or False, found "
                         f"{device_input!r}")
    if runner not in ("auto",) + RUNNER_NAMES:
        raise InputError(f"distributed embed: runner: expected one of {['auto', *RUNNER_NAMES]}, found {runner!r}")
    if precision not in (None, "auto") and precision not in PRECISIONS:
        raise InputError(f"distributed embed: precision: expected one of {list(PRECISIONS)}, found {precision!r}")
    if max_error is not None:
        check_max_error(max_error)
    check_compile(runner, compile, compile_mode)
    if runner != "auto":  # auto is resolved on each actor's machine
        check_precision(runner, True, precision, list(RUNNER_NAMES))
    from engine.pipeline.device_input import unavailable_reason
    from engine.runners import can_use_gpu

    if device_input is True and not can_use_gpu(runner):
        # the reason Reconstructor(device_input=True) gives for this runner, before any actor loads it
        from types import SimpleNamespace

        reason = unavailable_reason(SimpleNamespace(name=runner, device="cpu"), False)
        raise UnavailableError(f"distributed embed: device_input=True (--device-input on): {reason}")
    if gpus is False:
        _check_gpu_need(runner, device_input, "gpus=False gives the actors none")


def embed(inputs, *, address: str | None = None, network_dir=None, runner: str = "auto", precision=None,
          max_error=None, batch_size: int = 8, workers: int = 2, threads: int | None = None,
          detector="auto", det_threshold=None, det_upsample: int = 1, det_max_side: int | None = 2048,
          cropped: bool = False, frame_step: int = 1, max_frames: int | None = None, boxes=None,
          actors: int | None = None, gpus: bool | None = None, num_cpus: int | None = None,
          quiet: bool = False, device_input="auto", compile: bool = False,
          compile_mode: str | None = None) -> Iterator:
    """Embed `inputs` (file paths: images and videos, already expanded) on a Ray cluster.

    Yields engine.pipeline.FaceResult, as `Reconstructor.embed` does: the results of one input
    together, inputs in the given order; a failed input or frame is a result with `error` (and
    `coeffs` None), never dropped. `coeffs` is float32 [198]; `box` a FaceBox (None with
    `cropped`) without landmarks; `provenance` the actor's network and runner.

    address: None starts a local Ray (`num_cpus`, default all cores; no dashboard) and shuts it
        down when the generator ends; "auto" or "ray://host:10001" joins a cluster. A Ray this
        process has already initialised is used as it is, and left running.
    actors: the pool's size (default: one per GPU, else the cluster's CPUs // threads).
    threads: network threads per CPU actor (default 1: an actor per core); gpus: None decides
        by the cluster (GPUs present: `num_gpus=1` actors), False forces CPU actors.
    quiet: Ray's own INFO lines and warnings off (a Ray this call starts or joins).
    device_input: each actor's Reconstructor(device_input=...): "auto", True (an actor that cannot
        decode on its GPU fails the job, saying why) or False (the CPU input path everywhere).
    boxes: as `Reconstructor.reconstruct` takes them (a CSV/JSON sidecar path, a mapping {name:
        [FaceBox or (x0, y0, x1, y1), ...]}, or a MatchedBoxes), matched by engine.box_match's
        rule to `inputs` as given, here on the driver (relative keys: this process's working
        directory or the sidecar's folder). Each input's boxes, or its match error, travel with
        it to its actor; an input without an entry goes to the detector (with detector=None it
        fails), a bad or out-of-image box fails its input alone. A sidecar that cannot be read
        raises InputError at the first `next()`, before Ray is started or joined.
    compile, compile_mode: each actor compiles its network with torch.compile (a PyTorch runner;
        engine.runners.torch_compile); actors on one machine share the compile cache, so the
        first one pays the compile time and the others mostly read it back.
    The other options are Reconstructor's and `Reconstructor.embed`'s (runner, network_dir,
    precision, max_error and compile as engine.runners.create_runner takes them). Every node must read
    `inputs` and the model card (`network_dir`, or $ENGINE3DMM_MODEL_DIR) at the same paths.

    Errors: UnavailableError without Ray; InputError / UnavailableError at the first `next()`,
    before Ray starts, for options no actor could run (`check_options`), and once the cluster
    is known, before any actor starts, for a GPU need its actors cannot meet; BackendError when
    a cluster cannot be joined (nothing answering at `address` fails within seconds). An actor
    that fails (its constructor: a corrupt weights file, a missing package; or a call) fails the
    job with ONE engine error in the actor's own words (the class it raised, e.g.
    ModelFileError, else BackendError; engine.distributed.cluster.raise_actor_failure); the
    results before it have been yielded.
    """
    # Actors get absolute paths (a worker's working folder is not the driver's); results come
    # back under the names the caller gave, as Reconstructor.embed names them.
    from engine.pipeline.device_input import from_words

    device_input = from_words(device_input)  # the CLI's words, as Reconstructor takes them
    check_options(runner, precision, max_error, compile, compile_mode, device_input, gpus)  # before Ray starts
    given = {os.path.abspath(os.fspath(p)): os.fspath(p) for p in inputs}
    paths = list(given)
    if not paths:
        return
    matched = _match_boxes(boxes, given)  # a bad sidecar fails here, before Ray starts
    shipped = _shipped(matched, given)
    ray = require_ray()
    if address in (None, "local") and not ray.is_initialized():  # the local Ray's GPUs are this machine's
        n_local = _local_gpus(ray)
        if n_local is not None:
            _gpu_actors(n_local, gpus, runner, device_input, "this machine (the local Ray)")
    started = _connect(ray, address, num_cpus, quiet)
    from ray.data import DataContext

    ctx = DataContext.get_current()  # this process's; put back at the end for the caller's other jobs
    saved = (ctx.execution_options.preserve_order, ctx.enable_progress_bars)
    data_log = logging.getLogger("ray.data")  # Ray Data's own INFO lines (execution plan, start, finish)
    saved_level = data_log.level
    if quiet:
        data_log.setLevel(logging.ERROR)
    try:
        ctx.execution_options.preserve_order = True  # the same order, so the same files, as one process
        ctx.enable_progress_bars = False  # the caller shows its own
        resources, n = _pool(ray, actors, threads, gpus, runner, device_input)
        n = min(n, len(paths))  # an actor without an input would only load a network for nothing
        per_batch = max(1, min(batch_size, math.ceil(len(paths) / n)))
        rec_kwargs = dict(runner=runner, network_dir=None if network_dir is None else os.fspath(network_dir),
                          batch_size=batch_size, detector=detector, workers=workers,
                          threads=None if "num_gpus" in resources else (threads or 1),
                          det_threshold=det_threshold, det_upsample=det_upsample, det_max_side=det_max_side,
                          device_input=device_input)
        items = ([{"path": p} for p in paths] if shipped is None
                 else [{"path": p, "boxes": shipped.get(p, b"")} for p in paths])
        ds = ray.data.from_items(items, override_num_blocks=math.ceil(len(paths) / per_batch))
        ds = ds.map_batches(_EmbedActor, batch_size=per_batch, batch_format="numpy",
                            compute=ray.data.ActorPoolStrategy(size=n),
                            fn_constructor_kwargs=dict(reconstructor=rec_kwargs, precision=precision,
                                                       max_error=max_error, cropped=cropped,
                                                       frame_step=frame_step, max_frames=max_frames,
                                                       compile=bool(compile), compile_mode=compile_mode,
                                                       boxes_label=None if matched is None else
                                                       (matched.label, matched.option, matched.path)),
                            **resources)
        console = _QuietFailures()
        handlers = [h for h in data_log.handlers if not isinstance(h, logging.FileHandler)]
        for h in handlers:
            h.addFilter(console)
        try:
            blocks = iter(ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=1))
            while True:
                try:
                    block = next(blocks)
                except StopIteration:
                    break
                except (ray.exceptions.RayError, ray.data.exceptions.ExecutionTimeoutError) as e:
                    # Ray's wrapping of an actor's failure (its constructor, a call): ONE line, the actor's own
                    raise_actor_failure(e, "distributed embed: a Ray actor failed")
                yield from _results(block, given)
        finally:
            for h in handlers:
                h.removeFilter(console)
    finally:
        ctx.execution_options.preserve_order, ctx.enable_progress_bars = saved
        data_log.setLevel(saved_level)
        if started:
            ray.shutdown()


__all__ = ["embed"]
