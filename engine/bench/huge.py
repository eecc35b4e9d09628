"""The huge-photo rows: one face in an 81-megapixel photo, each measured in a fresh child
process, so that its peak resident memory (resource.getrusage ru_maxrss) is that photo's
work and nothing the benchmark did before.

    detect_81mp       JPEG file -> RGB array -> dlib boxes + landmarks -> the face's crop
                      (engine.images, engine.detect.FaceDetector, engine.crop): the preparation
                      of one input, as a pipeline worker runs it
    reconstruct_81mp  the same photo through Reconstructor.reconstruct (network and mesh too),
                      after a warm-up on the small astronaut; the child's peak includes the runner

The photo is built from a real one, never committed: skimage's astronaut scaled 6x
(3072 px, a face of about 550 px) pasted into skimage's coffee scaled to 9000 x 9000,
JPEG quality 90 (about 5 MB). Run alone: ``python -m engine.bench.huge detect PHOTO``.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

from engine.bench.measure import PeakMemory, Row, proc_status_mib

SIDE = 9000
FACE_SCALE = 6


def build_photo(path: str, side: int = SIDE, height: int | None = None, orientation: int = 1) -> None:
    """The test photo (see the module docstring), `side` x `side` pixels (`side` x `height` when
    given). `orientation` 6: stored turned a quarter left, with the EXIF tag that shows it upright
    (as phones save portraits), so the decoder must turn it back."""
    from PIL import Image
    from skimage import data

    height = side if height is None else height
    canvas = Image.fromarray(data.coffee()).resize((side, height), Image.BILINEAR)
    n = min(512 * FACE_SCALE, side // 2, height // 2)
    face = Image.fromarray(data.astronaut()).resize((n, n), Image.BILINEAR)
    canvas.paste(face, (side // 3, height // 4))
    if orientation not in (1, 6):
        raise ValueError(f"orientation: expected 1 or 6, found {orientation}")
    exif = Image.Exif()
    if orientation == 6:
        canvas = canvas.transpose(Image.Transpose.ROTATE_90)
        exif[0x0112] = 6
    canvas.save(path, "JPEG", quality=90, exif=exif)


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _rss_mib() -> float | None:
    return proc_status_mib("VmRSS")


def child_detect(path: str, max_side: int | None, repeats: int) -> dict:
    """Load, detect and crop `repeats` times (the detector is built first, untimed)."""
    from engine.crop import crop_faces
    from engine.detect import FaceDetector
    from engine.images import load_image

    det = FaceDetector(max_side=max_side)
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        img = load_image(path)
        t1 = time.perf_counter()
        faces = det.detect(img)
        t2 = time.perf_counter()
        crop_faces(img, faces)
        t3 = time.perf_counter()
        del img
        runs.append({"load": t1 - t0, "detect": t2 - t1, "crop": t3 - t2, "total": t3 - t0})
    return {"runs": runs, "faces": [[round(v) for v in f.as_tuple()] + [round(f.score, 2), f.kind] for f in faces],
            "landmarks": det.uses_landmarks, "peak_rss_mib": _peak_mib()}


def child_reconstruct(path: str, runner: str, max_side: int | None, repeats: int) -> dict:
    """Reconstructor.reconstruct of the photo `repeats` times, after a warm-up on a small photo."""
    import io

    from PIL import Image
    from skimage import data

    from engine.bench.stages import model_label
    from engine.pipeline import Reconstructor

    buf = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buf, "JPEG", quality=90)
    with Reconstructor(runner=runner, det_max_side=max_side) as rec:
        (warm,) = list(rec.reconstruct([("astronaut.jpg", buf.getvalue())]))
        if warm.error:
            raise RuntimeError(warm.error)
        # Resetting the peak for each photo also resets the process's: keep the one before the photo.
        peaks = [proc_status_mib("VmHWM") or _peak_mib()]
        runs, faces = [], []
        for _ in range(repeats):
            before = _rss_mib()
            t0 = time.perf_counter()
            with PeakMemory() as peak:  # this photo's peak, the process's resident memory included
                res = list(rec.reconstruct([path]))
            runs.append({"total": time.perf_counter() - t0, "rss_before_mib": before,
                         "photo_peak_mib": peak.rss_mib if peak.per_stage else None})
            peaks.append(peak.rss_mib if peak.per_stage else _peak_mib())
            bad = [r.error for r in res if r.error]
            if bad:
                raise RuntimeError(bad[0])
            faces = [[round(v) for v in r.box.as_tuple()] for r in res]
            del res
        pv = rec.provenance
        label = model_label(pv["network_synthetic"], pv["morphable_model"], pv["morphable_synthetic"])
        return {"runs": runs, "faces": faces, "runner": rec.runner.name, "precision": rec.runner.precision,
                "label": label, "rss_ready_mib": runs[0]["rss_before_mib"],
                "peak_rss_mib": max(peaks)}


def _child(args: list[str], timeout: float) -> dict:
    proc = subprocess.run([sys.executable, "-m", "engine.bench.huge", *args], capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"engine.bench.huge {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _side(max_side: int | None) -> str:
    return "full resolution" if max_side is None else f"max side {max_side}"


def rows(runner: str | None, max_sides=(2048,), repeats: int = 2, side: int = SIDE, log=print) -> list[Row]:
    """detect_81mp for each max_side (None: full resolution), and reconstruct_81mp with the
    default max side on `runner` (skipped when None)."""
    import numpy as np

    out = []
    with tempfile.TemporaryDirectory(prefix="engine-bench-huge-") as tmp:
        photo = os.path.join(tmp, "photo81.jpg")
        subprocess.run([sys.executable, "-m", "engine.bench.huge", "build", photo, "--side", str(side)], check=True,
                       timeout=600)
        mp = side * side / 1e6
        for ms in max_sides:
            log(f"detect_{mp:.0f}mp ({_side(ms)}): measuring in a child process")
            r = _child(["detect", photo, "--max-side", str(ms or 0), "--repeats", str(repeats)], 1800)
            t = np.array([x["total"] for x in r["runs"]])
            parts = ", ".join(f"{k} {np.median([x[k] for x in r['runs']]):.2f} s" for k in ("load", "detect", "crop"))
            note = (f"{side}x{side} JPEG ({mp:.0f} MP, one face), {_side(ms)}, upsample 1, "
                    f"{'landmark box' if r['landmarks'] else 'detector box'}: {parts}; faces {r['faces']}; "
                    "peak RSS of the whole child process")
            out.append(Row(f"detect_{mp:.0f}mp", "dlib", "cpu", "-", 1, round(float(np.median(t)) * 1e3, 1),
                           round(float(t.max()) * 1e3, 1), round(1 / float(np.median(t)), 3), "dlib HOG",
                           len(t), round(r["peak_rss_mib"], 1), None, note))
            log(f"detect_{mp:.0f}mp ({_side(ms)}): {np.median(t):.2f} s, peak RSS {r['peak_rss_mib']:.0f} MiB")
        if runner is not None:
            ms = max_sides[0]
            log(f"reconstruct_{mp:.0f}mp ({runner}): measuring in a child process")
            r = _child(["reconstruct", photo, "--runner", runner, "--max-side", str(ms or 0),
                        "--repeats", str(repeats)], 1800)
            t = np.array([x["total"] for x in r["runs"]])
            note = (f"{side}x{side} JPEG through Reconstructor.reconstruct ({_side(ms)}): decode, detect, crop, "
                    f"network, mesh; faces {r['faces']}; peak RSS of the whole child, of which "
                    f"{r['rss_ready_mib']:.0f} MiB were resident before the photo (runner and models loaded)")
            out.append(Row(f"reconstruct_{mp:.0f}mp", r["runner"], "cpu", r["precision"], 1,
                           round(float(np.median(t)) * 1e3, 1), round(float(t.max()) * 1e3, 1),
                           round(1 / float(np.median(t)), 3), r["label"], len(t), round(r["peak_rss_mib"], 1), None,
                           note))
            log(f"reconstruct_{mp:.0f}mp: {np.median(t):.2f} s, peak RSS {r['peak_rss_mib']:.0f} MiB "
                f"({r['rss_ready_mib']:.0f} before the photo)")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m engine.bench.huge", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=("build", "detect", "reconstruct"))
    p.add_argument("photo")
    p.add_argument("--side", type=int, default=SIDE, help="build: the photo's side (width) in pixels")
    p.add_argument("--height", type=int, default=None, help="build: its height (default: --side)")
    p.add_argument("--orientation", type=int, default=1, choices=(1, 6),
                   help="build: 6 stores it turned, with the EXIF tag that shows it upright")
    p.add_argument("--max-side", type=int, default=2048, help="the detector's max side (0: full resolution)")
    p.add_argument("--runner", default="auto")
    p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args(argv)
    ms = a.max_side or None
    if a.what == "build":
        build_photo(a.photo, a.side, a.height, a.orientation)
        return 0
    res = child_detect(a.photo, ms, a.repeats) if a.what == "detect" else \
        child_reconstruct(a.photo, a.runner, ms, a.repeats)
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
