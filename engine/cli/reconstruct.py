"""`reconstruct`: images, folders, globs or videos -> meshes + coefficients per face.

Per face: NAME.ply (or .obj) and NAME.npy (float32 [198]: alpha then beta), where NAME is
STEM_faceK, or STEM_fFFFFFF_faceK for video and camera frames (a camera's stem is
cameraINDEX). With --landmarks also NAME.pts (the face's 68 landmarks, the release's format);
with --pose its head pose (and expression) in summary.json; with --posed also posed/NAME.ply,
the mesh in the photo's pixels (a folder of its own, so its names never meet the others'). With --release-layout, what the release's demo wrote instead: NAME.ply in its
ASCII layout and NAME.ply.alpha / NAME.ply.beta (99 values each, one per line), where face 0
of a photo is plain STEM. The stems come from engine.pipeline.naming, which keeps every face's
files apart whatever the input names (same names in different folders, names that look like
our suffixes, case-only differences). One summary.json per run lists the failures (which
input, why), the provenance (runner, synthetic flags) and every face with its files (and, for
small runs, its coefficients). Every file is written atomically (temporary name, then
rename), so a failure, Ctrl-C or SIGTERM never leaves a partial file; an interrupted run's
summary.json says so ("interrupted": true, "signal"). A run does not resume: run again, it
redoes every input (`embed` resumes). An output folder that holds an earlier run's summary.json
is said to at the start (with how many files it holds); that summary is kept as
summary.previous.json, and summary.json describes this run only.

What needs no model is checked before the output folder is created (the inputs listed, the
--boxes sidecar read and matched, --model a model file): a usage mistake leaves nothing behind.
The release's layout has no room for a SYNTHETIC mark (its PLY header is fixed), so a run
with synthetic models writes SYNTHETIC.txt beside its files (SYNTHETIC_NOTE) and says so.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from engine.cli import common as C
from engine.crop import crop_rule
from engine.errors import EngineError, InputError

MESH_SUFFIX = {"ply": ".ply", "ply-ascii": ".ply", "obj": ".obj"}
SYNTHETIC_NOTE = "SYNTHETIC.txt"
SUMMARY = "summary.json"
PREVIOUS_SUMMARY = "summary.previous.json"  # an earlier run's summary.json, kept when a run reuses its folder
POSED_DIR = "posed"
# Per-face arrays summary.json drops past --summary-limit faces (the files keep them).
_BULKY = ("coeffs", "landmarks")


def _has_video(paths) -> bool:
    from engine.images import is_video_path

    return any(is_video_path(p) for p in paths)


class FaceList:
    """Every face summary.json lists, spooled to an anonymous temporary file as it comes, so a
    long run's memory stays flat. Coefficients are kept only while the run has at most `limit`
    faces: past that, summary.json lists the faces and their files without them."""

    def __init__(self, limit: int):
        self.limit = max(int(limit), 0)
        self.count = 0
        self._spool = tempfile.TemporaryFile("w+", encoding="utf-8")

    def add(self, face: dict) -> None:
        if self.count >= self.limit:
            face = {k: v for k, v in face.items() if k not in _BULKY}
        try:
            self._spool.write(json.dumps(face, default=C.json_default, allow_nan=False) + "\n")
        except OSError as e:  # the temporary folder is full: the run cannot record its faces
            raise InputError(f"{tempfile.gettempdir()}: cannot keep the run summary's face list: "
                             f"{e.strerror or e}") from None
        self.count += 1

    def __len__(self) -> int:
        return self.count

    @property
    def with_coeffs(self) -> bool:
        return self.count <= self.limit

    def __iter__(self):
        self._spool.flush()
        self._spool.seek(0)
        for line in self._spool:
            face = json.loads(line)
            if not self.with_coeffs:
                for key in _BULKY:
                    face.pop(key, None)
            yield face
        self._spool.seek(0, 2)  # back to the end: add() appends

    def close(self) -> None:
        self._spool.close()


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def used_provenance(provenance: dict, decoded: bool) -> dict:
    """The run's provenance, saying only what was used: without meshes (--no-mesh) the
    morphable model never touched the results."""
    p = dict(provenance)
    if not decoded:
        p["morphable_model"] = None
        p["morphable_synthetic"] = None
    return p


def _face_files(names, r, args) -> list[tuple[str, str, object]]:
    """(role, file name, writer) of each file of face result `r`, coefficients first: a mesh on
    disk always has its coefficients beside it."""
    from engine.descriptors import descriptor
    from engine.mesh_io import write_release_coefficients

    name = names.name(r.source, r.frame, r.face_index)
    if args.release_layout:
        files = [("alpha", f"{name}.ply.alpha", lambda p: write_release_coefficients(p, descriptor(r.coeffs, "alpha"))),
                 ("beta", f"{name}.ply.beta", lambda p: write_release_coefficients(p, descriptor(r.coeffs, "beta")))]
        if not args.no_mesh:
            files.append(("mesh", f"{name}.ply", lambda p: r.write_mesh(p, fmt="ply-release")))
        return files + _pose_files(name, r, args, "ply")
    fmt = args.format or "ply"
    files = [("coeffs", f"{name}.npy", lambda p: C.save_npy(p, r.coeffs))]
    if not args.no_mesh:
        files.append(("mesh", f"{name}{MESH_SUFFIX[fmt]}", lambda p: r.write_mesh(p, fmt=fmt)))
    return files + _pose_files(name, r, args, fmt)


def _pose_files(name: str, r, args, fmt: str) -> list:
    """--landmarks: NAME.pts; --posed: posed/NAME.ply (the run's mesh format). Only for a face that
    has them (its landmarks, its pose): summary.json says why one has none."""
    from engine.pose import write_pts

    files = []
    if getattr(args, "landmarks", False) and r.landmarks is not None and np.isfinite(r.landmarks).all():
        files.append(("landmarks", f"{name}.pts", lambda p: write_pts(p, r.landmarks)))
    if getattr(args, "posed", False) and r.pose is not None:
        posed_fmt = "ply-release" if args.release_layout else fmt
        files.append(("posed", f"{POSED_DIR}/{name}{MESH_SUFFIX.get(fmt, '.ply')}",
                      lambda p: r.write_posed_mesh(p, fmt=posed_fmt)))
    return files


def _write_face(out: Path, files) -> None:
    """Write every file of one face, or none: a failure (or Ctrl-C) removes those already written."""
    done = []
    try:
        for _, name, write in files:
            if "/" in name:  # posed/NAME.ply: its folder, made on the first face that has one
                (out / name).parent.mkdir(exist_ok=True)
            write(out / name)  # atomic: never a partial file under this name
            done.append(name)
    except BaseException:
        for name in done:
            _remove(out / name)
        raise


def run(args) -> int:
    from engine.pipeline.naming import OutputNames

    decode = not args.no_mesh
    C.apply_max_pixels(args.max_pixels)
    report = C.Report()
    roots: dict = {}
    paths = C.expand_each(args.inputs, report, recursive=args.recursive, roots=roots)
    # Checked before the output folder exists: a mistake here leaves nothing behind.
    boxes = C.load_boxes_arg(args, [(str(p), roots.get(str(p))) for p in paths])
    C.check_model_arg(args, decode=decode)
    out = C.prepare_output_dir(args.output)
    earlier = _keep_earlier_summary(out, args.quiet)
    camera = args.camera
    n_inputs = len(paths) + (camera is not None)
    layout = "release" if args.release_layout else "engine"
    summary = {"command": "reconstruct", "output": str(out), "inputs": n_inputs,
               "format": "ply-release" if args.release_layout else (args.format or "ply"), "layout": layout,
               "provenance": None, "faces": [], "failures": report.failures, "interrupted": False, "signal": None}
    if earlier is not None:
        summary["earlier_outputs"] = earlier
    if not n_inputs:
        _write_summary(out, summary, report)
        return 1
    if pose_camera(args):
        summary["pose"] = None  # filled by the first face: the camera and whether expressions are fitted
    sources: list = [str(p) for p in paths] + ([camera] if camera is not None else [])
    names = OutputNames(sources, layout=layout)  # results name the camera "camera N", as naming does
    faces = FaceList(args.summary_limit)
    try:
        with C.make_reconstructor(args, decode=decode) as rec:
            _run(args, rec, out, sources, names, boxes, summary, faces, report)
    finally:
        faces.close()
    if not args.quiet:
        failed = len({f["source"] for f in report.failures})
        C.say(f"engine3dmm: reconstruct: {len(faces)} face(s) from {n_inputs} input(s) written to {out}"
              + (f"; {failed} input(s) failed (listed above and in {out / 'summary.json'})" if failed else ""))
        # Only what was used: with --no-mesh the morphable model made none of the results.
        synthetic = _synthetic_parts(summary["provenance"])
        if synthetic:
            C.say(f"engine3dmm: note: results come from SYNTHETIC {' and '.join(synthetic)} "
                  "(see `engine3dmm info`)"
                  + (f"; {SYNTHETIC_NOTE} in {out} says so beside the release-layout files, which have no room "
                     "for the mark" if summary.get("synthetic_note") else ""))
    return report.exit_code


def _synthetic_parts(provenance: dict | None) -> list[str]:
    prov = provenance or {}
    return [what for key, what in (("network_synthetic", "network weights"),
                                   ("morphable_synthetic", "morphable model")) if prov.get(key)]


def _note_synthetic(out: Path, summary: dict) -> None:
    """--release-layout: the release's PLY header and coefficient files have no room for the
    SYNTHETIC mark our own files carry, so a one-line SYNTHETIC.txt beside them says it, for a
    user who only looks at the folder (written before the first face's files). A folder that
    holds one from an earlier run while this run's models are official is named in a warning:
    its other files may be synthetic, so the note is left as it is."""
    import logging

    from engine.fileio import atomic_write

    parts = _synthetic_parts(summary["provenance"])
    note = out / SYNTHETIC_NOTE
    if not parts:
        if note.exists():
            logging.getLogger("engine.cli").warning(
                f"{note} is from an earlier run with SYNTHETIC models: this run's results are not synthetic, "
                "but the folder holds files of both; use a fresh output folder to keep them apart")
        return
    with atomic_write(note, "w") as f:
        f.write(f"SYNTHETIC: the results in this folder come from the built-in SYNTHETIC {' and '.join(parts)} "
                "(placeholders, not the official 3DMM-CNN); convert the official files (`engine3dmm fetch`, "
                "`engine3dmm convert`) for real results; see `engine3dmm info`\n")
    summary["synthetic_note"] = SYNTHETIC_NOTE


def _run(args, rec, out: Path, sources: list, names, boxes, summary: dict, faces: FaceList,
         report: C.Report) -> None:
    paths = [s for s in sources if not isinstance(s, int)]
    streams = args.camera is not None or _has_video(paths)
    bar = C.progress(None if streams else len(paths), "img", "reconstruct", args.quiet)
    pictures = None
    if getattr(args, "render", False):
        from engine.cli.render import Pictures

        pictures = Pictures(out, names, report, frame_step=args.frame_step, max_frames=args.max_frames,
                            cameras=() if args.camera is None else (args.camera,))
    results = rec.reconstruct(sources, boxes=boxes, cropped=args.cropped, decode=not args.no_mesh,
                              frame_step=args.frame_step, max_frames=args.max_frames, **_pose_arg(args))
    last = None
    try:
        for r in results:
            item = (r.source, r.frame)
            if item != last:
                bar.update(1)
                if last is not None and r.source != last[0]:
                    report.flush()  # the last input's failures, each message said once
                last = item
            if r.error is not None:
                report.fail(r.source, r.error, frame=r.frame)
                continue
            if pictures is not None:
                pictures.add(r)  # drawn when the next input starts
            if summary["provenance"] is None:
                summary["provenance"] = used_provenance(r.provenance, decoded=not args.no_mesh or bool(pose_camera(args)))
                if pose_camera(args):
                    summary["pose"] = _pose_summary(args, r)
                if args.release_layout:
                    try:
                        _note_synthetic(out, summary)
                    except (EngineError, OSError) as e:  # the faces can still be written; the exit code says it
                        report.fail(out / SYNTHETIC_NOTE, f"cannot write the SYNTHETIC note: "
                                                          f"{getattr(e, 'strerror', None) or e}")
            files = _face_files(names, r, args)
            try:
                _write_face(out, files)
            except (EngineError, OSError) as e:  # e.g. disk full: this face fails, the run goes on
                report.fail(r.source, f"{out}: cannot write {files[0][1]}: {getattr(e, 'strerror', None) or e}",
                            frame=r.frame, face_index=r.face_index)
                continue
            face = {"source": str(r.source), "frame": r.frame, "face_index": r.face_index,
                    "box": C.box_list(r.box), "score": C.box_score(r.box),
                    "crop_rule": crop_rule(r.box), "files": {role: name for role, name, _ in files},
                    "coeffs": r.coeffs, "landmarks": _json_points(r.landmarks)}
            if pose_camera(args):
                face.update(pose=None if r.pose is None else r.pose.to_dict(), pose_error=r.pose_error,
                            expression=None if r.expression is None else [float(v) for v in r.expression])
                if r.pose_error is not None and _pose_asked(args):  # the mesh is written; the pose is not
                    report.fail(r.source, r.pose_error, frame=r.frame, face_index=r.face_index)
            faces.add(face)
        if pictures is not None:
            pictures.flush()  # the last input's picture
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM (common.Interrupted): main says it and exits 130 / 143
        summary["interrupted"], summary["signal"] = True, C.interruption(e)[0]
        if not args.quiet:
            report.flush()
            C.say(f"engine3dmm: reconstruct: interrupted ({C.interruption(e)[1]}): {len(faces)} face(s) written to "
                  f"{out}, listed in its {SUMMARY}; reconstruct does not resume: running the same command again "
                  "redoes every input (`embed` resumes)")
        raise
    except Exception as e:  # a fatal error stops the run: its summary must not read as a clean run's
        summary["stopped_by"] = str(e) if isinstance(e, EngineError) else f"{type(e).__name__}: {e}"
        raise
    finally:
        results.close()  # stop the pipeline's threads now, not at garbage collection
        bar.close()
        report.flush()
        if pictures is not None:
            pictures.close()
            summary["renders"] = pictures.records
        summary["faces_written"] = len(faces)
        if not faces.with_coeffs:
            summary["faces_note"] = (f"{len(faces)} faces: more than --summary-limit {args.summary_limit}, "
                                     "listed without their coefficients and landmarks")
        summary["faces"] = faces
        _write_summary(out, summary, report)


def _pose_asked(args) -> bool:
    """--pose, --pose-camera or --posed: a face without a pose is a failure the exit code reports (with --render
    alone the pose only places the picture's meshes)."""
    return bool(getattr(args, "pose", False) or getattr(args, "posed", False) or getattr(args, "pose_camera", None))


def pose_camera(args) -> str | None:
    """The pose fit's camera model, or None when no pose is wanted: --pose, --posed, and --render
    (which draws each face's posed mesh) fit poses."""
    if not (_pose_asked(args) or getattr(args, "render", False)):
        return None
    return (getattr(args, "pose_camera", None) or "perspective").replace("-", "_")


def _pose_arg(args) -> dict:
    """rec.reconstruct's `pose` argument, given only when poses are wanted."""
    camera = pose_camera(args)
    return {"pose": camera} if camera else {}


def _pose_summary(args, r) -> dict:
    """summary.json's "pose": the camera, the angle convention, and whether expressions are fitted."""
    from engine.pose import angles

    model = r.provenance.get("morphable_model")
    synthetic = " (SYNTHETIC)" if r.provenance.get("morphable_synthetic") else ""
    fitted = r.provenance.get("expression_basis")
    return {"camera": pose_camera(args),
            "angles": angles.CONVENTION,
            "expression": (f"fitted with the pose: the expression basis of the morphable model {model!r}{synthetic}"
                           if fitted else
                           f"not fitted: the morphable model {model!r} has no expression basis (pose only; "
                           "`engine3dmm convert --expression Model_Expression.mat` adds one)")}


def _json_points(a):
    """[[x, y], ...] of landmarks for JSON (null for a non-finite value: JSON has no NaN), or None."""
    if a is None:
        return None
    return [[float(v) if np.isfinite(v) else None for v in p] for p in np.asarray(a, np.float64)]


def _keep_earlier_summary(out: Path, quiet: bool) -> dict | None:
    """A folder with an earlier run's summary.json: its files stay, but this run's summary.json
    will list this run's faces only, so the earlier one is copied to summary.previous.json (the
    map of the earlier files; summary.json stays as it was until this run replaces it) and a
    warning says how many files the folder holds. None for a folder without one."""
    import logging
    import os
    import shutil

    from engine.fileio import atomic_write

    earlier = out / SUMMARY
    if not earlier.is_file():
        return None
    n = sum(len([f for f in files if f not in (SUMMARY, PREVIOUS_SUMMARY)]) for _, _, files in os.walk(out))
    kept = None
    try:
        with open(earlier, "rb") as src, atomic_write(out / PREVIOUS_SUMMARY) as dst:
            shutil.copyfileobj(src, dst)
        kept = PREVIOUS_SUMMARY
        where = f"it is kept as {out / PREVIOUS_SUMMARY}"
    except (EngineError, OSError) as e:
        where = f"it could not be kept as {PREVIOUS_SUMMARY} ({getattr(e, 'strerror', None) or e})"
    if not quiet:
        logging.getLogger("engine.cli").warning(
            f"{out} holds an earlier run's outputs ({n} file(s) besides its {SUMMARY}); they stay, and this run's "
            f"{SUMMARY} will describe this run only; {where}")
    return {"files": n, "summary": kept}


def _write_summary(out: Path, summary: dict, report: C.Report) -> None:
    try:
        C.write_json(out / SUMMARY, summary)
    except (EngineError, OSError) as e:  # the meshes are fine; say so and fail the exit code
        report.fail(out / "summary.json", f"cannot write the run summary: {getattr(e, 'strerror', None) or e}")
