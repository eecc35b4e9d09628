"""`Service`: start the face service (a local Ray, or join a cluster), and stop it with what it started."""
from __future__ import annotations

import importlib.util
import json
import logging
import time
import urllib.error
import urllib.request

from engine.errors import InputError, UnavailableError
from engine.serve.requests import ServeOptions

log = logging.getLogger("engine.serve")
APP_NAME = "engine3dmm"
INSTALL_HINT = 'the face service needs Ray Serve: pip install "engine3dmm[serve]" (or pip install "ray[serve]")'


def ray_available() -> bool:
    """True when Ray is importable (found without importing it: importing Ray takes a second)."""
    return importlib.util.find_spec("ray") is not None


class Service:
    """The face service on http://host:port/ (see engine.serve for the endpoints).

    options: ServeOptions (replicas, batching, limits, the Reconstructor's settings).
    address: a running Ray cluster to join ("auto", "ray://...:10001", "10.0.0.1:6379"); None
        starts a local Ray with `num_cpus` CPUs (None: all), owned by this object.
    start_timeout_s: how long start() waits for the replicas to answer /healthz.
    metrics_port: the local Ray exports its metrics, Serve's included (requests, latencies, batch
        sizes, replica restarts), for Prometheus on http://127.0.0.1:metrics_port/metrics (None: a
        port Ray picks). A joined cluster exports them as its `ray start --metrics-export-port` says.
    request_timeout_s: the proxy answers a request not finished by then with an error (a stuck
        replica never leaves a caller hanging).

    stop() removes the application; when this object started the local Ray, it also shuts Serve
    and that Ray down, so no process is left behind. Usable as a context manager.
    """

    def __init__(self, options: ServeOptions | None = None, *, host: str = "127.0.0.1", port: int = 8000,
                 address: str | None = None, num_cpus: int | None = None, start_timeout_s: float = 300.0,
                 request_timeout_s: float = 300.0, metrics_port: int | None = None):
        self.options = options or ServeOptions()
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            raise InputError(f"serve: port: expected an integer in 1..65535, found {port!r}")
        if num_cpus is not None and address is None and self.options.replicas * self.options.replica_cpus > num_cpus:
            raise InputError(f"serve: replicas: {self.options.replicas} replicas of {self.options.replica_cpus:g} "
                             f"CPUs each do not fit in the local Ray's {num_cpus} CPUs")
        self.host, self.port, self.address, self.num_cpus = host, port, address, num_cpus
        self.start_timeout_s, self.request_timeout_s = start_timeout_s, request_timeout_s
        self.metrics_port = metrics_port
        self._started_ray = False
        self._running = False

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{'127.0.0.1' if self.host in ('0.0.0.0', '') else host}:{self.port}"

    def start(self) -> "Service":
        if not ray_available():
            raise UnavailableError(INSTALL_HINT)
        import ray
        from ray import serve

        from engine.serve.deployment import build_app

        if not ray.is_initialized():
            if self.address is not None:
                ray.init(address=self.address, log_to_driver=False)
            else:
                ray.init(num_cpus=self.num_cpus, include_dashboard=False, log_to_driver=False,
                         _metrics_export_port=self.metrics_port)
                self._started_ray = True
        try:
            serve.start(http_options={"host": self.host, "port": self.port,
                                      "request_timeout_s": self.request_timeout_s})
            serve.run(build_app(self.options), name=APP_NAME, route_prefix="/")
            self._running = True
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        log.info("serving on %s (%d replica(s), batches of at most %d, %g ms wait)", self.url,
                 self.options.replicas, self.options.max_batch_size, self.options.batch_wait_ms)
        return self

    def _wait_healthy(self) -> dict:
        deadline = time.monotonic() + self.start_timeout_s
        last = None
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=10) as r:
                    return json.loads(r.read())
            except (urllib.error.URLError, OSError, ValueError) as e:
                last = e
                time.sleep(0.2)
        raise UnavailableError(f"serve: the service at {self.url} did not answer /healthz within "
                               f"{self.start_timeout_s:g} s ({last})")

    def stop(self) -> None:
        """Remove the application; shut Serve and Ray down when this object started that Ray."""
        if not ray_available():
            return
        import ray
        from ray import serve

        if not ray.is_initialized():
            return
        try:
            if self._started_ray:
                serve.shutdown()
            elif self._running:
                serve.delete(APP_NAME)  # a shared cluster keeps its Serve and its other applications
        finally:
            self._running = False
            if self._started_ray:
                ray.shutdown()
                self._started_ray = False

    def __enter__(self) -> "Service":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
