"""The face service (engine.serve) over real HTTP: started once per module on a free port of
127.0.0.1 on a local Ray with 2 CPUs, queried with urllib / http.client, shut down at the end.

Every answer is checked against the in-process Reconstructor on the same bytes (the service
must add nothing but transport and batching), and every bad input against its documented
status and the engine's own message.
"""
from __future__ import annotations

import concurrent.futures
import http.client
import io
import json
import socket
import time
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import pytest

pytest.importorskip("ray", reason="the face service needs Ray Serve (pip install 'engine3dmm[serve]')")
pytest.importorskip("ray.serve")
pytest.importorskip("fastapi")
skimage_data = pytest.importorskip("skimage.data")
pytest.importorskip("dlib", reason="the astronaut's face is found by dlib")
from PIL import Image  # noqa: E402

from engine.serve import ServeOptions, Service  # noqa: E402

MAX_BODY_MB = 1.0
MAX_PIXELS = 4_000_000
TIMEOUT = 120  # seconds: any request taking longer is a hang


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _encode(rgb: np.ndarray, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def service():
    # precision given: the replica builds its runner itself (engine.runners.runner_or_name)
    svc = Service(ServeOptions(max_batch_size=8, batch_wait_ms=20, max_body_mb=MAX_BODY_MB, max_pixels=MAX_PIXELS,
                               workers=1, threads=1, precision="fp32"),
                  port=_free_port(), num_cpus=2, start_timeout_s=180, metrics_port=_free_port())
    svc.start()
    try:
        yield svc
    finally:
        svc.stop()


@pytest.fixture(scope="module")
def rec():
    import engine

    with engine.Reconstructor(max_pixels=MAX_PIXELS, workers=1, threads=1) as r:
        yield r


@pytest.fixture(scope="module")
def astronaut_png():
    return _encode(skimage_data.astronaut(), "PNG")


@pytest.fixture(scope="module")
def astronaut_jpeg():
    return _encode(skimage_data.astronaut(), "JPEG", quality=90)


def post(svc, path: str, body: bytes, query: str = "", timeout: float = TIMEOUT):
    """(status, headers, body bytes) of one POST; HTTP errors are answers too."""
    req = urllib.request.Request(svc.url + path + query, data=body, method="POST",
                                 headers={"Content-Type": "application/octet-stream"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def post_json(svc, path, body, query=""):
    status, _, data = post(svc, path, body, query)
    return status, json.loads(data)


def in_process(rec, data: bytes, **kw):
    return list(rec.reconstruct(data, **kw))


def kill_replica_in_flight(svc, body: bytes, n: int) -> dict:
    """ray.kill the (only) replica with `n` requests in flight: none hangs, each gets an answer
    (200, a 5xx, or a failed connection where no proxy answers for it). Returns the killed actor."""
    import ray

    (actor,) = _replica_actors()
    handle = ray.get_actor(actor["name"], namespace=actor["namespace"])
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        futures = [pool.submit(post, svc, "/v1/faces", body, "", 60) for _ in range(n)]
        time.sleep(0.2)
        ray.kill(handle, no_restart=True)
        done, pending = concurrent.futures.wait(futures, timeout=90)
    assert not pending, "requests to a killed replica hung"
    for f in done:
        try:
            status, _, _ = f.result()
        except (OSError, http.client.HTTPException):  # the connection itself failed: an error, answered
            continue
        assert status == 200 or status >= 500
    return actor


def wait_until_serving(svc, body: bytes, timeout_s: float = 120) -> bytes:
    """The first 200 answer's body once a new replica serves (connections refused meanwhile are
    retried: with direct ingress nothing listens while Ray restarts the replica)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            status, _, data = post(svc, "/v1/faces", body, "", 30)
        except (OSError, http.client.HTTPException):
            status, data = None, b""
        if status == 200:
            return data
        assert time.monotonic() < deadline, f"the service did not recover: {status} {data[:200]!r}"
        time.sleep(0.5)


def stop_with_requests_in_flight(svc, body: bytes, n: int) -> None:
    """stop() with `n` requests in flight: each gets one HTTP answer (none sees its connection
    closed): 200 with its face, or 503 "the service is stopping"; some 200s come after stop()
    was called, so requests were still running then."""
    answers = []

    def one():
        status, _, data = post(svc, "/v1/faces", body, "", 90)
        answers.append((status, json.loads(data), time.monotonic()))

    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        futures = [pool.submit(one) for _ in range(n)]
        time.sleep(1.0)
        stopped_at = time.monotonic()
        svc.stop()
        for f in futures:
            f.result(timeout=120)  # a closed connection raises here
    assert len(answers) == n
    late = [a for a in answers if a[2] > stopped_at]
    assert any(status == 200 for status, _, _ in late), "no request was still running when stop() was called"
    for status, answer, _ in answers:
        if status == 200:
            assert len(answer["faces"]) == 1
        else:
            assert status == 503 and answer["error"].startswith("the service is stopping"), answer


def test_healthz(service):
    with urllib.request.urlopen(service.url + "/healthz", timeout=TIMEOUT) as r:
        assert r.status == 200
        h = json.loads(r.read())
    assert h["status"] == "ok"
    assert isinstance(h["provenance"]["network_synthetic"], bool)
    assert h["max_batch_size"] == 8
    assert h["provenance"]["precision"] == "fp32" and h["provenance"]["device"] == "cpu"
    assert service.options.replica_gpus == 0  # no GPU in this Ray: CPU replicas (ServeOptions.gpus_per_replica)


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_astronaut_equals_in_process(service, rec, fmt, astronaut_png, astronaut_jpeg):
    data = astronaut_png if fmt == "png" else astronaut_jpeg
    status, answer = post_json(service, "/v1/faces", data)
    assert status == 200, answer
    expected = in_process(rec, data)
    assert len(expected) == 1 and expected[0].error is None
    assert len(answer["faces"]) == 1
    face = answer["faces"][0]
    assert face["error"] is None
    coeffs = np.asarray(face["coeffs"], np.float32)
    assert coeffs.shape == (198,)
    assert np.max(np.abs(coeffs - expected[0].coeffs)) <= 1e-5
    assert face["descriptor"] == face["coeffs"]  # part=all: the whole 198-vector
    b = expected[0].box
    assert face["box"] == [b.x0, b.y0, b.x1, b.y1]
    assert answer["provenance"]["network_synthetic"] == rec.provenance["network_synthetic"]
    assert answer["provenance"]["runner"] == rec.provenance["runner"]
    assert {"decode", "engine", "total"} <= set(answer["timings_ms"])
    assert "pose" not in face  # only when asked


def test_pose_and_part(service, rec, astronaut_jpeg):
    status, answer = post_json(service, "/v1/faces", astronaut_jpeg, "?pose=true&part=alpha")
    assert status == 200, answer
    expected = in_process(rec, astronaut_jpeg, pose=True)[0]
    face = answer["faces"][0]
    assert len(face["descriptor"]) == 99
    assert np.max(np.abs(np.asarray(face["descriptor"]) - expected.alpha)) <= 1e-5
    assert face["pose"] is not None and face["pose_error"] is None
    for k in ("yaw", "pitch", "roll"):
        assert abs(face["pose"][k] - getattr(expected.pose, k)) <= 1e-3


def test_no_face(service, rec):
    data = _encode(skimage_data.coffee(), "JPEG")
    status, answer = post_json(service, "/v1/faces", data)
    expected = in_process(rec, data)
    assert status == 422
    assert "no face found" in answer["error"] and "request body" in answer["error"]
    assert expected[0].error.endswith(answer["error"].split("no face found", 1)[1])


@pytest.mark.parametrize("case,status,words", [
    ("not_an_image", 400, "not a recognised image format"),
    ("truncated_jpeg", 400, "truncated"),
    ("bomb", 400, f"limit is {MAX_PIXELS}"),
    ("empty", 400, "empty image data"),
])
def test_bad_bodies(service, astronaut_jpeg, case, status, words):
    if case == "not_an_image":
        body = b"this is not an image, it is a sentence" * 10
    elif case == "truncated_jpeg":
        body = astronaut_jpeg[: len(astronaut_jpeg) // 2]
    elif case == "bomb":  # 25 megapixels in a few kB: refused from its header, never decoded
        body = _encode(np.zeros((5000, 5000), bool), "PNG", optimize=True)
        assert len(body) < MAX_BODY_MB * (1 << 20)
    else:
        body = b""
    got, answer = post_json(service, "/v1/faces", body)
    assert got == status, answer
    assert words in answer["error"], answer
    if case == "bomb":
        assert "5000x5000" in answer["error"] and "--max-pixels" in answer["error"]


def test_body_over_limit_is_413(service):
    body = b"\0" * (int(MAX_BODY_MB * (1 << 20)) + 1)
    status, answer = post_json(service, "/v1/faces", body)
    assert status == 413 and "limit is" in answer["error"]
    # Without a Content-Length (chunked): refused while reading, not after.
    conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=TIMEOUT)
    try:
        chunks = (b"\0" * 65536 for _ in range(int(MAX_BODY_MB * 16) + 2))
        conn.request("POST", "/v1/faces", body=chunks, encode_chunked=True,
                     headers={"Transfer-Encoding": "chunked"})
        r = conn.getresponse()
        assert r.status == 413, r.read()
        assert "limit is" in json.loads(r.read())["error"]
    finally:
        conn.close()
    with urllib.request.urlopen(service.url + "/healthz", timeout=TIMEOUT) as r:  # still serving
        assert r.status == 200


@pytest.mark.parametrize("query,words", [
    ("?boxes=[[1,2,3", "query field boxes line 1: invalid JSON"),
    ("?boxes=[[1,2,3]]", "query field boxes[0]"),
    ("?boxes=[]", "a JSON list of 1..256 boxes"),
    ("?cropped=maybe", "query field cropped"),
    ("?colour=red", "query field colour"),
    ("?cropped=1&pose=1", "pose and cropped"),
    ("?part=nose", "query field part"),
    ("?pose=true&pose=false", "query field pose: expected it once, found it 2 times"),
    ("?boxes=[[1,2,30,40]]&boxes=[[1,2,30,40]]", "query field boxes: expected it once, found it 2 times"),
    ("?pose=", "query field pose: expected perspective, weak_perspective (or weak-perspective), true (meaning "
               "perspective) or false (or 1/0, yes/no, on/off; any case), found an empty value"),
    ("?cropped=", "query field cropped: expected true or false"),
    ("?boxes=", "query field boxes: expected a JSON list of 1..256 boxes"),
    ("?part=", "query field part: expected one of all, alpha, beta, found an empty value"),
    # Text the parse once let through to a 500 (or read as another number): each a 400 naming its field.
    ("/v1/mesh?face=%C2%B2", "query field face: expected a face index 0..256 (digits 0-9), found '\u00b2'"),
    ("/v1/mesh?face=%E2%91%A0", "query field face: expected a face index"),
    ("/v1/mesh?face=%D9%A0", "query field face: expected a face index"),  # '٠', once read as 0
    ("/v1/mesh?face=%EF%BC%91", "query field face: expected a face index"),  # '１', once read as 1
    ("/v1/mesh?face=" + "9" * 5000, "(5000 characters)"),
    ("?boxes=" + "%5B" * 1000 + "%5D" * 1000, "query field boxes: JSON nested too deeply (1000 levels, at most 8)"),
    ("?boxes=%5B%5B1e400,1,20,30%5D%5D", "query field boxes[0], field x0: expected a finite number, found '1e400'"),
    ("?boxes=%5B%5BNaN,1,20,30%5D%5D", "query field boxes[0], field x0: expected a finite number, found nan"),
    ("?boxes=%5B%5Btrue,1,20,30%5D%5D", "field x0: expected a number, found a boolean"),
    ("?boxes=%5B%5B" + "9" * 5000 + ",1,20,30%5D%5D", "field x0: expected a finite number"),
    ("?boxes=%7B%22a%22:%7B%22b%22:1%7D%7D", "found an object"),
    ("?boxes=%FF%FE", "query field boxes line 1: invalid JSON"),  # not UTF-8
    ("?pose=%FF", "query field pose: expected"),
    ("?pose=" + "x" * 4000, "(4000 characters)"),
])
def test_bad_query_fields(service, astronaut_jpeg, query, words):
    path, _, fields = query.partition("?")  # "?..." is /v1/faces's; "/v1/mesh?..." names its endpoint
    path, query = path or "/v1/faces", "?" + fields
    status, answer = post_json(service, path, astronaut_jpeg, query)
    assert status == 400 and words in answer["error"], answer


@pytest.mark.parametrize("method,path,status,words", [
    ("GET", "/v1/faces", 405, "GET /v1/faces: method not allowed (expected POST)"),
    ("PUT", "/v1/mesh", 405, "PUT /v1/mesh: method not allowed (expected POST)"),
    ("POST", "/healthz", 405, "POST /healthz: method not allowed (expected GET)"),
    ("GET", "/", 404, "GET /: no such endpoint (expected one of POST /v1/faces, POST /v1/mesh, GET /healthz)"),
    ("POST", "/v1/face", 404, "POST /v1/face: no such endpoint"),
    ("DELETE", "/v2/faces/7", 404, "DELETE /v2/faces/7: no such endpoint"),
])
def test_unknown_routes_and_wrong_methods_answer_the_services_json(service, method, path, status, words):
    """Not FastAPI's {"detail": ...}: every refusal is {"error", "status"}, naming what was asked
    and what the service has."""
    conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=TIMEOUT)
    try:
        conn.request(method, path, body=b"x" if method in ("POST", "PUT") else None)
        r = conn.getresponse()
        answer = json.loads(r.read())
    finally:
        conn.close()
    assert r.status == status
    assert answer == {"error": answer["error"], "status": status} and words in answer["error"], answer


def test_a_lone_request_does_not_wait_for_a_batch(service, astronaut_jpeg):
    """Nothing else on its way: the request runs at once, not after the 20 ms batch wait (the
    answer says which wait its batch was given; the 32-request test sees the wait used)."""
    status, answer = post_json(service, "/v1/faces", astronaut_jpeg)
    assert status == 200, answer
    assert answer["batch"] == {"requests": 1, "groups": 1, "wait_ms": 0.0}


def test_mesh_read_by_plyfile(service, rec, astronaut_png):
    plyfile = pytest.importorskip("plyfile")
    status, headers, data = post(service, "/v1/mesh", astronaut_png)
    assert status == 200, data[:300]
    assert headers["content-type"] == "application/octet-stream"
    ply = plyfile.PlyData.read(io.BytesIO(data))
    expected = in_process(rec, astronaut_png)[0]
    v = ply["vertex"].data
    got = np.stack([v["x"], v["y"], v["z"]], axis=1)
    assert got.shape == expected.vertices.shape
    assert np.max(np.abs(got - expected.vertices)) <= 1e-2  # mm; coefficients agree to 1e-5 sd
    colors = np.stack([v["red"], v["green"], v["blue"]], axis=1).astype(int)
    assert np.max(np.abs(colors - expected.colors.astype(int))) <= 1
    tri = np.stack(ply["face"].data["vertex_indices"])
    assert np.array_equal(tri, expected.faces)
    if expected.provenance["network_synthetic"]:
        assert any("synthetic" in c for c in ply.comments)
    # A face the image does not have: 422, not a crash.
    status, _, data = post(service, "/v1/mesh", astronaut_png, "?face=3")
    assert status == 422 and b"not a face of this image" in data


def test_faces_with_mesh_carry_the_same_ply(service, astronaut_png):
    """/v1/faces?mesh=true: each face carries its binary PLY (base64), the bytes /v1/mesh answers."""
    import base64

    plyfile = pytest.importorskip("plyfile")
    status, answer = post_json(service, "/v1/faces", astronaut_png, "?mesh=true")
    assert status == 200, answer
    data = base64.b64decode(answer["faces"][0]["mesh_ply_base64"])
    status, _, direct = post(service, "/v1/mesh", astronaut_png)
    assert status == 200 and data == direct
    assert plyfile.PlyData.read(io.BytesIO(data))["vertex"].count > 0


def test_32_concurrent_requests_each_answered_once(service, rec, astronaut_jpeg):
    """28 requests with their own box (so each has its own coefficients) and 4 without a face,
    all at once: every request gets its own answer, none lost, none swapped, and the service
    batched some of them together."""
    boxes = [[150 + 2 * i, 70, 270 + 2 * i, 190] for i in range(28)]
    coffee = _encode(skimage_data.coffee(), "PNG")
    expected = {f"img{i}": None for i in range(28)}
    for r in rec.reconstruct([(f"img{i}", astronaut_jpeg) for i in range(28)],
                             boxes={f"img{i}": [b] for i, b in enumerate(boxes)}):
        expected[r.source] = r.coeffs.copy()
    jobs = [("box", i) for i in range(28)] + [("coffee", i) for i in range(4)]

    def one(job):
        kind, i = job
        if kind == "coffee":
            return post_json(service, "/v1/faces", coffee)
        return post_json(service, "/v1/faces", astronaut_jpeg, "?" + urllib.parse.urlencode({"boxes": json.dumps([boxes[i]])}))

    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(one, jobs, timeout=TIMEOUT))
    assert len(answers) == 32
    batched = []
    for (kind, i), (status, answer) in zip(jobs, answers):
        if kind == "coffee":
            assert status == 422 and "no face found" in answer["error"]
            continue
        assert status == 200, answer
        (face,) = answer["faces"]
        assert face["box"] == [float(x) for x in boxes[i]]
        assert np.max(np.abs(np.asarray(face["coeffs"], np.float32) - expected[f"img{i}"])) <= 1e-5
        batched.append(answer["batch"])
    assert max(b["requests"] for b in batched) > 1, "no two of 32 simultaneous requests shared a batch"
    # A batch of several was given a wait by its first request: others were on their way (the
    # service's 20 ms) or a batch was running (about what it still needed).
    assert all(b["wait_ms"] > 0 for b in batched if b["requests"] > 1), batched


def _replica_actors():
    import ray

    return [a for a in ray.util.list_named_actors(all_namespaces=True) if "SERVE_REPLICA" in a["name"]]


def test_prometheus_metrics(service, astronaut_jpeg):
    """Ray's own metrics endpoint answers in Prometheus' text format, Serve's metrics among them
    (exported every few seconds: a bounded wait)."""
    post(service, "/v1/faces", astronaut_jpeg)
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{service.metrics_port}/metrics", timeout=10) as r:
                text = r.read().decode()
        except OSError:
            text = ""
        if "ray_serve_" in text:
            break
        assert time.monotonic() < deadline, f"no Serve metrics on the metrics port: {text[:300]!r}"
        time.sleep(1)
    assert "# TYPE" in text


def test_killed_replica_recovers(service, astronaut_jpeg):
    """ray.kill the replica while requests are in flight: each gets one answer (its result, or an
    error), none hangs, and Ray brings a new replica up that serves again."""
    actor = kill_replica_in_flight(service, astronaut_jpeg, 8)
    assert len(json.loads(wait_until_serving(service, astronaut_jpeg))["faces"]) == 1
    assert [a["name"] for a in _replica_actors()] != [actor["name"]]


def test_stop_answers_every_request_in_flight(service, astronaut_jpeg):
    """Last in the module (it stops the service). Stopped with 24 requests in flight (16 held by
    the replica, 8 queued at the proxy): each gets one HTTP answer, none sees its connection
    closed; those the replica held run to the end (200), the ones not yet taken are told the
    service is stopping (503 in the service's JSON). Some answers come after stop() was called,
    so the requests were in flight."""
    stop_with_requests_in_flight(service, astronaut_jpeg, 24)
