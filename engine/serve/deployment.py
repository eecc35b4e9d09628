"""The Ray Serve deployment: one replica = one Reconstructor, requests batched across callers.

The one module of the engine that imports Ray Serve and FastAPI at its top; it is loaded only
by engine.serve's functions (`build_app`, `Service.start`), so `import engine` and
`import engine.serve` never need Ray (an optional extra: pip install "engine3dmm[serve]").

A replica builds its Reconstructor once, in __init__ (runner, decoder, worker threads), and
keeps it for its whole life. `@serve.batch` gathers the requests that arrive within
`batch_wait_ms` (at most `max_batch_size`) into one call of `_run`, which runs them as one
network batch on a thread (the event loop keeps accepting requests meanwhile).
"""

import asyncio
import logging
import time

import numpy as np

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from ray import serve

from engine.errors import EngineError
from engine.serve.requests import RequestError, ServeOptions, decode_body, parse_request, run_batch

log = logging.getLogger("engine.serve")
api = FastAPI(title="engine3dmm", description="3DMM-CNN face reconstruction service")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status)


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

        self.options = options
        # The pixel-limit message names the service's option, not the API's parameter.
        images.set_limit_hint("the service's --max-pixels")
        self.rec = Reconstructor(runner=options.runner, network_dir=options.network_dir,
                                 batch_size=options.max_batch_size, threads=options.threads,
                                 workers=options.workers,
                                 max_pixels=images.DEFAULT if options.max_pixels is None else options.max_pixels)
        # Warm up now, not on the first caller's time: the runner's first batch and the face
        # detector (dlib and its landmark model load on first use; a blank image has no face).
        self.rec.reconstruct_crops(np.zeros((1, 3, 224, 224), np.float32), decode=False)
        try:
            list(self.rec.reconstruct(np.zeros((64, 64, 3), np.uint8)))
        except EngineError as e:  # e.g. no dlib: requests with boxes or crops still work; others get 503
            log.warning("face detection is not available in this replica: %s", e)
        self._run.set_max_batch_size(options.max_batch_size)
        self._run.set_batch_wait_timeout_s(options.batch_wait_ms / 1000.0)
        log.info("replica ready: %r", self.rec)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)  # set per service in __init__
    async def _run(self, requests: list) -> list:
        # One thread at a time uses the Reconstructor: serve.batch runs one batch at a time.
        return await asyncio.to_thread(run_batch, self.rec, requests)

    async def _handle(self, request: Request, mesh_endpoint: bool):
        t0 = time.perf_counter()
        try:
            req = parse_request(dict(request.query_params), mesh_endpoint=mesh_endpoint)
            body = await _read_body(request, self.options.max_body_bytes)
            t1 = time.perf_counter()
            req.image = await asyncio.to_thread(decode_body, body, self.options.max_pixels)
            t2 = time.perf_counter()
            req.timings.update(read=round((t1 - t0) * 1e3, 3), decode=round((t2 - t1) * 1e3, 3))
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
        return {"status": "ok", "provenance": self.rec.provenance, "synthetic": self.rec.synthetic,
                "max_batch_size": self.options.max_batch_size, "batch_wait_ms": self.options.batch_wait_ms}

    def __del__(self):
        rec = getattr(self, "rec", None)
        if rec is not None:
            rec.close()


def build_app(options: ServeOptions):
    """The Ray Serve application (bound deployment) for `options`."""
    return FaceService.options(
        num_replicas=options.replicas,
        ray_actor_options={"num_cpus": options.replica_cpus},
        # Enough requests in a replica at once to fill a batch while the previous one runs.
        max_ongoing_requests=max(2 * options.max_batch_size, 8),
    ).bind(options)
