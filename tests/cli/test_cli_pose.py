"""reconstruct --pose / --posed / --landmarks / --pose-camera and convert --expression (issue 9):
every file read back by a reader we did not write (numpy.loadtxt for .pts, plyfile for the
posed mesh), summary.json's fields, a face without a pose as a reported failure."""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from engine.detect import landmark_model_path

from .helpers import ASTRONAUT_BOX, no_partial_files

HAS_LANDMARKS = importlib.util.find_spec("dlib") is not None and landmark_model_path() is not None
needs_dlib = pytest.mark.skipif(not HAS_LANDMARKS, reason="needs dlib and its 68-point landmark model")
POSE_KEYS = {"yaw", "pitch", "roll", "rotation", "translation", "camera", "projection", "landmark_error_px"}


@needs_dlib
def test_pose_posed_and_landmarks_files(cli, photos, tmp_path):
    plyfile = pytest.importorskip("plyfile")
    out = tmp_path / "out"
    r = cli("reconstruct", photos / "astronaut.png", "--pose", "--posed", "--landmarks", "-o", out, "-q")
    assert r.rc == 0, r.err
    summary = json.loads((out / "summary.json").read_text())
    (face,) = summary["faces"]
    assert face["files"] == {"coeffs": "astronaut_face0.npy", "mesh": "astronaut_face0.ply",
                             "landmarks": "astronaut_face0.pts", "posed": "posed/astronaut_face0.ply"}
    assert set(face["pose"]) == POSE_KEYS and face["pose_error"] is None and len(face["expression"]) == 29
    assert face["pose"]["camera"]["model"] == "perspective"
    assert summary["pose"]["camera"] == "perspective" and "Rz(roll) Ry(yaw) Rx(pitch)" in summary["pose"]["angles"]
    assert "fitted with the pose" in summary["pose"]["expression"] and "SYNTHETIC" in summary["pose"]["expression"]
    # .pts: the release's format, read as the release's demo read it.
    pts = np.loadtxt(out / "astronaut_face0.pts")
    np.testing.assert_allclose(pts, np.array(face["landmarks"]), atol=5e-7)
    # The posed mesh: in the photo's pixels, on the face, as plyfile reads it.
    ply = plyfile.PlyData.read(str(out / "posed" / "astronaut_face0.ply"))
    v = np.stack([ply["vertex"][k] for k in "xyz"], 1)
    assert v.shape == (46_990, 3) and len(ply["face"]) == 93_323
    x0, y0, x1, y1 = ASTRONAUT_BOX
    centre = np.median(v[:, :2], axis=0)
    assert x0 < centre[0] < x1 and y0 < centre[1] < y1
    assert (v[:, 0].max() - v[:, 0].min()) < 3 * (x1 - x0)  # the face's size, not millimetres
    assert any("posed: x right, y down" in c for c in ply.comments)
    assert not no_partial_files(out)


@needs_dlib
def test_weak_perspective_and_landmarks_alone(cli, photos, tmp_path):
    out = tmp_path / "w"
    r = cli("reconstruct", photos / "astronaut.png", "--pose", "--pose-camera", "weak-perspective", "-o", out, "-q")
    assert r.rc == 0, r.err
    face = json.loads((out / "summary.json").read_text())["faces"][0]
    assert face["pose"]["camera"]["model"] == "weak_perspective" and face["pose"]["camera"]["scale"] > 0
    out = tmp_path / "l"
    r = cli("reconstruct", photos / "astronaut.png", "--landmarks", "--no-mesh", "-o", out, "-q")
    assert r.rc == 0, r.err
    s = json.loads((out / "summary.json").read_text())
    assert "pose" not in s and "pose" not in s["faces"][0] and len(s["faces"][0]["landmarks"]) == 68
    assert (out / "astronaut_face0.pts").is_file()


def test_a_face_without_landmarks_fails_its_pose_only(cli, photos, tmp_path):
    """A box given without landmarks (a CSV sidecar has no room for them): the mesh is written,
    the pose is not, the face is listed as a failure (exit 1) saying why, and the run goes on."""
    side = tmp_path / "boxes.csv"
    side.write_text("image,x0,y0,x1,y1\nastronaut.png," + ",".join(map(str, ASTRONAUT_BOX)) + "\n")
    out = tmp_path / "out"
    r = cli("reconstruct", photos / "astronaut.png", "--boxes", side, "--pose", "--posed", "-o", out, "-q")
    assert r.rc == 1
    s = json.loads((out / "summary.json").read_text())
    (face,) = s["faces"]
    assert s["faces_written"] == 1 and face["pose"] is None
    assert "its box was given without landmarks" in face["pose_error"] and "detector" not in face["pose_error"]
    assert [f["source"].split("/")[-1] for f in s["failures"]] == ["astronaut.png"]
    assert (out / "astronaut_face0.ply").is_file() and not (out / "posed").exists()


