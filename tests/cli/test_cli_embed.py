"""`embed`: descriptors + metadata, Parquet, and resuming (also after Ctrl-C)."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from tests.cli.helpers import engine_process, interrupt_when, load_npy, no_partial_files


@pytest.fixture
def three(photos, tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    for name in ("astronaut.png", "chelsea.jpg", "camera.png"):
        (d / name).write_bytes((photos / name).read_bytes())
    return d


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_descriptors_match_reconstruct_and_rerun_skips_done_inputs(cli, three, tmp_path):
    out = tmp_path / "desc"
    r = cli("embed", three / "astronaut.png", three / "chelsea.jpg", "--cropped", "-o", out)
    assert r.rc == 0, r.err
    d = load_npy(out / "descriptors.npy")
    rows = read_csv(out / "metadata.csv")
    assert d.shape == (2, 198) and d.dtype == np.float32
    assert [(row["row"], row["source"], row["face_index"]) for row in rows] == [
        ("0", str(three / "astronaut.png"), "0"), ("1", str(three / "chelsea.jpg"), "0")]
    # The descriptor is the coefficient vector that reconstruct writes.
    rec = tmp_path / "rec"
    assert cli("reconstruct", three / "astronaut.png", "--cropped", "--no-mesh", "-o", rec, "-q").rc == 0
    assert np.allclose(d[0], load_npy(rec / "astronaut_face0.npy"), atol=1e-6)

    first_chunk = out / "chunks" / "chunk-00000.npy"
    stamp = first_chunk.stat().st_mtime_ns
    r = cli("embed", three, "--cropped", "-o", out)  # the folder: one new input, two done
    assert r.rc == 0, r.err
    assert "2 input(s) already done" in r.err
    progress = json.loads((out / "progress.json").read_text())
    assert progress["chunks"] == ["chunk-00000", "chunk-00001"]
    assert first_chunk.stat().st_mtime_ns == stamp  # the done inputs were not recomputed
    assert np.load(out / "chunks" / "chunk-00001.npy").shape == (1, 198)
    d2 = load_npy(out / "descriptors.npy")
    assert d2.shape == (3, 198) and np.array_equal(d2[:2], d)
    assert [row["source"] for row in read_csv(out / "metadata.csv")][2] == str(three / "camera.png")
    assert no_partial_files(out) == []


def test_failures_are_recorded_and_retried_on_request(cli, three, photos, tmp_path):
    out = tmp_path / "desc"
    (three / "broken.jpg").write_bytes(b"not a jpeg")
    r = cli("embed", three / "astronaut.png", three / "broken.jpg", "--cropped", "--part", "alpha", "-o", out)
    assert r.rc == 1 and "broken.jpg: not a recognised image format" in r.err
    assert load_npy(out / "descriptors.npy").shape == (1, 99)  # --part alpha: 99 shape coefficients
    r = cli("embed", three / "astronaut.png", three / "broken.jpg", "--cropped", "--part", "alpha", "-o", out)
    assert r.rc == 1 and "recorded by an earlier run" in r.err  # still reported, not recomputed
    (three / "broken.jpg").write_bytes((photos / "chelsea.jpg").read_bytes())  # the user fixes it
    r = cli("embed", three / "astronaut.png", three / "broken.jpg", "--cropped", "--part", "alpha",
            "--retry-failed", "-o", out)
    assert r.rc == 0, r.err
    assert load_npy(out / "descriptors.npy").shape == (2, 99)
    # The folder holds alpha descriptors: asking for another part there is refused.
    r = cli("embed", three / "astronaut.png", "--cropped", "-o", out)
    assert r.rc == 1 and "holds descriptors made with part 'alpha'" in r.err


def test_parquet(cli, three, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "desc"
    r = cli("embed", three, "--cropped", "--parquet", "-o", out, "-q")
    assert r.rc == 0, r.err
    t = pq.read_table(out / "descriptors.parquet")
    assert t.num_rows == 3
    assert t.column_names == ["source", "face_index", "frame", "x0", "y0", "x1", "y1", "score", "descriptor",
                              "network"]
    d = np.stack(t.column("descriptor").to_numpy(zero_copy_only=False))
    assert d.shape == (3, 198)
    assert not (out / "descriptors.npy").exists()
    # SYNTHETIC weights made them: every row, the schema's metadata and the sidecar say so.
    assert t.column("network").to_pylist() == ["SYNTHETIC"] * 3
    meta = json.loads(pq.read_schema(out / "descriptors.parquet").metadata[b"engine3dmm"])
    assert meta["synthetic"] is True and meta["network"] == "SYNTHETIC" and "meaningless" in meta["note"]
    assert json.loads((out / "provenance.json").read_text()) == meta


def test_synthetic_descriptors_say_so(cli, three, tmp_path):
    out = tmp_path / "desc"
    r = cli("embed", three, "--cropped", "-o", out)
    assert r.rc == 0, r.err
    closing = [ln for ln in r.err.splitlines() if "descriptor(s) in" in ln]
    assert len(closing) == 1 and "SYNTHETIC network weights" in closing[0]
    assert [row["network"] for row in read_csv(out / "metadata.csv")] == ["SYNTHETIC"] * 3
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["synthetic"] is True and prov["part"] == "all"
    # A rerun with nothing new to do still says it (from the folder's record, not from this run).
    r = cli("embed", three, "--cropped", "-o", out)
    assert r.rc == 0 and "SYNTHETIC network weights" in r.err


def test_converted_weights_do_not_say_synthetic(cli, three, tmp_path):
    # The folder's record says which network made its rows: a converted one is labelled so.
    from engine.cli import embed

    out = tmp_path / "desc"
    assert cli("embed", three / "astronaut.png", "--cropped", "-o", out, "-q").rc == 0
    progress = json.loads((out / "progress.json").read_text())
    progress["identity"]["network_synthetic"] = False
    (out / "progress.json").write_text(json.dumps(progress))
    store = embed.Store(out, "npy", "all")
    embed.merge(store)
    assert [row["network"] for row in read_csv(out / "metadata.csv")] == ["converted"]
    assert json.loads((out / "provenance.json").read_text())["synthetic"] is False


@pytest.mark.parametrize("text", ["[" * 100000 + "]" * 100000, '{"inputs": ' + "[" * 3000 + "]" * 3000 + "}",
                                  '{"a": 1e999}', '{"a": NaN}', "\ud800", '{"x": "' + "9" * 5000 + '"}' + "x"])
def test_a_hostile_progress_record_is_a_typed_error(cli, three, tmp_path, text):
    # Issue 13 finding 4: deeply nested JSON raised an untyped RecursionError.
    out = tmp_path / "desc"
    out.mkdir()
    (out / "progress.json").write_text(text, encoding="utf-8", errors="surrogatepass")
    r = cli("embed", three / "astronaut.png", "--cropped", "-o", out)
    assert r.rc == 1 and "Traceback" not in r.err
    assert f"engine3dmm: error: unreadable progress record: {out / 'progress.json'}" in r.err


def test_a_huge_progress_record_is_refused_before_reading(cli, three, tmp_path, monkeypatch):
    from engine.cli import embed

    monkeypatch.setattr(embed, "PROGRESS_MAX_BYTES", 1000)
    out = tmp_path / "desc"
    out.mkdir()
    (out / "progress.json").write_text('{"inputs": {}, "pad": "' + "x" * 2000 + '"}')
    r = cli("embed", three / "astronaut.png", "--cropped", "-o", out)
    assert r.rc == 1 and "larger than the 1000 a file of this kind can be" in r.err


def test_resume_after_ctrl_c(cli, photos, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(16):
        (src / f"img{i:02d}.png").write_bytes((photos / "astronaut.png").read_bytes())
    out = tmp_path / "desc"
    p = engine_process("embed", src, "--cropped", "--batch-size", "1", "--workers", "1", "--flush-every", "1",
                       "-o", out)
    err = interrupt_when(p, lambda: (out / "progress.json").is_file(), "no progress record")
    assert p.returncode == 130, err
    assert no_partial_files(out) == []
    done = json.loads((out / "progress.json").read_text())["inputs"]
    assert 1 <= len(done) < 16
    r = cli("embed", src, "--cropped", "-o", out)
    assert r.rc == 0, r.err
    assert f"{len(done)} input(s) already done" in r.err
    rows = read_csv(out / "metadata.csv")
    assert sorted(row["source"] for row in rows) == sorted(str(p) for p in src.iterdir())  # each once
    assert load_npy(out / "descriptors.npy").shape == (16, 198)


def test_paths_with_brackets_and_spaces_resume(cli, photos, tmp_path):
    # The JSON writer compacts lists of numbers; it must never touch text inside strings.
    src = tmp_path / "Photos [ 2019 ]  x"
    src.mkdir()
    for name in ("astronaut.png", "chelsea.jpg"):
        (src / name).write_bytes((photos / name).read_bytes())
    out = tmp_path / "desc"
    assert cli("embed", src, "--cropped", "-o", out, "-q").rc == 0
    keys = set(json.loads((out / "progress.json").read_text())["inputs"])
    assert keys == {str(src / "astronaut.png"), str(src / "chelsea.jpg")}
    r = cli("embed", src, "--cropped", "-o", out)
    assert r.rc == 0, r.err
    assert "2 input(s) already done" in r.err
    assert load_npy(out / "descriptors.npy").shape == (2, 198)
    assert sorted(row["source"] for row in read_csv(out / "metadata.csv")) == sorted(keys)


def test_compact_json_leaves_strings_alone():
    from engine.cli.common import compact_json

    data = {"box": [1, 2.5, None, True], "p": 'Photos [ 2019 ]/a  "b\\ [ 1 ].jpg', "l": ["x [ 1 ]", [3, 4]]}
    text = compact_json(json.dumps(data, indent=1))
    assert json.loads(text) == data
    assert '"box": [1, 2.5, null, true]' in text and "[3, 4]" in text


def test_merge_opens_one_chunk_at_a_time(tmp_path):
    resource = pytest.importorskip("resource")
    import os
    from pathlib import Path

    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc/self/fd to count open files")
    from engine.cli.embed import Store, _write_chunk, merge

    out = tmp_path / "desc"
    (out / "chunks").mkdir(parents=True)
    store = Store(out, "npy", "all")
    n = 300
    for i in range(n):
        name = f"chunk-{i:05d}"
        row = {"source": f"img{i}.png", "face_index": 0, "frame": None, "x0": None, "y0": None, "x1": None,
               "y1": None, "score": None}
        _write_chunk(store.chunk_files(name), "npy", [row], np.full((1, 198), i, np.float32))
        store.state["chunks"].append(name)
        store.state["inputs"][f"/in/img{i}.png"] = {"source": row["source"], "status": "ok", "chunk": name}
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 64, hard))
    try:
        target, rows = merge(store)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    d = load_npy(target)
    assert rows == n and d.shape == (n, 198) and np.array_equal(d[:, 0], np.arange(n, dtype=np.float32))
    assert [row["source"] for row in read_csv(out / "metadata.csv")] == [f"img{i}.png" for i in range(n)]


def test_a_failed_frame_keeps_the_other_frames(cli, photos, tmp_path, monkeypatch):
    # A video's frames share one input: frame 1 failing must not drop frames 0 and 2.
    import dataclasses

    from engine.pipeline import Reconstructor

    real = Reconstructor.embed

    def frames(self, inputs, **kw):
        results = list(real(self, inputs, **kw))

        def gen():
            for r in results:
                yield dataclasses.replace(r, frame=0)
                yield dataclasses.replace(r, frame=1, error=f"{r.source}: frame 1: no face found")
                yield dataclasses.replace(r, frame=2)
        return gen()

    monkeypatch.setattr(Reconstructor, "embed", frames)
    out = tmp_path / "desc"
    r = cli("embed", photos / "astronaut.png", "--cropped", "-o", out)
    assert r.rc == 1 and "frame 1: no face found" in r.err  # reported
    assert "0 input(s) failed" not in r.err and "input(s) failed" not in r.err
    assert "1 video(s) kept with some frames failed (listed above)" in r.err
    assert load_npy(out / "descriptors.npy").shape == (2, 198)
    assert [row["frame"] for row in read_csv(out / "metadata.csv")] == ["0", "2"]
    rec = json.loads((out / "progress.json").read_text())["inputs"][str(photos / "astronaut.png")]
    assert rec["status"] == "ok" and rec["faces"] == 2 and rec["failed_results"] == 1


@pytest.mark.parametrize("fmt", ["npy", "parquet"])
def test_retry_failed_reruns_a_video_with_failed_frames_and_replaces_its_rows(cli, three, tmp_path, monkeypatch, fmt):
    import dataclasses

    from engine.pipeline import Reconstructor

    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    flags = ["--parquet"] if fmt == "parquet" else []
    real = Reconstructor.embed

    def astronaut_as_a_video_with_a_bad_frame(self, inputs, **kw):
        results = list(real(self, inputs, **kw))

        def gen():
            for r in results:
                if "astronaut" not in str(r.source):
                    yield r
                    continue
                yield dataclasses.replace(r, frame=0)
                yield dataclasses.replace(r, frame=1, error=f"{r.source}: frame 1: no face found")
                yield dataclasses.replace(r, frame=2)
        return gen()

    def table(out):
        if fmt == "parquet":
            import pyarrow.parquet as pq

            t = pq.read_table(out / "descriptors.parquet")
            return [(s, f) for s, f in zip(t["source"].to_pylist(), t["frame"].to_pylist())]
        rows = read_csv(out / "metadata.csv")
        assert load_npy(out / "descriptors.npy").shape == (len(rows), 198)
        return [(r["source"], int(r["frame"]) if r["frame"] else None) for r in rows]

    a, c = str(three / "astronaut.png"), str(three / "chelsea.jpg")
    out = tmp_path / "desc"
    with monkeypatch.context() as m:
        m.setattr(Reconstructor, "embed", astronaut_as_a_video_with_a_bad_frame)
        assert cli("embed", a, c, "--cropped", "-o", out, *flags).rc == 1
    assert table(out) == [(a, 0), (a, 2), (c, None)]
    r = cli("embed", a, c, "--cropped", "-o", out, *flags)  # kept as it is, and says so
    assert r.rc == 0 and "2 input(s) already done" in r.err
    assert "(1 video(s) with failed frames: --retry-failed runs them again)" in r.err
    assert table(out) == [(a, 0), (a, 2), (c, None)]
    # Run again whole (now every frame succeeds): its old rows are replaced, chelsea's stay.
    r = cli("embed", a, c, "--cropped", "-o", out, "--retry-failed", *flags)
    assert r.rc == 0, r.err
    assert table(out) == [(c, None), (a, None)]
    rec = json.loads((out / "progress.json").read_text())["inputs"][a]
    assert rec["status"] == "ok" and rec["failed_results"] == 0


def test_resume_with_the_same_weights_elsewhere(cli, three, tmp_path):
    out = tmp_path / "desc"
    assert cli("embed", three / "astronaut.png", "--cropped", "-o", out, "-q").rc == 0
    progress = json.loads((out / "progress.json").read_text())
    assert progress["identity"]["network_fingerprint"]
    # Same weights (fingerprint), described by another path: the resume goes on.
    progress["identity"]["network"] = "converted weights in /somewhere/else/weights.npz"
    (out / "progress.json").write_text(json.dumps(progress))
    r = cli("embed", three / "astronaut.png", three / "chelsea.jpg", "--cropped", "-o", out)
    assert r.rc == 0, r.err
    assert load_npy(out / "descriptors.npy").shape == (2, 198)
    # Other weights (another fingerprint): refused.
    progress = json.loads((out / "progress.json").read_text())
    progress["identity"]["network_fingerprint"] = "0" * 64
    (out / "progress.json").write_text(json.dumps(progress))
    r = cli("embed", three, "--cropped", "-o", out)
    assert r.rc == 1 and "holds descriptors of another network" in r.err


@pytest.mark.parametrize("change, field", [
    (lambda p: p.pop("identity"), "'identity'"),
    (lambda p: p.update(inputs=[]), "'inputs'"),
    (lambda p: p.update(chunks={}), "'chunks'"),
    (lambda p: [rec.pop("source") for rec in p["inputs"].values()], '"inputs['),  # rows cannot be matched
])
def test_a_damaged_progress_record_is_named(cli, three, tmp_path, change, field):
    out = tmp_path / "desc"
    assert cli("embed", three / "astronaut.png", "--cropped", "-o", out, "-q").rc == 0
    progress = json.loads((out / "progress.json").read_text())
    change(progress)
    (out / "progress.json").write_text(json.dumps(progress))
    r = cli("embed", three, "--cropped", "-o", out)
    assert r.rc == 1
    assert str(out / "progress.json") in r.err and f"field {field}" in r.err


def test_video_frame_step(cli, photos, tmp_path):
    from tests.cli.helpers import write_face_clip

    clip = write_face_clip(tmp_path / "clip.avi", photos, frames=5)
    out = tmp_path / "desc"
    r = cli("embed", clip, "--cropped", "--frame-step", "2", "-o", out, "-q")
    assert r.rc == 0, r.err
    assert [row["frame"] for row in read_csv(out / "metadata.csv")] == ["0", "2", "4"]
    assert load_npy(out / "descriptors.npy").shape == (3, 198)
    # The folder holds every 2nd frame: a rerun with other frame options is refused, not mixed in.
    r = cli("embed", clip, "--cropped", "-o", out)
    assert r.rc == 1 and "frame_step" in r.err and "use another --output folder" in r.err
    r = cli("embed", clip, "--cropped", "--frame-step", "2", "-o", out)
    assert r.rc == 0 and "1 input(s) already done" in r.err


def test_a_progress_record_from_before_frame_options_still_resumes(cli, three, tmp_path):
    out = tmp_path / "desc"
    assert cli("embed", three / "astronaut.png", "--cropped", "-o", out, "-q").rc == 0
    progress = json.loads((out / "progress.json").read_text())
    assert progress.pop("frames") == {"frame_step": 1, "max_frames": None}
    (out / "progress.json").write_text(json.dumps(progress))
    r = cli("embed", three / "astronaut.png", "--cropped", "-o", out)
    assert r.rc == 0 and "1 input(s) already done" in r.err


def test_a_cut_video_keeps_its_whole_frames_and_fails(cli, photos, tmp_path):
    from tests.cli.helpers import cut_video, write_moving_clip

    clip = write_moving_clip(tmp_path / "clip.avi", photos, frames=8)
    cut = cut_video(clip, tmp_path / "cut.avi", keep_frames=5)
    out = tmp_path / "desc"
    r = cli("embed", cut, "--cropped", "-o", out)
    assert r.rc == 1 and f"{cut}: frame 5 of 8: the video ends early" in r.err
    assert "1 video(s) kept with some frames failed" in r.err
    assert [row["frame"] for row in read_csv(out / "metadata.csv")] == [str(i) for i in range(5)]


@pytest.mark.parametrize("damage", ["huge field", "missing field", "cut npy"])
def test_a_damaged_chunk_is_a_typed_error_naming_it(cli, three, tmp_path, damage):
    out = tmp_path / "desc"
    assert cli("embed", three / "astronaut.png", "--cropped", "-o", out, "-q").rc == 0
    chunk = out / "chunks" / "chunk-00000"
    if damage == "huge field":  # over the csv module's field size limit: csv.Error before
        chunk.with_suffix(".csv").write_text("row,source\n0,\"" + "x" * 200000 + "\"\n")
    elif damage == "missing field":
        chunk.with_suffix(".csv").write_text("row,source\n0,a.png\n")
    else:
        data = chunk.with_suffix(".npy").read_bytes()
        chunk.with_suffix(".npy").write_bytes(data[:-100])
    r = cli("embed", three / "chelsea.jpg", "--cropped", "-o", out)
    assert r.rc == 1 and "Traceback" not in r.err and "engine3dmm: error: " in r.err
    assert str(chunk) in r.err and "to start this output folder again" in r.err


def strict_json(text: str):
    """json.loads that refuses NaN and Infinity (Python's json accepts them; JSON does not)."""
    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def rows_by_source(out):
    """{source: [descriptor rows]} of the merged table, read back by numpy and csv."""
    d = load_npy(out / "descriptors.npy")
    rows = read_csv(out / "metadata.csv")
    assert d.shape[0] == len(rows)
    got = {}
    for row in rows:
        got.setdefault(row["source"], []).append(d[int(row["row"])])
    return got


def test_a_changed_file_is_embedded_again_and_its_old_rows_replaced(cli, three, photos, tmp_path):
    import os

    out = tmp_path / "desc"
    assert cli("embed", three, "--cropped", "-o", out, "-q").rc == 0
    before = rows_by_source(out)
    chelsea, camera = str(three / "chelsea.jpg"), str(three / "camera.png")
    # The user overwrites chelsea.jpg with another picture: it must not keep its old descriptor.
    (three / "chelsea.jpg").write_bytes((photos / "coffee.jpg").read_bytes())
    r = cli("embed", three, "--cropped", "-o", out)
    assert r.rc == 0, r.err
    assert "2 input(s) already done" in r.err
    assert "1 input(s) changed since they were embedded" in r.err and "their old rows replaced" in r.err
    after = rows_by_source(out)
    assert sorted(after) == sorted(before) and all(len(v) == 1 for v in after.values())  # each once
    assert np.array_equal(after[camera][0], before[camera][0])  # the others untouched
    # chelsea.jpg's row is now coffee's descriptor, as a fresh folder computes it
    fresh = tmp_path / "fresh"
    assert cli("embed", three / "chelsea.jpg", "--cropped", "-o", fresh, "-q").rc == 0
    assert np.array_equal(after[chelsea][0], load_npy(fresh / "descriptors.npy")[0])
    assert not np.array_equal(after[chelsea][0], before[chelsea][0])
    # Same size, same bytes, but a new modification time: it is run again (the documented rule)...
    stamp = (three / "camera.png").stat()
    os.utime(three / "camera.png", ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 10 ** 9))
    r = cli("embed", three, "--cropped", "-o", out)
    assert r.rc == 0 and "1 input(s) changed" in r.err
    # ...and nothing is, when nothing changed.
    r = cli("embed", three, "--cropped", "-o", out)
    assert r.rc == 0 and "3 input(s) already done" in r.err and "changed since" not in r.err
    rec = strict_json((out / "progress.json").read_text())["inputs"][C_key(three / "chelsea.jpg")]
    st = (three / "chelsea.jpg").stat()
    assert rec["file"] == {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def C_key(path) -> str:
    from engine.cli.common import source_key

    return source_key(path)


def test_a_failed_input_whose_file_changed_runs_again(cli, three, photos, tmp_path):
    out = tmp_path / "desc"
    (three / "broken.jpg").write_bytes(b"not a jpeg")
    assert cli("embed", three / "broken.jpg", "--cropped", "-o", out, "-q").rc == 1
    (three / "broken.jpg").write_bytes((photos / "chelsea.jpg").read_bytes())  # fixed: no --retry-failed needed
    r = cli("embed", three / "broken.jpg", "--cropped", "-o", out)
    assert r.rc == 0, r.err
    assert "1 input(s) changed" in r.err and load_npy(out / "descriptors.npy").shape == (1, 198)


def test_a_progress_record_from_before_file_stamps_still_resumes(cli, three, tmp_path):
    out = tmp_path / "desc"
    assert cli("embed", three, "--cropped", "-o", out, "-q").rc == 0
    progress = json.loads((out / "progress.json").read_text())
    for rec in progress["inputs"].values():
        assert rec.pop("file")["size"] > 0
        rec.pop("video")
    progress.pop("faces")
    (out / "progress.json").write_text(json.dumps(progress))
    r = cli("embed", three, "--cropped", "-o", out)
    assert r.rc == 0 and "3 input(s) already done" in r.err and "changed since" not in r.err


@pytest.mark.parametrize("first, second, named", [
    (["--cropped"], [], "faces were found otherwise (--cropped there, the detector in this run)"),
    ([], ["--det-threshold", "-0.2"], "--det-threshold: the default rule there, -0.2 in this run"),
    ([], ["--det-upsample", "0"], "--det-upsample: 1 there, 0 in this run"),
    ([], ["--det-max-side", "0"], "--det-max-side: 2048 there, full resolution (0) in this run"),
    (["--boxes", "a.csv"], ["--boxes", "b.csv"], "--boxes (the file's contents): sha256 "),
    (["--boxes", "a.csv"], ["--cropped"], "faces were found otherwise (--boxes there, --cropped in this run)"),
])
def test_other_face_settings_are_refused_not_mixed(cli, photos, tmp_path, first, second, named):
    pytest.importorskip("dlib")
    from tests.cli.helpers import ASTRONAUT_BOX

    img = tmp_path / "astronaut.png"
    img.write_bytes((photos / "astronaut.png").read_bytes())
    for name, box in (("a.csv", ASTRONAUT_BOX), ("b.csv", (170, 80, 280, 190))):
        (tmp_path / name).write_text("image,x0,y0,x1,y1\n" + f"{img},{','.join(map(str, box))}\n")
    flags = lambda f: [str(tmp_path / x) if x.endswith(".csv") else x for x in f]  # noqa: E731
    out = tmp_path / "desc"
    assert cli("embed", img, "-o", out, "-q", *flags(first)).rc == 0
    prov = strict_json((out / "provenance.json").read_text())
    r = cli("embed", img, "-o", out, *flags(second))
    assert r.rc == 1 and named in r.err and "use another --output folder" in r.err, r.err
    assert strict_json((out / "provenance.json").read_text()) == prov  # nothing was touched
    r = cli("embed", img, "-o", out, *flags(first))  # the same settings again: resumes
    assert r.rc == 0 and "1 input(s) already done" in r.err


def test_face_settings_are_recorded_in_provenance(cli, photos, tmp_path):
    import hashlib

    pytest.importorskip("dlib")
    from engine.detect import landmark_model_path
    from tests.cli.helpers import ASTRONAUT_BOX

    img = photos / "astronaut.png"
    out = tmp_path / "det"
    assert cli("embed", img, "--det-upsample", "2", "--det-threshold", "0.1", "-o", out, "-q").rc == 0
    assert strict_json((out / "provenance.json").read_text())["faces"] == {
        "mode": "detector", "threshold": 0.1, "upsample": 2, "max_side": 2048,
        "crop_box": "landmarks" if landmark_model_path() else "detector"}
    boxes = tmp_path / "boxes.csv"
    boxes.write_text("image,x0,y0,x1,y1\n" + f"{img},{','.join(map(str, ASTRONAUT_BOX))}\n")
    out = tmp_path / "boxes"
    assert cli("embed", img, "--boxes", boxes, "-o", out, "-q").rc == 0
    assert strict_json((out / "provenance.json").read_text())["faces"] == {
        "mode": "boxes", "boxes_sha256": hashlib.sha256(boxes.read_bytes()).hexdigest()}
    moved = tmp_path / "elsewhere.csv"  # the same boxes in another file: the same settings
    moved.write_bytes(boxes.read_bytes())
    assert cli("embed", img, "--boxes", moved, "-o", out).rc == 0


def test_a_record_from_before_face_settings_takes_the_defaults(cli, three, tmp_path):
    out = tmp_path / "desc"
    assert cli("embed", three / "astronaut.png", "--cropped", "-o", out, "-q").rc == 0
    progress = json.loads((out / "progress.json").read_text())
    assert progress.pop("faces") == {"mode": "cropped"}
    (out / "progress.json").write_text(json.dumps(progress))
    # Older records hold no face settings: the detector's options are taken as the defaults (a
    # rerun with others is refused); whether the rows came from --cropped, --boxes or the
    # detector an older record cannot tell, so the rerun's choice is recorded.
    r = cli("embed", three / "astronaut.png", "--det-upsample", "2", "-o", out)
    assert r.rc == 1 and "--det-upsample: 1 there, 2 in this run" in r.err
    r = cli("embed", three / "astronaut.png", "--cropped", "-o", out)
    assert r.rc == 0 and "1 input(s) already done" in r.err
    assert json.loads((out / "progress.json").read_text())["faces"] == {"mode": "cropped"}


def test_a_photo_with_a_failed_face_is_worded_as_one(cli, photos, tmp_path, monkeypatch):
    # A still photo whose second face failed (e.g. its crop): "faces", not "frames".
    import dataclasses

    from engine.pipeline import Reconstructor

    real = Reconstructor.embed

    def second_face_fails(self, inputs, **kw):
        results = list(real(self, inputs, **kw))

        def gen():
            for r in results:
                yield r
                yield dataclasses.replace(r, face_index=1, coeffs=None, error=f"{r.source}: face 1: cannot crop")
        return gen()

    out = tmp_path / "desc"
    with monkeypatch.context() as m:
        m.setattr(Reconstructor, "embed", second_face_fails)
        r = cli("embed", photos / "astronaut.png", "--cropped", "-o", out)
    assert r.rc == 1 and "1 photo(s) kept with some faces failed" in r.err and "frames" not in r.err
    r = cli("embed", photos / "astronaut.png", "--cropped", "-o", out)
    assert "(1 photo(s) with failed faces: --retry-failed runs them again)" in r.err and "frames" not in r.err


@pytest.mark.parametrize("fmt", ["npy", "parquet"])
def test_ctrl_c_saves_and_merges_what_is_finished(cli, photos, tmp_path, fmt):
    # Ctrl-C: exit 130, and the merged table already holds every finished input (not only
    # chunks/ and progress.json until a rerun), read back by numpy/csv or pyarrow.
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    src = tmp_path / "in"
    src.mkdir()
    for i in range(16):
        (src / f"img{i:02d}.png").write_bytes((photos / "astronaut.png").read_bytes())
    out = tmp_path / "desc"
    flags = ["--parquet"] if fmt == "parquet" else []
    p = engine_process("embed", src, "--cropped", "--batch-size", "1", "--workers", "1", "--flush-every", "1",
                       "-o", out, *flags)
    err = interrupt_when(p, lambda: (out / "progress.json").is_file(), "no progress record")
    assert p.returncode == 130, err
    assert no_partial_files(out) == []
    done = {rec["source"] for rec in json.loads((out / "progress.json").read_text())["inputs"].values()
            if rec["status"] == "ok"}
    assert 1 <= len(done) < 16
    if fmt == "parquet":
        import pyarrow.parquet as pq

        t = pq.read_table(out / "descriptors.parquet")
        sources = t["source"].to_pylist()
        assert np.stack(t["descriptor"].to_numpy(zero_copy_only=False)).shape == (len(done), 198)
    else:
        sources = [row["source"] for row in read_csv(out / "metadata.csv")]
        assert load_npy(out / "descriptors.npy").shape == (len(done), 198)
    assert sorted(sources) == sorted(done)
    assert strict_json((out / "provenance.json").read_text())["faces"] == {"mode": "cropped"}
    assert f"interrupted (Ctrl-C): the {len(done)} descriptor(s) of the inputs finished so far are in" in err


def test_ctrl_c_while_the_merged_pair_is_renamed_waits_for_both(tmp_path):
    # descriptors.npy and metadata.csv are renamed into place together: a Ctrl-C (a real SIGINT)
    # arriving then is held back until both are there; before hold() it acts at once, and the
    # temporaries go.
    import os
    import signal

    from engine.cli.common import StopSignals as _CtrlCHeld
    from engine.fileio import atomic_write

    a, b = tmp_path / "descriptors.npy", tmp_path / "metadata.csv"
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        with _CtrlCHeld() as held, atomic_write(a) as f, atomic_write(b, "w") as g:
            f.write(b"new"), g.write("new")
            held.hold()
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(10000):  # the handler runs within these bytecodes: held, not raised
                pass
            assert held.pending
    assert a.read_bytes() == b"new" and b.read_text() == "new"
    with pytest.raises(KeyboardInterrupt):
        with _CtrlCHeld(), atomic_write(a) as f, atomic_write(b, "w") as g:
            f.write(b"newer"), g.write("newer")
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(10000):
                pass
            raise AssertionError("not interrupted")
    assert a.read_bytes() == b"new" and b.read_text() == "new" and no_partial_files(tmp_path) == []
    assert signal.getsignal(signal.SIGINT) is before  # put back
