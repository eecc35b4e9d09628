"""`reconstruct`: images, folders, globs or videos -> meshes + coefficients per face.

Per face: STEM_faceK.ply (or .obj) and STEM_faceK.npy (float32 [198]: alpha then beta);
video and camera frames are STEM_fFFFFFF_faceK (a camera's stem is cameraINDEX). One summary.json per run lists the failures
(which input, why), the provenance (runner, synthetic flags) and, for small runs, every
face with its coefficients. Every file is written atomically (temporary name, then
rename), so a failure or Ctrl-C never leaves a partial file.
"""
from __future__ import annotations

from pathlib import Path

from engine.cli import common as C
from engine.errors import EngineError

MESH_SUFFIX = {"ply": ".ply", "ply-ascii": ".ply", "obj": ".obj"}


def face_stem(stems: dict[str, str], r) -> str:
    """Output stem of result `r`: the input's stem (disambiguated), frame, face index."""
    stem = stems.get(C.source_key(r.source)) or Path(str(r.source)).stem or "input"
    frame = "" if r.frame is None else f"_f{r.frame:06d}"
    return f"{stem}{frame}_face{r.face_index}"


def _has_video(paths) -> bool:
    from engine.images import is_video_path

    return any(is_video_path(p) for p in paths)


class FaceList:
    """The faces summary.json lists: only the first `limit` + 1 are kept (one more tells
    that the limit was passed), the rest are only counted, so a long run's memory stays flat."""

    def __init__(self, limit: int):
        self.limit = max(int(limit), 0)
        self.items: list[dict] = []
        self.count = 0

    def add(self, face: dict) -> None:
        self.count += 1
        if len(self.items) <= self.limit:
            self.items.append(face)

    def __len__(self) -> int:
        return self.count

    def summary(self) -> list[dict] | None:
        return self.items if self.count <= self.limit else None


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


def run(args) -> int:
    out = C.prepare_output_dir(args.output)
    C.apply_max_pixels(args.max_pixels)
    report = C.Report()
    paths = C.expand_each(args.inputs, report, recursive=args.recursive)
    boxes = C.load_boxes_arg(args)
    camera = args.camera
    n_inputs = len(paths) + (camera is not None)
    summary = {"command": "reconstruct", "output": str(out), "inputs": n_inputs, "format": args.format,
               "provenance": None, "faces": [], "failures": report.failures, "interrupted": False}
    if not n_inputs:
        _write_summary(out, summary, report)
        return 1
    stems = C.output_stems(paths)
    sources: list = [str(p) for p in paths]
    if camera is not None:  # results name it "camera N" (see engine.pipeline.inputs)
        stems[C.source_key(f"camera {camera}")] = f"camera{camera}"
        sources.append(camera)
    suffix = MESH_SUFFIX[args.format]
    faces = FaceList(args.summary_limit)
    with C.make_reconstructor(args, decode=not args.no_mesh) as rec:
        streams = camera is not None or _has_video(paths)
        bar = C.progress(None if streams else len(paths), "img", "reconstruct", args.quiet)
        results = rec.reconstruct(sources, boxes=boxes, cropped=args.cropped, decode=not args.no_mesh,
                                  frame_step=args.frame_step, max_frames=args.max_frames)
        last = None
        try:
            for r in results:
                item = (r.source, r.frame)
                if item != last:
                    bar.update(1)
                    last = item
                if r.error is not None:
                    report.fail(r.source, r.error, frame=r.frame)
                    continue
                if summary["provenance"] is None:
                    summary["provenance"] = used_provenance(r.provenance, decoded=not args.no_mesh)
                stem = face_stem(stems, r)
                files = {"coeffs": f"{stem}.npy"}
                npy_written = False
                try:
                    # Coefficients first: a mesh on disk always has its .npy beside it.
                    C.save_npy(out / files["coeffs"], r.coeffs)
                    npy_written = True
                    if not args.no_mesh:
                        files["mesh"] = f"{stem}{suffix}"
                        r.write_mesh(out / files["mesh"], fmt=args.format)
                except (EngineError, OSError) as e:  # e.g. disk full: this face fails, the run goes on
                    if npy_written:  # a failed face leaves no file behind (the mesh write is atomic)
                        _remove(out / files["coeffs"])
                    report.fail(r.source, f"{out}: cannot write {stem}: {getattr(e, 'strerror', None) or e}",
                                frame=r.frame, face_index=r.face_index)
                    continue
                except BaseException:  # Ctrl-C between the two writes: no orphan .npy either
                    if npy_written and not (out / files.get("mesh", files["coeffs"])).exists():
                        _remove(out / files["coeffs"])
                    raise
                # A copy: a view would keep the whole batch's coefficient array alive.
                faces.add({"source": str(r.source), "frame": r.frame, "face_index": r.face_index,
                           "box": C.box_list(r.box), "score": C.box_score(r.box), "files": files,
                           "coeffs": r.coeffs.copy()})
        except KeyboardInterrupt:
            summary["interrupted"] = True
            raise
        finally:
            results.close()  # stop the pipeline's threads now, not at garbage collection
            bar.close()
            summary["faces_written"] = len(faces)
            summary["faces"] = faces.summary()
            if summary["faces"] is None:
                summary["faces"] = None
                summary["faces_note"] = f"{len(faces)} faces: more than --summary-limit {args.summary_limit}, not listed"
            _write_summary(out, summary, report)
    if not args.quiet:
        failed = len({f["source"] for f in report.failures})
        C.say(f"engine3dmm: reconstruct: {len(faces)} face(s) from {n_inputs} input(s) written to {out}"
              + (f"; {failed} input(s) failed (listed above and in {out / 'summary.json'})" if failed else ""))
        # Only what was used: with --no-mesh the morphable model made none of the results.
        prov = summary["provenance"] or {}
        synthetic = [what for key, what in (("network_synthetic", "network weights"),
                                            ("morphable_synthetic", "morphable model")) if prov.get(key)]
        if synthetic:
            C.say(f"engine3dmm: note: results come from SYNTHETIC {' and '.join(synthetic)} "
                  "(see `engine3dmm info`)")
    return report.exit_code


def _write_summary(out: Path, summary: dict, report: C.Report) -> None:
    try:
        C.write_json(out / "summary.json", summary)
    except (EngineError, OSError) as e:  # the meshes are fine; say so and fail the exit code
        report.fail(out / "summary.json", f"cannot write the run summary: {getattr(e, 'strerror', None) or e}")
