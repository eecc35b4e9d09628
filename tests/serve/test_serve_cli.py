"""`engine3dmm serve` as a user runs it: a process of its own, its local Ray, HTTP answers, and
SIGTERM / SIGINT stopping the service and every process it started."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
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


@pytest.mark.parametrize("sig", [signal.SIGTERM, pytest.param(signal.SIGINT, marks=pytest.mark.slow)])
def test_serve_command_answers_and_stops_cleanly(tmp_path, sig):
    port = _free_port()
    log = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "engine", "serve", "--port", str(port), "--num-cpus", "2",
                             "--max-batch-size", "4", "--batch-wait-ms", "5", "--workers", "1", "--threads", "1",
                             "--metrics-port", str(_free_port())],
                            cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as r:
                    health = json.loads(r.read())
                break
            except (urllib.error.URLError, OSError):
                assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-3000:]
                time.sleep(0.5)
        assert health["status"] == "ok" and health["max_batch_size"] == 4
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/faces", data=b"not an image", method="POST")
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=60)
        assert e.value.code == 400 and "not a recognised image format" in json.loads(e.value.read())["error"]
        started = _descendants(proc.pid)
        assert started, "the service started no Ray processes?"
        proc.send_signal(sig)
        assert proc.wait(timeout=90) == 0, (tmp_path / "serve.log").read_text()[-3000:]
        deadline = time.monotonic() + 30
        while any(_alive(p) for p in started) and time.monotonic() < deadline:
            time.sleep(0.5)
        left = [p for p in started if _alive(p)]
        assert not left, f"processes left behind: {[Path(f'/proc/{p}/cmdline').read_bytes()[:120] for p in left]}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        log.close()


@pytest.mark.parametrize("argv,words", [
    (["--replicas", "3", "--num-cpus", "2"], "do not fit in the local Ray's 2 CPUs"),
    (["--batch-wait-ms", "-1"], "batch_wait_ms: expected milliseconds in 0..10000"),
])
def test_serve_command_refuses_bad_options_before_starting(capsys, argv, words):
    import signal as _signal

    from engine.cli import main

    before = {s: _signal.getsignal(s) for s in (_signal.SIGINT, _signal.SIGTERM)}
    assert main(["serve", *argv]) == 1
    assert words in capsys.readouterr().err
    assert {s: _signal.getsignal(s) for s in before} == before  # nothing installed, nothing started
    import ray

    assert not ray.is_initialized()
