"""The benchmark's stages. Each returns one `Row` (see engine.bench.measure).

Inputs are real: `skimage.data.astronaut()` encoded as JPEG (quality 90) with a known
face box, the default network weights and morphable model. Pipelined stages go through
the same code the product runs (engine.pipeline), not a copy of it.
"""
from __future__ import annotations

import io
import os
import tempfile
import threading
import time
from dataclasses import dataclass

import numpy as np

from engine.bench.measure import Budget, PeakMemory, Row, summarize, time_calls

# A box around the astronaut's face (dlib's landmark box is (178, 87, 272, 178)); cropped
# like a caller-given box.
ASTRONAUT_BOX = (170.0, 75.0, 280.0, 185.0)


def model_label(network_synthetic: bool, morphable_name, morphable_synthetic: bool) -> str:
    """The rows' `model`: which network and morphable model ran, SYNTHETIC when they are."""
    return (f"network {'SYNTHETIC' if network_synthetic else 'cnn3dmm'} + morphable "
            f"{morphable_name}{' (SYNTHETIC)' if morphable_synthetic else ''}")


def runner_configs(names, network_dir, precisions, quick: bool, skip=None) -> list[tuple[str, str | None]]:
    """(runner, precision) pairs to measure, each once (in the order asked): GPU runners at their
    default; each CPU runner at `precisions` (those it supports; each one it does not goes to
    `skip(runner, precision, reason)`, never dropped in silence), else at fp32 plus every variant
    validated for the weights and usable here (engine.network.variants); --quick: each runner as
    `auto` would pick. EngineError when `precisions` leaves nothing to measure."""
    from engine.errors import EngineError
    from engine.network import variants as V
    from engine.network.resolve import resolve_model

    names, precisions = list(dict.fromkeys(names)), list(dict.fromkeys(precisions or []))
    out: list[tuple[str, str | None]] = []
    card = None
    for name in names:
        if name not in V.CPU_RUNNERS or (quick and not precisions):
            out.append((name, None))
            continue
        if precisions:
            supported = V.PRECISIONS_OF[name]
            out += [(name, p) for p in precisions if p in supported]
            for p in precisions:
                if p not in supported and skip is not None:
                    skip(name, p, f"{name} runs {', '.join(supported)}"
                         + (" (fp16 is the GPU runners' precision)" if p == "fp16" else ""))
            continue
        if card is None:
            card, _ = V.load_card(resolve_model(network_dir))
        out.append((name, "fp32"))
        for e in (card.entries() if card is not None else []):
            if (e.get("runner") == name and e.get("precision") in V.VARIANT_PRECISIONS
                    and V.unusable_reason(card, e, list(names)) is None and (name, e["precision"]) not in out):
                out.append((name, e["precision"]))
    if not out:
        raise EngineError(f"--precisions {' '.join(precisions)}: none of the runners {', '.join(names)} runs "
                          f"{'it' if len(precisions) == 1 else 'them'} (CPU runners: "
                          + "; ".join(f"{r} {', '.join(V.PRECISIONS_OF[r])}" for r in V.CPU_RUNNERS) + ")")
    return out


def row_stages(groups, device_rows: bool = True) -> tuple[str, ...]:
    """The stages of the rows one runner at one batch size gets for the stage `groups` (see
    `python -m engine.bench --stages`), in the order they are measured; device_rows False: without
    the rows only a GPU runner gets (device_preprocess, cpu_input, device_input)."""
    g = set(groups)
    single = (("preprocess", "decode", "write") if "runners" in g else ("preprocess", "write") if "device" in g
              else ()) + (("pose",) if "pose" in g else ())
    if not {"runners", "pose", "device"} & g:
        return ()
    return (*single, *(DEVICE_STAGES[:1] if "device" in g and device_rows else ()), "network",
            *(("network_decode", "end_to_end") if "runners" in g else ()),
            *(DEVICE_STAGES[1:] if "device" in g and device_rows else ()),
            *(("end_to_end_pose",) if "pose" in g else ()))


# The rows only a runner on a CUDA device with the device input gets (the `device` group).
DEVICE_STAGES = ("device_preprocess", "cpu_input", "device_input")


