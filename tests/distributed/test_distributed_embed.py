"""Ray Data embedding (engine.distributed.embed, `embed --ray`) on a local Ray of 2 CPUs,
started once for the module: the same descriptors, rows and failures as single-process
`embed` on the same real photos, and the same resume rule."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")  # Ray Data also needs pandas and pyarrow
pytest.importorskip("skimage.data")

from engine.cli import main
from tests.distributed.photos import LFW_FACES, NOT_AN_IMAGE, write_lfw, write_photos


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    os.environ.pop("RAY_ADDRESS", None)
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    monkeypatch.delenv("ENGINE3DMM_MAX_PIXELS", raising=False)


@pytest.fixture
def cli(capsys, monkeypatch, tmp_path):
    """cli("embed", ...) -> (exit code, stderr) of engine.cli.main, run in tmp_path."""
    monkeypatch.chdir(tmp_path)

    def run(*argv):
        capsys.readouterr()
        rc = main([str(a) for a in argv])
        return rc, capsys.readouterr().err

    return run


def _metadata(folder: Path) -> list[list[str]]:
    with open(folder / "metadata.csv", newline="") as f:
        return list(csv.reader(f))


def _same_output(a: Path, b: Path, ordered: bool = True) -> None:
    """The same descriptors (max |diff| <= 1e-5) and metadata rows; ordered=False for a resumed
    folder, whose redone inputs' rows come after the others (embed's rule, Ray or not)."""
    da, db = np.load(a / "descriptors.npy"), np.load(b / "descriptors.npy")
    assert da.dtype == db.dtype == np.float32 and da.shape == db.shape
    ma, mb = _metadata(a), _metadata(b)
    assert ma[0] == mb[0] and len(ma) == len(mb)
    if ordered:
        assert np.abs(da - db).max() <= 1e-5
        assert ma == mb
    else:  # by face: (source, face_index, frame) -> the row without its number, and its descriptor
        fa = {tuple(r[1:4]): (r[1:], da[int(r[0])]) for r in ma[1:]}
        fb = {tuple(r[1:4]): (r[1:], db[int(r[0])]) for r in mb[1:]}
        assert fa.keys() == fb.keys() and len(fa) == len(ma) - 1
        for k in fa:
            assert fa[k][0] == fb[k][0]
            assert np.abs(fa[k][1] - fb[k][1]).max() <= 1e-5
    pa, pb = (json.loads((d / "progress.json").read_text()) for d in (a, b))
    def inputs(p):  # the same status, error, faces and file stamp per input (a resumed one: in a later chunk)
        return {k: {f: v for f, v in rec.items() if ordered or f != "chunk"} for k, rec in p["inputs"].items()}

    assert inputs(pa) == inputs(pb)


def test_api_yields_every_face_and_the_failure_in_order(tmp_path, monkeypatch):
    """engine.distributed.embed against Reconstructor.embed on the same files: the same
    results in the same order, coefficients within 1e-5, the failed input kept (not dropped)
    under the name it was given, with the same message."""
    from engine.distributed import embed
    from engine.pipeline import Reconstructor

    write_photos(tmp_path / "in")
    monkeypatch.chdir(tmp_path)
    paths = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "in").iterdir())
    got = list(embed(paths, cropped=True, actors=2))
    with Reconstructor() as rec:
        want = [(r.source, r.face_index, r.frame, r.error, None if r.coeffs is None else r.coeffs.copy())
                for r in rec.embed(paths, cropped=True)]
    assert [(r.source, r.face_index, r.frame, r.error) for r in got] == [w[:4] for w in want]
    failed = [r for r in got if r.error]
    assert [r.source for r in failed] == [f"in/{NOT_AN_IMAGE}"] and failed[0].coeffs is None
    for r, w in zip(got, want):
        if w[4] is not None:
            assert r.coeffs.dtype == np.float32 and r.coeffs.shape == (198,)
            assert np.abs(r.coeffs - w[4]).max() <= 1e-5
    assert got[0].provenance["network_synthetic"] == rec.provenance["network_synthetic"]


def test_embed_ray_equals_single_process_and_records_the_failure(tmp_path, cli):
    write_photos(tmp_path / "in")
    rc_single, _ = cli("embed", "in", "--cropped", "-o", "single")
    rc_ray, err = cli("embed", "in", "--cropped", "-o", "ray", "--ray")
    assert rc_single == rc_ray == 1  # one input failed
    assert f"in/{NOT_AN_IMAGE}: not a recognised image format" in err
    assert f"{LFW_FACES + 1} descriptor(s) in ray/descriptors.npy" in err and "1 input(s) failed" in err
    _same_output(tmp_path / "ray", tmp_path / "single")
    progress = json.loads((tmp_path / "ray" / "progress.json").read_text())
    failed = {k: v for k, v in progress["inputs"].items() if v["status"] == "failed"}
    assert [v["source"] for v in failed.values()] == [f"in/{NOT_AN_IMAGE}"]
    assert "not a recognised image format" in next(iter(failed.values()))["error"]
    assert ray.is_initialized()  # a Ray the caller started is used, and left running


def test_embed_ray_rerun_skips_finished_and_redoes_changed_inputs(tmp_path, cli):
    """A rerun with --ray runs only a new input and a changed one (their rows land in one new
    chunk, the changed input's old row replaced), and says how many it skipped; the result
    equals a single-process embed of the folder as it is now."""
    import skimage.data

    write_photos(tmp_path / "in")
    assert cli("embed", "in", "--cropped", "-o", "ray", "--ray")[0] == 1
    rc, err = cli("embed", "in", "--cropped", "-o", "ray", "--ray")
    assert rc == 1 and f"{LFW_FACES + 2} input(s) already done in ray, skipped" in err
    assert len(json.loads((tmp_path / "ray" / "progress.json").read_text())["chunks"]) == 1  # nothing new ran

    lfw = skimage.data.lfw_subset()
    write_lfw(tmp_path / "in" / "lfw0.png", lfw[LFW_FACES + 1])  # another face under an old name
    os.utime(tmp_path / "in" / "lfw0.png", ns=(1, 1))  # another mtime, whatever the clock's resolution
    write_lfw(tmp_path / "in" / "new.png", lfw[LFW_FACES])
    rc, err = cli("embed", "in", "--cropped", "-o", "ray", "--ray")
    assert rc == 1
    assert f"{LFW_FACES + 1} input(s) already done in ray, skipped" in err
    assert "1 input(s) changed since they were embedded" in err
    progress = json.loads((tmp_path / "ray" / "progress.json").read_text())
    assert progress["chunks"] == ["chunk-00000", "chunk-00001"]
    with open(tmp_path / "ray" / "chunks" / "chunk-00001.csv", newline="") as f:
        assert sorted(r[1] for r in list(csv.reader(f))[1:]) == ["in/lfw0.png", "in/new.png"]
    assert cli("embed", "in", "--cropped", "-o", "single")[0] == 1
    _same_output(tmp_path / "ray", tmp_path / "single", ordered=False)


def test_embed_ray_video_frames_equal_single_process(tmp_path, cli):
    """A video is one input whose frames give many rows: they stay together on one actor and
    come back as embed writes them (frame numbers, --frame-step), with a photo beside it."""
    from tests.cli.helpers import write_face_clip

    write_photos(tmp_path / "in", lfw_faces=1)
    write_face_clip(tmp_path / "in" / "clip.avi", tmp_path / "in", frames=5)
    assert cli("embed", "in", "--cropped", "--frame-step", "2", "-o", "single")[0] == 1
    assert cli("embed", "in", "--cropped", "--frame-step", "2", "-o", "ray", "--ray")[0] == 1
    _same_output(tmp_path / "ray", tmp_path / "single")
    frames = [r[3] for r in _metadata(tmp_path / "ray")[1:] if r[1] == "in/clip.avi"]
    assert frames == ["0", "2", "4"]


# Caller-given boxes (--boxes, boxes=): matched once on the driver, each input's decision sent with it.
SIDECAR_ROWS = [
    ("../in/astronaut.png", 170, 40, 270, 160, 1.0),  # by the same path, relative to the sidecar's folder only
    ("lfw0.png", 0, 0, 25, 25, 1.0),  # by the end of one input's path; two faces
    ("lfw0.png", 2, 2, 23, 23, 0.5),
    ("in/lfw1.png", 1000, 1000, 1100, 1100, 1.0),  # a box outside the image: fails at crop time
    ("in/lfw2.png", 20, 0, 10, 25, 1.0),  # a bad box: x1 < x0, fails that input alone
    ("dup.png", 0, 0, 25, 25, 1.0),  # ends two inputs' paths (in/ and more/): ambiguous, both fail
    ("gone.png", 0, 0, 10, 10, 1.0),  # matches no input: one warning
]  # in/lfw3.png has no entry (fails: no detector with --boxes); in/notes.jpg is not an image


def _boxes_case(tmp_path: Path) -> Path:
    write_photos(tmp_path / "in")
    (tmp_path / "more").mkdir()
    import skimage.data

    lfw = skimage.data.lfw_subset()
    for folder, i in (("in", LFW_FACES), ("more", LFW_FACES + 1)):
        write_lfw(tmp_path / folder / "dup.png", lfw[i])
    (tmp_path / "meta").mkdir()
    sidecar = tmp_path / "meta" / "boxes.csv"
    sidecar.write_text("image,x0,y0,x1,y1,score\n" + "".join(",".join(map(str, r)) + "\n" for r in SIDECAR_ROWS))
    return sidecar


def _failures(err: str) -> list[str]:
    return sorted(line for line in err.splitlines() if line.startswith("engine3dmm: failed: "))


@pytest.mark.slow
def test_embed_ray_boxes_equals_single_process_and_resumes(tmp_path, cli):
    """`embed --boxes --ray` against `embed --boxes`: the same descriptors (1e-5), rows, progress
    record and per-input failures (a box outside the image, a bad box, an ambiguous entry, an
    input without an entry, a non-image), the unmatched-entry warning said once; a rerun with
    --ray skips what is done and redoes only a changed input; another sidecar is refused."""
    _boxes_case(tmp_path)
    argv = ("embed", "in", "more", "--boxes", "meta/boxes.csv")
    rc_single, err_single = cli(*argv, "-o", "single")
    rc_ray, err_ray = cli(*argv, "-o", "ray", "--ray")
    assert rc_single == rc_ray == 1
    assert _failures(err_ray) == _failures(err_single)
    for message in ("in/lfw1.png: meta/boxes.csv line 5, field x0: expected a coordinate within +-250 px",
                    "in/lfw2.png: meta/boxes.csv line 6: expected x1 > x0",
                    "in/dup.png: --boxes meta/boxes.csv: entry 'dup.png' matches 2 inputs",
                    "more/dup.png: --boxes meta/boxes.csv: entry 'dup.png' matches 2 inputs",
                    "in/lfw3.png: no face box for this input in --boxes meta/boxes.csv",
                    f"in/{NOT_AN_IMAGE}: not a recognised image format"):
        assert sum(message in line for line in _failures(err_ray)) == 1, (message, err_ray)
    assert len(_failures(err_ray)) == 6
    for err in (err_single, err_ray):
        assert err.count("1 of its 6 entries matches no input of this run: 'gone.png'") == 1
    assert "3 descriptor(s) in ray/descriptors.npy" in err_ray and "6 input(s) failed" in err_ray
    _same_output(tmp_path / "ray", tmp_path / "single")
    rows = _metadata(tmp_path / "ray")[1:]
    assert [(r[1], r[2], r[8]) for r in rows] == [("in/astronaut.png", "0", "1.0"), ("in/lfw0.png", "0", "1.0"),
                                                 ("in/lfw0.png", "1", "0.5")]
    assert [float(v) for v in rows[0][4:8]] == [170, 40, 270, 160]  # the sidecar's box, as given

    rc, err = cli(*argv, "-o", "ray", "--ray")
    assert rc == 1 and "8 input(s) already done in ray, skipped" in err
    assert len(json.loads((tmp_path / "ray" / "progress.json").read_text())["chunks"]) == 1  # nothing new ran
    import skimage.data

    write_lfw(tmp_path / "in" / "lfw0.png", skimage.data.lfw_subset()[LFW_FACES + 2])
    os.utime(tmp_path / "in" / "lfw0.png", ns=(1, 1))
    rc, err = cli(*argv, "-o", "ray", "--ray")
    assert rc == 1 and "7 input(s) already done in ray, skipped" in err and "1 input(s) changed" in err
    with open(tmp_path / "ray" / "chunks" / "chunk-00001.csv", newline="") as f:
        assert [r[1] for r in list(csv.reader(f))[1:]] == ["in/lfw0.png", "in/lfw0.png"]
    assert cli(*argv, "-o", "single-now")[0] == 1
    _same_output(tmp_path / "ray", tmp_path / "single-now", ordered=False)

    (tmp_path / "meta" / "boxes.csv").write_text("image,x0,y0,x1,y1\nlfw3.png,0,0,25,25\n")
    rc, err = cli(*argv, "-o", "ray", "--ray")
    assert rc == 1 and "holds descriptors whose faces were found otherwise (--boxes (the file's contents)" in err


def test_api_boxes_mapping_equals_reconstructor(tmp_path, monkeypatch):
    """engine.distributed.embed(boxes={...}) against Reconstructor.embed with the same mapping:
    keys relative to the caller's working directory (the actors' is another), a FaceBox and
    tuples, a malformed box failing its input alone, an input without an entry going to the
    detector (here off: it fails with the API's wording)."""
    from engine.detect import FaceBox
    from engine.distributed import embed
    from engine.pipeline import Reconstructor

    write_photos(tmp_path / "in")
    monkeypatch.chdir(tmp_path)
    paths = sorted(f"in/{p.name}" for p in (tmp_path / "in").iterdir())
    boxes = {"in/astronaut.png": [FaceBox(170, 40, 270, 160)], "lfw0.png": [(0, 0, 25, 25), (2, 2, 23, 23, 0.5)],
             "in/lfw1.png": [(0, 0, 25)], "./in/lfw2.png": [(1, 1, 24, 24)]}
    got = list(embed(paths, boxes=boxes, detector=None, actors=2))
    with Reconstructor(detector=None) as rec:
        want = [(r.source, r.face_index, r.error, r.box, None if r.coeffs is None else r.coeffs.copy())
                for r in rec.embed(paths, boxes=boxes)]
    assert [(r.source, r.face_index, r.error, r.box) for r in got] == [w[:4] for w in want]
    errors = {r.source: r.error for r in got if r.error}
    assert sorted(errors) == ["in/lfw1.png", "in/lfw3.png", f"in/{NOT_AN_IMAGE}"]
    assert "found 3 values" in errors["in/lfw1.png"] and "no face box given" in errors["in/lfw3.png"]
    assert sum(r.coeffs is not None for r in got) == 4
    for r, w in zip(got, want):
        if w[4] is not None:
            assert np.abs(r.coeffs - w[4]).max() <= 1e-5
