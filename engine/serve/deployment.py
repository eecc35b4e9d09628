"""The Ray Serve deployment: one replica = one Reconstructor, requests batched across callers.

The one module of the engine that imports Ray Serve and FastAPI at its top; it is loaded only
by engine.serve's functions (`build_app`, `Service.start`), so `import engine` and
`import engine.serve` never need Ray (an optional extra: pip install "engine3dmm[serve]").

A replica builds its Reconstructor once, in __init__ (runner, decoder, worker threads), and
keeps it for its whole life. `@serve.batch` gathers the requests that arrive within
`batch_wait_ms` (at most `max_batch_size`) into one call of `_run`, which runs them as one
network batch on a thread (the event loop keeps accepting requests meanwhile). A request waits
for others only when others are on their way (being read or decoded in this replica): a lone
caller never pays the wait. While a batch runs, the next one waits for about as long as the
running one still needs, so under load it takes every request that arrived meanwhile (up to
max_batch_size) rather than only those of its first 10 ms.

Every answer the application gives is JSON {"error", "status"} when it is not a 200: the
engine's refusals (engine.serve.requests), and FastAPI's own (an unknown route, a wrong method),
which handlers below rewrite. Answers the Ray Serve proxy makes itself (a replica that died with
requests in flight: 500; a request past the proxy's timeout: 408; the application not deployed
yet: 404/503) are Ray's plain text: making them JSON needs an ingress deployment in front,
one more hop per request (measured: +4 ms p50 on 2 cores, the latency target's whole budget).
With direct ingress (ServeOptions.direct_ingress) there is no proxy in the request's path: the
replica's own server answers everything, and a replica that dies closes its connections with
no answer at all.
"""

import asyncio
import logging
import time

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException

from engine.errors import EngineError
from engine.serve.requests import (
    RequestError,
    ServeOptions,
    decode_body,
    parse_request,
    run_batch,
    warm_up_batches,
)

log = logging.getLogger("engine.serve")
api = FastAPI(title="engine3dmm", description="3DMM-CNN face reconstruction service")


MAX_BUSY_WAIT_S = 2.0  # a batch waits for the running one at most this long (a stuck one: not forever)
STOPPING = ("the service is stopping: this request was not run (the requests it had already taken are "
            "answered); send it to a running instance")
ENDPOINTS = {"/v1/faces": "POST", "/v1/mesh": "POST", "/healthz": "GET"}


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


@api.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """FastAPI's own refusals (404 unknown route, 405 wrong method) in the service's shape."""
    method, path = request.method, request.url.path
    endpoints = ", ".join(f"{m} {p}" for p, m in ENDPOINTS.items())
    if exc.status_code == 404:
        message = f"{method} {path}: no such endpoint (expected one of {endpoints})"
    elif exc.status_code == 405:
        message = f"{method} {path}: method not allowed (expected {ENDPOINTS.get(path, 'another method')})"
    else:
        message = f"{method} {path}: {exc.detail}"
    return _error(exc.status_code, message, headers=getattr(exc, "headers", None))


@api.exception_handler(Exception)
async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    """A bug outside _handle (which answers its own): still one JSON answer, never Starlette's text."""
    log.error("%s %s failed: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
    return _error(500, f"internal error: {type(exc).__name__}: {exc}")


@api.exception_handler(RequestValidationError)
async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    return _error(400, f"{request.method} {request.url.path}: {exc.errors()}")


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with RequestError(413) as soon as it passes `limit` bytes (the declared
    Content-Length first, so an honest huge upload is refused before it is read)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"request body: {int(declared)} bytes, limit is {limit} (the service's --max-body-mb)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"request body: more than {limit} bytes, limit is {limit} "
                                    "(the service's --max-body-mb)")
        chunks.append(chunk)
    return b"".join(chunks)


