"""Benchmark the face service (engine.serve) against the in-process Reconstructor, in one run.

    python bench/bench_serve.py --json bench/results/serve_cpu.json --md bench/results/serve_cpu.md

The load: closed-loop HTTP clients on 127.0.0.1 (each sends its next request when the last is
answered) at concurrency 1, 4, 16 and 64, each level for --seconds; per level the answered
requests per second, p50/p99 latency and the error count (any answer but 200 with one face, or
a failed connection). The request: skimage's astronaut as JPEG bytes, POST /v1/faces (decode,
dlib detection, crop, network; no mesh), as a caller would send it.

The baseline, in the same run and process, before the service starts (so they do not share the
cores): the in-process Reconstructor with the service's batch size on the same bytes, at batch 1
(one call per image: the latency a caller in the process gets) and over a stream of images
(`reconstruct` of a list: its throughput at that batch size).

The issue's targets on this machine: p50 at concurrency 1 within in-process latency + 5 ms;
throughput at saturation at least 85% of in-process; zero errors. The client threads run on the
same cores as the service: on a machine with few cores they take a share of them (the table
says how many cores there were).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import io
import json
import os
import platform
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.fileio import atomic_write  # noqa: E402

LEVELS = (1, 4, 16, 64)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def astronaut_jpeg() -> bytes:
    import skimage.data
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(skimage.data.astronaut()).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def baseline(data: bytes, batch_size: int, seconds: float) -> dict:
    """In-process: latency of one image per call (p50/p99 over calls for `seconds`), and the
    throughput of reconstruct over a stream of the same image at `batch_size`."""
    import engine

    with engine.Reconstructor(batch_size=batch_size) as rec:
        for _ in range(3):  # warm up: runner, detector
            list(rec.embed(data))
        lat = []
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            t = time.perf_counter()
            (r,) = list(rec.embed(data))
            lat.append(time.perf_counter() - t)
            assert r.error is None, r.error
        n = max(4 * batch_size, 32)
        t = time.perf_counter()
        done = sum(1 for r in rec.embed([data] * n) if r.error is None)
        took = time.perf_counter() - t
        provenance = dict(rec.provenance)
    return {"latency_p50_ms": float(np.percentile(lat, 50) * 1e3), "latency_p99_ms": float(np.percentile(lat, 99) * 1e3),
            "latency_calls": len(lat), "throughput_per_s": done / took, "throughput_images": n,
            "provenance": provenance}


def load_level(url: str, data: bytes, clients: int, seconds: float, timeout: float) -> dict:
    """`clients` closed-loop clients for `seconds`: answered/s, p50/p99 (ms), errors."""
    lat: list[float] = []
    errors: list[str] = []
    batches: list[int] = []
    lock = threading.Lock()
    end = time.perf_counter() + seconds

    def client():
        while time.perf_counter() < end:
            t = time.perf_counter()
            req = urllib.request.Request(url + "/v1/faces", data=data, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=timeout) as r:
                    answer = json.loads(r.read())
                ok = len(answer.get("faces", ())) == 1 and answer["faces"][0]["error"] is None
                why = None if ok else f"200 with {answer.get('faces')!r:.80}"
            except urllib.error.HTTPError as e:
                ok, why, answer = False, f"HTTP {e.code}", {}
            except (OSError, ValueError) as e:
                ok, why, answer = False, f"{type(e).__name__}: {e}", {}
            took = time.perf_counter() - t
            with lock:
                if ok:
                    lat.append(took)
                    batches.append(answer.get("batch", {}).get("requests", 1))
                else:
                    errors.append(why)

    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        for f in [pool.submit(client) for _ in range(clients)]:
            f.result()
    elapsed = time.perf_counter() - t0
    return {"concurrency": clients, "seconds": elapsed, "answered": len(lat), "errors": len(errors),
            "error_examples": sorted(set(errors))[:3], "throughput_per_s": len(lat) / elapsed,
            "latency_p50_ms": float(np.percentile(lat, 50) * 1e3) if lat else None,
            "latency_p99_ms": float(np.percentile(lat, 99) * 1e3) if lat else None,
            "mean_requests_per_batch": float(np.mean(batches)) if batches else None}


def markdown(res: dict) -> str:
    b, s = res["baseline"], res["service"]
    o = res["options"]
    lines = [
        "# The face service (Ray Serve) against the in-process Reconstructor",
        "",
        f"Machine: {res['machine']['cpu']}, {res['machine']['cores']} cores; Python {res['machine']['python']}, "
        f"Ray {res['machine']['ray']}. Runner {b['provenance']['runner']} {b['provenance']['precision']}"
        + (" (SYNTHETIC weights: the speed is the real network's, the coefficients are not)"
           if b["provenance"]["network_synthetic"] else "") + ".",
        f"Request: skimage's astronaut, JPEG {res['request_bytes']} bytes, POST /v1/faces (decode, dlib detection, "
        f"crop, network). Service: {o['replicas']} replica, batches of at most {o['max_batch_size']}, "
        f"{o['batch_wait_ms']:g} ms wait; closed-loop clients on 127.0.0.1 (same cores), {res['seconds']:g} s a level.",
        "Made by `python bench/bench_serve.py` (bench/bench_serve.py).",
        "",
        f"In-process, batch 1: p50 {b['latency_p50_ms']:.1f} ms, p99 {b['latency_p99_ms']:.1f} ms; "
        f"a stream at batch {o['max_batch_size']}: {b['throughput_per_s']:.2f} images/s.",
        "",
        "| concurrency | answered/s | vs in-process | p50 ms | p99 ms | errors | requests per batch |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in s:
        lines.append(f"| {r['concurrency']} | {r['throughput_per_s']:.2f} | "
                     f"{100 * r['throughput_per_s'] / b['throughput_per_s']:.0f}% | "
                     f"{_f(r['latency_p50_ms'])} | {_f(r['latency_p99_ms'])} | {r['errors']} | "
                     f"{_f(r['mean_requests_per_batch'], 2)} |")
    t = res["targets"]
    lines += ["", "Targets (issue 10): "
              f"p50 at concurrency 1 within in-process + 5 ms: {'met' if t['p50_c1'] else 'NOT met'} "
              f"({_f(s[0]['latency_p50_ms'])} vs {b['latency_p50_ms']:.1f} + 5 ms); "
              f"throughput at saturation >= 85% of in-process: {'met' if t['throughput'] else 'NOT met'} "
              f"({100 * t['best_ratio']:.0f}%); zero errors: {'met' if t['no_errors'] else 'NOT met'}.", ""]
    return "\n".join(lines)


def _f(v, digits=1):
    return "-" if v is None else f"{v:.{digits}f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=15.0, help="time per concurrency level")
    ap.add_argument("--levels", type=int, nargs="+", default=list(LEVELS))
    ap.add_argument("--max-batch-size", type=int, default=8)
    ap.add_argument("--batch-wait-ms", type=float, default=10.0)
    ap.add_argument("--num-cpus", type=int, default=os.cpu_count())
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--md", metavar="FILE")
    args = ap.parse_args(argv)

    import ray

    from engine.serve import ServeOptions, Service

    data = astronaut_jpeg()
    print("in-process baseline ...", file=sys.stderr, flush=True)
    base = baseline(data, args.max_batch_size, args.seconds)
    options = ServeOptions(max_batch_size=args.max_batch_size, batch_wait_ms=args.batch_wait_ms)
    levels = []
    with Service(options, port=_free_port(), num_cpus=args.num_cpus) as svc:
        load_level(svc.url, data, 1, 2.0, 60)  # warm up the HTTP path
        for c in args.levels:
            print(f"concurrency {c} ...", file=sys.stderr, flush=True)
            levels.append(load_level(svc.url, data, c, args.seconds, 120))
    best = max(r["throughput_per_s"] for r in levels)
    res = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "python": platform.python_version(), "ray": ray.__version__, "platform": platform.platform()},
        "options": {"replicas": options.replicas, "max_batch_size": options.max_batch_size,
                    "batch_wait_ms": options.batch_wait_ms},
        "seconds": args.seconds, "request_bytes": len(data), "baseline": base, "service": levels,
        "targets": {"p50_c1": levels[0]["concurrency"] == 1 and levels[0]["latency_p50_ms"] is not None
                    and levels[0]["latency_p50_ms"] <= base["latency_p50_ms"] + 5,
                    "best_ratio": best / base["throughput_per_s"],
                    "throughput": best >= 0.85 * base["throughput_per_s"],
                    "no_errors": all(r["errors"] == 0 for r in levels)},
    }
    try:  # the CPU's name, as the other tables give it
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                res["machine"]["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    md = markdown(res)
    print(md)
    if args.json:
        with atomic_write(args.json, "w") as f:
            json.dump(res, f, indent=1)
    if args.md:
        with atomic_write(args.md, "w") as f:
            f.write(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
