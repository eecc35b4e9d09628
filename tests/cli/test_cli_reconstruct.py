"""`reconstruct`: files written, their names and contents, formats, boxes, video."""
from __future__ import annotations

import json

import numpy as np
import pytest

from engine.morphable import write_cache
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
    write_cache(tiny_model(), path)
    out = tmp_path / "out"
    r = cli("reconstruct", photos / "astronaut.png", "--cropped", "--model", path, "-o", out, "-q")
    assert r.rc == 0, r.err
    _, xyz, _ = read_ply(out / "astronaut_face0.ply")
    assert xyz.shape == (10, 3)


def test_summary_spools_every_face_and_keeps_coefficients_only_for_small_runs():
    from engine.cli.reconstruct import FaceList

    faces = FaceList(2)
    for i in range(1000):
        faces.add({"i": i, "coeffs": np.full(198, i, np.float32)})
    assert len(faces) == 1000 and not faces.with_coeffs
    listed = list(faces)
    assert [f["i"] for f in listed] == list(range(1000)) and all("coeffs" not in f for f in listed)
    faces.close()
    small = FaceList(2)
    small.add({"i": 0, "coeffs": np.arange(198, dtype=np.float32)})
    assert [f["coeffs"] for f in small] == [list(range(198))]
    small.add({"i": 1})
    assert len(list(small)) == 2  # iterating twice, adding in between
    small.close()


def test_summary_limit(cli, photos, tmp_path):
    out = tmp_path / "out"
    r = cli("reconstruct", photos / "astronaut.png", photos / "chelsea.jpg", photos / "camera.png", "--cropped",
            "--no-mesh", "--summary-limit", "1", "-o", out, "-q")
    assert r.rc == 0, r.err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["faces_written"] == 3 and "--summary-limit 1" in summary["faces_note"]
    # Every face is still mapped to its files; only the coefficients are left out.
    assert [f["files"] for f in summary["faces"]] == [{"coeffs": f"{n}_face0.npy"}
                                                      for n in ("astronaut", "chelsea", "camera")]
    assert all("coeffs" not in f for f in summary["faces"])


def test_a_failed_mesh_write_leaves_no_npy(cli, photos, tmp_path, monkeypatch):
    import errno

    from engine.pipeline.results import FaceResult
    from tests.cli.helpers import tiny_model

    def full(self, path, fmt="ply"):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(FaceResult, "write_mesh", full)
    model = tmp_path / "tiny.e3dmm"
    write_cache(tiny_model(), model)
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


# --------------------------------------------------------------------------- every face keeps its own files


def _files_hold_their_faces(out, summary):
    """Every face in summary.json has files of its own, and each .npy holds that face's coefficients."""
    files = [name for f in summary["faces"] for name in f["files"].values()]
    assert len(set(files)) == len(files) and len({n.casefold() for n in files}) == len(files)
    assert sorted(files + ["summary.json"]) == sorted(p.name for p in out.iterdir())
    for f in summary["faces"]:
        assert np.array_equal(load_npy(out / f["files"]["coeffs"]), np.float32(f["coeffs"])), f


def test_a_video_and_a_photo_named_like_its_frames_keep_their_own_files(cli, photos, tmp_path):
    # The case: clip.avi and clip_f000000.jpg both wrote clip_f000000_face0.*, the photo's
    # coefficients replacing the frame's while the run reported 4 faces written.
    from tests.cli.helpers import write_face_clip

    clip = write_face_clip(tmp_path / "clip.avi", photos, frames=3)
    (tmp_path / "clip_f000000.jpg").write_bytes((photos / "chelsea.jpg").read_bytes())
    out = tmp_path / "out"
    r = cli("reconstruct", clip, tmp_path / "clip_f000000.jpg", "--cropped", "-o", out, "-q")
    assert r.rc == 0, r.err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["faces_written"] == 4 and len(summary["faces"]) == 4
    names = {(f["source"], f["frame"]): f["files"] for f in summary["faces"]}
    assert names[(str(clip), 0)] == {"coeffs": "clip_f000000_face0.npy", "mesh": "clip_f000000_face0.ply"}
    photo = names[(str(tmp_path / "clip_f000000.jpg"), None)]
    assert photo["coeffs"] != "clip_f000000_face0.npy"
    files = [n for f in names.values() for n in f.values()]
    assert len(set(files)) == 8 and sorted(files + ["summary.json"]) == sorted(p.name for p in out.iterdir())
    for f in summary["faces"]:  # each file holds its own face (none overwritten by another)
        assert np.array_equal(load_npy(out / f["files"]["coeffs"]), np.float32(f["coeffs"]))
        _, xyz, _ = read_ply(out / f["files"]["mesh"])
        assert xyz.shape == (N_VERTICES, 3)


