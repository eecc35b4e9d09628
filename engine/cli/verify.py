"""`verify` (two faces: same person?) and `evaluate` (accuracy on an LFW-style pairs file).

Both use one descriptor per image. Where an image holds several faces, --face picks one
(engine.descriptors.choose_face): `verify` takes the most confident ("best"), `evaluate`
the one nearest the image centre ("center": LFW images are centred on their subject); the
output counts the images where it had to choose. A folder stands for one person: its
descriptors are averaged into a template, as the paper pools the images of a template or
the frames of a video.

`evaluate` scores every pair of the file (the LFW protocol): a pair with an image without a
descriptor is a wrong decision in the accuracy unless --missing skip, is outside the ROC
AUC, and is counted and named. --fallback-box center describes the images where detection
finds no face from LFW's fixed face region (engine.descriptors.center_box).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from engine.cli import common as C
from engine.errors import InputError


def _described(args, paths: list[Path], report: C.Report, part: str, face: str, fallback: str | None):
    """engine.descriptors.ImageDescriptors of `paths` (keys: str(path)); failures reported."""
    from engine.descriptors import image_descriptors

    if not paths:
        from engine.descriptors import ImageDescriptors

        return ImageDescriptors({}, {}, {}, [], face)
    with C.make_reconstructor(args, decode=False) as rec:
        bar = C.progress(len(paths), "img", "embed", args.quiet)
        try:
            got = image_descriptors(rec, [str(p) for p in paths], face=face, fallback_box=fallback, part=part,
                                    boxes=C.load_boxes_arg(args), cropped=args.cropped,
                                    progress=lambda _: bar.update(1))
        finally:
            bar.close()
    for source, error in got.failures.items():
        report.fail(source, error)
    return got


def _stored(args, paths: list[Path], report: C.Report, face: str, fallback: str | None):
    """ImageDescriptors (all 198) through an `embed` output folder: images already embedded there
    are not run again (an interrupted LFW evaluation resumes), new ones are added to it. The
    folder keeps every face of an image; the face is chosen here, as without a folder."""
    import argparse
    import csv

    import numpy as np

    from engine.cli import embed
    from engine.descriptors import ImageDescriptors, fallback_descriptors, pick_faces
    from engine.images import image_size

    folder = Path(args.descriptors)
    if paths:
        sub = argparse.Namespace(**{**vars(args), "inputs": [str(p) for p in paths], "output": folder,
                                    "parquet": False, "retry_failed": False, "flush_every": 64, "recursive": False,
                                    "part": "all", "frame_step": 1, "max_frames": None})
        embed.run(sub)  # prints each failure (also those recorded by an earlier run)
    state = embed.read_progress(folder / embed.PROGRESS) if (folder / embed.PROGRESS).is_file() else {}
    by_key = {C.source_key(p): str(p) for p in paths}
    out = ImageDescriptors({}, {}, {}, [], face, state.get("identity"))
    for rec in state.get("inputs", {}).values():  # failures go into the exit code and --json
        key = C.source_key(rec["source"])
        if rec["status"] == "failed" and key in by_key:
            out.failures[by_key[key]] = rec["error"]
    faces: dict[str, list] = {}
    if (folder / "descriptors.npy").is_file():
        try:
            d = np.load(folder / "descriptors.npy", mmap_mode="r", allow_pickle=False)
            with open(folder / "metadata.csv", newline="", encoding="utf-8") as f:
                for row in csv.DictReader(f):
                    image = by_key.get(C.source_key(row["source"]))
                    if image is None:
                        continue
                    box = None if row["x0"] == "" else (*(float(row[c]) for c in ("x0", "y0", "x1", "y1")),
                                                        float(row["score"] or 1.0))
                    faces.setdefault(image, []).append((box, np.array(d[int(row["row"])])))
        except (OSError, ValueError, KeyError, IndexError, TypeError, csv.Error) as e:
            from engine.errors import ModelFileError

            raise ModelFileError(f"{folder}: its descriptors.npy and metadata.csv do not read back ({type(e).__name__}: "
                                 f"{e}); delete the folder's files to embed again") from None
    out.vectors, out.several, unpicked = pick_faces(faces, face, image_size)
    out.failures.update(unpicked)
    if fallback == "center" and not args.cropped:
        todo = [p for p in by_key.values() if p not in out.vectors]
        if todo:
            with C.make_reconstructor(args, decode=False) as rec:
                fallback_descriptors(rec, todo, "all", out)
    for image in out.vectors:
        out.failures.pop(image, None)
    for image, error in out.failures.items():
        if image not in {f["source"] for f in report.failures}:
            report.failures.append({"source": image, "error": error})
    return out


def _synthetic_note(provenance: dict | None, quiet: bool) -> bool:
    synthetic = bool(provenance and provenance.get("network_synthetic"))
    if synthetic and not quiet:
        C.say("engine3dmm: note: SYNTHETIC network weights: similarities are meaningless until you `convert` "
              "the official model")
    return synthetic


_RULE_WORDS = {"center": "the one nearest the image centre", "best": "the most confident",
               "largest": "the largest"}


def _face_note(got, quiet: bool) -> None:
    """Say where a face was chosen or a fallback box stood in: neither is silent."""
    if quiet:
        return
    if got.several:
        C.say(f"engine3dmm: note: {len(got.several)} image(s) held several faces; each is described by "
              f"{_RULE_WORDS[got.rule]} (--face {got.rule}): " + ", ".join(sorted(got.several)[:5])
              + (" ..." if len(got.several) > 5 else ""))
    if got.fallback:
        C.say(f"engine3dmm: note: {len(got.fallback)} image(s) had no face found and are described from LFW's "
              "centre face region (--fallback-box center): " + ", ".join(sorted(got.fallback)[:5])
              + (" ..." if len(got.fallback) > 5 else ""))


def run_verify(args) -> int:
    import numpy as np

    from engine.descriptors import average_descriptors, cosine_similarity

    C.apply_max_pixels(args.max_pixels)
    report = C.Report()
    sides = [C.expand_each([arg], report, recursive=args.recursive) for arg in (args.first, args.second)]
    got = _described(args, [p for side in sides for p in side], report, args.part, args.face, None)
    templates = []
    for arg, side in zip((args.first, args.second), sides):
        vecs = [got.vectors[str(p)] for p in side if str(p) in got.vectors]
        if not vecs:
            raise InputError(f"{arg}: no face descriptor could be computed (see the failures above)")
        templates.append((average_descriptors(np.stack(vecs)) if len(vecs) > 1 else vecs[0], len(vecs), len(side)))
    sim = float(cosine_similarity(templates[0][0], templates[1][0]))
    same = sim >= args.threshold
    synthetic = _synthetic_note(got.provenance, args.quiet)
    _face_note(got, args.quiet)
    if args.json:
        json.dump({"a": args.first, "b": args.second, "similarity": sim, "threshold": args.threshold,
                   "same": same, "images": [templates[0][1], templates[1][1]],
                   "images_given": [templates[0][2], templates[1][2]], "face": args.face,
                   "several_faces": sorted(got.several), "part": args.part,
                   "synthetic": synthetic, "failures": report.failures}, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        def side(t) -> str:  # images used, and those without a descriptor (reported above)
            return f"{t[1]} image(s)" + (f" of {t[2]}" if t[2] != t[1] else "")

        print(f"{'same' if same else 'different'}\t{sim:.6f}\t(threshold {args.threshold:g}; "
              f"A: {side(templates[0])}, B: {side(templates[1])})")
    return report.exit_code


def run_evaluate(args) -> int:
    from engine.descriptors import evaluate_pairs, lfw_image_name, parse_pairs

    C.apply_max_pixels(args.max_pixels)
    plist = parse_pairs(args.pairs)
    root = Path(args.root)
    if not root.is_dir():
        raise InputError(f"{root}: image root is not a folder")
    report = C.Report()
    names = sorted({lfw_image_name(p.name1, p.n1) for p in plist.pairs}
                   | {lfw_image_name(p.name2, p.n2) for p in plist.pairs})
    paths = []
    for name in names:
        p = root / name
        if p.is_file():
            paths.append(p)
        else:
            report.fail(p, f"{p}: no such image (named by {args.pairs})")
    fallback = None if args.fallback_box == "none" else args.fallback_box
    # All 198 coefficients are kept; evaluate_pairs takes the --part it is asked for.
    if args.descriptors:
        got = _stored(args, paths, report, args.face, fallback)
    else:
        got = _described(args, paths, report, "all", args.face, fallback)
    by_name = {n: got.vectors[str(root / n)] for n in names if str(root / n) in got.vectors}
    res = evaluate_pairs(plist, by_name, part=args.part, missing=args.missing)
    synthetic = _synthetic_note(got.provenance, args.quiet)
    _face_note(got, args.quiet)
    mean_thr = sum(res.thresholds) / len(res.thresholds)
    counted = (f"; the {res.n_missing} pair(s) without a descriptor count as wrong" if res.n_missing and
               res.missing == "wrong" else f"; over the {res.n_scored} scored pairs only (--missing skip)"
               if res.n_missing else "")
    print(f"accuracy {100 * res.accuracy:.2f}% +- {100 * res.standard_error:.2f}% (standard error over "
          f"{len(res.fold_accuracies)} folds{counted})\n"
          f"ROC AUC  {res.auc:.4f} (over the {res.n_scored} scored pairs)\n"
          f"pairs    {res.n_pairs} in the file: {res.n_scored} scored, {res.n_missing} without a descriptor"
          + (f" (images: {', '.join(res.missing_images[:5])}{' ...' if len(res.missing_images) > 5 else ''})"
             if res.missing_images else "")
          + f"\nfaces    {len(got.several)} image(s) with several faces (took {_RULE_WORDS[args.face]}), "
          f"{len(got.fallback)} described from the centre box (--fallback-box {args.fallback_box})"
          f"\nthreshold {mean_thr:.4f} (mean of the per-fold thresholds; use it with `verify --threshold`)")
    if args.json:
        C.write_json(Path(args.json), {
            "pairs_file": args.pairs, "root": str(root), "part": args.part,
            "accuracy": res.accuracy, "accuracy_std": res.accuracy_std, "standard_error": res.standard_error,
            "fold_accuracies": list(res.fold_accuracies), "thresholds": list(res.thresholds), "threshold": mean_thr,
            "auc": res.auc, "n_pairs": res.n_pairs, "n_scored": res.n_scored, "n_missing": res.n_missing,
            "missing": res.missing, "n_skipped": res.n_skipped, "missing_images": list(res.missing_images),
            "face": args.face, "n_several_faces": len(got.several), "several_faces": sorted(got.several),
            "fallback_box": args.fallback_box, "n_fallback": len(got.fallback), "fallback_images": sorted(got.fallback),
            "synthetic": synthetic, "failures": report.failures})
    return report.exit_code
