"""What one HTTP request of the face service asks for, and running a batch of them (no Ray here).

The Ray Serve deployment (engine.serve.deployment) only moves bytes: it reads the body, hands
`parse_request` the query fields, decodes the image on a thread (`decode_body`) and queues the
request; `run_batch` then runs every queued request through ONE `Reconstructor` as one network
batch and turns each request's faces into its answer. Keeping this part free of Ray lets it be
read and tested on its own, and keeps one place for the answer's schema.

HTTP status of an answer (every request gets exactly one):
    200  the faces (a face whose coefficients came out non-finite has its own "error")
    400  a bad query field, or a body that is not a decodable image (not an image, truncated,
         over the pixel limit: a decompression bomb), with the engine's message
    413  a body over the size limit (the deployment checks it before reading on)
    422  a decodable image the engine found no usable face in (no face, a bad box), or a face
         index /v1/mesh does not have
    503  the engine cannot run here (e.g. no face detector installed); 500 for anything else
"""
from __future__ import annotations

import base64
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.errors import EngineError, InputError

log = logging.getLogger("engine.serve")

TRUE_WORDS, FALSE_WORDS = ("1", "true", "yes", "on"), ("0", "false", "no", "off")  # any case
POSE_WORDS = ("perspective", "weak_perspective", "weak-perspective")  # any case; true means perspective
PARTS = ("all", "alpha", "beta")  # engine.descriptors.PARTS
MAX_BOXES = 256  # faces one request may name: beyond it a request is a batch job (`embed`), not a call
# The boxes field's JSON, in UTF-8 bytes: MAX_BOXES faces of 68 landmarks each, written out in full.
MAX_BOXES_BYTES = 1 << 20


