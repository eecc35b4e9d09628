"""`verify` (two faces: same person?) and `evaluate` (accuracy on an LFW-style pairs file).

Both use one descriptor per image: its first face (the detector's most confident one).
A folder stands for one person: its descriptors are averaged into a template, as the
paper pools the images of a template or the frames of a video.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from engine.cli import common as C
from engine.errors import InputError


def descriptors(args, paths: list[Path], report: C.Report, part: str) -> tuple[dict, dict | None]:
    """({source_key: descriptor `part`} for every image with a face, provenance of the run)."""
    from engine.descriptors import descriptor

    out, provenance = {}, None
    if not paths:
        return out, provenance
    boxes = C.load_boxes_arg(args)
    with C.make_reconstructor(args, decode=False) as rec:
        bar = C.progress(len(paths), "img", "embed", args.quiet)
        results = rec.embed([str(p) for p in paths], boxes=boxes, cropped=args.cropped)
        try:
            for r in results:
                key = C.source_key(r.source)
                if r.error is not None:
                    report.fail(r.source, r.error)
                    bar.update(1)
                elif key not in out:  # first face of this image; further faces are ignored
                    out[key] = descriptor(r.coeffs, part)
                    provenance = provenance or dict(r.provenance or {})
                    bar.update(1)
        finally:
            results.close()
            bar.close()
    return out, provenance


def stored_descriptors(args, paths: list[Path], report: C.Report) -> tuple[dict, dict | None]:
    """All-198 descriptors through an `embed` output folder: images already embedded there
    are not run again (an interrupted LFW evaluation resumes), new ones are added to it."""
    import argparse
    import csv

    import numpy as np

    from engine.cli import embed

    folder = Path(args.descriptors)
    if paths:
        sub = argparse.Namespace(**{**vars(args), "inputs": [str(p) for p in paths], "output": folder,
                                    "parquet": False, "retry_failed": False, "flush_every": 64, "recursive": False,
                                    "part": "all", "frame_step": 1, "max_frames": None})
        embed.run(sub)  # prints each failure (also those recorded by an earlier run)
    state = json.loads((folder / embed.PROGRESS).read_text()) if (folder / embed.PROGRESS).is_file() else {}
    wanted = {C.source_key(p) for p in paths}
    for rec in state.get("inputs", {}).values():  # failures go into the exit code and --json
        if rec["status"] == "failed" and C.source_key(rec["source"]) in wanted:
            report.failures.append({"source": rec["source"], "error": rec["error"]})
    if not (folder / "descriptors.npy").is_file():
        return {}, None
    d = np.load(folder / "descriptors.npy")
    out = {}
    with open(folder / "metadata.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            out.setdefault(C.source_key(row["source"]), d[int(row["row"])])  # first face of each image
    return out, state.get("identity")


def _synthetic_note(provenance: dict | None, quiet: bool) -> bool:
    synthetic = bool(provenance and provenance.get("network_synthetic"))
    if synthetic and not quiet:
        C.say("engine3dmm: note: SYNTHETIC network weights: similarities are meaningless until you `convert` "
              "the official model")
    return synthetic


def run_verify(args) -> int:
    import numpy as np

    from engine.descriptors import average_descriptors, cosine_similarity

    C.apply_max_pixels(args.max_pixels)
    report = C.Report()
    sides = [C.expand_each([arg], report, recursive=args.recursive) for arg in (args.first, args.second)]
    descs, provenance = descriptors(args, [p for side in sides for p in side], report, args.part)
    templates = []
    for arg, side in zip((args.first, args.second), sides):
        vecs = [descs[C.source_key(p)] for p in side if C.source_key(p) in descs]
        if not vecs:
            raise InputError(f"{arg}: no face descriptor could be computed (see the failures above)")
        templates.append((average_descriptors(np.stack(vecs)) if len(vecs) > 1 else vecs[0], len(vecs)))
    sim = float(cosine_similarity(templates[0][0], templates[1][0]))
    same = sim >= args.threshold
    synthetic = _synthetic_note(provenance, args.quiet)
    if args.json:
        json.dump({"a": args.first, "b": args.second, "similarity": sim, "threshold": args.threshold,
                   "same": same, "images": [templates[0][1], templates[1][1]], "part": args.part,
                   "synthetic": synthetic, "failures": report.failures}, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print(f"{'same' if same else 'different'}\t{sim:.6f}\t(threshold {args.threshold:g}; "
              f"A: {templates[0][1]} image(s), B: {templates[1][1]} image(s))")
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
    # All 198 coefficients are kept; evaluate_pairs takes the --part it is asked for.
    if args.descriptors:
        descs, provenance = stored_descriptors(args, paths, report)
    else:
        descs, provenance = descriptors(args, paths, report, "all")
    by_name = {n: descs[C.source_key(root / n)] for n in names if C.source_key(root / n) in descs}
    res = evaluate_pairs(plist, by_name, part=args.part, missing="skip")
    synthetic = _synthetic_note(provenance, args.quiet)
    mean_thr = sum(res.thresholds) / len(res.thresholds)
    print(f"accuracy {100 * res.accuracy:.2f}% +- {100 * res.standard_error:.2f}% (standard error over "
          f"{len(res.fold_accuracies)} folds)\nROC AUC  {res.auc:.4f}\npairs    {res.n_pairs} scored, "
          f"{res.n_skipped} skipped (an image without a descriptor)\nthreshold {mean_thr:.4f} "
          f"(mean of the per-fold thresholds; use it with `verify --threshold`)")
    if args.json:
        C.write_json(Path(args.json), {"pairs_file": args.pairs, "root": str(root), "part": args.part,
                                       "accuracy": res.accuracy, "accuracy_std": res.accuracy_std,
                                       "standard_error": res.standard_error,
                                       "fold_accuracies": list(res.fold_accuracies),
                                       "thresholds": list(res.thresholds), "threshold": mean_thr,
                                       "auc": res.auc, "n_pairs": res.n_pairs, "n_skipped": res.n_skipped,
                                       "synthetic": synthetic, "failures": report.failures})
    return report.exit_code