def test_names_that_differ_only_in_case_or_folder_keep_their_own_files(cli, photos, tmp_path):
    # Written on Linux, these outputs must also survive a copy to a case-insensitive disk.
    srcs = []
    for rel, photo in (("a/img.png", "astronaut.png"), ("b/img.png", "chelsea.jpg"), ("b/IMG.png", "camera.png"),
                       ("a_img.png", "coffee.jpg"), ("x_face0.png", "camera.png"), ("x.png", "chelsea.jpg")):
        p = tmp_path / "in" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes((photos / photo).read_bytes())
        srcs.append(p)
    out = tmp_path / "out"
    r = cli("reconstruct", *srcs, "--cropped", "--no-mesh", "-o", out, "-q")
    assert r.rc == 0, r.err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["faces_written"] == 6
    _files_hold_their_faces(out, summary)


# --------------------------------------------------------------------------- the release's layout

# demoCode/utils.py `write_ply` of anhttran/3dmm_cnn writes exactly these header lines.
RELEASE_HEADER = ["ply", "format ascii 1.0", f"element vertex {N_VERTICES}", "property float x", "property float y",
                  "property float z", "property uchar red", "property uchar green", "property uchar blue",
                  f"element face {N_FACES}", "property list uchar int vertex_indices", "end_header"]


def test_release_layout_writes_what_the_demo_wrote(cli, photos, tmp_path):
    import re

    trimesh = pytest.importorskip("trimesh")
    ours, release = tmp_path / "ours", tmp_path / "release"
    r = cli("reconstruct", photos / "astronaut.png", "--cropped", "-o", ours, "-q")
    assert r.rc == 0, r.err
    r = cli("reconstruct", photos / "astronaut.png", "--cropped", "--release-layout", "-o", release)
    assert r.rc == 0, r.err
    # The release's header has no room for the SYNTHETIC mark: a note beside the files says it.
    assert sorted(p.name for p in release.iterdir()) == ["SYNTHETIC.txt", "astronaut.ply", "astronaut.ply.alpha",
                                                         "astronaut.ply.beta", "summary.json"]
    note = (release / "SYNTHETIC.txt").read_text()
    assert note.count("\n") == 1 and note.startswith("SYNTHETIC: the results in this folder come from the built-in "
                                                     "SYNTHETIC network weights and morphable model")
    assert f"SYNTHETIC.txt in {release} says so" in r.err.strip().splitlines()[-1]
    assert json.loads((release / "summary.json").read_text())["synthetic_note"] == "SYNTHETIC.txt"
    lines = (release / "astronaut.ply").read_text(encoding="ascii").split("\n")
    assert lines[:12] == RELEASE_HEADER
    assert all(re.fullmatch(r"-?\d+\.\d{4} -?\d+\.\d{4} -?\d+\.\d{4} \d{1,3} \d{1,3} \d{1,3}", ln)
               for ln in lines[12:12 + N_VERTICES])
    assert all(re.fullmatch(r"3 \d+ \d+ \d+", ln) for ln in lines[12 + N_VERTICES:-1]) and lines[-1] == ""
    # Independent readers: plyfile and trimesh read the same mesh as our binary PLY (to the 4 decimals).
    ply, xyz, rgb = read_ply(release / "astronaut.ply")
    assert ply.text is True and not ply.comments
    ref, ref_xyz, ref_rgb = read_ply(ours / "astronaut_face0.ply")
    text_xyz = np.array([ln.split()[:3] for ln in lines[12:12 + N_VERTICES]], dtype=np.float64)
    assert np.abs(text_xyz - ref_xyz.astype(np.float64)).max() <= 0.5e-4 + 1e-9  # '%0.4f' of our float32 vertices
    assert np.abs(xyz - ref_xyz).max() <= 0.5e-4 + 1e-5 and np.array_equal(rgb, ref_rgb)  # + float32 rounding
    assert np.array_equal(np.stack(ply["face"]["vertex_indices"]), np.stack(ref["face"]["vertex_indices"]))
    mesh = trimesh.load(release / "astronaut.ply", process=False)
    assert mesh.vertices.shape == (N_VERTICES, 3) and mesh.faces.shape == (N_FACES, 3)
    assert np.abs(mesh.vertices - ref_xyz).max() <= 0.5e-4 + 1e-5
    # .ply.alpha / .ply.beta: np.savetxt's '%.18e', 99 lines each, the exact float32 coefficients.
    coeffs = load_npy(ours / "astronaut_face0.npy")
    for part, values in (("alpha", coeffs[:99]), ("beta", coeffs[99:])):
        rows = (release / f"astronaut.ply.{part}").read_text().splitlines()
        assert len(rows) == 99 and all(re.fullmatch(r"-?\d\.\d{18}e[+-]\d\d", ln) for ln in rows)
        assert np.array_equal(np.loadtxt(release / f"astronaut.ply.{part}").astype(np.float32), values)
    faces = json.loads((release / "summary.json").read_text())["faces"]
    assert faces[0]["files"] == {"alpha": "astronaut.ply.alpha", "beta": "astronaut.ply.beta", "mesh": "astronaut.ply"}