@dataclass(frozen=True)
class ServeOptions:
    """How the service runs; picklable (it travels to every replica).

    runner, network_dir, threads, workers: the replica's Reconstructor (see engine.Reconstructor).
    replicas: Ray Serve replicas, each with its own Reconstructor, `replica_cpus` CPUs reserved.
    max_batch_size: requests run as one network batch at most (also the Reconstructor's batch size).
    batch_wait_ms: how long the first queued request waits for others to join its batch.
    max_body_mb: the largest request body (MiB); larger gets 413.
    max_pixels: the largest decoded image (width x height); None: Pillow's limit (about 89 million).
    drain_timeout_s: on stop, how long each replica may take to answer the requests it holds.
    direct_ingress: the replica itself listens on the service's port (Ray Serve's experimental
        direct ingress), so a request skips the HTTP proxy's hop to the replica (measured: about
        7 ms of a request's p50 on 2 cores; bench/results/serve_cpu.md). One replica on a local
        Ray only: see engine.serve.service.Service for what changes with it.
    replica_gpus: GPUs Ray reserves for each replica (fractions share one). None: 1 when the
        runner can use a GPU (auto, torch-cuda, tensorrt) and the cluster has one, else 0. Ray
        hides the GPUs from an actor that reserves none (CUDA_VISIBLE_DEVICES=""), so without
        them a replica on a GPU machine would run its network on the CPU.
    precision, max_error, compile, compile_mode: the replica's runner, as
        engine.runners.create_runner takes them (the variant is chosen, and the network compiled,
        on the replica's machine). With compile, the replica compiles every batch size it can be
        sent (powers of two up to max_batch_size) while it starts, not on a caller's time.
    """

    runner: str = "auto"
    network_dir: str | None = None
    replicas: int = 1
    replica_cpus: float = 1.0
    max_batch_size: int = 8
    batch_wait_ms: float = 10.0
    max_body_mb: float = 20.0
    max_pixels: int | None = None
    threads: int | None = None
    workers: int = 2
    drain_timeout_s: float = 30.0
    direct_ingress: bool = False
    replica_gpus: float | None = None
    precision: str | None = None
    max_error: float | None = None
    compile: bool = False
    compile_mode: str | None = None

    def __post_init__(self):
        def check(name, ok, expected):
            if not ok:
                raise InputError(f"serve: {name}: expected {expected}, found {getattr(self, name)!r}")

        check("replicas", _is_int(self.replicas) and 1 <= self.replicas <= 1024, "an integer in 1..1024")
        check("max_batch_size", _is_int(self.max_batch_size) and 1 <= self.max_batch_size <= 1024,
              "an integer in 1..1024")
        check("batch_wait_ms", _is_num(self.batch_wait_ms) and 0 <= self.batch_wait_ms <= 10_000,
              "milliseconds in 0..10000")
        check("max_body_mb", _is_num(self.max_body_mb) and 0 < self.max_body_mb <= 4096, "MiB in (0, 4096]")
        check("max_pixels", self.max_pixels is None or (_is_int(self.max_pixels) and self.max_pixels > 0),
              "a positive integer or None")
        check("replica_cpus", _is_num(self.replica_cpus) and self.replica_cpus >= 0, "a number >= 0")
        check("drain_timeout_s", _is_num(self.drain_timeout_s) and 0 <= self.drain_timeout_s <= 3600,
              "seconds in 0..3600")
        check("direct_ingress", isinstance(self.direct_ingress, bool), "True or False")
        check("replica_gpus", self.replica_gpus is None or (_is_num(self.replica_gpus) and 0 <= self.replica_gpus
                                                            <= 64), "a number in 0..64 or None (auto)")
        from engine.runners import PRECISIONS, RUNNER_NAMES, can_use_gpu, check_compile

        check("runner", self.runner in ("auto",) + RUNNER_NAMES, f"one of {['auto', *RUNNER_NAMES]}")
        check("precision", self.precision is None or self.precision in PRECISIONS, f"one of {list(PRECISIONS)}")
        if self.max_error is not None:
            from engine.network.variants import check_max_error

            check_max_error(self.max_error)
        check_compile(self.runner, self.compile, self.compile_mode)
        if self.runner != "auto":  # auto is resolved on the replica's machine, which may differ
            from engine.network.variants import check_precision

            check_precision(self.runner, True, self.precision, list(RUNNER_NAMES))
        if self.replica_gpus and not can_use_gpu(self.runner):
            raise InputError(f"serve: replica_gpus: the {self.runner} runner runs on the CPU, found "
                             f"{self.replica_gpus:g} GPU(s) per replica; drop --replica-gpus or use --runner "
                             "torch-cuda / tensorrt")

        if self.direct_ingress and self.replicas != 1:
            # Ray gives each replica of a node its own port: a second one here could not take the
            # service's port, and nothing would spread the requests over them.
            raise InputError(f"serve: replicas: direct ingress serves with exactly 1 replica (the replica "
                             f"itself listens on the service's port), found {self.replicas}; use the "
                             "default ingress (through Ray's HTTP proxy) for more replicas")

    def actor_options(self) -> dict:
        """Ray resources of each replica: its CPUs and its GPUs (replica_gpus, fixed by
        Service.start for the cluster; Ray hides every GPU from an actor that reserves none)."""
        return {"num_cpus": self.replica_cpus, "num_gpus": float(self.replica_gpus or 0)}

    def gpus_per_replica(self, cluster_gpus: float) -> float:
        """The GPUs each replica reserves on a cluster of `cluster_gpus` (replica_gpus, or its auto rule)."""
        from engine.runners import can_use_gpu

        if self.replica_gpus is not None:
            return float(self.replica_gpus)
        return 1.0 if cluster_gpus >= 1 and can_use_gpu(self.runner) else 0.0

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * (1 << 20))


def warm_up_batches(max_batch: int, runner) -> list[int]:
    """Batch sizes a replica runs before it answers: 1, and with a compiled network every bucket
    (engine.runners.torch_compile.bucket) a batch of 1..`max_batch` crops runs at, in chunks of at
    most the runner's own max_batch; each compiles once, so no caller waits for Inductor."""
    if not getattr(runner, "compiled", False):
        return [1]
    from engine.runners.torch_compile import bucket

    return sorted({bucket(min(n, runner.max_batch), runner.max_batch) for n in range(1, max_batch + 1)})


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and np.isfinite(v)