def validated_note(runner) -> str:
    """'; validated max 0.031 sd on 34 held-out faces' for a runner running a validated variant."""
    v = getattr(runner, "variant", None)
    if not v or not v.get("errors") or v.get("precision") == "fp32":
        return ""
    return (f"; {v['precision']} variant, validated max {v['errors']['coeff_max_sd']:.3g} sd "
            f"(p99 {v['errors']['coeff_p99_sd']:.3g}) on {v.get('validation_faces')} held-out faces")


@dataclass
class Workload:
    jpeg: bytes  # astronaut() as JPEG
    image: np.ndarray  # RGB uint8, for the detector


def workload() -> Workload:
    from PIL import Image

    try:
        from skimage import data
    except ImportError:
        from engine.errors import UnavailableError

        raise UnavailableError("python -m engine.bench takes its test photo from scikit-image "
                               "(skimage.data.astronaut()): pip install scikit-image") from None

    img = data.astronaut()
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=90)
    return Workload(buf.getvalue(), img)


class Context:
    """One runner at one batch size: its Reconstructor and the real crops it eats."""

    def __init__(self, rec, batch: int, work: Workload, budget: Budget, model_label: str):
        self.rec, self.batch, self.work, self.budget, self.model_label = rec, batch, work, budget, model_label
        r = rec.runner
        # a compiled runner's rows are told apart from the same runner's eager rows
        self.runner_name = r.name + (" compiled" if getattr(r, "compiled", False) else "")
        self.device, self.precision = r.device, r.precision
        self.gpu = rec.on_gpu
        self.crops = preprocess_batch(work.jpeg, batch)
        self._coeffs = None

    @property
    def coeffs(self) -> np.ndarray:
        """Host coefficients of `crops` (computed once: inputs of the decode and write stages)."""
        if self._coeffs is None:
            self._coeffs = on_thread(lambda: self.rec.runner.run(self.crops))
        return self._coeffs

    def sync(self):
        if self.gpu:
            import torch

            torch.cuda.synchronize()

    def row(self, stage: str, p50: float, p99: float, thr: float, n: int, mem: PeakMemory, note: str = "") -> Row:
        return Row(stage, self.runner_name, self.device, self.precision, self.batch, round(p50, 3), round(p99, 3),
                   round(thr, 3), self.model_label, n, _r(mem.rss_mib), _r(mem.gpu_mib),
                   note + ("" if mem.per_stage else " (peak RSS since process start)"))


def _r(x):
    return None if x is None else round(x, 1)


def preprocess_batch(jpeg: bytes, batch: int, out: np.ndarray | None = None) -> np.ndarray:
    """`batch` encoded images -> normalised crops [batch, 3, 224, 224] (one thread)."""
    from engine.crop import crop_face
    from engine.images import decode_image

    out = np.empty((batch, 3, 224, 224), np.float32) if out is None else out
    for i in range(batch):
        crop_face(decode_image(jpeg, "astronaut.jpg"), ASTRONAUT_BOX, kind="given", out=out[i])
    return out


def detect(work: Workload, budget: Budget) -> Row:
    """dlib HOG + 68-landmark box on astronaut() (512x512), one image per call, default options."""
    from engine.detect import FaceDetector

    det = FaceDetector()
    with PeakMemory() as mem:
        times = time_calls(lambda: det.detect(work.image), budget)
    p50, p99, thr = summarize(times, 1)
    note = "landmark box" if det.uses_landmarks else "detector box"
    return Row("detect", "dlib", "cpu", "-", 1, round(p50, 3), round(p99, 3), round(thr, 3), "dlib HOG", len(times),
               _r(mem.rss_mib), None, f"{note}; not part of the targets")


def preprocess(ctx: Context) -> Row:
    buf = np.empty_like(ctx.crops)
    with PeakMemory() as mem:
        times = time_calls(lambda: preprocess_batch(ctx.work.jpeg, ctx.batch, buf), ctx.budget)
    return ctx.row("preprocess", *summarize(times, ctx.batch), len(times), mem,
                   "JPEG decode + crop, one thread")


def on_thread(fn):
    """fn() on a fresh thread, as the pipeline runs the network (its result, or its exception).

    The network alone is timed on a thread of its own like the pipeline's network thread, so
    the targets compare like with like: on the shared 2-core machine, under load, PyTorch's CPU
    runner was measured several times slower when called from the main thread than from a
    fresh thread (its OpenMP team; ONNX Runtime showed no such difference)."""
    out: dict = {}

    def body():
        try:
            out["value"] = fn()
        except BaseException as e:  # re-raised in the caller's thread
            out["error"] = e

    t = threading.Thread(target=body, name="engine-bench-network")
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