def test_release_layout_names_further_faces_and_frames_and_refuses_a_format(cli, photos, tmp_path):
    from tests.cli.helpers import write_face_clip

    x0, y0, x1, y1 = ASTRONAUT_BOX
    clip = write_face_clip(tmp_path / "clip.avi", photos, frames=2)
    boxes = tmp_path / "boxes.csv"
    boxes.write_text(f"image,x0,y0,x1,y1\n{photos / 'astronaut.png'},{x0},{y0},{x1},{y1}\n"
                     f"{photos / 'astronaut.png'},300,300,400,400\n{clip},20,20,140,140\n")
    out = tmp_path / "out"
    r = cli("reconstruct", photos / "astronaut.png", clip, "--boxes", boxes, "--release-layout", "--no-mesh",
            "-o", out, "-q")
    assert r.rc == 0, r.err
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{n}.ply.{part}" for n in ("astronaut", "astronaut_face1", "clip_f000000", "clip_f000001")
         for part in ("alpha", "beta")] + ["summary.json", "SYNTHETIC.txt"])
    # --no-mesh: only the network made these files, and the note says just that.
    assert "SYNTHETIC network weights (placeholders" in (out / "SYNTHETIC.txt").read_text()
    r = cli("reconstruct", photos / "astronaut.png", "--release-layout", "--format", "obj", "-o", out)
    assert r.rc == 2 and "not allowed with argument" in r.err


# --------------------------------------------------------------------------- videos that end early


