"""`Reconstructor`: photos (or crops) in, per-face coefficients and meshes out.

    with Reconstructor(batch_size=8) as rec:
        for r in rec.reconstruct(["photos/", "me.jpg"], boxes={"me.jpg": [(170, 40, 270, 160)]}):
            if r.error:
                print(r.source, r.error)          # the run goes on
            else:
                r.write_mesh(f"out/{r.name}.ply")  # r.coeffs, r.vertices, r.colors ...

With `pose=True` (or "weak_perspective") every face also gets its head pose and, when the
morphable model has an expression basis, its expression, fitted to its 68 landmarks for the
whole batch at once (engine.pose) on the caller's thread after the decode.

The pipeline (engine.pipeline.stages) decodes and crops images on `workers` threads while
the network runs the previous batch on a thread of its own; on the CPU the caller's
thread decodes meshes meanwhile, on a GPU the coefficients go straight from the runner
into the CUDA decode kernel on the runner's stream, and only the PLY records and the
coefficients are copied back.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import queue
import threading
import weakref
from typing import Callable, Iterator, Mapping

import numpy as np

from engine.detect import DEFAULT_MAX_SIDE, DEFAULT_UPSAMPLE, check_detector_options
from engine.errors import EngineError, InputError, UnavailableError
from engine.images import DEFAULT as DEFAULT_PIXELS
from engine.pipeline import stages
from engine.pipeline.inputs import Prepared, VideoSpan, check_inputs, iter_items, list_inputs, prepare
from engine.pipeline.results import FaceResult

log = logging.getLogger("engine.pipeline")
DETECTORS = ("auto", "dlib")
_CPU_OUTPUTS = ("vertices", "colors", "records")
# Bounds of the sizes a caller picks (the CLI's parser repeats them). Each face of a batch holds
# its crop (0.6 MB) and its decoded mesh (1.4 MB with the trimmed BFM's 46,990 vertices), and
# about two batches are in flight: 1024 faces is some 4-6 GB, beyond any throughput gain (the
# GPU benchmark saturates by 128). A worker holds one decoded photo (243 MB at 81 megapixels)
# and a dlib detector; a runner thread per core. Beyond these a value is a typo, not a setting.
MAX_BATCH_SIZE = 1024
MAX_WORKERS = 64
MAX_THREADS = 1024


def pose_camera(pose) -> str | None:
    """The camera model of a `pose=` argument: None (no pose), "perspective" or "weak_perspective"."""
    from engine.pose.fit import CAMERA_ALIASES

    if pose is False or pose is None:
        return None
    if pose is True:
        return "perspective"
    if isinstance(pose, str) and pose in CAMERA_ALIASES:
        return CAMERA_ALIASES[pose]
    raise InputError(f"reconstruct: pose: expected False, True, 'perspective' or 'weak_perspective', found {pose!r}")


def _int_in(value, name: str, minimum: int, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not minimum <= value <= maximum:
        raise InputError(f"Reconstructor: {name}: expected an integer in {minimum}..{maximum}, found {value!r}")
    return int(value)


class Reconstructor:
    """Face photos to 3DMM coefficients and textured meshes, batched and pipelined.

    runner: "auto" (TensorRT > PyTorch CUDA > fastest CPU runner), a runner name
        ("tensorrt", "torch-cuda", "onnxruntime", "torch-cpu") or a runner object made by
        engine.runners.create_runner (then the caller keeps ownership: close() leaves it open).
    network_dir: folder of converted network weights (default: engine.network.resolve.default_model_dir(), i.e. $ENGINE3DMM_MODEL_DIR, the checkout's models/cnn3dmm, or the per-user folder; synthetic
        weights when none were converted, and every result says so).
    model: a MorphableModel, a model file path, or None for the built-in synthetic model.
    batch_size: faces per network batch.
    detector: "auto" (dlib when importable; otherwise an UnavailableError as soon as an input
        needs detection), "dlib", None (only caller-given boxes or cropped inputs), or a
        callable image_rgb -> list[FaceBox] (called under a lock: it need not be thread-safe).
    det_threshold, det_upsample, det_max_side: the dlib detector's threshold (None: each
        image's best face from score 0 as the release, further faces from 0.5; a number T:
        every face from T, dlib's adjust_threshold), upsample (0..4) and max_side (detect on
        a copy at most this many pixels on its longer side, default 2048; None: full size).
        See engine.detect.FaceDetector. When the 68-point landmark model is not installed,
        faces are cropped from the detector's box (the release used the landmark box): one
        warning per Reconstructor says so.
    basis_dtype: "fp32" or "fp16" storage of the morphable model bases in the decoder.
    workers: threads that decode, detect and crop images (0: all in the feeder thread).
    threads: CPU threads of the network runner (None: the runner's default, all cores).
    max_pixels: the largest image (width x height) decoded; larger ones fail with "WxH = P
        pixels, limit is L (raise max_pixels=)". DEFAULT: Pillow's Image.MAX_IMAGE_PIXELS
        (about 89 million, read at each image); None: no limit. See engine.images.load_image.
    device_input: "auto" (default: on with a CUDA runner when torchvision is installed), True or
        "on" (UnavailableError when it cannot run), False or "off", or a DeviceInput object: JPEG files and
        bytes with known boxes (or cropped=True) are decoded by nvJPEG and cropped on the GPU,
        straight into the network's input; every other input takes the CPU path, in its place.
        `device_input` is then the DeviceInput in use (None: the CPU path for every input).
        See engine.pipeline.device_input.
    batch_size is at most MAX_BATCH_SIZE (1024), workers MAX_WORKERS (64), threads MAX_THREADS
    (1024): InputError beyond (memory grows with each; see their definitions).
    """

    def __init__(self, *, runner="auto", network_dir=None, model=None, batch_size: int = 8,
                 detector="auto", basis_dtype: str = "fp32", workers: int = 2, threads: int | None = None,
                 det_threshold: float | None = None, det_upsample: int = DEFAULT_UPSAMPLE,
                 det_max_side: int | None = DEFAULT_MAX_SIDE, max_pixels=DEFAULT_PIXELS, device_input="auto"):
        from engine.decode import Decoder
        from engine.images import pixel_limit
        from engine.morphable import MorphableModel, load_model

        self.batch_size = _int_in(batch_size, "batch_size", 1, MAX_BATCH_SIZE)
        self.workers = _int_in(workers, "workers", 0, MAX_WORKERS)
        if threads is not None:
            _int_in(threads, "threads", 1, MAX_THREADS)
        pixel_limit(max_pixels)  # checked now, not at the first image
        from engine.pipeline.device_input import check_choice

        device_input = check_choice(device_input)  # "on"/"off" -> True/False
        self.max_pixels = max_pixels
        self.det_options = dict(zip(("threshold", "upsample", "max_side"), check_detector_options(
            det_threshold, det_upsample, det_max_side, prefix="Reconstructor: det_")))
        if not (detector is None or callable(detector) or detector in DETECTORS):
            raise InputError(f"Reconstructor: detector: expected 'auto', 'dlib', None or a callable, found {detector!r}")
        if detector == "dlib" and importlib.util.find_spec("dlib") is None:
            raise UnavailableError("Reconstructor: detector='dlib' needs dlib: pip install dlib-bin "
                                   "(and face-recognition-models for the landmark box)")
        self.detector = detector
        self.model = model if isinstance(model, MorphableModel) else load_model(model)
        if isinstance(runner, str):
            from engine.runners import create_runner

            self.runner = create_runner(runner, network_dir, threads=threads)
            self._owns_runner = True
        elif hasattr(runner, "run") and hasattr(runner, "device"):
            self.runner = runner
            self._owns_runner = False
        else:
            raise InputError(f"Reconstructor: runner: expected a runner name or a runner object, found {runner!r}")
        try:
            from engine import _core

            # A GPU runner with an engine._C built without CUDA still works: the coefficients
            # come back to the host and the CPU kernel decodes them (provenance says where).
            self.on_gpu = self.runner.device == "cuda" and hasattr(self.runner, "run_device") and _core.has_cuda()
            # Beside the network the decoder gets one thread, so the two do not fight for cores.
            self.decoder = Decoder(self.model, device="cuda" if self.on_gpu else "cpu",
                                   basis_dtype=basis_dtype, num_threads=1)
            if self.on_gpu:
                from engine.pipeline.gpu import GpuStage

                self._gpu = GpuStage(self.runner, self.decoder)
            self.device_input = self._make_device_input(device_input)
            from engine.network import architecture as arch

            if self.decoder.coeff_width > arch.NUM_COEFFS:
                raise InputError(f"Reconstructor: model: expected at most {arch.NUM_COEFFS} coefficients "
                                 f"(the network's outputs), found a model needing {self.decoder.coeff_width}")
        except BaseException:
            self.close()
            raise
        self.provenance = {
            "runner": self.runner.name, "device": self.runner.device, "precision": self.runner.precision,
            "network_synthetic": bool(getattr(self.runner, "synthetic", False)),
            "network": getattr(self.runner, "model_description", ""),
            "network_fingerprint": getattr(self.runner, "fingerprint", None),
            # "per-channel": converted without the release's mean image (outputs differ from the release's)
            "network_mean": getattr(self.runner, "mean_kind", None),
            # at fp16: operations kept in float32 so that no value overflows (engine.network.fp16)
            "network_fp32_ops": list(getattr(self.runner, "fp32_ops", ()) or ()),
            "morphable_model": str(self.model.metadata.get("name")),
            "morphable_synthetic": bool(self.model.synthetic),
            "basis_dtype": basis_dtype, "decode_device": "cuda" if self.on_gpu else "cpu",
        }
        self._landmark_model = None  # engine.pose.LandmarkModel, or the InputError why not (first pose run)
        self.provenance["expression_basis"] = bool(getattr(self.model, "expression_basis", None) is not None)
        self._detectors: queue.SimpleQueue = queue.SimpleQueue()  # idle dlib detectors, one per busy thread
        self._detector_lock = threading.Lock()
        self._warned_no_landmarks = False
        self._pipelines: weakref.WeakSet = weakref.WeakSet()
        self._closed = False

    def _make_device_input(self, choice):
        """The DeviceInput for `choice` (see the class docstring), or None."""
        from engine.pipeline import device_input as D

        if choice is False or isinstance(choice, D.DeviceInput):
            return choice or None
        reason = D.unavailable_reason(self.runner, self.on_gpu)
        if reason is not None:
            if choice is True:
                raise D.DeviceInputUnavailable(reason)
            if self.runner.device == "cuda":
                log.info("inputs are decoded and cropped on the CPU: %s", reason)
            return None
        log.info("JPEG inputs with known boxes are decoded (nvJPEG) and cropped on the GPU")
        return D.DeviceInput(D.CudaBackend(self.runner), max_pixels=self.max_pixels)

    @property
    def synthetic(self) -> bool:
        """True when the network weights or the morphable model are synthetic (placeholders)."""
        return self.provenance["network_synthetic"] or self.provenance["morphable_synthetic"]

    # -- detection ---------------------------------------------------------------------
    def _detector_name(self) -> str:
        if callable(self.detector):
            return f"caller's detector {getattr(self.detector, '__name__', type(self.detector).__name__)}"
        from engine.detect import describe_rule

        o = self.det_options
        size = "full size" if o["max_side"] is None else f"at most {o['max_side']} px"
        return f"dlib HOG detector: {describe_rule(o['threshold'])}, upsample {o['upsample']}, {size}"

    def _detect(self, image: np.ndarray) -> list:
        if callable(self.detector):
            with self._detector_lock:
                return list(self.detector(image))
        from engine.detect import FaceDetector

        # dlib objects are not thread-safe: each worker borrows a detector of its own and
        # gives it back, so at most `workers` are ever built (the landmark model costs ~1 s).
        try:
            det = self._detectors.get_nowait()
        except queue.Empty:
            det = FaceDetector(**self.det_options)  # UnavailableError without dlib: fatal, not a per-input error
            self._warn_once_without_landmarks(det)
        try:
            return det.detect(image)
        finally:
            self._detectors.put(det)

    def _warn_once_without_landmarks(self, det) -> None:
        if det.uses_landmarks:
            return
        with self._detector_lock:
            if self._warned_no_landmarks:
                return
            self._warned_no_landmarks = True
        log.warning("the 68-point landmark model is not installed (pip install face-recognition-models): "
                    "faces are cropped from dlib's detector box, not from the landmark box the release used "
                    "by default, so crops and coefficients differ from the release's (summary.json records "
                    "each face's crop_rule)")

    # -- the pipeline's stages ------------------------------------------------------------
    def _run_batch(self, batch: stages.Batch, decode: bool) -> stages.Batch:
        """Network (and on a GPU, decode) of one batch; runs on the network thread. Rows prepared
        for the device input are decoded and cropped here first (on the runner's stream)."""
        n = batch.n
        if n == 0:
            batch.coeffs = np.empty((0, self.decoder.coeff_width), np.float32)
            return batch
        crops = batch.crops[:n]
        if batch.device:
            crops = self.device_input.fill(batch, host_copy=batch.keep_crops)
        if self.on_gpu:
            return self._gpu.run(batch, decode, crops)
        batch.coeffs = self.runner.run(crops)
        return batch

    def _finish_batch(self, batch: stages.Batch, decode: bool, pose: str | None = None) -> stages.Batch:
        """Runs on the caller's thread while the network runs the next batch: the CPU decode,
        or on a GPU the wait for the copy back; then the pose fit when asked."""
        if self.on_gpu:
            batch = self._gpu.finish(batch)
        elif batch.n > 0:
            # A row with a NaN/Inf coefficient is that face's error (see _results), not the
            # batch's: it is decoded as zeros so the decoder's finiteness check passes.
            batch.finite = np.isfinite(batch.coeffs).all(axis=1)
            if decode:
                coeffs = batch.coeffs
                if not batch.finite.all():
                    coeffs = np.where(batch.finite[:, None], coeffs, np.float32(0)).astype(np.float32)
                batch.decoded = self.decoder.decode(coeffs, outputs=_CPU_OUTPUTS)
        if pose is not None and batch.n > 0:
            self._fit_poses(batch, pose)
        return batch

    # -- pose ---------------------------------------------------------------------------
    def _landmarks(self):
        """The model's LandmarkModel (built once), or raises the InputError why there is none."""
        from engine.pose import LandmarkModel

        if self._landmark_model is None:
            try:
                self._landmark_model = LandmarkModel.from_model(self.model)
            except InputError as e:
                self._landmark_model = e
        if isinstance(self._landmark_model, InputError):
            raise self._landmark_model
        return self._landmark_model

    def _fit_poses(self, batch: stages.Batch, camera: str) -> None:
        """batch.poses: a PoseFit per row (pose and expression, or the face's error), and
        batch.posed (the batch's PosedBatch). Every face of the batch is fitted at once."""
        from engine.pipeline.results import PosedBatch
        from engine.pose import PoseFit, check_landmarks, fit_poses

        n = batch.n
        fits = [PoseFit() for _ in range(n)]
        batch.poses = fits
        try:
            lmm = self._landmarks()
        except InputError as e:  # a model without landmark vertices: every face says so, the run goes on
            for f in fits:
                f.error = str(e)
            return
        landmarks = np.zeros((n, 68, 2))
        have = np.zeros(n, bool)
        given = getattr(batch, "landmarks_given", None)
        for e in batch.entries:
            if e.row < 0:
                continue
            lm = given[e.row] if given is not None else None if e.box is None else e.box.landmarks
            if lm is None:
                fits[e.row].error = ("pose: no landmarks for this face: " + (
                    "an already-cropped input (pose needs the 68 landmarks in the photo)" if e.box is None else
                    "the detector ran without dlib's 68-point landmark model (pip install face-recognition-models)"
                    if e.box.kind == "detector" else
                    "its box was given without landmarks (give them with the box: {\"landmarks\": [[x, y], ...]})"))
                continue
            try:
                landmarks[e.row] = check_landmarks(lm, f"{e.source} face {e.face_index}: landmarks")
            except InputError as err:
                fits[e.row].error = f"pose: {err}"
                continue
            have[e.row] = True
        if batch.finite is not None:
            have &= batch.finite
        rows = np.flatnonzero(have)
        if rows.size:
            inner, outer = lmm.points_from_alpha(batch.coeffs[rows, :self.decoder.shape_components])
            for r, fit in zip(rows, fit_poses(landmarks[rows], inner, outer, camera=camera,
                                              expr_basis=lmm.expr_basis)):
                fits[r] = fit
        expression = None
        if lmm.expr_basis is not None:
            expression = np.zeros((n, lmm.expression_components), np.float32)
            for r, f in enumerate(fits):
                if f.expression is not None:
                    expression[r] = f.expression
        batch.posed = PosedBatch(self.decoder, batch.coeffs, [f.pose for f in fits], expression, batch.decoded)

    def _results(self, batch: stages.Batch, keep_crops: bool) -> list[FaceResult]:
        split = self.decoder.shape_components
        out = []
        for e in batch.entries:
            if e.error is not None:
                out.append(FaceResult(e.source, -1, e.frame, error=e.error, provenance=dict(self.provenance)))
                continue
            if batch.finite is not None and not batch.finite[e.row]:
                # Same on CPU and GPU: this face fails, the batch's other faces and the run go on.
                where = f"{e.source}" + ("" if e.frame is None else f" frame {e.frame}") + f" face {e.face_index}"
                out.append(FaceResult(e.source, e.face_index, e.frame, e.box, error=(
                    f"{where}: the network produced non-finite coefficients (NaN or Inf); no mesh"),
                    provenance=dict(self.provenance)))
                continue
            # The pose fit's per-row results ride on the batch object (set by _fit_poses).
            poses = getattr(batch, "poses", None)
            fit = None if poses is None else poses[e.row]
            out.append(FaceResult(e.source, e.face_index, e.frame, e.box,
                                  crop=batch.crops[e.row] if keep_crops else None,
                                  coeffs=batch.coeffs[e.row], provenance=dict(self.provenance),
                                  _decoded=batch.decoded, _row=e.row, _split=split,
                                  pose=None if fit is None else fit.pose,
                                  pose_error=None if fit is None else fit.error,
                                  expression=None if fit is None else fit.expression,
                                  _posed=getattr(batch, "posed", None),
                                  _landmarks=None if getattr(batch, "landmarks_given", None) is None
                                  else batch.landmarks_given[e.row]))
        return out

    def pipeline(self, batches: Callable, *, decode: bool = True, workers: int | None = None,
                 pose=False) -> stages.Pipeline:
        """A Pipeline over batches made by `batches(pool, stop)` (see engine.pipeline.stages);
        iterate it for processed batches. Used by `reconstruct` and by the benchmark."""
        self._check_open()
        camera = pose_camera(pose)
        p = stages.Pipeline(batches, lambda b: self._run_batch(b, decode),
                            lambda b: self._finish_batch(b, decode, camera),
                            workers=self.workers if workers is None else workers, name="engine")
        self._pipelines.add(p)
        return p

    # -- public API ---------------------------------------------------------------------
    def reconstruct(self, inputs, *, boxes: Mapping | str | os.PathLike | None = None, cropped: bool = False,
                    decode: bool = True, keep_crops: bool = False, frame_step: int = 1,
                    max_frames: int | None = None, recursive: bool = False, pose=False) -> Iterator[FaceResult]:
        """Results for every face of every input, in input order then face order.

        inputs: a path, folder (its images and videos), glob, video file, camera index (int),
            numpy image, encoded bytes, (name, data) pair, or an iterable of these (consumed
            lazily; a list or tuple is listed first when boxes are given, see below).
        boxes: {name or path: [FaceBox or (x0, y0, x1, y1), ...]}, a BoxSidecar or a CSV/JSON
            sidecar path. Entries are matched to inputs by engine.box_match's rule: the same
            path (relative to the working directory or the sidecar's folder), the path below
            the folder given, or the end of one input's path alone; an ambiguous entry fails
            the inputs concerned, and one warning lists the entries that match no input.
            Inputs without an entry go to the detector (with detector=None they fail).
        recursive: folders contribute the images and videos of their sub-folders too.
            A box may carry the face's 68 landmarks (FaceBox(..., landmarks=[[x, y], ...]), or
            {"landmarks": [[x, y] x 68]} in place of a box: the box is then the landmarks' tight
            box, cropped as dlib's); they are what the pose is fitted to.
        cropped: inputs are already crops by the release's rule (resized whole).
        decode: False gives coefficients only (see `embed`).
        pose: False; True or "perspective" (the release's camera) or "weak_perspective" (3DDFA's):
            fit each face's pose (and expression) to its 68 landmarks (engine.pose); a face that
            cannot be fitted gets `pose_error`, and the run goes on.
        keep_crops: attach each face's network input to its result.
        frame_step, max_frames: of each video or camera stream, take every frame_step-th
            frame and at most max_frames of them (a camera runs until max_frames or until
            it stops delivering; Ctrl-C or closing the iterator stops it too). `frame` in
            the results counts every decoded frame, so it is the frame's index in the video.

        A failed input (unreadable, no face...) yields one result with `error` set and
        face_index -1, and the run goes on. A face whose coefficients come out non-finite
        (NaN/Inf) yields an error result with its face_index and box, and no coefficients. Closing the iterator (or Ctrl-C) stops the workers.
        """
        self._check_open()
        pose_camera(pose)  # checked now, not at the first batch
        span = VideoSpan(frame_step, max_frames)  # checks the arguments now, reads lazily
        listed = list_inputs(check_inputs(inputs), recursive=bool(recursive))
        boxes, listed = self._match(boxes, inputs, listed)
        detect = None if (self.detector is None or cropped) else self._detect
        name = self._detector_name() if detect is not None else ""
        ahead = self.batch_size + 2 * max(self.workers, 1)  # enough to fill the next batch, bounded

        prepare_item = prepare if self.device_input is None else self.device_input.prepare

        def prep(item):
            try:
                return prepare_item(item, boxes=boxes, cropped=cropped, detect=detect, detector_name=name)
            except EngineError:  # e.g. UnavailableError (no dlib): no input can run, so the run stops
                raise
            except Exception as e:  # anything else is this input's failure, not the run's end
                log.debug("%s: preparing this input failed", item.source, exc_info=True)
                where = item.source + ("" if item.frame is None else f" frame {item.frame}")
                return Prepared(item, [], None, error=f"{where}: unexpected error while reading, detecting or "
                                                      f"cropping this input: {type(e).__name__}: {e}")

        items = iter_items(listed, span, max_pixels=self.max_pixels)

        def batches(pool, stop):
            prepared = stages.ordered_map(pool, prep, items, ahead, stop)
            return stages.batches_from_prepared(prepared, self.batch_size, stop, keep_crops=keep_crops)

        pipe = self.pipeline(batches, decode=decode, pose=pose)
        return self._iterate(pipe, keep_crops)

    @staticmethod
    def _match(boxes, inputs, listed):
        """(MatchedBoxes or None, the listed inputs): boxes matched to the run's inputs. Inputs
        given as one input, a list or a tuple are listed now (folders expanded, nothing
        opened), so every input is known and the whole rule applies; a one-shot iterator stays
        lazy and each input is matched alone (engine.box_match)."""
        from engine.box_match import MatchedBoxes, match_boxes

        if boxes is None:
            return None, listed
        if isinstance(boxes, (str, os.PathLike)):
            from engine.detect import load_boxes

            boxes = load_boxes(boxes)
        if isinstance(boxes, MatchedBoxes):
            if boxes.complete:
                return boxes, listed  # matched by the caller over every input (the CLI)
            base, option, boxes = boxes.base, boxes.option, boxes.boxes
        else:
            base, option = None, None
        if not isinstance(boxes, Mapping):
            raise InputError(f"reconstruct: boxes: expected a mapping {{name: [FaceBox, ...]}} or a sidecar path, "
                             f"found {type(boxes).__name__}")
        if isinstance(inputs, (list, tuple, str, os.PathLike, np.ndarray, bytes, bytearray, memoryview, int)):
            listed = list(listed)
            named = [(i.name, i.root) for i in listed if i.kind != "failed"]
            return match_boxes(boxes, named, base=base, option=option), listed
        return match_boxes(boxes, None, base=base, option=option), listed

    def _iterate(self, pipe: stages.Pipeline, keep_crops: bool) -> Iterator[FaceResult]:
        for batch in pipe:
            yield from self._results(batch, keep_crops)

    def embed(self, inputs, **kwargs) -> Iterator[FaceResult]:
        """`reconstruct` with decode=False: coefficients (descriptors) only, no meshes."""
        if "decode" in kwargs:
            raise InputError("embed: decode: not accepted (embed never decodes; use reconstruct)")
        return self.reconstruct(inputs, decode=False, **kwargs)

    def reconstruct_crops(self, crops, *, decode: bool = True, source: str = "<crops>",
                          landmarks=None, pose=False) -> list[FaceResult]:
        """Results for network inputs float32 [B, 3, 224, 224] (BGR 0..255, not mean-subtracted),
        run at once in the caller's thread. `crop` of each result is a view of the caller's row.
        landmarks: optional [B, 68, 2] (image pixels of the photos the crops came from) for
        pose=True / "weak_perspective" (see `reconstruct`); without them each face's pose_error
        says so."""
        from engine.runners import check_crops

        self._check_open()
        check_crops(crops)
        if not isinstance(crops, np.ndarray):
            raise InputError(f"reconstruct_crops: crops: expected a numpy array, found {type(crops).__name__}")
        crops = np.ascontiguousarray(crops)
        camera = pose_camera(pose)
        given = None
        if landmarks is not None:
            from engine.pose import check_landmarks

            lm = np.asarray(landmarks)
            if lm.ndim != 3 or lm.shape[0] != crops.shape[0]:
                raise InputError(f"reconstruct_crops: landmarks: expected [{crops.shape[0]}, 68, 2] (one set per "
                                 f"crop), found shape {list(lm.shape)}")
            given = np.stack([check_landmarks(lm[i], f"reconstruct_crops: landmarks[{i}]")
                              for i in range(lm.shape[0])]).astype(np.float32)
        batch = stages.Batch(crops, n=crops.shape[0],
                             entries=[stages.Entry(source, None, i, None, i) for i in range(crops.shape[0])])
        batch.landmarks_given = given  # read by _fit_poses and _results (the crops have no boxes)
        batch = self._finish_batch(self._run_batch(batch, decode), decode, camera)
        return self._results(batch, keep_crops=True)

    # -- lifetime -----------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise InputError("Reconstructor: used after close()")

    def close(self) -> None:
        """Stop running pipelines and release the runner (when this object created it)."""
        if getattr(self, "_closed", False):
            return
        self._closed = True
        for p in list(getattr(self, "_pipelines", ())):
            p.close()
        if getattr(self, "_owns_runner", False):
            self.runner.close()

    def __enter__(self) -> "Reconstructor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        p = getattr(self, "provenance", {})
        return (f"<Reconstructor runner={p.get('runner')} ({p.get('device')}, {p.get('precision')}) "
                f"model={p.get('morphable_model')} batch_size={self.batch_size} workers={self.workers}"
                f"{' SYNTHETIC' if p and self.synthetic else ''}>")