def network_once(ctx: Context) -> float:
    """Seconds of one network call not counted in the table (warm-up, and the size of the rounds)."""
    def call():
        t0 = time.perf_counter()
        ctx.rec.runner.run(ctx.crops)
        ctx.sync()
        return time.perf_counter() - t0

    return on_thread(call)


def network(ctx: Context, calls: int) -> Samples:
    """Host crops -> host coefficients, `calls` timed calls (warmed up by the caller)."""
    r = ctx.rec.runner

    def timed():
        times = []
        for _ in range(calls):
            t0 = time.perf_counter()
            r.run(ctx.crops)
            ctx.sync()
            times.append(time.perf_counter() - t0)
        return times

    with PeakMemory(ctx.gpu) as mem:
        times = on_thread(timed)
    return Samples(times, mem)


def decode(ctx: Context) -> Row:
    """Coefficients -> vertices, colours and PLY records with the pipeline's decoder, on the
    device where the network ran (GPU: results stay on the device)."""
    dec = ctx.rec.decoder
    coeffs = ctx.coeffs
    if ctx.gpu:
        import torch

        coeffs = torch.from_numpy(coeffs).cuda()
        note = "CUDA kernel, results stay on the device"
    else:
        note = f"CPU kernel, {dec.num_threads} thread (as in the pipeline)"
    with PeakMemory(ctx.gpu) as mem:
        times = time_calls(lambda: dec.decode(coeffs, outputs=("vertices", "colors", "records")), ctx.budget,
                           ctx.sync)
    return ctx.row("decode", *summarize(times, ctx.batch), len(times), mem, f"{note}; basis {dec.basis_dtype}")


def write(ctx: Context) -> Row:
    """`batch` meshes -> binary PLY files (atomic writes) in a temporary folder."""
    from engine.decode import Decoder
    from engine.mesh_io import write_mesh
    from engine.pipeline import FaceResult

    d = Decoder(ctx.rec.model, num_threads=1).decode(ctx.coeffs, outputs=("records",))
    comments = FaceResult("astronaut.jpg", 0, provenance=ctx.rec.provenance).mesh_comments()

    with tempfile.TemporaryDirectory(prefix="engine-bench-") as tmp, PeakMemory() as mem:
        def call():
            for i in range(ctx.batch):
                write_mesh(os.path.join(tmp, f"face{i}.ply"), d.records[i], d.faces, comments=comments)

        times = time_calls(call, ctx.budget)
        size = os.path.getsize(os.path.join(tmp, "face0.ply"))
    return ctx.row("write", *summarize(times, ctx.batch), len(times), mem, f"{size / 2**20:.1f} MiB per file")


def astronaut_landmarks(work: Workload, model) -> np.ndarray:
    """float32 [68, 2] landmarks of the astronaut's face: dlib's when it is installed, else the
    model's landmark vertices (mean shape, frontal) laid into ASTRONAUT_BOX."""
    import importlib.util

    from engine.detect import landmark_model_path

    if importlib.util.find_spec("dlib") is not None and landmark_model_path() is not None:
        from engine.detect import FaceDetector

        faces = FaceDetector(landmarks=True).detect(work.image)
        if faces:
            return faces[0].landmarks
    from engine.pose import LandmarkModel

    inner, _ = LandmarkModel.from_model(model).points_from_alpha(np.zeros((1, model.shape_components)))
    xy = inner[0, :, :2] * np.array([1.0, -1.0])  # model y up -> image y down
    x0, y0, x1, y1 = ASTRONAUT_BOX
    lo, hi = xy.min(0), xy.max(0)
    return ((xy - lo) / (hi - lo) * [x1 - x0, y1 - y0] + [x0, y0]).astype(np.float32)


