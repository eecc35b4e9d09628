"""Benchmark the face service (engine.serve) against the in-process Reconstructor, in one run.

    python bench/bench_serve.py --json bench/results/serve_cpu.json --md bench/results/serve_cpu.md

The load: closed-loop HTTP clients on 127.0.0.1 (each sends its next request when the last is
answered, on its own kept-alive connection, as a real-time caller would) at concurrency 1, 4,
16 and 64, each level for --seconds; per level the answered requests per second, p50/p99
latency and the error count (any answer but 200 with one face, or a failed connection). The request: skimage's astronaut as JPEG bytes, POST /v1/faces (decode,
dlib detection, crop, network; no mesh), as a caller would send it.

The baseline, in the same run and process, before the service starts (so they do not share the
cores): the in-process Reconstructor with the service's batch size on the same bytes, at batch 1
(one call per image: the latency a caller in the process gets) and over a stream of images
(`reconstruct` of a list: its throughput at that batch size).

Side by side: on a machine shared with other work, the load drifts between the baseline and
the levels. So the latency target is also measured paired: --paired calls alternate one
in-process call and one service call (concurrency 1), and the table gives both p50s and the p50
of the per-pair difference, under the same load.

--direct-ingress: the service with Ray Serve's direct ingress (experimental in Ray; the replica
itself listens on the service's port, engine.serve.Service). The paired calls then go round
three ways: one in-process call, then one through Ray's proxy (still running, on another port,
in front of the same replica) and one straight to the replica, in alternating order, so the
proxy's hop is measured under the same load; the levels run against the replica's port. With
--md, its section is added to the file (the default ingress' table stays).

The issue's targets on this machine: p50 at concurrency 1 within in-process latency + 5 ms;
throughput at saturation at least 85% of in-process; zero errors. The client threads run on the
same cores as the service: on a machine with few cores they take a share of them (the table
says how many cores there were).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import http.client
import io
import json
import os
import platform
import socket
import sys
import threading
import time
import urllib.parse
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


def baseline(rec, data: bytes, seconds: float) -> dict:
    """In-process: latency of one image per call (p50/p99 over calls for `seconds`), and the
    throughput of reconstruct over a stream of the same image at the Reconstructor's batch size."""
    for _ in range(3):  # warm up: runner, detector
        list(rec.embed(data))
    lat = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        (r,) = list(rec.embed(data))
        lat.append(time.perf_counter() - t)
        assert r.error is None, r.error
    n = max(4 * rec.batch_size, 32)
    t = time.perf_counter()
    done = sum(1 for r in rec.embed([data] * n) if r.error is None)
    took = time.perf_counter() - t
    return {"latency_p50_ms": float(np.percentile(lat, 50) * 1e3), "latency_p99_ms": float(np.percentile(lat, 99) * 1e3),
            "latency_calls": len(lat), "throughput_per_s": done / took, "throughput_images": n,
            "provenance": dict(rec.provenance)}


class Client:
    """One caller: POST /v1/faces on a kept-alive connection (opened again after a failure)."""

    def __init__(self, url: str, timeout: float):
        u = urllib.parse.urlsplit(url)
        self.host, self.port, self.timeout = u.hostname, u.port, timeout
        self.conn = None

    def faces(self, data: bytes) -> tuple[bool, str | None, dict]:
        """(ok, why not, the answer): ok is a 200 with one face and no error."""
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self.conn.request("POST", "/v1/faces", body=data, headers={"Content-Type": "application/octet-stream"})
            r = self.conn.getresponse()
            body = r.read()
            if r.status != 200:
                return False, f"HTTP {r.status}", {}
            answer = json.loads(body)
        except (OSError, ValueError, http.client.HTTPException) as e:
            self.close()
            return False, f"{type(e).__name__}: {e}", {}
        ok = len(answer.get("faces", ())) == 1 and answer["faces"][0]["error"] is None
        return ok, None if ok else f"200 with {answer.get('faces')!r:.80}", answer

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def load_level(url: str, data: bytes, clients: int, seconds: float, timeout: float) -> dict:
    """`clients` closed-loop clients for `seconds`: answered/s, p50/p99 (ms), errors."""
    lat: list[float] = []
    errors: list[str] = []
    batches: list[int] = []
    lock = threading.Lock()
    end = time.perf_counter() + seconds

    def client():
        c = Client(url, timeout)
        try:
            while time.perf_counter() < end:
                t = time.perf_counter()
                ok, why, answer = c.faces(data)
                took = time.perf_counter() - t
                with lock:
                    if ok:
                        lat.append(took)
                        batches.append(answer.get("batch", {}).get("requests", 1))
                    else:
                        errors.append(why)
        finally:
            c.close()

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