class RequestError(Exception):
    """An answer other than 200, decided before or after the network: status + the engine's message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class FaceRequest:
    """One request: the decoded image (RGB uint8 [H, W, 3]) and what to compute for it."""

    boxes: list | None = None  # FaceBoxes the caller gave (None: detect)
    cropped: bool = False
    pose: str | None = None  # None, "perspective" or "weak_perspective"
    mesh: bool = False  # /v1/faces: add each face's binary PLY (base64); /v1/mesh: the PLY is the answer
    mesh_face: int | None = None  # /v1/mesh: which face
    part: str = "all"
    image: np.ndarray | None = field(default=None, repr=False)
    timings: dict = field(default_factory=dict)
    wait_ms: float = 0.0  # how long this request let its batch wait for others (0: none on their way)

    @property
    def group(self) -> tuple:
        """Requests of one group run in one Reconstructor call (its options are per call)."""
        return (self.cropped, self.pose, self.mesh)


def _flag(params, name: str) -> bool:
    v = params.get(name)
    if v is None:
        return False
    s = _ascii_lower(v)
    if s in TRUE_WORDS:
        return True
    if s in FALSE_WORDS:
        return False
    raise _refuse(name, v)


def _ascii_lower(v: str) -> str | None:
    """`v` in lower case when it is ASCII ("any case" means A-Z: str.lower would also map the
    Kelvin sign to k), else None."""
    return v.lower() if v.isascii() else None


def _refuse(name: str, value: str) -> RequestError:
    """400 for a field's bad value: what the field takes, and what was found (cut short: a
    value may be as long as the query)."""
    found = repr(value) if len(value) <= 80 else f"{value[:60]!r}... ({len(value)} characters)"
    return RequestError(400, f"query field {name}: expected {EXPECTED[name]}, found {found}")


_FLAG = "true or false (or 1/0, yes/no, on/off; any case)"

# What each query field takes, exactly: the words of every message that refuses one (the parse
# below accepts these and nothing else: no surrounding spaces, no digits but 0-9).
EXPECTED = {
    "boxes": f"a JSON list of 1..{MAX_BOXES} boxes [[x0, y0, x1, y1], ...] (each [x0, y0, x1, y1], "
             "[x0, y0, x1, y1, score] or {\"landmarks\": [[x, y] x 68]} with an optional \"box\" and \"score\")",
    "cropped": _FLAG,
    "pose": "perspective, weak_perspective (or weak-perspective), true (meaning perspective) or false "
            "(or 1/0, yes/no, on/off; any case)",
    "mesh": _FLAG,
    "part": f"one of {', '.join(PARTS)}",
    "face": f"a face index 0..{MAX_BOXES} (digits 0-9)",
}


# Each endpoint's fields. /v1/mesh answers one face's PLY: pose, part and mesh would change
# nothing in it, so they are refused there rather than silently ignored.
FACES_FIELDS = frozenset({"boxes", "cropped", "pose", "mesh", "part"})
MESH_FIELDS = frozenset({"boxes", "cropped", "face"})


def query_fields(items, *, mesh_endpoint: bool = False) -> dict[str, str]:
    """The query's fields as {name: value}, each given once and not empty; `items` is a mapping
    or the (name, value) pairs of the query string in order (Starlette's multi_items()).
    RequestError(400) names the field, what it takes and what was found: a field that is not
    one of this endpoint's, given more than once (which one would count?), or given empty
    (`?pose=` is a mistake, not a choice)."""
    known = MESH_FIELDS if mesh_endpoint else FACES_FIELDS
    pairs = list(items.items()) if hasattr(items, "items") else list(items)
    fields: dict[str, list[str]] = {}
    for name, value in pairs:
        fields.setdefault(name, []).append(value)
    for name, values in fields.items():
        if name not in known:
            raise RequestError(400, f"query field {name[:40]}: not a field of this endpoint "
                                    f"(expected {', '.join(sorted(known))})")
        if len(values) > 1:
            raise RequestError(400, f"query field {name}: expected it once, found it {len(values)} times "
                                    f"({', '.join(repr(v[:40]) for v in values[:4])})")
        if not str(values[0]).strip():
            raise RequestError(400, f"query field {name}: expected {EXPECTED[name]}, found an empty value")
    return {name: str(values[0]) for name, values in fields.items()}


def parse_request(params, *, mesh_endpoint: bool = False) -> FaceRequest:
    """A FaceRequest from the query fields (a mapping of str -> str, or the query's (name, value)
    pairs: see query_fields): boxes (JSON: a list of [x0, y0, x1, y1(, score)] or
    {"landmarks": [[x, y] x 68], "box": ..., "score": ...}), cropped, pose (true/false, or
    perspective / weak_perspective), mesh, part (all/alpha/beta), and on /v1/mesh face (an
    index, default 0). RequestError(400) names the field, what it takes and what was found."""
    params = query_fields(params, mesh_endpoint=mesh_endpoint)
    req = FaceRequest(cropped=_flag(params, "cropped"), mesh=mesh_endpoint or _flag(params, "mesh"))
    pose = params.get("pose")
    if pose is not None and _ascii_lower(pose) in POSE_WORDS:
        req.pose = pose.lower().replace("-", "_")
    elif _flag(params, "pose"):
        req.pose = "perspective"
    req.part = params.get("part", "all")
    if req.part not in PARTS:
        raise _refuse("part", req.part)
    if mesh_endpoint:
        text = params.get("face", "0")
        # ASCII digits only (str.isdigit takes '²' and '١', int() takes '١' and '１'), at most 3 of them.
        if not (text.isascii() and text.isdigit() and len(text) <= 3) or int(text) > MAX_BOXES:
            raise _refuse("face", text)
        req.mesh_face = int(text)
    if params.get("boxes") is not None:
        if req.cropped:
            raise RequestError(400, "query fields boxes and cropped: give one (cropped means the body is a face "
                                    "crop already)")
        req.boxes = _boxes(params["boxes"])
    if req.pose is not None and req.cropped:
        raise RequestError(400, "query fields pose and cropped: the pose needs the face's 68 landmarks in its "
                                "photo; a cropped body has none")
    return req


def _boxes(text: str) -> list:
    """The boxes field's FaceBoxes, by the engine's own boxes JSON reader (engine.detect's, as
    for --boxes files: size and nesting bounded before parsing, every value's type checked);
    RequestError(400) naming the field, and the box and its field where one is bad."""
    from engine.detect import json_face_box, json_type, loads_boxes_json

    try:
        boxes = loads_boxes_json(text, "query field boxes", max_bytes=MAX_BOXES_BYTES, nesting="boxes nest 2 "
                                 "levels ([[x0, y0, x1, y1], ...]), 4 with landmarks")
        if type(boxes) is not list or not 1 <= len(boxes) <= MAX_BOXES:  # noqa: E721 (an object is a list too)
            found = f"an array of {len(boxes)}" if type(boxes) is list else json_type(boxes)  # noqa: E721
            raise InputError(f"query field boxes: expected {EXPECTED['boxes']}, found {found}")
        return [json_face_box(b, "given", f"query field boxes[{i}]") for i, b in enumerate(boxes)]
    except InputError as e:
        raise RequestError(400, str(e)) from None


def decode_body(data: bytes, max_pixels: int | None) -> np.ndarray:
    """The request body as RGB uint8 [H, W, 3], by the engine's own loader and pixel limit
    (engine.images.decode_image); RequestError(400) with its message when it is not an image,
    is truncated or is over the pixel limit."""
    from engine import images

    try:
        return images.decode_image(data, "request body", max_pixels=images.DEFAULT if max_pixels is None
                                   else max_pixels)
    except InputError as e:
        raise RequestError(400, str(e)) from None


def _face_json(r, req: FaceRequest) -> dict[str, Any]:
    from engine.descriptors import descriptor

    box = r.box
    out: dict[str, Any] = {
        "face_index": r.face_index,
        "box": None if box is None else [float(box.x0), float(box.y0), float(box.x1), float(box.y1)],
        "score": None if box is None else float(box.score),
        "crop_rule": None if box is None else box.kind,
        "coeffs": None, "descriptor": None, "error": r.error,
    }
    if r.error is None:
        out["coeffs"] = r.coeffs.tolist()
        out["descriptor"] = descriptor(r.coeffs, req.part).tolist()
    if req.pose is not None:
        out["pose"] = None if r.pose is None else r.pose.to_dict()
        out["pose_error"] = r.pose_error
    if req.mesh and req.mesh_face is None and r.error is None:
        out["mesh_ply_base64"] = base64.b64encode(_ply(r)).decode("ascii")
    return out


def _ply(r) -> bytes:
    from engine.mesh_io import ply_bytes

    return ply_bytes(r.records, r.faces, r.mesh_comments())


def _answer(req: FaceRequest, results: list, provenance: dict, batch: dict, name: str) -> Any:
    """The 200 answer of one request (a dict, or the PLY bytes of /v1/mesh), or RequestError.
    `name` is the request's name inside the batch: messages say "request body" instead."""
    for r in results:
        r.source = "request body"  # what mesh comments and messages name, whatever the batch
        if r.error is not None:
            r.error = r.error.replace(name, "request body")
    if len(results) == 1 and results[0].face_index < 0:  # the input failed as a whole (no face...)
        raise RequestError(422, results[0].error)
    if req.mesh_face is not None:
        if req.mesh_face >= len(results):
            raise RequestError(422, f"query field face: {req.mesh_face} is not a face of this image "
                                    f"(it has {len(results)})")
        r = results[req.mesh_face]
        if r.error is not None:
            raise RequestError(422, r.error)
        return _ply(r)
    return {"faces": [_face_json(r, req) for r in results], "provenance": provenance,
            "batch": batch, "timings_ms": dict(req.timings)}


def run_batch(rec, requests: list[FaceRequest]) -> list[Any]:
    """One answer per request, in order: a dict (JSON of /v1/faces), bytes (PLY of /v1/mesh) or a
    RequestError. Requests sharing options run in one `rec.reconstruct` call, so their faces
    form one network batch (rec.batch_size >= the number of faces); a Reconstructor error that
    stops the call (e.g. no detector installed) answers each request of that call, never a
    subset."""
    answers: list[Any] = [None] * len(requests)
    groups: dict[tuple, list[int]] = {}
    for i, req in enumerate(requests):
        groups.setdefault(req.group, []).append(i)
    # wait_ms: the wait window the batch's first request gave it (serve.batch takes the first's).
    batch = {"requests": len(requests), "groups": len(groups), "wait_ms": requests[0].wait_ms if requests else 0.0}
    for (cropped, pose, mesh), members in groups.items():
        names = {f"request-{k:06d}": k for k in members}  # fixed width: no name is the end of another
        boxes = {n: requests[k].boxes for n, k in names.items() if requests[k].boxes is not None}
        t0 = time.perf_counter()
        try:
            found: dict[str, list] = {n: [] for n in names}
            for r in rec.reconstruct([(n, requests[k].image) for n, k in names.items()], boxes=boxes or None,
                                     cropped=cropped, pose=pose or False, decode=mesh):
                found[r.source].append(r)
            ms = (time.perf_counter() - t0) * 1e3
            for n, k in names.items():
                requests[k].timings["engine"] = round(ms, 3)
                try:
                    answers[k] = _answer(requests[k], found[n], rec.provenance, batch, n)
                except RequestError as e:
                    answers[k] = e
        except InputError as e:
            for k in members:
                answers[k] = RequestError(422, str(e))
        except EngineError as e:
            log.error("the engine could not run a batch: %s", e)
            for k in members:
                answers[k] = RequestError(503, str(e))
        except Exception as e:  # a bug: every request of the call is answered, the service goes on
            log.exception("a batch failed")
            for k in members:
                answers[k] = RequestError(500, f"internal error: {type(e).__name__}: {e}")
    return answers
