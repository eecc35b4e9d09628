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
