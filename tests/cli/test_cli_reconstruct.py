"""`reconstruct`: files written, their names and contents, formats, boxes, video."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tests.cli.helpers import ASTRONAUT_BOX, load_npy, no_partial_files, write_face_clip

N_VERTICES, N_FACES = 46990, 93323  # the synthetic model has the trimmed BFM's sizes


def read_ply(path):
    plyfile = pytest.importorskip("plyfile")
    ply = plyfile.PlyData.read(str(path))
    v = ply["vertex"]
    xyz = np.stack([v["x"], v["y"], v["z"]], axis=1)
    rgb = np.stack([v["red"], v["green"], v["blue"]], axis=1)
    return ply, xyz, rgb


def test_astronaut_with_the_detector(cli, photos, tmp_path):
    pytest.importorskip("dlib")
    out = tmp_path / "out"
    r = cli("reconstruct", photos / "astronaut.png", "-o", out)
    assert r.rc == 0, r.err
    assert sorted(p.name for p in out.iterdir()) == ["astronaut_face0.npy", "astronaut_face0.ply", "summary.json"]
    coeffs = load_npy(out / "astronaut_face0.npy")
    assert coeffs.shape == (198,) and coeffs.dtype == np.float32 and np.all(np.isfinite(coeffs))
    ply, xyz, rgb = read_ply(out / "astronaut_face0.ply")
    assert xyz.shape == (N_VERTICES, 3) and ply["face"].count == N_FACES
    assert ply.text is False  # binary by default
    assert any("synthetic" in c for c in ply.comments)  # a synthetic result says so in the file
    summary = json.loads((out / "summary.json").read_text())
    assert summary["failures"] == [] and summary["faces_written"] == 1
    face = summary["faces"][0]
    assert face["files"] == {"coeffs": "astronaut_face0.npy", "mesh": "astronaut_face0.ply"}
    assert np.allclose(face["box"], ASTRONAUT_BOX, atol=2)
    assert np.allclose(face["coeffs"], coeffs)
    assert summary["provenance"]["network_synthetic"] is True
    assert "SYNTHETIC" in r.err  # and the terminal says it too
    assert "img/s" not in r.err  # no progress bar when stderr is not a terminal


def test_formats_hold_the_same_mesh(cli, photos, tmp_path):
    meshes = {}
    for fmt in ("ply", "ply-ascii", "obj"):
        out = tmp_path / fmt
        r = cli("reconstruct", photos / "astronaut.png", "--cropped", "--format", fmt, "-o", out, "-q")
        assert r.rc == 0, r.err
        name = "astronaut_face0." + ("obj" if fmt == "obj" else "ply")
        if fmt == "obj":
            rows = [ln.split()[1:] for ln in (out / name).read_text().splitlines() if ln.startswith("v ")]
            meshes[fmt] = np.array(rows, dtype=np.float64)[:, :3]
        else:
            ply, xyz, _ = read_ply(out / name)
            assert ply.text is (fmt == "ply-ascii")
            meshes[fmt] = xyz
        assert load_npy(out / "astronaut_face0.npy").shape == (198,)
    assert meshes["ply"].shape == (N_VERTICES, 3)
    assert np.allclose(meshes["ply"], meshes["ply-ascii"], atol=1e-5)
    assert np.allclose(meshes["ply"], meshes["obj"], atol=1e-4)


def test_boxes_sidecar_several_faces_and_clashing_names(cli, photos, tmp_path):
    # Two inputs called img.png in different folders must not overwrite each other.
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "img.png").write_bytes((photos / "astronaut.png").read_bytes())
    x0, y0, x1, y1 = ASTRONAUT_BOX
    boxes = tmp_path / "boxes.csv"
    boxes.write_text("image,x0,y0,x1,y1\n"
                     f"{tmp_path / 'a' / 'img.png'},{x0},{y0},{x1},{y1}\n"
                     f"{tmp_path / 'a' / 'img.png'},300,300,400,400\n"
                     f"{tmp_path / 'b' / 'img.png'},{x0},{y0},{x1},{y1}\n")
    out = tmp_path / "out"
    r = cli("reconstruct", tmp_path / "a", tmp_path / "b", "--boxes", boxes, "--no-mesh", "-o", out, "-q")
    assert r.rc == 0, r.err
    names = sorted(p.name for p in out.glob("*.npy"))
    assert names == ["a_img_face0.npy", "a_img_face1.npy", "b_img_face0.npy"]
    assert not list(out.glob("*.ply"))  # --no-mesh
    # Same pixels, same box: same coefficients; another box: others.
    a0, a1, b0 = (load_npy(out / n) for n in names)
    assert np.allclose(a0, b0, atol=1e-5) and not np.allclose(a0, a1, atol=1e-2)
    faces = json.loads((out / "summary.json").read_text())["faces"]
    assert [f["box"] for f in faces] == [[x0, y0, x1, y1], [300, 300, 400, 400], [x0, y0, x1, y1]]


def test_video_frames(cli, photos, tmp_path):
    clip = write_face_clip(tmp_path / "clip.avi", photos, frames=3)
    out = tmp_path / "out"
    r = cli("reconstruct", clip, "--cropped", "--no-mesh", "-o", out, "-q")
    assert r.rc == 0, r.err
    assert sorted(p.name for p in out.glob("*.npy")) == [f"clip_f{i:06d}_face0.npy" for i in range(3)]
    assert [f["frame"] for f in json.loads((out / "summary.json").read_text())["faces"]] == [0, 1, 2]
    assert no_partial_files(out) == []


def test_video_frame_step_and_max_frames(cli, photos, tmp_path):
    # Frame numbers stay those of the video: every 2nd frame of 7, at most 3 -> 0, 2, 4.
    clip = write_face_clip(tmp_path / "clip.avi", photos, frames=7)
    out = tmp_path / "out"
    r = cli("reconstruct", clip, "--cropped", "--no-mesh", "--frame-step", "2", "--max-frames", "3", "-o", out, "-q")
    assert r.rc == 0, r.err
    assert sorted(p.name for p in out.glob("*.npy")) == [f"clip_f{i:06d}_face0.npy" for i in (0, 2, 4)]
    r = cli("reconstruct", clip, "--frame-step", "0", "-o", out)
    assert r.rc == 2 and "--frame-step: expected a positive integer, found '0'" in r.err


def test_camera_that_cannot_be_opened_is_a_reported_failure(cli, photos, tmp_path):
    # No camera exists on test machines: index 63 cannot open anywhere. The run reports it
    # by name, still processes the files beside it, and ends (no hang) with exit code 1.
    pytest.importorskip("cv2")
    out = tmp_path / "out"
    r = cli("reconstruct", photos / "astronaut.png", "--camera", "63", "--cropped", "--no-mesh", "-o", out)
    assert r.rc == 1
    assert "failed: camera 63: OpenCV cannot open it as a video or camera stream" in r.err
    assert "[ WARN" not in r.err  # OpenCV's own log lines are silenced: our message says it once
    summary = json.loads((out / "summary.json").read_text())
    assert summary["inputs"] == 2 and [f["source"] for f in summary["failures"]] == ["camera 63"]
    assert sorted(p.name for p in out.glob("*.npy")) == ["astronaut_face0.npy"]


def test_neither_inputs_nor_camera_is_a_usage_error(cli, tmp_path):
    r = cli("reconstruct", "-o", tmp_path / "out")
    assert r.rc == 2 and "give at least one INPUT or --camera INDEX" in r.err
    assert not (tmp_path / "out").exists()  # refused before anything was created
    r = cli("reconstruct", "--camera", "-1", "-o", tmp_path / "out")
    assert r.rc == 2 and "--camera: expected an integer >= 0, found '-1'" in r.err


def test_camera_runs_one_face_per_batch_unless_told(cli):
    # Live frames must not wait for 7 more to fill a batch of 8.
    from engine.cli.common import batch_size
    from engine.cli.parser import DEFAULT_BATCH, build_parser

    parse = build_parser().parse_args
    assert batch_size(parse(["reconstruct", "a.jpg"])) == DEFAULT_BATCH
    assert batch_size(parse(["reconstruct", "--camera", "0"])) == 1
    assert batch_size(parse(["reconstruct", "--camera", "0", "--batch-size", "4"])) == 4
    assert batch_size(parse(["embed", "a.jpg"])) == DEFAULT_BATCH


def test_a_small_morphable_model_file(cli, photos, tmp_path):
    # --model takes a .e3dmm cache; the mesh has that model's vertex count.
    from tests.cli.helpers import tiny_model

    path = tmp_path / "tiny.e3dmm"
    tiny_model().save_cache(path)
    out = tmp_path / "out"
    r = cli("reconstruct", photos / "astronaut.png", "--cropped", "--model", path, "-o", out, "-q")
    assert r.rc == 0, r.err
    _, xyz, _ = read_ply(out / "astronaut_face0.ply")
    assert xyz.shape == (10, 3)


def test_summary_keeps_only_what_it_lists():
    from engine.cli.reconstruct import FaceList

    faces = FaceList(2)
    for i in range(1000):
        faces.add({"i": i})
    assert len(faces) == 1000 and len(faces.items) == 3 and faces.summary() is None
    small = FaceList(2)
    small.add({"i": 0})
    assert small.summary() == [{"i": 0}]


def test_summary_limit(cli, photos, tmp_path):
    out = tmp_path / "out"
    r = cli("reconstruct", photos / "astronaut.png", photos / "chelsea.jpg", photos / "camera.png", "--cropped",
            "--no-mesh", "--summary-limit", "1", "-o", out, "-q")
    assert r.rc == 0, r.err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["faces"] is None and summary["faces_written"] == 3 and "--summary-limit 1" in summary["faces_note"]


def test_a_failed_mesh_write_leaves_no_npy(cli, photos, tmp_path, monkeypatch):
    import errno

    from engine.pipeline.results import FaceResult
    from tests.cli.helpers import tiny_model

    def full(self, path, fmt="ply"):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(FaceResult, "write_mesh", full)
    model = tmp_path / "tiny.e3dmm"
    tiny_model().save_cache(model)
    out = tmp_path / "out"
    r = cli("reconstruct", photos / "astronaut.png", "--cropped", "--model", model, "-o", out)
    assert r.rc == 1 and "No space left on device" in r.err
    assert sorted(p.name for p in out.iterdir()) == ["summary.json"]  # no orphan astronaut_face0.npy
    assert json.loads((out / "summary.json").read_text())["faces_written"] == 0


def test_no_mesh_does_not_claim_the_morphable_model(cli, photos, tmp_path):
    out = tmp_path / "out"
    r = cli("reconstruct", photos / "astronaut.png", "--cropped", "--no-mesh", "-o", out)
    assert r.rc == 0, r.err
    prov = json.loads((out / "summary.json").read_text())["provenance"]
    assert not prov["morphable_synthetic"] and prov["morphable_model"] is None
    assert prov["network_synthetic"] is True
    assert "SYNTHETIC network weights" in r.err and "morphable" not in r.err