def pose(ctx: Context) -> Row:
    """The pose fit of a batch (engine.pose.fit_poses, the Reconstructor's: the perspective
    camera, with the expression when the model has a basis) on the astronaut's landmarks, each
    face's slightly moved (a fixed seed), from the batch's own coefficients."""
    from engine.pose import LandmarkModel, fit_poses

    lmm = LandmarkModel.from_model(ctx.rec.model)
    base = astronaut_landmarks(ctx.work, ctx.rec.model).astype(np.float64)
    uv = base[None] + np.random.default_rng(9).normal(0.0, 1.0, (ctx.batch, 68, 2))
    alpha = ctx.coeffs[:, :ctx.rec.decoder.shape_components]

    def call():
        inner, outer = lmm.points_from_alpha(alpha)
        fits = fit_poses(uv, inner, outer, expr_basis=lmm.expr_basis)
        if any(f.pose is None for f in fits):
            raise RuntimeError(f"bench pose: a fit failed: {next(f.error for f in fits if f.pose is None)}")

    with PeakMemory() as mem:
        times = time_calls(call, ctx.budget)
    p50, p99, thr = summarize(times, ctx.batch)
    what = f"{lmm.expression_components} expression weights" if lmm.expr_basis is not None else "pose only"
    return ctx.row("pose", p50, p99, thr, len(times), mem,
                   f"numpy, batched; perspective camera, {what}; {p50 / ctx.batch:.3f} ms per face")


def network_decode(ctx: Context, n: int) -> Samples:
    """Crops in memory -> meshes in memory through the product's pipeline: the network thread
    runs batch i+1 while the caller's thread decodes batch i (CPU), or network and decode run
    back to back on the runner's stream with the records copied back (GPU)."""
    from engine.pipeline import stages

    entries = [stages.Entry("astronaut", None, i, None, i) for i in range(ctx.batch)]

    def batches(pool, stop):
        for _ in range(n):
            yield stages.Batch(ctx.crops, ctx.batch, entries)

    done = []
    with PeakMemory(ctx.gpu) as mem:
        t0 = time.perf_counter()
        for b in ctx.rec.pipeline(batches, decode=True, workers=0):
            if b.decoded is None or len(b.decoded) != ctx.batch:
                raise RuntimeError("bench network_decode: a batch came back without its meshes")
            done.append(time.perf_counter())
    return Samples(list(np.diff(done)), mem, fill=done[0] - t0)


def end_to_end(ctx: Context, n: int, pose: bool = False, rec=None, write: bool = True) -> Samples:
    """JPEG files with known boxes -> binary PLY files, through Reconstructor.reconstruct with
    its prep workers, each result written by the caller as it arrives. With `pose`, the boxes
    carry the astronaut's landmarks and the run fits every face's pose (reconstruct --pose).
    rec: another Reconstructor on the same runner (the device input's, `device_reconstructor`).
    write False: the meshes stay in memory (the input side of the pipeline, without the PLY
    writes that bound it on a GPU at a few hundred faces/s per caller thread)."""
    from engine.detect import FaceBox

    rec = ctx.rec if rec is None else rec

    box = ASTRONAUT_BOX
    if pose:
        box = FaceBox(*ASTRONAUT_BOX, landmarks=astronaut_landmarks(ctx.work, ctx.rec.model))
    with tempfile.TemporaryDirectory(prefix="engine-bench-") as tmp:
        names = []
        for i in range(n * ctx.batch):
            p = os.path.join(tmp, f"img{i:05d}.jpg")
            with open(p, "wb") as f:
                f.write(ctx.work.jpeg)
            names.append(p)
        boxes = {p: [box] for p in names}
        out = os.path.join(tmp, "out")
        os.mkdir(out)
        done = []
        with PeakMemory(ctx.gpu) as mem:
            t0 = time.perf_counter()
            for k, res in enumerate(rec.reconstruct(names, boxes=boxes, pose=pose)):
                if res.error or (pose and res.pose is None):
                    raise RuntimeError(f"bench end_to_end: {res.source}: {res.error or res.pose_error}")
                if write:
                    res.write_mesh(os.path.join(out, f"{res.name}.ply"))
                elif res.vertices is None:
                    raise RuntimeError(f"bench end_to_end: {res.source}: no mesh")
                if (k + 1) % ctx.batch == 0:
                    done.append(time.perf_counter())
        written = len(os.listdir(out)) if write else k + 1
    if written != n * ctx.batch:
        raise RuntimeError(f"bench end_to_end: expected {n * ctx.batch} PLY files, found {written}")
    return Samples(list(np.diff(done)), mem, fill=done[0] - t0)