def paired(url: str, data: bytes, rec, calls: int, timeout: float, proxy_url: str | None = None) -> dict:
    """`calls` pairs, one in-process call then one service call, one after the other (nothing
    overlaps): both p50s and the p50 of the per-pair difference, under the same load.
    proxy_url (direct ingress: Ray's proxy in front of the same replica): each round also calls
    through it, the proxy and the direct call in alternating order; adds its p50, its difference
    to in-process and the per-round proxy - direct difference (the proxy's hop)."""
    c = Client(url, timeout)
    cp = Client(proxy_url, timeout) if proxy_url else None
    local, remote, proxied, errors = [], [], [], 0

    def call(client, into):
        t = time.perf_counter()
        ok, _, _ = client.faces(data)
        into.append(time.perf_counter() - t)
        return not ok

    try:
        for i in range(calls):
            t = time.perf_counter()
            (r,) = list(rec.embed(data))
            local.append(time.perf_counter() - t)
            assert r.error is None, r.error
            if cp is not None and i % 2:
                errors += call(cp, proxied)
            errors += call(c, remote)
            if cp is not None and not i % 2:
                errors += call(cp, proxied)
    finally:
        c.close()
        if cp is not None:
            cp.close()
    local_ms, remote_ms = np.array(local) * 1e3, np.array(remote) * 1e3
    out = {"calls": calls, "errors": errors, "in_process_p50_ms": float(np.median(local_ms)),
           "service_p50_ms": float(np.median(remote_ms)),
           "difference_p50_ms": float(np.median(remote_ms - local_ms)),
           "difference_p90_ms": float(np.percentile(remote_ms - local_ms, 90))}
    if cp is not None:
        proxied_ms = np.array(proxied) * 1e3
        out.update(proxy_p50_ms=float(np.median(proxied_ms)),
                   proxy_difference_p50_ms=float(np.median(proxied_ms - local_ms)),
                   proxy_difference_p90_ms=float(np.percentile(proxied_ms - local_ms, 90)),
                   proxy_minus_direct_p50_ms=float(np.median(proxied_ms - remote_ms)))
    return out


def markdown(res: dict) -> str:
    b, s, pr = res["baseline"], res["service"], res["paired"]
    o = res["options"]
    m = res["machine"]
    direct = o.get("direct_ingress", False)
    lines = [
        "## With direct ingress (`--direct-ingress`: the replica listens on the service's port; experimental in Ray)"
        if direct else "# The face service (Ray Serve) against the in-process Reconstructor",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores; Python {m['python']}, "
        f"Ray {m['ray']}. Runner {b['provenance']['runner']} {b['provenance']['precision']}"
        + (" (SYNTHETIC weights: the speed is the real network's, the coefficients are not)"
           if b["provenance"]["network_synthetic"] else "") + ".",
        f"Load average (1 min) at the start and at the end of the run: {m['load_start']:.2f}, {m['load_end']:.2f} "
        f"(the cores are shared with other work: compare numbers of one run, the paired ones first).",
        f"Request: skimage's astronaut, JPEG {res['request_bytes']} bytes, POST /v1/faces (decode, dlib detection, "
        f"crop, network). Service: {o['replicas']} replica, batches of at most {o['max_batch_size']}, "
        f"up to {o['batch_wait_ms']:g} ms wait (only while other requests are on their way); closed-loop clients "
        f"on 127.0.0.1 (same cores), each on a kept-alive connection, {res['seconds']:g} s a level.",
        f"Made by `python bench/bench_serve.py{' --direct-ingress' if direct else ''}` (bench/bench_serve.py) "
        f"on {res['when']}.",
        "",
        f"In-process, batch 1: p50 {b['latency_p50_ms']:.1f} ms, p99 {b['latency_p99_ms']:.1f} ms; "
        f"a stream at batch {o['max_batch_size']}: {b['throughput_per_s']:.2f} images/s.",
        "",
        f"Paired, concurrency 1 ({pr['calls']} pairs of one in-process call then one service call, under the same "
        f"load): in-process p50 {pr['in_process_p50_ms']:.1f} ms, service p50 {pr['service_p50_ms']:.1f} ms, "
        f"difference p50 {pr['difference_p50_ms']:+.1f} ms (p90 {pr['difference_p90_ms']:+.1f} ms), "
        f"{pr['errors']} errors.",
        "",
    ]
    if direct:
        lines[-2:-1] = [
            f"Paired, concurrency 1, three ways ({pr['calls']} rounds of one in-process call, then one call through "
            f"Ray's proxy and one straight to the replica, in alternating order; {pr['errors']} errors): in-process "
            f"p50 {pr['in_process_p50_ms']:.1f} ms; direct p50 {pr['service_p50_ms']:.1f} ms, difference p50 "
            f"{pr['difference_p50_ms']:+.1f} ms (p90 {pr['difference_p90_ms']:+.1f} ms); through the proxy p50 "
            f"{pr['proxy_p50_ms']:.1f} ms, difference p50 {pr['proxy_difference_p50_ms']:+.1f} ms (p90 "
            f"{pr['proxy_difference_p90_ms']:+.1f} ms); the proxy's hop (proxy - direct, per round) p50 "
            f"{pr['proxy_minus_direct_p50_ms']:+.1f} ms."]
    lines += [
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
              f"(paired: {pr['difference_p50_ms']:+.1f} ms; the concurrency-1 row against the baseline measured "
              f"before the service: {_f(s[0]['latency_p50_ms'])} vs {b['latency_p50_ms']:.1f} ms); "
              f"throughput at saturation >= 85% of in-process: {'met' if t['throughput'] else 'NOT met'} "
              f"({100 * t['best_ratio']:.0f}%); zero errors: {'met' if t['no_errors'] else 'NOT met'}.", ""]
    return "\n".join(lines)