def test_a_cut_video_is_a_failure_that_names_the_frame_and_keeps_the_whole_frames(cli, photos, tmp_path):
    from tests.cli.helpers import cut_video, write_moving_clip

    clip = write_moving_clip(tmp_path / "clip.avi", photos, frames=10)
    whole = tmp_path / "whole"
    r = cli("reconstruct", clip, "--cropped", "--no-mesh", "-o", whole, "-q")
    assert r.rc == 0, r.err
    (tmp_path / "cut").mkdir()
    cut = cut_video(clip, tmp_path / "cut" / "clip.avi", keep_frames=6)  # frame 6 decodes partly grey
    out = tmp_path / "out"
    r = cli("reconstruct", cut, "--cropped", "-o", out, "-q")
    assert r.rc == 1
    assert f"failed: {cut}: frame 6 of 10: the video ends early" in r.err
    summary = json.loads((out / "summary.json").read_text())
    assert [(f["source"], f["frame"]) for f in summary["failures"]] == [(str(cut), 6)]
    # Frames 0..5 are kept and equal the whole video's; frame 6, cut, is not reconstructed.
    assert [f["frame"] for f in summary["faces"]] == list(range(6))
    for i in range(6):
        got, ref = load_npy(out / f"clip_f{i:06d}_face0.npy"), load_npy(whole / f"clip_f{i:06d}_face0.npy")
        assert np.allclose(got, ref, atol=1e-4), i
    assert not (out / "clip_f000006_face0.npy").exists() and no_partial_files(out) == []
    # Frames taken only before the break: no failure. A wanted frame at or after it: a failure.
    for opts, frames, rc in ((["--max-frames", "6"], range(6), 0),
                             (["--frame-step", "2", "--max-frames", "3"], (0, 2, 4), 0),
                             (["--frame-step", "5"], (0, 5), 1), (["--frame-step", "2"], (0, 2, 4), 1)):
        o = tmp_path / "-".join(opts)
        r = cli("reconstruct", cut, "--cropped", "--no-mesh", *opts, "-o", o, "-q")
        assert r.rc == rc, (opts, r.err)
        assert sorted(p.name for p in o.glob("*.npy")) == [f"clip_f{i:06d}_face0.npy" for i in frames], opts


