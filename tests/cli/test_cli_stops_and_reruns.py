"""How batch runs stop, what they say, and what they find in their folders: SIGTERM stops a run as
Ctrl-C does (real processes, real signals), an output folder holding an earlier run's outputs is
said to be, a failure shared by every frame of a video is said once, and a folder entry that
cannot be searched (a dangling link) is reported."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess

import pytest

from tests.cli.helpers import (
    ASTRONAUT_BOX,
    engine_process,
    interrupt_when,
    load_npy,
    no_partial_files,
    write_face_clip,
)


def _copies(photos, folder, n):
    folder.mkdir()
    for i in range(n):
        (folder / f"img{i:02d}.png").write_bytes((photos / "astronaut.png").read_bytes())
    return folder


# --- SIGTERM (timeout, docker stop, Slurm, Kubernetes) stops a run as Ctrl-C does -------------------------

def test_sigterm_stops_reconstruct_like_ctrl_c(photos, tmp_path):
    src = _copies(photos, tmp_path / "in", 20)
    out = tmp_path / "out"
    p = engine_process("reconstruct", src, "--cropped", "--batch-size", "1", "--workers", "1", "-o", out)
    err = interrupt_when(p, lambda: out.is_dir() and any(out.glob("*.ply")), "no mesh was written", signal.SIGTERM)
    assert p.returncode == 128 + signal.SIGTERM, err  # 143
    assert "interrupted (SIGTERM); finished outputs were kept" in err and "Traceback" not in err
    assert "redoes every input" in err  # reconstruct does not resume: the message says so
    assert no_partial_files(out) == []
    meshes = sorted(out.glob("*.ply"))
    assert 1 <= len(meshes) < 20
    for m in meshes:  # whole, each with its coefficients
        assert m.stat().st_size > 1_000_000 and load_npy(m.with_suffix(".npy")).shape == (198,)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["signal"] == "SIGTERM"
    assert summary["faces_written"] == len(meshes) == len(summary["faces"])


def test_sigterm_stops_embed_like_ctrl_c_and_the_rerun_resumes(cli, photos, tmp_path):
    src = _copies(photos, tmp_path / "in", 16)
    out = tmp_path / "desc"
    p = engine_process("embed", src, "--cropped", "--batch-size", "1", "--workers", "1", "--flush-every", "1",
                       "-o", out)
    err = interrupt_when(p, lambda: (out / "progress.json").is_file(), "no progress record", signal.SIGTERM)
    assert p.returncode == 143, err
    assert "interrupted (SIGTERM)" in err and "Traceback" not in err
    assert no_partial_files(out) == []
    done = json.loads((out / "progress.json").read_text())["inputs"]
    assert 1 <= len(done) < 16
    assert load_npy(out / "descriptors.npy").shape == (len(done), 198)  # merged before the process ended
    r = cli("embed", src, "--cropped", "-o", out)
    assert r.rc == 0 and f"{len(done)} input(s) already done" in r.err
    assert load_npy(out / "descriptors.npy").shape == (16, 198)


def test_stop_signals_raise_in_process_and_leave_ignored_signals_alone():
    from engine.cli.common import Interrupted, StopSignals, interruption

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted) as e:
        with StopSignals():
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(100000):  # the handler runs within these bytecodes
                pass
            raise AssertionError("SIGTERM did not stop the block")
    assert interruption(e.value) == ("SIGTERM", "SIGTERM", 143)
    assert interruption(KeyboardInterrupt()) == ("SIGINT", "Ctrl-C", 130)
    assert signal.getsignal(signal.SIGTERM) is before
    # A signal the process was started ignoring (nohup, `cmd &`) stays ignored.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        with StopSignals():
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(100000):
                pass
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, before)


def test_sigterm_during_verify_json_names_it(photos, tmp_path):
    # verify --json still prints its one JSON object, naming the signal; exit 143.
    src = _copies(photos, tmp_path / "a", 40)
    p = engine_process("verify", src, photos / "astronaut.png", "--cropped", "--batch-size", "1", "--workers", "1",
                       "--json")
    # verify writes nothing until it ends: stop it once it runs (its first line on stderr, the
    # SYNTHETIC weights warning, comes when the network loads).
    import time

    deadline = time.monotonic() + 180
    try:
        line = p.stderr.readline()
        assert line and time.monotonic() < deadline, "verify printed nothing"
        p.send_signal(signal.SIGTERM)
        stdout, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    if p.returncode == 0:
        pytest.skip("verify finished before the signal arrived")
    assert p.returncode == 143, err
    assert json.loads(stdout)["error"] == "interrupted (SIGTERM)"


# --- an output folder holding an earlier run's outputs ----------------------------------------------------

def test_an_earlier_runs_folder_is_said_and_its_summary_kept(cli, photos, tmp_path):
    out = tmp_path / "out"
    r = cli("reconstruct", photos / "astronaut.png", "--cropped", "--no-mesh", "-o", out)
    assert r.rc == 0 and "earlier run" not in r.err and not (out / "summary.previous.json").exists()
    first = (out / "summary.json").read_text()
    r = cli("reconstruct", photos / "chelsea.jpg", "--cropped", "--no-mesh", "-o", out)
    assert r.rc == 0, r.err
    lines = [ln for ln in r.err.splitlines() if "earlier run" in ln]
    assert len(lines) == 1
    assert "holds an earlier run's outputs (1 file(s)" in lines[0] and "this run only" in lines[0]
    assert (out / "summary.previous.json").read_text() == first  # the earlier map of faces to files
    now = json.loads((out / "summary.json").read_text())
    assert [f["source"] for f in now["faces"]] == [str(photos / "chelsea.jpg")]
    assert now["earlier_outputs"] == {"files": 1, "summary": "summary.previous.json"}
    assert (out / "astronaut_face0.npy").is_file()  # the earlier files stay
    r = cli("reconstruct", photos / "chelsea.jpg", "--cropped", "--no-mesh", "-o", out, "--quiet")
    assert r.err == ""  # --quiet: errors only


# --- a failure every frame of a video shares is said once ------------------------------------------------

@pytest.mark.parametrize("command", ["reconstruct", "embed"])
def test_a_video_without_boxes_fails_once_with_its_frame_count(cli, photos, tmp_path, command):
    clip = write_face_clip(tmp_path / "clip.avi", photos, frames=12)
    photo = tmp_path / "astronaut.png"
    photo.write_bytes((photos / "astronaut.png").read_bytes())
    boxes = tmp_path / "boxes.csv"
    with open(boxes, "w", newline="") as f:
        csv.writer(f).writerows([["image", "x0", "y0", "x1", "y1"], ["astronaut.png", *ASTRONAUT_BOX]])
    out = tmp_path / "out"
    extra = ["--no-mesh"] if command == "reconstruct" else []
    r = cli(command, clip, photo, "--boxes", boxes, "-o", out, *extra)
    assert r.rc == 1
    lines = [ln for ln in r.err.splitlines() if "no face box for this input" in ln]
    assert len(lines) == 1, r.err
    assert str(clip) in lines[0] and "(12 frames: 0, 1, 2, 3, 4, ...)" in lines[0]
    if command == "reconstruct":  # the summary keeps one record per frame
        summary = json.loads((out / "summary.json").read_text())
        assert sorted(f["frame"] for f in summary["failures"]) == list(range(12))
        assert "1 input(s) failed" in r.err


def test_frame_failures_of_two_inputs_stay_apart():
    # Report's rule, directly: a message is held per input, said when the input's failures end.
    import io
    import sys

    from engine.cli.common import Report

    saved, sys.stderr = sys.stderr, io.StringIO()
    try:
        rep = Report()
        for k in range(3):
            rep.fail("a.mp4", "a.mp4: no face found", frame=k)
        rep.fail("a.mp4", "a.mp4: frame 7 unreadable", frame=7)
        rep.fail("b.mp4", "b.mp4: no face found", frame=4)
        rep.fail("c.jpg", "c.jpg: no face found")
        rep.flush()
        said = sys.stderr.getvalue().splitlines()
    finally:
        sys.stderr = saved
    assert said == ["engine3dmm: failed: a.mp4: no face found (3 frames: 0, 1, 2)",
                    "engine3dmm: failed: a.mp4: frame 7 unreadable (frame 7)",
                    "engine3dmm: failed: b.mp4: no face found (frame 4)",
                    "engine3dmm: failed: c.jpg: no face found"]
    assert len(rep.failures) == 6 and rep.exit_code == 1


# --- folder entries that cannot be searched ---------------------------------------------------------------

def test_a_dangling_link_in_a_folder_is_reported(cli, photos, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    (src / "astronaut.png").write_bytes((photos / "astronaut.png").read_bytes())
    (src / "gone.jpg").symlink_to(tmp_path / "deleted.jpg")
    (src / "loop.png").symlink_to("loop.png")
    (src / "notes.txt").symlink_to(tmp_path / "deleted.txt")  # not an image name: not an input
    out = tmp_path / "out"
    r = cli("reconstruct", src, "--cropped", "--no-mesh", "-o", out)
    assert r.rc == 1
    assert f"failed: {src / 'gone.jpg'}: a symbolic link to {tmp_path / 'deleted.jpg'}, which does not exist" in r.err
    assert f"failed: {src / 'loop.png'}: a symbolic link to loop.png, which cannot be followed" in r.err
    assert "notes.txt" not in r.err
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(f["source"] for f in summary["failures"]) == [str(src / "gone.jpg"), str(src / "loop.png")]
    assert (out / "astronaut_face0.npy").is_file()
    # The API lists them in their place too: one failed result each.
    from engine.pipeline.inputs import list_inputs

    listed = {i.name: i.kind for i in list_inputs([str(src)])}
    assert listed == {str(src / "astronaut.png"): "file", str(src / "gone.jpg"): "failed",
                      str(src / "loop.png"): "failed"}


def test_a_folder_of_dangling_links_only_says_so(cli, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    (src / "gone.jpg").symlink_to(tmp_path / "deleted.jpg")
    r = cli("embed", src, "--cropped", "-o", tmp_path / "out")
    assert r.rc == 1 and "gone.jpg: a symbolic link to" in r.err and "holds no image" not in r.err


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every folder")
def test_an_unreadable_sub_folder_is_reported_with_recursive(cli, photos, tmp_path):
    src = tmp_path / "in"
    (src / "locked").mkdir(parents=True)
    (src / "astronaut.png").write_bytes((photos / "astronaut.png").read_bytes())
    (src / "locked" / "b.png").write_bytes((photos / "astronaut.png").read_bytes())
    (src / "locked").chmod(0)
    try:
        r = cli("reconstruct", src, "--recursive", "--cropped", "--no-mesh", "-o", tmp_path / "out")
    finally:
        (src / "locked").chmod(0o755)
    assert r.rc == 1 and f"{src / 'locked'}: cannot read this sub-folder" in r.err


# --- e3dmm_decode counts in words ------------------------------------------------------------------------

def test_e3dmm_decode_says_1_row_not_1_rows(tmp_path):
    import numpy as np

    from engine.morphable import write_cache
    from tests.cli.helpers import REPO, tiny_model

    exe = REPO / "build" / "cpp" / "examples" / "cpp" / "e3dmm_decode"
    if not exe.is_file():
        pytest.skip(f"C++ example not built: {exe}")
    write_cache(tiny_model(), tmp_path / "m.e3dmm")
    out = tmp_path / "out"
    out.mkdir()
    for rows, said in ((1, "1 row decoded"), (2, "2 rows decoded")):
        np.save(tmp_path / "c.npy", np.zeros((rows, 198), np.float32))
        proc = subprocess.run([str(exe), "--model", str(tmp_path / "m.e3dmm"), "--out", str(out),
                               str(tmp_path / "c.npy")], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert said in proc.stdout and f"wrote {rows} PLY file{'s' if rows > 1 else ''} to" in proc.stdout
        assert "10 vertices, 7 faces" in proc.stdout


# --- an embed folder made with other options: one exit code for every refusal -----------------------------

@pytest.mark.parametrize("second, named", [(["--part", "alpha"], "--part"), (["--parquet"], "--parquet"),
                                           (["--max-frames", "3"], "--frame-step/--max-frames"),
                                           (["--frame-step", "2"], "--frame-step/--max-frames")])
def test_every_embed_folder_refusal_is_exit_1_naming_the_option(cli, photos, tmp_path, second, named):
    # README: 1 = "a file given as an option could not be used" (here the --output folder, made by other
    # rules); 2 is for a command line wrong on its face, whatever is on disk. The same command into a fresh
    # folder runs, so this is 1, the same as the face-settings and network refusals.
    if "--parquet" in second:
        pytest.importorskip("pyarrow")
    out = tmp_path / "desc"
    assert cli("embed", photos / "astronaut.png", "--cropped", "-o", out).rc == 0
    before = sorted(p.name for p in out.rglob("*"))
    r = cli("embed", photos / "astronaut.png", "--cropped", "-o", out, *second)
    assert r.rc == 1 and named in r.err and "use another --output folder" in r.err
    assert sorted(p.name for p in out.rglob("*")) == before
