"""The face service: a Ray Serve application around one `Reconstructor` per replica.

    from engine.serve import Service, ServeOptions

    with Service(ServeOptions(max_batch_size=8, batch_wait_ms=10), port=8000) as svc:
        ...  # POST http://127.0.0.1:8000/v1/faces with an image body

Endpoints (engine.serve.deployment; answers and statuses in engine.serve.requests):
    POST /v1/faces   body: an encoded image; query: boxes (JSON), cropped, pose, mesh, part.
                     JSON {"faces": [{"box", "coeffs", "descriptor", "pose", "error", ...}],
                     "provenance": {..., "network_synthetic"}, "batch": {...}, "timings_ms": {...}}
    POST /v1/mesh    the binary PLY of one face (query face=K, default 0), the engine's writer
    GET  /healthz    {"status": "ok", "provenance": ...}

Ray is an optional extra (pip install "engine3dmm[serve]"): nothing here imports it until a
service is built or started.
"""
from __future__ import annotations

from engine.serve.requests import RequestError, ServeOptions
from engine.serve.service import Service, StartInterrupted, ray_available

__all__ = ["Service", "ServeOptions", "RequestError", "StartInterrupted", "ray_available"]
