"""The face service with Ray Serve's direct ingress (ServeOptions.direct_ingress, `serve
--direct-ingress`): the replica itself listens on the service's port, Ray's proxy on another.

Started once for the module on a free port of 127.0.0.1 on a local Ray with 2 CPUs (slow: Ray
and the replica start in about 10 s); the refusals need no Ray. Answers are checked against the
in-process Reconstructor, as in test_serve.py (whose helpers this module reuses).
"""
from __future__ import annotations

import json
import os
import socket
import urllib.request

import numpy as np
import pytest

from engine.errors import InputError
from engine.serve import ServeOptions, Service
from engine.serve.service import direct_ingress_env
from tests.serve import test_serve as base
from tests.serve.test_serve import (
    TIMEOUT,
    _free_port,
    _replica_actors,
    in_process,
    kill_replica_in_flight,
    post_json,
    stop_with_requests_in_flight,
    wait_until_serving,
)

OPTIONS = {"max_batch_size": 8, "batch_wait_ms": 20, "max_body_mb": base.MAX_BODY_MB, "max_pixels": base.MAX_PIXELS,
           "workers": 1, "threads": 1}


@pytest.fixture(scope="module")
def rec():
    import engine

    with engine.Reconstructor(max_pixels=base.MAX_PIXELS, workers=1, threads=1) as r:
        yield r


@pytest.fixture(scope="module")
def astronaut_jpeg():
    return base._encode(base.skimage_data.astronaut(), "JPEG", quality=90)


@pytest.fixture(scope="module")
def service():
    svc = Service(ServeOptions(direct_ingress=True, **OPTIONS), port=_free_port(), num_cpus=2, start_timeout_s=180,
                  quiet=True)
    svc.start()
    try:
        yield svc
    finally:
        svc.stop()


def _listening(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex((host, port)) == 0


# --- refusals: nothing starts ---------------------------------------------------------------------

def test_direct_ingress_refuses_more_than_one_replica():
    with pytest.raises(InputError, match=r"replicas: direct ingress serves with exactly 1 replica.*found 2"):
        ServeOptions(direct_ingress=True, replicas=2)
    with pytest.raises(InputError, match=r"direct_ingress: expected True or False, found 'yes'"):
        ServeOptions(direct_ingress="yes")


def test_direct_ingress_refuses_a_joined_cluster():
    with pytest.raises(InputError, match=r"address: direct ingress needs a local Ray this service starts.*--address"):
        Service(ServeOptions(direct_ingress=True), address="127.0.0.1:6379")


@pytest.mark.parametrize("argv,words", [
    (["--direct-ingress", "--replicas", "2", "--num-cpus", "2"], "direct ingress serves with exactly 1 replica"),
    (["--direct-ingress", "--address", "127.0.0.1:1"], "direct ingress needs a local Ray this service starts"),
])
def test_serve_command_refuses_direct_ingress_combinations(capsys, argv, words):
    from engine.cli import main

    assert main(["serve", *argv]) == 2  # options that cannot work together: a usage error
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err
    import ray

    assert not ray.is_initialized()


def test_direct_ingress_env_pins_the_replica_to_the_port():
    """Ray hands a replica a port of [MIN, MAX): exactly the service's one."""
    env = direct_ingress_env(8123)
    assert env["RAY_SERVE_ENABLE_DIRECT_INGRESS"] == "1"
    assert range(int(env["RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"]),
                 int(env["RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT"])) == range(8123, 8124)


# --- the running service (slow: one local Ray for the module) ------------------------------------

@pytest.mark.slow
def test_direct_ingress_answers_on_its_port_like_in_process(service, rec, astronaut_jpeg):
    """The replica's own server answers on the service's port (Ray's proxy is elsewhere), with
    the in-process answer; the proxy, in front of the same replica, gives the same one."""
    assert service.proxy_port != service.port and _listening("127.0.0.1", service.proxy_port)
    expected = in_process(rec, astronaut_jpeg)
    assert len(expected) == 1 and expected[0].error is None
    for url in (service.url, service.proxy_url):
        req = urllib.request.Request(url + "/v1/faces", data=astronaut_jpeg, method="POST")
        with urllib.request.urlopen(req, timeout=TIMEOUT) as r:
            assert r.status == 200
            answer = json.loads(r.read())
        (face,) = answer["faces"]
        assert face["error"] is None
        assert np.max(np.abs(np.asarray(face["coeffs"], np.float32) - expected[0].coeffs)) <= 1e-5
        b = expected[0].box
        assert face["box"] == [b.x0, b.y0, b.x1, b.y1]
    # The service's own refusals still come from the application, in its JSON.
    status, answer = post_json(service, "/v1/faces", b"not an image")
    assert status == 400 and "not a recognised image format" in answer["error"]
    with urllib.request.urlopen(service.url + "/healthz", timeout=TIMEOUT) as r:
        assert json.loads(r.read())["status"] == "ok"


@pytest.mark.slow
def test_direct_ingress_settings_stay_out_of_this_process(service):
    """Only the Ray this service started got them: a later ray.init here would not."""
    assert not set(direct_ingress_env(service.port)) & set(os.environ)


# About 65 s, most of it waiting for the kernel's TIME_WAIT to let Ray's new replica bind the
# port again: more than the suite's budget allows, so it runs only when asked (E3DMM_LONG_TESTS=1).
@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("E3DMM_LONG_TESTS") != "1",
                    reason="a minute of TIME_WAIT; set E3DMM_LONG_TESTS=1 to run it")
def test_killed_replica_comes_back_on_the_same_port(service, astronaut_jpeg):
    """ray.kill the replica with requests in flight: each gets one answer or a failed connection
    (there is no proxy to answer for it), none hangs; Ray's new replica listens on the same port."""
    actor = kill_replica_in_flight(service, astronaut_jpeg, 4)
    assert len(json.loads(wait_until_serving(service, astronaut_jpeg))["faces"]) == 1
    assert [a["name"] for a in _replica_actors()] != [actor["name"]]


@pytest.mark.slow
def test_stop_answers_every_request_in_flight(service, astronaut_jpeg):
    """Last in the module (it stops the service). Stopped with 12 requests in flight, all held by
    the replica itself: each gets one HTTP answer (200, or 503 'the service is stopping'), none
    sees its connection closed, and some were still running when stop() was called."""
    stop_with_requests_in_flight(service, astronaut_jpeg, 12)
    assert not _listening("127.0.0.1", service.port)
