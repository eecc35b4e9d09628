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


# --------------------------------------------------------------------------- which input a --boxes row belongs to


@pytest.fixture
def album(photos, tmp_path, monkeypatch):
    """The tester's layout, the working directory at its top: album/a/img.jpg (the astronaut),
    album/b/img.jpg (the astronaut mirrored) and photo.jpg (the astronaut)."""
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    astronaut = Image.open(photos / "astronaut.png").convert("RGB")
    for rel, im in (("album/a/img.jpg", astronaut), ("album/b/img.jpg", astronaut.transpose(Image.FLIP_LEFT_RIGHT)),
                    ("photo.jpg", astronaut)):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        im.save(tmp_path / rel, quality=92)
    return tmp_path


def _row(key, box=ASTRONAUT_BOX):
    return f"{key}," + ",".join(map(str, box)) + "\n"


def test_a_row_by_bare_name_is_not_given_to_two_images(cli, album):
    # Before: the same box went to album/a/img.jpg and album/b/img.jpg, exit 0.
    (album / "bs.csv").write_text("image,x0,y0,x1,y1\n" + _row("img.jpg"))
    r = cli("reconstruct", "album/a", "album/b", "--boxes", "bs.csv", "--no-mesh", "-o", "o/")
    assert r.rc == 1 and not list((album / "o").glob("*.npy"))
    failures = json.loads((album / "o" / "summary.json").read_text())["failures"]
    assert [f["source"] for f in failures] == ["album/a/img.jpg", "album/b/img.jpg"]
    for f, this in zip(failures, ("album/a/img.jpg", "album/b/img.jpg")):
        assert f["error"] == (f"{this}: --boxes bs.csv: entry 'img.jpg' matches 2 inputs ('album/a/img.jpg', "
                              f"'album/b/img.jpg'), so it is used for none: name each file by a path that fits it "
                              f"alone (this one: '{this}')")
        assert f"engine3dmm: failed: {f['error']}" in r.err.splitlines()


def test_rows_by_path_below_the_folder_given_or_with_dot_slash(cli, album, tmp_path):
    # Before: neither key matched anything (only the full path or a bare file name did).
    mirrored = (232, 87, 325, 178)  # the astronaut's face in the mirrored photo
    (album / "bs.csv").write_text("image,x0,y0,x1,y1\n" + _row("a/img.jpg") + _row("b/img.jpg", mirrored)
                                  + _row("./photo.jpg") + _row("gone.jpg"))
    r = cli("reconstruct", "album/", "photo.jpg", "--recursive", "--boxes", "bs.csv", "--no-mesh", "-o", "o")
    assert r.rc == 0, r.err
    faces = json.loads((album / "o" / "summary.json").read_text())["faces"]
    assert [(f["source"], f["box"]) for f in faces] == [("album/a/img.jpg", list(ASTRONAUT_BOX)),
                                                        ("album/b/img.jpg", list(mirrored)),
                                                        ("photo.jpg", list(ASTRONAUT_BOX))]
    # One warning for the rows that match no input.
    said = [ln for ln in r.err.splitlines() if "match no input" in ln or "matches no input" in ln]
    assert len(said) == 1 and said[0].startswith("engine3dmm: warning: --boxes bs.csv: 1 of its 4 entries matches "
                                                 "no input of this run: 'gone.jpg'")
    # The same rows from a sidecar elsewhere: keys are also read relative to its folder.
    (tmp_path / "side").mkdir()
    (tmp_path / "side" / "bs.csv").write_text("image,x0,y0,x1,y1\n" + _row("../photo.jpg"))
    r = cli("reconstruct", "photo.jpg", "--boxes", "side/bs.csv", "--no-mesh", "-o", "o2", "-q")
    assert r.rc == 0, r.err


def test_an_input_without_a_row_fails_in_the_command_lines_words(cli, album):
    (album / "bs.csv").write_text("image,x0,y0,x1,y1\n" + _row("photo.jpg"))
    r = cli("reconstruct", "photo.jpg", "album/a", "--boxes", "bs.csv", "--no-mesh", "-o", "o")
    assert r.rc == 1
    (fail,) = json.loads((album / "o" / "summary.json").read_text())["failures"]
    assert fail["error"] == ("album/a/img.jpg: no face box for this input in --boxes bs.csv, and no detector runs "
                             "with --boxes: add its row, or run it without --boxes (faces detected) or with --cropped "
                             "(the image is a face crop)")
    assert "detector=None" not in r.err and "cropped=True" not in r.err


def test_a_box_far_outside_its_image_is_that_images_failure(cli, album):
    # Before: accepted, and the "face" was made of padding.
    (album / "far.json").write_text(json.dumps({"photo.jpg": [[-5000, -5000, -4000, -4000]],
                                                "album/a/img.jpg": [list(ASTRONAUT_BOX)]}))
    r = cli("reconstruct", "photo.jpg", "album/a/img.jpg", "--boxes", "far.json", "--no-mesh", "-o", "o")
    assert r.rc == 1
    summary = json.loads((album / "o" / "summary.json").read_text())
    assert [f["source"] for f in summary["faces"]] == ["album/a/img.jpg"]
    (fail,) = summary["failures"]
    assert fail["error"] == ("far.json: entry 'photo.jpg' box 0: the box (x0=-5000 y0=-5000 x1=-4000 y1=-4000) lies "
                             "wholly outside this 512x512 image: expected part of it inside (x0 < 512, x1 > 0, "
                             "y0 < 512, y1 > 0)")
