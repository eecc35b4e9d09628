"""The crop kernel (engine._core.crop_batch_cpu / crop_batch_cuda) against engine.crop.crop_faces.

    python bench/bench_crop.py [--batch 128] [--json PATH] [--markdown PATH] [--gpu-only]

Input: a batch of faces from four real photos (skimage: astronaut 512x512, chelsea 300x451,
coffee 400x600, camera 512x512 as RGB), one face box per photo placed as a detector would (a
quarter of the image, centred) and one at a border (the crop leaves the image: zero fill), taken
in turn until the batch is full. Every row produces the same [B, 3, 224, 224] planar BGR batch.

- opencv: engine.crop.crop_faces, the release's path (per face: zero-padded copy where needed,
  cv2.resize, BGR float copy); OpenCV's own threads as it is installed (cv2.getNumThreads()).
- cpu 1 thread / cpu all cores: our kernel, crop_body.h run over the batch on the CPU.
- cuda fp32 / cuda fp16 (on a GPU): our kernel, one launch, images already on the device (as
  nvJPEG leaves them), timed with CUDA events around the launch.

Wall time is the median of alternating rounds (load from other processes falls on every row alike).
"max diff" is the largest difference from the opencv row in grey levels (the kernel samples as
engine.crop._sample_bilinear does, within 1 of OpenCV's fixed-point weights).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine import _core  # noqa: E402
from engine.bench.measure import machine  # noqa: E402
from engine.crop import crop_bounds, crop_faces  # noqa: E402

# bench_decode's timing: alternating blocks, a pause and an untimed call before each (spinning threads)
from bench_decode import _time_interleaved  # noqa: E402


def photos() -> list[np.ndarray]:
    from skimage import data

    cam = data.camera()
    return [data.astronaut(), data.chelsea(), data.coffee(), np.repeat(cam[:, :, None], 3, axis=2)]


def faces(batch: int):
    imgs, boxes = [], []
    pics = photos()
    for i in range(batch):
        img = pics[i % len(pics)]
        h, w = img.shape[:2]
        if (i // len(pics)) % 2 == 0:  # centred, a quarter of the image
            box = (w * 3 / 8, h * 3 / 8, w * 5 / 8, h * 5 / 8)
        else:  # at the left border: the crop leaves the image
            box = (-w / 16, h / 3, w * 3 / 16, h * 2 / 3)
        imgs.append(img)
        boxes.append(box)
    return imgs, boxes


def cpu_rows(imgs, boxes, bounds):
    import cv2

    ref = crop_faces(imgs, boxes)
    fns = {
        f"opencv ({cv2.getNumThreads()} threads)": lambda: crop_faces(imgs, boxes),
        "cpu 1 thread": lambda: _core.crop_batch_cpu(imgs, bounds, num_threads=1),
        "cpu all cores": lambda: _core.crop_batch_cpu(imgs, bounds),
    }
    outs = {k: fn() for k, fn in fns.items()}
    secs = _time_interleaved(fns, rounds=5, calls=3)
    return [dict(impl=k, batch=len(imgs), ms_per_batch=secs[k] * 1e3, ms_per_face=secs[k] * 1e3 / len(imgs),
                 faces_per_s=len(imgs) / secs[k], max_diff=float(np.abs(outs[k] - ref).max())) for k in fns], ref


def gpu_rows(imgs, bounds, ref):
    import torch

    on_dev = {}
    sources = []
    for img in imgs:
        key = id(img)
        if key not in on_dev:
            on_dev[key] = torch.from_numpy(img).cuda().permute(2, 0, 1).contiguous()  # CHW, as nvJPEG gives
        t = on_dev[key]
        sources.append((t.data_ptr(), t.shape[1], t.shape[2], t.stride(1), t.stride(2), t.stride(0)))
    rows = []
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    for dtype in ("float32", "float16"):
        out = torch.empty((len(imgs), 3, 224, 224), dtype=getattr(torch, dtype), device="cuda")

        def launch():
            _core.crop_batch_cuda(sources, bounds, out.data_ptr(), out_dtype=dtype, stream=stream)

        for _ in range(5):
            launch()
        stream.synchronize()
        ms = []
        for _ in range(20):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record(stream)
            launch()
            b.record(stream)
            b.synchronize()
            ms.append(a.elapsed_time(b))
        t = statistics.median(ms)
        rows.append(dict(impl=f"cuda {dtype}", batch=len(imgs), ms_per_batch=t, ms_per_face=t / len(imgs),
                         faces_per_s=len(imgs) / (t / 1e3),
                         max_diff=float(np.abs(out.float().cpu().numpy() - ref).max())))
    return rows


def markdown(rows, mach, load) -> str:
    gpu = f", GPU {mach.gpu}" if mach.gpu else ""
    lines = [f"Machine: {mach.cpu}, {mach.cores} cores{gpu}; load average {load[0]:.2f} before, {load[1]:.2f} after "
             "(other processes share the cores: a row with every core suffers most). Batch of real photos' faces "
             "(bench/bench_crop.py); max diff in grey levels from the opencv row.", "",
             "| impl | batch | ms/batch | ms/face | faces/s | max diff |", "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['impl']} | {r['batch']} | {r['ms_per_batch']:.3f} | {r['ms_per_face']:.4f} | "
                     f"{r['faces_per_s']:.0f} | {r['max_diff']:g} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--json", type=Path, help="write the rows as JSON here")
    ap.add_argument("--markdown", type=Path, help="write a markdown table here")
    ap.add_argument("--gpu-only", action="store_true", help="only the GPU rows (bench/gpu_check.sh)")
    args = ap.parse_args(argv)
    if args.gpu_only and not _core.has_cuda_crop():
        sys.exit("bench_crop.py --gpu-only: engine._C has no usable CUDA device (build with ENGINE_WITH_CUDA=ON on a GPU machine)")
    load_before = os.getloadavg()[0]
    imgs, boxes = faces(args.batch)
    bounds = np.array([crop_bounds(b) for b in boxes], dtype=np.int64)
    rows, ref = [], crop_faces(imgs, boxes)
    if not args.gpu_only:
        rows, ref = cpu_rows(imgs, boxes, bounds)
    gpu = _core.has_cuda_crop()
    if gpu:
        rows += gpu_rows(imgs, bounds, ref)
    mach = machine(gpu)
    load = (load_before, os.getloadavg()[0])
    table = markdown(rows, mach, load)
    print(table)
    if args.json:
        args.json.write_text(json.dumps({"machine": mach.cpu, "cores": mach.cores, "gpu": mach.gpu, "load": load,
                                         "rows": rows}, indent=1))
    if args.markdown:
        args.markdown.write_text("# Crop benchmark (bench/bench_crop.py)\n\n" + table)


if __name__ == "__main__":
    main()
