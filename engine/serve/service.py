"""`Service`: start the face service (a local Ray, or join a cluster), and stop it with what it started."""
from __future__ import annotations

import dataclasses

import errno
import importlib.util
import json
import logging
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager

from engine.errors import BackendError, InputError, UnavailableError
from engine.serve.requests import ServeOptions

log = logging.getLogger("engine.serve")
APP_NAME = "engine3dmm"
INSTALL_HINT = 'the face service needs Ray Serve: pip install "engine3dmm[serve]" (or pip install "ray[serve]")'


def direct_ingress_env(port: int) -> dict[str, str]:
    """The environment a local Ray's processes need for Ray Serve's direct ingress (Ray 2.60,
    experimental; read by the Serve controller and the replicas when they start, in
    ray/serve/_private/constants.py) with the replica listening on `port`:

    RAY_SERVE_ENABLE_DIRECT_INGRESS: the ingress replica runs an HTTP server of its own.
    RAY_SERVE_DIRECT_INGRESS_{MIN,MAX}_HTTP_PORT: the controller hands each ingress replica of a
        node the next free port of [MIN, MAX) (default 30000..30999, not the configured HTTP
        port): [port, port + 1) makes it exactly the service's port.
    RAY_SERVE_PORT_QUARANTINE_S: 0, so that a replica Ray restarts (after a crash) gets that
        port back at once instead of finding none free for a minute or more (the quarantine is
        for HAProxy's stale workers; there is no HAProxy here).
    RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S: 0: a stopping replica would otherwise stay
        up 30 s for an external load balancer to deregister it; there is none, and Service.stop
        drains the requests itself (the replica still answers every request it holds).
    """
    return {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
            "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(port),
            "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(port + 1),
            "RAY_SERVE_PORT_QUARANTINE_S": "0",
            "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "0"}


@contextmanager
def _environment(values: dict[str, str]):
    """os.environ with `values` while the block runs (ray.init: the local Ray's processes copy the
    driver's environment when they start), as it was afterwards, so that a later Ray started by
    this process does not inherit them."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class StartInterrupted(Exception):
    """Service.start was asked to stop (its `stop` event was set) before the service was ready;
    everything it had started has been stopped."""


def ray_available() -> bool:
    """True when Ray is importable (found without importing it: importing Ray takes a second)."""
    return importlib.util.find_spec("ray") is not None


def check_port_free(host: str, port: int, reuse_addr: bool = True) -> None:
    """InputError when nothing can listen on host:port here: another program listens there, or
    `host` is not an address of this machine. Bound as the HTTP proxy binds (SO_REUSEADDR), so a
    port a closed connection still holds (TIME_WAIT) counts as free, as it is for the proxy.
    reuse_addr=False binds as a direct-ingress replica binds (Ray 2.60 sets no SO_REUSEADDR
    there): a port in TIME_WAIT (up to 60 s on Linux after a server closed its connections)
    is refused too, since the replica could not listen there either."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        if reuse_addr:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise InputError(f"serve: port {port} on {host}: already in use (another program listens there"
                                 + ("" if reuse_addr else ", or connections a server there closed in the last "
                                    "minute still hold it: TIME_WAIT, which a direct-ingress replica cannot bind "
                                    "over") + "); expected a free port: choose another with --port") from None
            raise InputError(f"serve: host {host!r}: cannot listen there ({e.strerror or e}); expected an address "
                             "of this machine (127.0.0.1, 0.0.0.0 for every interface, or one of its own)") from None


def deploy_failure(app) -> str:
    """Why an application failed to deploy, in the replicas' own words: the last line of each
    deployment's status message, where Ray Serve quotes the traceback of the replica's
    constructor (e.g. "ModelFileError: ...: not a safetensors file"); the application's own
    message ("Failed to update the deployments [...]") only when there is none."""
    from engine.distributed.cluster import actor_reason

    reasons = [actor_reason(d.message) for d in app.deployments.values()]
    return "; ".join(dict.fromkeys(r for r in reasons if r)) or str(app.message)


class Service:
    """The face service on http://host:port/ (see engine.serve for the endpoints).

    options: ServeOptions (replicas, batching, limits, the Reconstructor's settings).
    address: a running Ray cluster to join ("auto", "ray://...:10001", "10.0.0.1:6379"); None
        starts a local Ray with `num_cpus` CPUs (None: all), owned by this object.
    start_timeout_s: how long start() waits for the replicas to be placed, built and answering
        /healthz; past it, UnavailableError says what is missing (e.g. CPUs for the replicas).
    metrics_port: the local Ray exports its metrics, Serve's included (requests, latencies, batch
        sizes, replica restarts), for Prometheus on http://127.0.0.1:metrics_port/metrics (None: a
        port Ray picks). A joined cluster exports them as its `ray start --metrics-export-port` says.
    request_timeout_s: the proxy answers a request not finished by then with an error (a stuck
        replica never leaves a caller hanging).
    quiet: Ray's own progress lines (INFO) and warnings off; errors still show.

    options.direct_ingress (Ray Serve's direct ingress, experimental in Ray 2.60): the replica
    itself listens on host:port, and the request skips the proxy -> replica hop. Ray still runs
    its HTTP proxy (it will not start the replica's server without one), here on a free port of
    `host` (proxy_url), in front of the same replica. Only with one replica (ServeOptions) on a
    local Ray this object starts (InputError otherwise): the settings reach Ray's processes
    through the environment they start with (direct_ingress_env), and a joined cluster's
    processes were started without them. What changes for a caller: a replica that dies takes
    its connections with it (no HTTP answer: the proxy's plain-text 500 is gone too), and while
    Ray restarts it the port refuses connections: Ray's replica server binds without
    SO_REUSEADDR, so the new replica can listen only once the old one's closed connections have
    left TIME_WAIT (up to 60 s on Linux; measured: back after about 62 s); the same holds for
    starting a new service on the port just after one stopped (start refuses it at once, saying
    so). The replica's own server applies request_timeout_s (408) and its queue limit; the
    service's body limit is unchanged.

    Checks that fail in seconds, before Ray starts where they can: the port is free here (a local
    Ray), the cluster address answers (engine.distributed.cluster), the replicas fit the local
    Ray's CPUs (InputError; on a joined cluster, which may grow, start waits up to
    start_timeout_s and then says what is missing).

    The local Ray runs its workers (proxy, replicas) at the driver's priority, not Ray's default
    niceness of 15: on a machine that also runs the callers, a niced replica loses the cores to
    them (measured: +10 ms p50 at concurrency 1 on 2 shared cores).

    stop() removes the application first, so every replica answers the requests it holds (at
    most options.drain_timeout_s), then, when this object started the local Ray, shuts Serve and
    that Ray down: no process is left behind. Usable as a context manager.
    """

    def __init__(self, options: ServeOptions | None = None, *, host: str = "127.0.0.1", port: int = 8000,
                 address: str | None = None, num_cpus: int | None = None, start_timeout_s: float = 300.0,
                 request_timeout_s: float = 300.0, metrics_port: int | None = None, quiet: bool = False):
        self.options = options or ServeOptions()
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            raise InputError(f"serve: port: expected an integer in 1..65535, found {port!r}")
        if address is None:
            self._check_fits(num_cpus or os.cpu_count() or 1, "the local Ray's", "--num-cpus")
        elif self.options.direct_ingress:
            raise InputError(f"serve: address: direct ingress needs a local Ray this service starts, found "
                             f"--address {address!r} (Ray reads its settings from the environment its "
                             "processes start with; on a cluster each node's replica would listen on its own "
                             "node, with nothing in front): drop --address or --direct-ingress")
        self.host, self.port, self.address, self.num_cpus = host, port, address, num_cpus
        self.proxy_port = port  # Ray's HTTP proxy; with direct ingress a free port chosen at start
        self.start_timeout_s, self.request_timeout_s = start_timeout_s, request_timeout_s
        self.metrics_port, self.quiet = metrics_port, quiet
        self._started_ray = False
        self._running = False

    def _check_fits(self, cpus: float, whose: str, hint: str) -> None:
        need = self.options.replicas * self.options.replica_cpus
        if need > cpus:
            raise InputError(f"serve: replicas: {self.options.replicas} replicas of {self.options.replica_cpus:g} "
                             f"CPUs each need {need:g} CPUs; they do not fit in {whose} {cpus:g} CPUs (fewer "
                             f"--replicas, a smaller --replica-cpus, or more CPUs: {hint})")

    def _url(self, port: int) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{'127.0.0.1' if self.host in ('0.0.0.0', '') else host}:{port}"

    @property
    def url(self) -> str:
        """The service (with direct ingress: the replica's own server)."""
        return self._url(self.port)

    @property
    def proxy_url(self) -> str:
        """Ray's HTTP proxy in front of the replicas: the service's url, except with direct ingress."""
        return self._url(self.proxy_port)

    def start(self, stop: threading.Event | None = None) -> "Service":
        """Start Ray (or join it), Serve and the application, and wait until /healthz answers.

        stop: an event another thread (or a signal handler) sets to abandon the start: it is
            checked between the steps and while waiting, and start() then stops what it started
            and raises StartInterrupted. A step in progress (ray.init: seconds) is finished first,
            so that it can be shut down whole.
        Errors: InputError (port in use, replicas that cannot fit), BackendError (a cluster that
        does not answer, a deployment that failed), UnavailableError (no Ray; not ready within
        start_timeout_s, saying what is missing).
        """
        if not ray_available():
            raise UnavailableError(INSTALL_HINT)
        from engine.distributed.cluster import check_reachable

        stop = stop or threading.Event()
        if self.address is None:
            check_port_free(self.host, self.port, reuse_addr=not self.options.direct_ingress)
        else:
            check_reachable(self.address, "serve: --address")
        import ray
        from ray import serve

        from engine.serve.deployment import build_app

        quiet = {"logging_level": logging.ERROR} if self.quiet else {}
        environment = {}
        if self.options.direct_ingress:
            if ray.is_initialized():
                raise InputError("serve: direct ingress needs a local Ray this service starts; this process "
                                 "already has one (ray.init was called before): shut it down first, or serve "
                                 "without direct ingress")
            environment = direct_ingress_env(self.port)
            self.proxy_port = _free_port(self.host)
        if not ray.is_initialized():
            if self.address is not None:
                ray.init(address=self.address, log_to_driver=False, **quiet)
            else:
                with _environment(environment):
                    ray.init(num_cpus=self.num_cpus, include_dashboard=False, log_to_driver=False,
                             _metrics_export_port=self.metrics_port, _system_config={"worker_niceness": 0}, **quiet)
                self._started_ray = True
        if self.quiet:
            logging.getLogger("ray.serve").setLevel(logging.ERROR)
        deadline = time.monotonic() + self.start_timeout_s
        try:
            self._check_stop(stop)
            if self._started_ray:  # Ray's own count (cgroup limits, --num-cpus) is the one that counts
                self._check_fits(ray.cluster_resources().get("CPU", 0), "the local Ray's", "--num-cpus")
            self._resolve_gpus(ray)
            if not self._started_ray:
                self._say_if_short(ray)
            serve.start(http_options={"host": self.host, "port": self.proxy_port,
                                      "request_timeout_s": self.request_timeout_s})
            self._check_stop(stop)
            # Not blocking: the wait below checks `stop`, the deadline and what is missing.
            serve._run(build_app(self.options), _blocking=False, name=APP_NAME, route_prefix="/")
            self._running = True
            self._wait_running(serve, stop, deadline)
            self._wait_healthy(stop, deadline)
        except BaseException:
            self.stop()
            raise
        log.info("serving on %s (%d replica(s), batches of at most %d, up to %g ms wait%s)", self.url,
                 self.options.replicas, self.options.max_batch_size, self.options.batch_wait_ms,
                 f"; direct ingress, Ray's proxy on {self.proxy_url}" if self.options.direct_ingress else "")
        return self

    @staticmethod
    def _check_stop(stop: threading.Event) -> None:
        if stop.is_set():
            raise StartInterrupted("serve: stopped before the service was ready")

    def _resolve_gpus(self, ray) -> None:
        """Fix options.replica_gpus for this cluster (ServeOptions.gpus_per_replica): InputError
        when a GPU runner would get no GPU, or the local Ray has too few for the replicas."""
        from engine.runners import GPU_RUNNERS

        total = ray.cluster_resources().get("GPU", 0)
        g = self.options.gpus_per_replica(total)
        n = self.options.replicas
        if g == 0 and self.options.runner in GPU_RUNNERS:
            raise InputError(f"serve: --runner {self.options.runner} needs a GPU in each replica; the Ray cluster "
                             f"has {total:g} GPUs" + ("" if self.options.replica_gpus is None else
                                                      " and --replica-gpus is 0"))
        if g > 0 and self._started_ray and n * g > total:
            raise InputError(f"serve: replicas: {n} replicas of {g:g} GPU(s) each need {n * g:g} GPUs; they do not "
                             f"fit in the local Ray's {total:g} GPUs (fewer --replicas, or a fraction such as "
                             "--replica-gpus 0.5 to share a GPU)")
        if g != self.options.replica_gpus:
            self.options = dataclasses.replace(self.options, replica_gpus=g)

    def _need(self) -> str:
        g = self.options.replica_gpus or 0
        return (f"{self.options.replicas} replica(s) of {self.options.replica_cpus:g} CPUs"
                + (f" and {g:g} GPU(s)" if g else "") + f" need {self.options.replicas * self.options.replica_cpus:g} "
                "CPUs" + (f" and {self.options.replicas * g:g} GPUs" if g else ""))

    def _say_if_short(self, ray) -> None:
        """On a joined cluster: say at once when the replicas do not fit in its free CPUs now (an
        autoscaler may add nodes, so start goes on waiting, up to start_timeout_s)."""
        free = ray.available_resources()
        total = ray.cluster_resources()
        g = self.options.replica_gpus or 0
        if self.options.replicas * self.options.replica_cpus > free.get("CPU", 0) or \
                self.options.replicas * g > free.get("GPU", 0):
            log.warning("serve: %s; the cluster has %g CPUs free (%g in all)%s: waiting up to %g s for more",
                        self._need(), free.get("CPU", 0), total.get("CPU", 0),
                        f", {free.get('GPU', 0):g} GPUs free ({total.get('GPU', 0):g} in all)" if g else "",
                        self.start_timeout_s)

    def _wait_running(self, serve, stop: threading.Event, deadline: float) -> None:
        """Until the application is RUNNING (its replicas placed and built); BackendError when
        its deployment failed, UnavailableError with the replicas' states at the deadline."""
        from ray.serve.schema import ApplicationStatus

        status = None
        while True:
            self._check_stop(stop)
            app = serve.status().applications.get(APP_NAME)
            status = app.status if app is not None else None
            if status == ApplicationStatus.RUNNING:
                return
            if status == ApplicationStatus.DEPLOY_FAILED:
                raise BackendError(f"serve: the replicas failed to start: {deploy_failure(app)}")
            if time.monotonic() > deadline:
                break
            time.sleep(0.25)
        import ray

        states = {}
        if app is not None:
            for d in app.deployments.values():
                states.update({str(k): v for k, v in d.replica_states.items()})
        raise UnavailableError(
            f"serve: the replicas were not ready within {self.start_timeout_s:g} s (replica states: {states or 'none'}); "
            f"{self._need()}, the cluster has {ray.available_resources().get('CPU', 0):g} CPUs free of "
            f"{ray.cluster_resources().get('CPU', 0):g}"
            + (f" and {ray.available_resources().get('GPU', 0):g} GPUs free of "
               f"{ray.cluster_resources().get('GPU', 0):g}" if self.options.replica_gpus else ""))

    def _wait_healthy(self, stop: threading.Event, deadline: float) -> dict:
        last = None
        while True:
            self._check_stop(stop)
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=10) as r:
                    return json.loads(r.read())
            except (urllib.error.URLError, OSError, ValueError) as e:
                last = e
            if time.monotonic() > deadline:
                raise UnavailableError(f"serve: the service at {self.url} did not answer /healthz within "
                                       f"{self.start_timeout_s:g} s ({last})")
            time.sleep(0.2)

    def stop(self) -> None:
        """Remove the application, its replicas answering the requests they hold first (at most
        options.drain_timeout_s); then shut Serve and Ray down when this object started that Ray."""
        if not ray_available():
            return
        import ray
        from ray import serve

        if not ray.is_initialized():
            return
        try:
            if self._running:
                self._drain(serve)
                # Blocks until the replicas are gone: each answers what it holds first
                # (graceful_shutdown_timeout_s = drain_timeout_s).
                serve.delete(APP_NAME)
            if self._started_ray:
                serve.shutdown()
        finally:
            self._running = False
            if self._started_ray:
                ray.shutdown()
                self._started_ray = False

    def _drain(self, serve) -> None:
        """Stop taking requests without dropping any: the replicas are reconfigured to answer new
        requests 503 at once (in place: Serve calls their `reconfigure`), then /healthz is asked
        until it says so. The proxy hands its queued requests to the replicas in order, so when
        that answer comes, every request queued before it has reached a replica, where it is
        answered (the ones the replicas hold run to the end before serve.delete removes them).
        Bounded by options.drain_timeout_s; one proxy (this node's) is asked. With direct ingress
        the replica itself answers /healthz: requests queue in it, not in a proxy."""
        from engine.serve.deployment import build_app

        deadline = time.monotonic() + self.options.drain_timeout_s
        try:
            serve._run(build_app(self.options, draining=True), _blocking=False, name=APP_NAME, route_prefix="/")
        except Exception as e:  # noqa: BLE001 - a broken application: delete it anyway
            log.warning("serve: could not tell the replicas to stop taking requests: %s", e)
            return
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=max(0.1, deadline - time.monotonic())):
                    pass  # still 200: the replicas have not been reconfigured yet
            except urllib.error.HTTPError as e:
                if e.code == 503:
                    return
            except OSError:
                return  # no proxy answers: nothing queued there either
            time.sleep(0.05)
        log.warning("serve: requests still queued after %g s of draining are dropped", self.options.drain_timeout_s)

    def __enter__(self) -> "Service":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