@serve.deployment(name="FaceService")
@serve.ingress(api)
class FaceService:
    def __init__(self, options: ServeOptions):
        from engine import images
        from engine.pipeline import Reconstructor
        from engine.runners import runner_or_name

        self.options = options
        # The pixel-limit message names the service's option, not the API's parameter.
        images.set_limit_hint("the service's --max-pixels")
        # The variant is chosen, and the network compiled, here on the replica's machine.
        runner = runner_or_name(options.runner, options.network_dir, threads=options.threads,
                                precision=options.precision, max_error=options.max_error, compile=options.compile,
                                compile_mode=options.compile_mode)
        self.rec = Reconstructor(runner=runner, network_dir=options.network_dir,
                                 batch_size=options.max_batch_size, threads=options.threads,
                                 workers=options.workers,
                                 max_pixels=images.DEFAULT if options.max_pixels is None else options.max_pixels)
        # Warm up now, not on the first caller's time: the runner's first batch and the face
        # detector (dlib and its landmark model load on first use; a blank image has no face).
        # A compiled network compiles once per batch bucket (powers of two): every bucket a
        # batch of this service can fall in, or a caller would wait for Inductor (seconds to minutes).
        for b in warm_up_batches(options.max_batch_size, self.rec.runner):
            self.rec.reconstruct_crops(np.zeros((b, 3, 224, 224), np.float32), decode=False)
        try:
            list(self.rec.reconstruct(np.zeros((64, 64, 3), np.uint8)))
        except EngineError as e:  # e.g. no dlib: requests with boxes or crops still work; others get 503
            log.warning("face detection is not available in this replica: %s", e)
        self._run.set_max_batch_size(options.max_batch_size)
        self._wait_s = options.batch_wait_ms / 1000.0
        self._arriving = 0  # requests between their arrival and the batch queue (read, decode)
        self.draining = False  # set by reconfigure when the service stops (Service.stop)
        self._batch_started: float | None = None  # perf_counter() of the running batch's start
        self._last_batch_s = 0.0  # how long the last batch ran
        log.info("replica ready: %r", self.rec)

    def reconfigure(self, config: dict) -> None:
        """Serve calls this with the deployment's user_config, {"draining": bool}, at start and
        when Service.stop redeploys the application with draining=True (the replica stays)."""
        self.draining = bool((config or {}).get("draining"))

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)  # set per service in __init__
    async def _run(self, requests: list) -> list:
        # One thread at a time uses the Reconstructor: serve.batch runs one batch at a time.
        self._batch_started = time.perf_counter()
        try:
            return await asyncio.to_thread(run_batch, self.rec, requests)
        finally:
            self._last_batch_s = time.perf_counter() - self._batch_started
            self._batch_started = None

    def _batch_wait_s(self) -> float:
        """The wait window for a batch whose first request is being queued now: the configured
        wait when other requests are on their way (0 for a lone request), and at least about
        what the running batch still needs (judged by the last one): a request cannot start
        before that anyway, and the requests arriving meanwhile join its batch instead of
        forming small ones behind it."""
        wait = self._wait_s if self._arriving > 0 else 0.0
        if self._batch_started is not None:
            left = self._last_batch_s - (time.perf_counter() - self._batch_started)
            wait = max(wait, min(0.9 * left, MAX_BUSY_WAIT_S))
        return max(wait, 0.0)

    async def _handle(self, request: Request, mesh_endpoint: bool):
        t0 = time.perf_counter()
        if self.draining:  # requests already here run to the end; new ones are told at once
            return _error(503, STOPPING)
        try:
            self._arriving += 1
            try:
                req = parse_request(request.query_params.multi_items(), mesh_endpoint=mesh_endpoint)
                body = await _read_body(request, self.options.max_body_bytes)
                t1 = time.perf_counter()
                req.image = await asyncio.to_thread(decode_body, body, self.options.max_pixels)
                t2 = time.perf_counter()
            finally:
                self._arriving -= 1
            req.timings.update(read=round((t1 - t0) * 1e3, 3), decode=round((t2 - t1) * 1e3, 3))
            # Wait for a batch to fill only when other requests are on their way to it: a lone
            # request runs at once. serve.batch reads the timeout when a batch's first request
            # arrives; this runs on the same event loop, just before that request is queued.
            wait_s = self._batch_wait_s()
            req.wait_ms = round(wait_s * 1e3, 3)
            self._run.set_batch_wait_timeout_s(wait_s)
            answer = await self._run(req)
        except RequestError as e:
            return _error(e.status, str(e))
        except Exception as e:  # never a request without an answer
            log.exception("request failed")
            return _error(500, f"internal error: {type(e).__name__}: {e}")
        if isinstance(answer, RequestError):
            return _error(answer.status, str(answer))
        if isinstance(answer, bytes):
            return Response(answer, media_type="application/octet-stream",
                            headers={"X-Network-Synthetic": str(self.rec.provenance["network_synthetic"]).lower()})
        answer["timings_ms"]["total"] = round((time.perf_counter() - t0) * 1e3, 3)
        return JSONResponse(answer)

    @api.post("/v1/faces")
    async def faces(self, request: Request):
        return await self._handle(request, mesh_endpoint=False)

    @api.post("/v1/mesh")
    async def mesh(self, request: Request):
        return await self._handle(request, mesh_endpoint=True)

    @api.get("/healthz")
    async def healthz(self):
        if self.draining:
            return _error(503, STOPPING)
        return {"status": "ok", "provenance": self.rec.provenance, "synthetic": self.rec.synthetic,
                "max_batch_size": self.options.max_batch_size, "batch_wait_ms": self.options.batch_wait_ms}

    def __del__(self):
        rec = getattr(self, "rec", None)
        if rec is not None:
            rec.close()


def build_app(options: ServeOptions, draining: bool = False):
    """The Ray Serve application (bound deployment) for `options`; draining=True is the same
    application with its replicas refusing new requests (503), deployed by Service.stop."""
    return FaceService.options(
        num_replicas=options.replicas,
        ray_actor_options=options.actor_options(),
        # Enough requests in a replica at once to fill a batch while the previous one runs.
        max_ongoing_requests=max(2 * options.max_batch_size, 8),
        # Stopping: a replica answers the requests it holds (queued and running) before it goes,
        # for at most drain_timeout_s (Service.stop removes the application first, then Ray).
        graceful_shutdown_timeout_s=options.drain_timeout_s,
        graceful_shutdown_wait_loop_s=min(0.5, max(options.drain_timeout_s, 0.01)),
        user_config={"draining": draining},
    ).bind(options)
