"""`engine3dmm serve` as a user runs it: a process of its own, its local Ray, HTTP answers, and
SIGTERM / SIGINT stopping the service (requests in flight answered) and every process it
started, also when the signal comes while it is still starting; and the start's refusals.

The processes of the Ray a test's service started are found by a mark in their environment
(every Ray process inherits the command's environment), so that a process re-parented away
from the command is found too, and no other Ray on the machine is looked at."""
from __future__ import annotations

import concurrent.futures
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="the face service needs Ray Serve (pip install 'engine3dmm[serve]')")
pytest.importorskip("fastapi")

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(pid: int) -> set[int]:
    """Every live process below `pid` (from /proc: the parent of each process)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _marked(mark: str) -> set[int]:
    """Live processes whose environment holds ENGINE3DMM_TEST_MARK=mark (this user's only)."""
    needle = f"ENGINE3DMM_TEST_MARK={mark}".encode()
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                if needle in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0") and _alive(int(entry)):
                    found.add(int(entry))
            except OSError:
                continue
    return found


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()[:120]
    except OSError:
        return b"?"


def _start_serve(tmp_path, port: int, *extra):
    """(process, mark, log path): `engine3dmm -q serve` in its own session, its environment marked."""
    mark = uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["ENGINE3DMM_TEST_MARK"] = mark
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "engine", "-q", "serve", "--port", str(port), "--num-cpus", "2",
                                 "--max-batch-size", "4", "--batch-wait-ms", "5", "--workers", "1", "--threads", "1",
                                 "--metrics-port", str(_free_port()), *extra],
                                cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    return proc, mark, log_path


def _assert_all_gone(mark: str, log_path: Path) -> None:
    deadline = time.monotonic() + 30
    while _marked(mark) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = _marked(mark)
    assert not left, f"processes left behind: {[_cmdline(p) for p in left]}\n{log_path.read_text()[-2000:]}"