def _f(v, digits=1):
    return "-" if v is None else f"{v:.{digits}f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=15.0, help="time per concurrency level")
    ap.add_argument("--levels", type=int, nargs="+", default=list(LEVELS))
    ap.add_argument("--paired", type=int, default=60, metavar="N", help="pairs of calls for the paired latency")
    ap.add_argument("--max-batch-size", type=int, default=8)
    ap.add_argument("--batch-wait-ms", type=float, default=10.0)
    ap.add_argument("--num-cpus", type=int, default=os.cpu_count())
    ap.add_argument("--direct-ingress", action="store_true",
                    help="serve with Ray Serve's direct ingress; the paired calls also go through Ray's proxy; "
                         "--md adds a section to the file")
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--md", metavar="FILE")
    args = ap.parse_args(argv)

    import ray

    import engine
    from engine.serve import ServeOptions, Service

    load_start = os.getloadavg()[0]
    data = astronaut_jpeg()
    options = ServeOptions(max_batch_size=args.max_batch_size, batch_wait_ms=args.batch_wait_ms,
                           direct_ingress=args.direct_ingress)
    levels = []
    with engine.Reconstructor(batch_size=args.max_batch_size) as rec:
        print("in-process baseline ...", file=sys.stderr, flush=True)
        base = baseline(rec, data, args.seconds)  # before the service starts: no sharing of the cores
        with Service(options, port=_free_port(), num_cpus=args.num_cpus, quiet=True) as svc:
            load_level(svc.url, data, 1, 2.0, 60)  # warm up the HTTP path
            print("paired in-process / service calls ...", file=sys.stderr, flush=True)
            pair = paired(svc.url, data, rec, args.paired, 60,
                          proxy_url=svc.proxy_url if args.direct_ingress else None)
            for c in args.levels:
                print(f"concurrency {c} ...", file=sys.stderr, flush=True)
                levels.append(load_level(svc.url, data, c, args.seconds, 120))
    best = max(r["throughput_per_s"] for r in levels)
    res = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "python": platform.python_version(), "ray": ray.__version__, "platform": platform.platform(),
                    "load_start": load_start, "load_end": os.getloadavg()[0]},
        "options": {"replicas": options.replicas, "max_batch_size": options.max_batch_size,
                    "batch_wait_ms": options.batch_wait_ms, "direct_ingress": options.direct_ingress},
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "seconds": args.seconds, "request_bytes": len(data), "baseline": base, "paired": pair, "service": levels,
        "targets": {"p50_c1": pair["difference_p50_ms"] <= 5 and pair["errors"] == 0,
                    "best_ratio": best / base["throughput_per_s"],
                    "throughput": best >= 0.85 * base["throughput_per_s"],
                    "no_errors": all(r["errors"] == 0 for r in levels) and pair["errors"] == 0},
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
        before = ""
        if args.direct_ingress and os.path.exists(args.md):  # a section of its own after the default's table
            before = Path(args.md).read_text().rstrip("\n") + "\n\n"
        with atomic_write(args.md, "w") as f:
            f.write(before + md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