def test_a_video_cut_to_half_its_bytes(cli, photos, tmp_path):
    # The numbers: a video cut to half its bytes gave its frames, exit 0, no failure.
    from tests.cli.helpers import write_moving_clip

    clip = write_moving_clip(tmp_path / "clip.avi", photos, frames=12)
    data = clip.read_bytes()
    clip.write_bytes(data[:len(data) // 2])
    out = tmp_path / "out"
    r = cli("reconstruct", clip, "--cropped", "--no-mesh", "-o", out, "-q")
    summary = json.loads((out / "summary.json").read_text())
    assert r.rc == 1 and len(summary["failures"]) == 1
    failed = summary["failures"][0]["frame"]
    assert f"frame {failed} of 12" in summary["failures"][0]["error"]
    assert summary["faces_written"] == failed == len(list(out.glob("*.npy"))) and 3 <= failed <= 7


def test_release_layout_with_official_models_writes_no_note_and_names_an_old_one(cli, photos, tmp_path,
                                                                                 synthetic_model):
    # A converted model card (weights marked official: the values do not matter here) and a
    # model file that is not synthetic: no note. A note left by an earlier synthetic run in the
    # same folder is named in a warning and kept (that run's files stay synthetic).
    pytest.importorskip("torch")
    from engine.network import weights as W
    from tests.cli.helpers import tiny_model

    card = tmp_path / "card"
    card.mkdir()
    W.save_weights(card / "cnn3dmm.safetensors", synthetic_model.weights, synthetic_model.mean,
                   {"synthetic": False, "source": "test: a converted card"})
    model = tmp_path / "tiny.e3dmm"
    write_cache(tiny_model(), model)
    out = tmp_path / "out"
    argv = ("reconstruct", photos / "astronaut.png", "--cropped", "--release-layout", "--model", model,
            "--network-dir", card, "--runner", "torch-cpu", "-o", out)
    r = cli(*argv)
    assert r.rc == 0, r.err
    prov = json.loads((out / "summary.json").read_text())["provenance"]
    assert prov["network_synthetic"] is False and prov["morphable_synthetic"] is False
    assert not (out / "SYNTHETIC.txt").exists() and "SYNTHETIC" not in r.err
    (out / "SYNTHETIC.txt").write_text("from an earlier run\n")
    r = cli(*argv)
    assert r.rc == 0 and "SYNTHETIC.txt is from an earlier run with SYNTHETIC models" in r.err
    assert (out / "SYNTHETIC.txt").read_text() == "from an earlier run\n"


# --------------------------------------------------------------------------- folders: sub-folders and videos


def test_a_folder_gives_its_images_and_videos_and_counts_the_sub_folders_left_out(cli, photos, tmp_path):
    # Before: album2/sub/b.jpg was skipped without a word ("1 face(s) from 1 input(s)", exit 0),
    # and a folder's clip was ignored.
    from tests.cli.helpers import write_face_clip

    album = tmp_path / "album2"
    (album / "sub" / "deeper").mkdir(parents=True)
    (album / "notes").mkdir()  # a sub-folder without images is not counted
    (album / "notes" / "todo.txt").write_text("x")
    (album / "a.jpg").write_bytes((photos / "chelsea.jpg").read_bytes())
    (album / "sub" / "deeper" / "b.jpg").write_bytes((photos / "coffee.jpg").read_bytes())
    write_face_clip(album / "clip.avi", photos, frames=2)
    out = tmp_path / "out"
    r = cli("reconstruct", album, "--cropped", "--no-mesh", "-o", out)
    assert r.rc == 0, r.err
    assert sorted(p.name for p in out.glob("*.npy")) == ["a_face0.npy", "clip_f000000_face0.npy",
                                                         "clip_f000001_face0.npy"]
    said = [ln for ln in r.err.splitlines() if "not searched" in ln]
    assert said == [f"engine3dmm: warning: 1 sub-folder(s) holding images or videos were not searched "
                    f"({album / 'sub'}/): --recursive searches them"]
    out = tmp_path / "rec"
    r = cli("reconstruct", album, "--cropped", "--no-mesh", "--recursive", "-o", out)
    assert r.rc == 0 and "not searched" not in r.err
    assert sorted(p.name for p in out.glob("*.npy")) == ["a_face0.npy", "b_face0.npy", "clip_f000000_face0.npy",
                                                         "clip_f000001_face0.npy"]


def test_a_pattern_takes_videos(cli, photos, tmp_path):
    # Before: 'vids/*.mp4' failed with "pattern matched no image files".
    cv2 = pytest.importorskip("cv2")
    from tests.cli.helpers import write_moving_clip

    (tmp_path / "vids").mkdir()
    clip = write_moving_clip(tmp_path / "vids" / "clip.mp4", photos, frames=3, fourcc="mp4v")
    cap = cv2.VideoCapture(str(clip))
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    out = tmp_path / "out"
    r = cli("reconstruct", str(tmp_path / "vids" / "*.mp4"), "--cropped", "--no-mesh", "-o", out, "-q")
    assert r.rc == 0, r.err
    assert sorted(p.name for p in out.glob("*.npy")) == [f"clip_f{i:06d}_face0.npy" for i in range(n)] and n == 3


def test_the_lfw_example_of_the_help_runs_on_an_lfw_layout(cli, photos, tmp_path, monkeypatch):
    # Every example line of `reconstruct --help` that names lfw/ runs on LFW's layout
    # (root/Name/Name_0001.jpg) as written, and gives what it says.
    import shlex

    r = cli("reconstruct", "--help")
    (line,) = [ln for ln in r.out.splitlines() if "lfw/" in ln and "engine3dmm reconstruct" in ln]
    argv = shlex.split(line.split("engine3dmm", 1)[1])
    assert argv[:2] == ["reconstruct", "lfw/"] and argv[-2:] == ["-o", "out/"]
    monkeypatch.chdir(tmp_path)
    for name, photo in (("Aaron_Eckhart", "astronaut.png"), ("Zico", "camera.png")):
        (tmp_path / "lfw" / name).mkdir(parents=True)
        (tmp_path / "lfw" / name / f"{name}_0001.png").write_bytes((photos / photo).read_bytes())
    r = cli(*argv, "--cropped", "--no-mesh")
    assert r.rc == 0, r.err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        [f"{n}_0001.ply.{part}" for n in ("Aaron_Eckhart", "Zico") for part in ("alpha", "beta")]
        + ["SYNTHETIC.txt", "summary.json"])
    # Without --recursive the folder holds no image itself: the failure says how to search it.
    r = cli("reconstruct", "lfw/", "--release-layout", "-o", "out2/", "--cropped")
    assert r.rc == 1 and "2 of its sub-folders hold some (e.g. Aaron_Eckhart/): --recursive searches them" in r.err