def device_reconstructor(ctx: Context):
    """(a Reconstructor like ctx.rec whose JPEG inputs are decoded and cropped on the GPU, None) or
    (None, why there is none here). The caller closes it (the runner stays ctx.rec's)."""
    from engine.errors import UnavailableError
    from engine.pipeline import Reconstructor

    if not ctx.gpu:
        return None, "the runner does not run on a CUDA device"
    try:
        return Reconstructor(runner=ctx.rec.runner, model=ctx.rec.model, batch_size=ctx.batch, detector=None,
                             workers=ctx.rec.workers, basis_dtype=ctx.rec.decoder.basis_dtype,
                             device_input=True), None
    except UnavailableError as e:
        return None, str(e)


def device_preprocess(ctx: Context, drec) -> Row:
    """`batch` JPEGs -> the network's input on the GPU: nvJPEG decode + crop kernel, one batch per
    call (DeviceInput.fill, as the network thread runs it; every row its own JPEG), synchronised."""
    from engine.crop import crop_bounds
    from engine.pipeline import stages as P
    from engine.pipeline.device_input import DevicePlan, screen_jpeg
    from engine.pipeline.inputs import Item

    di = drec.device_input
    screened = screen_jpeg(ctx.work.jpeg, None)
    bounds = np.asarray([crop_bounds(ASTRONAUT_BOX, "given")], np.int64)
    batch = P.new_batch(ctx.batch)
    for i in range(ctx.batch):
        item = Item("astronaut.jpg", lambda: None, encoded=ctx.work.jpeg)
        plan = DevicePlan(item, bytearray(ctx.work.jpeg), screened, [ASTRONAUT_BOX], bounds, cpu_prepare=None)
        batch.device.append(P.DeviceRow(i, plan, 0))
        batch.entries.append(P.Entry("astronaut.jpg", None, 0, None, i))
    batch.n = ctx.batch
    with PeakMemory(ctx.gpu) as mem:
        times = time_calls(lambda: di.fill(batch), ctx.budget, ctx.sync)
    return ctx.row("device_preprocess", *summarize(times, ctx.batch), len(times), mem,
                   f"JPEG bytes -> network input on the GPU: {di.backend.name}, one batch per call")


def device_crop_difference(ctx: Context, drec) -> str:
    """How far the device input's crop of the astronaut is from the CPU path's (ctx.crops[0]),
    in grey levels: nvJPEG decodes differently from libjpeg-turbo (engine.pipeline.device_input)."""
    with tempfile.TemporaryDirectory(prefix="engine-bench-") as tmp:
        p = os.path.join(tmp, "astronaut.jpg")
        with open(p, "wb") as f:
            f.write(ctx.work.jpeg)
        (res,) = list(drec.embed([p], boxes={p: [ASTRONAUT_BOX]}, keep_crops=True))
    if res.error:
        raise RuntimeError(f"bench device_input: {res.error}")
    d = np.abs(res.crop - ctx.crops[0])
    return f"crop vs the CPU path's: max {d.max():.0f}, mean {d.mean():.3f} grey levels"


class Samples:
    """Raw timings of one round of a stage: seconds per call (single stages) or intervals
    between batch completions (pipelined stages), the round's peak memory and pipeline fill."""

    def __init__(self, times: list[float], mem: PeakMemory, fill: float | None = None):
        self.times, self.mem, self.fill = times, mem, fill


def rounds_row(ctx: Context, stage: str, rounds: list[Samples], note: str) -> Row:
    """One row from several rounds of a stage (interleaved with the other stages' rounds, so
    that background load on a shared machine hits every stage alike)."""
    times = [t for r in rounds for t in r.times]
    p50, p99, thr = summarize(times, ctx.batch)

    class _Mem:  # the largest peak over the rounds
        rss_mib = max((r.mem.rss_mib or 0) for r in rounds)
        gpu_mib = None if not ctx.gpu else max((r.mem.gpu_mib or 0) for r in rounds)
        per_stage = all(r.mem.per_stage for r in rounds)

    fills = [r.fill for r in rounds if r.fill is not None]
    if fills:
        note += f"; steady state over {len(times)} batch intervals in {len(rounds)} rounds, pipeline fill " \
                f"{np.median(fills) * 1e3:.0f} ms"
    else:
        note += f"; {len(times)} calls in {len(rounds)} rounds"
    return ctx.row(stage, p50, p99, thr, len(times), _Mem, note)
