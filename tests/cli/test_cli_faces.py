"""Faces on the command line: the detector options, the crop rule in summary.json, and bad
--boxes sidecars failing their own image only (issue 8 section 4, issue 13 finding 6)."""
from __future__ import annotations

import json

import pytest

from tests.cli.helpers import ASTRONAUT_BOX


@pytest.mark.parametrize("cmd", [["reconstruct", "a.jpg"], ["embed", "a.jpg"], ["verify", "a.jpg", "b.jpg"],
                                 ["evaluate", "pairs.txt", "root"]])
@pytest.mark.parametrize("bad,msg", [(["--det-threshold", "nan"], "expected a finite number"),
                                     (["--det-threshold", "x"], "expected a finite number"),
                                     (["--det-upsample", "5"], "expected an integer in 0..4"),
                                     (["--det-upsample", "-1"], "expected an integer >= 0"),
                                     (["--det-max-side", "8"], "expected 0 (full resolution) or an integer >= 32")])
def test_detector_options_are_checked_on_every_command(cli, cmd, bad, msg):
    r = cli(*cmd, *bad)
    assert r.rc == 2 and msg in r.err and bad[0] in r.err


def test_summary_records_each_faces_crop_rule(cli, photos, tmp_path):
    pytest.importorskip("dlib")
    from engine.detect import landmark_model_path

    out = tmp_path / "detected"
    r = cli("reconstruct", photos / "astronaut.png", "--no-mesh", "-o", out, "-q")
    assert r.rc == 0, r.err
    (face,) = json.loads((out / "summary.json").read_text())["faces"]
    assert face["crop_rule"] == ("landmarks" if landmark_model_path() else "detector")
    boxes = tmp_path / "b.csv"
    boxes.write_text("image,x0,y0,x1,y1\nastronaut.png," + ",".join(map(str, ASTRONAUT_BOX)) + "\n")
    out = tmp_path / "given"
    r = cli("reconstruct", photos / "astronaut.png", "--boxes", boxes, "--no-mesh", "-o", out, "-q")
    assert r.rc == 0, r.err
    (face,) = json.loads((out / "summary.json").read_text())["faces"]
    assert face["crop_rule"] == "detector"  # a caller's box is cropped like a detector box
    out = tmp_path / "cropped"
    r = cli("reconstruct", photos / "astronaut.png", "--cropped", "--no-mesh", "-o", out, "-q")
    assert r.rc == 0, r.err
    assert json.loads((out / "summary.json").read_text())["faces"][0]["crop_rule"] == "whole image"


def test_det_threshold_reaches_the_detector(cli, photos, tmp_path):
    pytest.importorskip("dlib")
    out = tmp_path / "out"
    r = cli("reconstruct", photos / "astronaut.png", "--det-threshold", "2", "--det-max-side", "0", "--no-mesh",
            "-o", out)
    assert r.rc == 1
    assert "no face found (dlib HOG detector: faces from score 2, upsample 1, full size)" in r.err
    failures = json.loads((out / "summary.json").read_text())["failures"]
    assert [f["source"] for f in failures] == [str(photos / "astronaut.png")]


def test_a_bad_sidecar_row_fails_that_image_and_the_run_goes_on(cli, photos, tmp_path):
    # Before: 10,10,1e308,100 raised OverflowError in crop.py, the run stopped with a
    # traceback and summary.json said "failures": [].
    boxes = tmp_path / "boxes.csv"
    good = ",".join(map(str, ASTRONAUT_BOX))
    for name in ("a.png", "b.png", "c.png"):
        (tmp_path / name).write_bytes((photos / "astronaut.png").read_bytes())
    boxes.write_text(f"image,x0,y0,x1,y1\na.png,{good}\nb.png,10,10,1e308,100\nc.png,{good}\n")
    out = tmp_path / "out"
    r = cli("reconstruct", tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png", "--boxes", boxes,
            "--no-mesh", "-o", out)
    assert r.rc == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["faces_written"] == 2 and sorted(p.name for p in out.glob("*.npy")) == ["a_face0.npy",
                                                                                         "c_face0.npy"]
    (fail,) = summary["failures"]
    assert fail["source"] == str(tmp_path / "b.png")
    assert fail["error"] == f"{boxes} line 3, field x1: expected a finite number within +-2147483648 px, found 1e+308"
    assert f"failed: {tmp_path / 'b.png'}: {boxes} line 3, field x1" in r.err


def test_an_unreadable_sidecar_is_one_clear_error(cli, photos, tmp_path):
    boxes = tmp_path / "boxes.json"
    boxes.write_text("[" * 1000 + "]" * 1000)
    r = cli("embed", photos / "astronaut.png", "--boxes", boxes, "-o", tmp_path / "out")
    assert r.rc == 1 and f"error: {boxes}: JSON nested too deeply" in r.err
    assert "Traceback" not in r.err
