"""`serve`: the face service (engine.serve) until SIGINT or SIGTERM, then a clean shutdown.

The local Ray this command starts (without --address) is shut down with the service, so no
process is left behind; on a joined cluster only this service's application is removed.
"""
from __future__ import annotations

import os
import signal
import sys
import threading


def run(args) -> int:
    from engine.cli.common import apply_max_pixels, check_network_dir
    from engine.errors import UnavailableError
    from engine.serve import ServeOptions, Service, ray_available
    from engine.serve.service import INSTALL_HINT

    if not ray_available():
        raise UnavailableError(INSTALL_HINT)
    check_network_dir(args)
    apply_max_pixels(args.max_pixels)  # --max-pixels, else $ENGINE3DMM_MAX_PIXELS, else Pillow's limit
    from PIL import Image

    network_dir = os.path.abspath(args.network_dir) if args.network_dir else None  # replicas run elsewhere
    options = ServeOptions(runner=args.runner, network_dir=network_dir, replicas=args.replicas,
                           replica_cpus=args.replica_cpus, max_batch_size=args.max_batch_size,
                           batch_wait_ms=args.batch_wait_ms, max_body_mb=args.max_body_mb,
                           max_pixels=Image.MAX_IMAGE_PIXELS, threads=args.threads, workers=args.workers)
    stop = threading.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    # Ray's core installs a fatal-signal handler that aborts the process on SIGTERM (leaving its
    # processes behind): off, so that SIGTERM is a clean stop. Ours go in before Ray starts (a
    # SIGINT during the start stops everything) and again after it (ray.init replaces SIGTERM's).
    os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
    service = Service(options, host=args.host, port=args.port, address=args.address, num_cpus=args.num_cpus,
                      metrics_port=args.metrics_port)  # checks the options: InputError before anything starts
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in signals}
    try:
        try:
            service.start()
        except (SystemExit, KeyboardInterrupt):
            # A signal while Ray starts: ray.init puts in its own SIGTERM handler (sys.exit) until
            # ours is back below. start() has stopped what it started; this is a requested stop.
            stop.set()
        else:
            for s in signals:
                signal.signal(s, lambda *_: stop.set())
            print(f"engine3dmm serve: listening on {service.url} (POST /v1/faces, POST /v1/mesh, GET /healthz); "
                  "Ctrl-C or SIGTERM stops it", file=sys.stderr, flush=True)
        while not stop.wait(0.5):
            pass
        print("engine3dmm serve: stopping", file=sys.stderr, flush=True)
    finally:
        service.stop()
        for s, h in previous.items():
            signal.signal(s, h)
    return 0