def _kill_all(proc, mark: str) -> None:
    """Test cleanup after a failure: this test's processes only, by their id."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    for pid in _marked(mark):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def _post_astronaut(port: int):
    """(status, JSON answer) of POST /v1/faces with the astronaut; a failed connection raises."""
    import io

    import skimage.data
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(skimage.data.astronaut()).save(buf, "JPEG", quality=90)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("POST", "/v1/faces", body=buf.getvalue())
        r = conn.getresponse()
        return r.status, json.loads(r.read())
    finally:
        conn.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM])  # SIGINT: the stop-while-starting test below (same handler)
def test_serve_command_answers_and_stops_cleanly(tmp_path, sig):
    """Quiet (-q: none of Ray's INFO lines or warnings), it answers; stopped with requests in
    flight, each gets its answer (none sees its connection closed), and every process of its
    Ray is gone."""
    pytest.importorskip("skimage.data")
    port = _free_port()
    proc, mark, log_path = _start_serve(tmp_path, port)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, log_path.read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as r:
                    health = json.loads(r.read())
                break
            except (urllib.error.URLError, OSError):
                assert time.monotonic() < deadline, log_path.read_text()[-3000:]
                time.sleep(0.5)
        assert health["status"] == "ok" and health["max_batch_size"] == 4
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/faces", data=b"not an image", method="POST")
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=60)
        assert e.value.code == 400 and "not a recognised image format" in json.loads(e.value.read())["error"]
        started = _descendants(proc.pid)
        assert started, "the service started no Ray processes?"
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            futures = [pool.submit(_post_astronaut, port) for _ in range(6)]
            time.sleep(0.5)
            proc.send_signal(sig)
            answers = [f.result(timeout=120) for f in futures]  # a closed connection raises here
        assert all(status == 200 or (status == 503 and "stopping" in a["error"]) for status, a in answers), answers
        assert any(status == 200 for status, _ in answers)
        assert proc.wait(timeout=90) == 0, log_path.read_text()[-3000:]
        _assert_all_gone(mark, log_path)
        deadline = time.monotonic() + 30
        while any(_alive(p) for p in started) and time.monotonic() < deadline:
            time.sleep(0.5)
        left = [p for p in started if _alive(p)]
        assert not left, f"processes left behind: {[_cmdline(p) for p in left]}"
        log = log_path.read_text()
        assert "listening on" in log and "stopping" in log
        assert " INFO " not in log and "Token authentication" not in log, log[-3000:]
    finally:
        _kill_all(proc, mark)


def _wait_for(mark: str, proc, log_path: Path, word: bytes, timeout: float = 180) -> None:
    """Until a process of the mark (not the command itself) whose command line holds `word` runs."""
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, log_path.read_text()[-3000:]
        if any(word in _cmdline(p) for p in _marked(mark) - {proc.pid}):
            return
        assert time.monotonic() < deadline, f"no {word!r} process: {log_path.read_text()[-3000:]}"
        time.sleep(0.05)


@pytest.mark.parametrize("moment", ["ray starting", pytest.param("replica starting", marks=pytest.mark.slow)])
def test_serve_stopped_while_starting_leaves_no_process(tmp_path, moment):
    """SIGTERM while Ray itself starts (its first process, the GCS, is up) or SIGINT (Ctrl-C) while
    the replica is being built: the command stops what it started, says so and exits 0; no process
    of its Ray stays (Ray's agents included)."""
    port = _free_port()
    proc, mark, log_path = _start_serve(tmp_path, port)
    try:
        _wait_for(mark, proc, log_path, b"gcs_server" if moment == "ray starting" else b"ServeRepli")
        proc.send_signal(signal.SIGTERM if moment == "ray starting" else signal.SIGINT)
        assert proc.wait(timeout=120) == 0, log_path.read_text()[-3000:]
        assert "stopped before it was ready" in log_path.read_text(), log_path.read_text()[-3000:]
        _assert_all_gone(mark, log_path)
    finally:
        _kill_all(proc, mark)


def test_a_replica_that_cannot_start_is_named_with_its_own_error(tmp_path):
    """Weights only the replica reads are corrupt: the command ends (exit 1) with the replica's
    own error, not Ray's "Failed to update the deployments", and leaves no process behind."""
    card = tmp_path / "card"
    card.mkdir()
    (card / "cnn3dmm.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{\"a\":1}garbage")
    proc, mark, log_path = _start_serve(tmp_path, _free_port(), "--network-dir", str(card))
    try:
        assert proc.wait(timeout=240) == 1, log_path.read_text()[-3000:]
        last = log_path.read_text().strip().splitlines()[-1]
        assert last.startswith("engine3dmm: error: serve: the replicas failed to start: ModelFileError: "), last
        assert "not a readable safetensors" in last and "Traceback" not in log_path.read_text()
        _assert_all_gone(mark, log_path)
    finally:
        _kill_all(proc, mark)


def test_serve_refuses_a_port_in_use_at_once(capsys):
    """Another program listens on the port: a one-line error and exit 1, before Ray starts."""
    from engine.cli import main

    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        assert main(["serve", "--port", str(port)]) == 1
    err = capsys.readouterr().err
    assert f"port {port} on 127.0.0.1: already in use" in err and "--port" in err
    assert "Traceback" not in err
    import ray

    assert not ray.is_initialized()


@pytest.mark.parametrize("argv,words", [
    (["--replicas", "3", "--num-cpus", "2"], "need 3 CPUs; they do not fit in the local Ray's 2 CPUs"),
    (["--replicas", str((os.cpu_count() or 1) + 1)], f"they do not fit in the local Ray's {os.cpu_count() or 1} CPUs"),
    (["--replicas", "2", "--replica-cpus", "1.5", "--num-cpus", "2"], "need 3 CPUs"),
    (["--batch-wait-ms", "-1"], "batch_wait_ms: expected milliseconds in 0..10000"),
    (["--compile", "--runner", "onnxruntime"], "onnxruntime cannot compile"),
    (["--compile-mode", "default"], "--compile-mode default: applies with --compile only"),
    (["--replica-gpus", "1", "--runner", "torch-cpu"], "the torch-cpu runner runs on the CPU, found 1 GPU(s)"),
    (["--precision", "fp16", "--runner", "onnxruntime"], "precision fp16: the CPU runners do not run float16"),
    (["--precision", "int8", "--runner", "torch-cpu"], "the torch-cpu runner supports ['fp32', 'bf16'], found 'int8'"),
])
def test_serve_command_refuses_bad_options_before_starting(capsys, argv, words):
    import signal as _signal

    from engine.cli import main

    before = {s: _signal.getsignal(s) for s in (_signal.SIGINT, _signal.SIGTERM)}
    assert main(["serve", *argv]) == 2  # options that cannot work together: a usage error
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err
    assert {s: _signal.getsignal(s) for s in before} == before  # nothing installed, nothing started
    import ray

    assert not ray.is_initialized()
