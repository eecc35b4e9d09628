"""`verify` (two faces: same person?) and `evaluate` (accuracy on an LFW-style pairs file).

Both use one descriptor per image. Where an image holds several faces, --face picks one
(engine.descriptors.choose_face): `verify` takes the most confident ("best"), `evaluate`
the one nearest the image centre ("center": LFW images are centred on their subject); the
output names each image where it had to choose, with its number of faces and the face used.
Each file is described once however often it is given. A folder stands for one person: its
descriptors are averaged into a template, as the paper pools the images of a template or
the frames of a video. `verify --json` prints one JSON object on stdout, also when it fails
(the error in it).

`evaluate` scores every pair of the file (the LFW protocol): a pair with an image without a
descriptor is a wrong decision in the accuracy unless --missing skip, is outside the ROC
AUC, and is counted and named. A number that cannot be measured (the ROC AUC when missing
pairs leave one class unscored, anything when no pair is scored) is reported as undefined
with the reason (null in the JSON), and a threshold chosen on the very pairs it is tested on
(a single-fold file) is said to be. The threshold it recommends is always a cosine in
[-1, 1] that `verify --threshold` takes. --fallback-box center describes the images where
detection finds no face from LFW's fixed face region (engine.descriptors.center_box).
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
                                    "part": "all", "frame_step": 1, "max_frames": None,
                                    "output_flag": "--descriptors"})
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
    out.vectors, out.several, unpicked, out.chosen = pick_faces(faces, face, image_size)
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


def _face_choices(got) -> list[dict]:
    """Each image with several faces: how many, which one describes it (index in detector order,
    box, score), for the note and the JSON."""
    from engine.images import is_video_path

    out = []
    for image in sorted(got.several):
        k, box = got.chosen.get(image, (None, None))
        score = getattr(box, "score", None) if hasattr(box, "as_tuple") else (
            float(box[4]) if box is not None and len(box) > 4 else None)
        out.append({"image": image, "faces": got.several[image], "used": k, "box": C.box_list(box),
                    "score": None if score is None else float(score), "video": is_video_path(image)})
    return out


def _face_note(got, quiet: bool) -> None:
    """Say where a face was chosen or a fallback box stood in: neither is silent. Each image with
    several faces is named, with how many and which one describes it."""
    if quiet:
        return
    choices = _face_choices(got)
    for c in choices[:5]:
        where = "" if c["box"] is None else " at ({:.0f}, {:.0f})-({:.0f}, {:.0f})".format(*c["box"])
        score = "" if c["score"] is None else f", score {c['score']:.2f}"
        found = "faces found over its frames" if c["video"] else "faces found"
        used = "" if c["used"] is None else f"; described by face {c['used']}{where}{score}, "
        C.say(f"engine3dmm: note: {c['image']}: {c['faces']} {found}{used}{_RULE_WORDS[got.rule]} "
              f"(--face {got.rule})")
    if len(choices) > 5:
        C.say(f"engine3dmm: note: {len(choices) - 5} more image(s) held several faces, each described by "
              f"{_RULE_WORDS[got.rule]} (--face {got.rule})")
    if got.fallback:
        C.say(f"engine3dmm: note: {len(got.fallback)} image(s) had no face found and are described from LFW's "
              "centre face region (--fallback-box center): " + ", ".join(sorted(got.fallback)[:5])
              + (" ..." if len(got.fallback) > 5 else ""))


def run_verify(args) -> int:
    """With --json, stdout always gets one JSON object: the answer, or (similarity and same
    null) the error that stopped the run; the error still goes to stderr and the exit code."""
    result = {"a": args.first, "b": args.second, "similarity": None, "threshold": args.threshold, "same": None,
              "images": None, "images_given": None, "face": args.face, "several_faces": [], "face_choices": [],
              "part": args.part, "synthetic": None, "failures": [], "error": None}
    report = C.Report()
    try:
        _verify(args, report, result)
    except BaseException as e:
        if args.json and not isinstance(e, (SystemExit, GeneratorExit)):
            from engine.errors import EngineError

            e = C.as_interruption(e)  # a signal that came out as another error is still the signal
            result["error"] = (str(e) if isinstance(e, EngineError) else f"interrupted ({C.interruption(e)[1]})"
                               if isinstance(e, KeyboardInterrupt) else f"{type(e).__name__}: {e}")
            result["failures"] = report.failures
            _print_json(result)
        raise
    if args.json:
        _print_json(result)
    return report.exit_code


def _print_json(result: dict) -> None:
    json.dump(result, sys.stdout, indent=1, allow_nan=False)
    sys.stdout.write("\n")
    sys.stdout.flush()


def _verify(args, report: C.Report, result: dict) -> None:
    import numpy as np

    from engine.descriptors import average_descriptors, cosine_similarity

    C.apply_max_pixels(args.max_pixels)
    sides = [C.expand_each([arg], report, recursive=args.recursive) for arg in (args.first, args.second)]
    # Each file is described once, however often it is given (verify a.jpg a.jpg): under the
    # name it first had.
    first_name = {}
    for p in (p for side in sides for p in side):
        first_name.setdefault(C.source_key(p), str(p))
    got = _described(args, [Path(p) for p in first_name.values()], report, args.part, args.face, None)
    result["failures"] = report.failures
    templates = []
    for arg, side in zip((args.first, args.second), sides):
        names = [first_name[C.source_key(p)] for p in side]
        vecs = [got.vectors[n] for n in names if n in got.vectors]
        if not vecs:
            raise InputError(f"{arg}: no face descriptor could be computed (see the failures above)")
        templates.append((average_descriptors(np.stack(vecs)) if len(vecs) > 1 else vecs[0], len(vecs), len(side)))
    sim = float(cosine_similarity(templates[0][0], templates[1][0]))
    same = sim >= args.threshold
    synthetic = _synthetic_note(got.provenance, args.quiet)
    _face_note(got, args.quiet)
    result.update({"similarity": sim, "same": same, "images": [templates[0][1], templates[1][1]],
                   "images_given": [templates[0][2], templates[1][2]], "several_faces": sorted(got.several),
                   "face_choices": _face_choices(got), "synthetic": synthetic})
    if not args.json:
        def side(t) -> str:  # images used, and those without a descriptor (reported above)
            return f"{t[1]} image(s)" + (f" of {t[2]}" if t[2] != t[1] else "")

        print(f"{'same' if same else 'different'}\t{sim:.6f}\t(threshold {args.threshold:g}; "
              f"A: {side(templates[0])}, B: {side(templates[1])})")


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
    fit_note = _fit_on_test_note(res)
    print("\n".join(_evaluation_lines(res, got, args, fit_note)))
    if args.json:
        C.write_json(Path(args.json), {
            "pairs_file": args.pairs, "root": str(root), "part": args.part,
            "accuracy": res.accuracy, "accuracy_undefined": res.accuracy_undefined,
            "accuracy_std": res.accuracy_std, "standard_error": res.standard_error,
            "fold_accuracies": list(res.fold_accuracies), "thresholds": list(res.thresholds),
            "threshold": res.threshold, "threshold_undefined": res.threshold_undefined,
            "threshold_fit_on_test_folds": list(res.threshold_fit_on_test), "threshold_note": fit_note,
            "auc": res.auc, "auc_undefined": res.auc_undefined,
            "n_pairs": res.n_pairs, "n_scored": res.n_scored, "n_missing": res.n_missing,
            "missing": res.missing, "n_skipped": res.n_skipped, "missing_images": list(res.missing_images),
            "face": args.face, "n_several_faces": len(got.several), "several_faces": sorted(got.several),
            "face_choices": _face_choices(got),
            "fallback_box": args.fallback_box, "n_fallback": len(got.fallback), "fallback_images": sorted(got.fallback),
            "synthetic": synthetic, "failures": report.failures})
    return report.exit_code


def _fit_on_test_note(res) -> str | None:
    """Say it when a threshold was chosen on the very pairs it is tested on: that accuracy is
    optimistic (the protocol chooses each fold's threshold on the other folds)."""
    own = res.threshold_fit_on_test
    if not own:
        return None
    if len(res.fold_accuracies) == 1:
        return ("the pairs file has one fold, so the threshold was chosen on the same pairs the accuracy is measured "
                "on: the accuracy is optimistic, not a held-out measurement (use a file with 2 or more folds)")
    return (f"fold(s) {', '.join(map(str, own))}: no scored pair in the other folds, so the threshold was chosen on "
            "the fold's own pairs: its accuracy is optimistic, not a held-out measurement")


def _evaluation_lines(res, got, args, fit_note: str | None) -> list[str]:
    """The report `evaluate` prints. A number that cannot be measured says so and why."""
    undefined_folds = [str(i) for i, a in enumerate(res.fold_accuracies) if a is None]
    if res.accuracy is None:
        acc = f"accuracy undefined ({res.accuracy_undefined})"
    else:
        n_def = len(res.fold_accuracies) - len(undefined_folds)
        counted = (f"; the {res.n_missing} pair(s) without a descriptor count as wrong" if res.n_missing and
                   res.missing == "wrong" else f"; over the {res.n_scored} scored pairs only (--missing skip)"
                   if res.n_missing else "")
        left = (f"; fold(s) {', '.join(undefined_folds)} left out: no pair scored there" if undefined_folds else "")
        acc = (f"accuracy {100 * res.accuracy:.2f}% +- {100 * res.standard_error:.2f}% (standard error over "
               f"{n_def} fold(s){counted}{left})")
    auc = (f"ROC AUC  undefined ({res.auc_undefined})" if res.auc is None
           else f"ROC AUC  {res.auc:.4f} (over the {res.n_scored} scored pairs)")
    lines = [acc, auc,
             f"pairs    {res.n_pairs} in the file: {res.n_scored} scored, {res.n_missing} without a descriptor"
             + (f" (images: {', '.join(res.missing_images[:5])}{' ...' if len(res.missing_images) > 5 else ''})"
                if res.missing_images else ""),
             f"faces    {len(got.several)} image(s) with several faces (took {_RULE_WORDS[args.face]}), "
             f"{len(got.fallback)} described from the centre box (--fallback-box {args.fallback_box})",
             f"threshold undefined ({res.threshold_undefined})" if res.threshold is None else
             f"threshold {res.threshold:.6f} (mean of the per-fold thresholds; use it with `verify --threshold`)"]
    if fit_note:
        lines.append(f"note     {fit_note}")
    return lines