@pytest.mark.parametrize("option", ["--pose", "--posed", "--render", "--landmarks", "--pose-camera=perspective"])
def test_pose_options_on_cropped_inputs_are_refused_before_anything_runs(cli, photos, tmp_path, option):
    """--cropped inputs have no landmarks in a photo: every option that needs them is a usage
    error (exit 2), said before the output folder exists."""
    out = tmp_path / "out"
    r = cli("reconstruct", photos / "astronaut.png", "--cropped", option, "-o", out)
    assert r.rc == 2
    assert option.split("=")[0] in r.err and "--cropped inputs are already-cropped faces" in r.err
    assert not out.exists()


@needs_dlib
def test_pose_camera_alone_asks_for_the_pose(cli, photos, tmp_path):
    out = tmp_path / "out"
    r = cli("reconstruct", photos / "astronaut.png", "--pose-camera", "weak-perspective", "--no-mesh", "-o", out, "-q")
    assert r.rc == 0, r.err
    s = json.loads((out / "summary.json").read_text())
    assert s["pose"]["camera"] == "weak_perspective" and s["faces"][0]["pose"]["camera"]["model"] == "weak_perspective"


@needs_dlib
def test_release_layout_names_and_a_json_sidecar_with_landmarks(cli, photos, tmp_path):
    from engine.detect import FaceDetector
    from PIL import Image

    lm = FaceDetector(landmarks=True).detect(np.asarray(Image.open(photos / "astronaut.png")))[0].landmarks
    side = tmp_path / "boxes.json"
    side.write_text(json.dumps({"astronaut.png": [{"landmarks": lm.tolist()}]}))
    out = tmp_path / "rel"
    r = cli("reconstruct", photos / "astronaut.png", "--boxes", side, "--release-layout", "--posed", "--landmarks",
            "-o", out, "-q")
    assert r.rc == 0, r.err
    assert (out / "astronaut.pts").is_file() and (out / "posed" / "astronaut.ply").is_file()
    assert (out / "posed" / "astronaut.ply").read_text().startswith("ply\nformat ascii 1.0\n")
    face = json.loads((out / "summary.json").read_text())["faces"][0]
    np.testing.assert_allclose(np.array(face["landmarks"]), lm, atol=1e-5)


def test_convert_expression_adds_the_basis_to_the_cache(cli, tmp_path, shared_dir):
    """A FULL-SIZE STAND-IN of 3DDFA's Model_Expression.mat (random values of its structure: the
    real one comes from its authors), added to a converted 46,990-vertex model's cache."""
    import scipy.io

    from engine.morphable import load_model, synthetic_model, write_cache

    card = tmp_path / "card"
    card.mkdir()
    base = synthetic_model(0).replace(expression_mean=None, expression_basis=None, expression_sigma=None)
    write_cache(base, card / "bfm2009_trimmed.e3dmm")
    rng = np.random.default_rng(0)
    expr = tmp_path / "Model_Expression.mat"
    scipy.io.savemat(expr, {"mu_exp": rng.normal(0, 1000, (3 * 53_215, 1)).astype(np.float32),
                            "w_exp": rng.normal(0, 1000, (3 * 53_215, 29)).astype(np.float32)})
    r = cli("convert", "--expression", expr, "--topology", shared_dir / "mod_struct_expr.mat", "--network-dir", card)
    assert r.rc == 0, r.err
    assert "29 expression components" in r.out
    m = load_model(card / "bfm2009_trimmed.e3dmm")
    assert m.expression_components == 29 and "Model_Expression.mat (sha256" in m.metadata["expression"]
    # Bad uses say what is wrong and write nothing.
    r = cli("convert", "--expression", tmp_path / "missing.mat", "--network-dir", card)
    assert r.rc == 1 and "--expression" in r.err and "no such file" in r.err
    empty = tmp_path / "empty"
    empty.mkdir()
    r = cli("convert", "--expression", expr, "--topology", shared_dir / "mod_struct_expr.mat", "--network-dir", empty)
    assert r.rc == 1 and "no converted Basel Face Model" in r.err
