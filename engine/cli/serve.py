"""`serve`: the face service (engine.serve) until SIGINT or SIGTERM, then a clean shutdown.

The local Ray this command starts (without --address) is shut down with the service, so no
process is left behind; on a joined cluster only this service's application is removed.
Stopping drains: the replicas answer the requests they hold first (ServeOptions.drain_timeout_s).

Signals only set a flag. The service lives on a thread of its own, from start to stop: ray.init,
called there, does not put in its SIGTERM handler (which exits the process in the middle of
starting Ray, leaving its agents behind); the main thread keeps receiving the signals, and the
service thread, seeing the flag between the start's steps or once running, stops what it
started. That thread stays until Ray is shut down: Ray's processes are started with a
parent-death signal, which Linux sends when the THREAD that started them ends.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading


class _DropMainThreadWarning(logging.Filter):
    """ray.init's "SIGTERM handler is not set because current thread is not the main thread":
    on purpose here (see the module's docstring), not something for the user to act on."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("SIGTERM handler is not set")


START_TIMEOUT_S = 300.0  # replicas placed, built and answering /healthz
COMPILE_START_TIMEOUT_S = 3600.0  # --compile: every batch bucket compiled first


def run(args) -> int:
    from engine.cli.common import apply_max_pixels, check_network_dir
    from engine.cli import EXIT_USAGE
    from engine.errors import InputError, UnavailableError
    from engine.serve import ServeOptions, Service, StartInterrupted, ray_available
    from engine.serve.service import INSTALL_HINT

    if not ray_available():
        raise UnavailableError(INSTALL_HINT)
    check_network_dir(args)
    apply_max_pixels(args.max_pixels)  # --max-pixels, else $ENGINE3DMM_MAX_PIXELS, else Pillow's limit
    from PIL import Image

    network_dir = os.path.abspath(args.network_dir) if args.network_dir else None  # replicas run elsewhere
    try:  # checks the options: nothing started yet
        options = ServeOptions(runner=args.runner, network_dir=network_dir, replicas=args.replicas,
                               replica_cpus=args.replica_cpus, max_batch_size=args.max_batch_size,
                               batch_wait_ms=args.batch_wait_ms, max_body_mb=args.max_body_mb,
                               max_pixels=Image.MAX_IMAGE_PIXELS, threads=args.threads, workers=args.workers,
                               direct_ingress=bool(getattr(args, "direct_ingress", False)),
                               replica_gpus=args.replica_gpus, precision=args.precision, max_error=args.max_error,
                               compile=bool(args.compile), compile_mode=args.compile_mode)
        # A compiling replica builds every batch bucket before it answers: minutes on a GPU under
        # max-autotune, so the start may take far longer than the usual few seconds.
        service = Service(options, host=args.host, port=args.port, address=args.address, num_cpus=args.num_cpus,
                          metrics_port=args.metrics_port, quiet=bool(getattr(args, "quiet", False)),
                          start_timeout_s=COMPILE_START_TIMEOUT_S if args.compile else START_TIMEOUT_S)
    except InputError as e:  # options that cannot work together: a usage error (exit 2), as argparse's
        print(f"engine3dmm serve: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    stop = threading.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    # Ray's core installs a fatal-signal handler that aborts the process on SIGTERM (leaving its
    # processes behind): off, so that SIGTERM is a clean stop.
    os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in signals}
    ray_worker_log = logging.getLogger("ray._private.worker")
    drop = _DropMainThreadWarning()
    ray_worker_log.addFilter(drop)
    failure: list[BaseException] = []
    ready = threading.Event()

    def lifetime():  # start, serve until asked to stop, stop: all on this one thread (see above)
        try:
            service.start(stop)
        except BaseException as e:  # noqa: BLE001 - handed to the main thread, which raises it
            failure.append(e)
            return
        ready.set()
        stop.wait()
        print(f"engine3dmm serve: stopping (requests in flight are answered first, up to "
              f"{options.drain_timeout_s:g} s)", file=sys.stderr, flush=True)
        try:
            service.stop()
        except BaseException as e:  # noqa: BLE001
            failure.append(e)

    owner = threading.Thread(target=lifetime, name="engine3dmm-serve", daemon=True)
    said = False
    try:
        owner.start()
        while owner.is_alive():
            owner.join(0.2)  # the main thread stays free to run the signal handlers
            if ready.is_set() and not said:
                said = True
                direct = (f"; direct ingress (experimental in Ray), Ray's proxy on {service.proxy_url}"
                          if options.direct_ingress else "")
                o = service.options  # replica_gpus fixed for the cluster by start()
                each = f"{o.replica_cpus:g} CPUs" + (f" and {o.replica_gpus:g} GPU(s)" if o.replica_gpus else "")
                print(f"engine3dmm serve: listening on {service.url} (POST /v1/faces, POST /v1/mesh, GET /healthz"
                      f"{direct}); {o.replicas} replica(s) of {each}; Ctrl-C or SIGTERM stops it",
                      file=sys.stderr, flush=True)
        if failure and isinstance(failure[0], StartInterrupted):
            print("engine3dmm serve: stopped before it was ready; everything it started is stopped",
                  file=sys.stderr, flush=True)
            return 0
        if failure:
            raise failure[0]
    finally:
        if owner.is_alive():  # only when the main thread itself failed: stop, bounded
            stop.set()
            owner.join(options.drain_timeout_s + 60)
        ray_worker_log.removeFilter(drop)
        for s, h in previous.items():
            signal.signal(s, h)
    return 0
