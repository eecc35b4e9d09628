"""`reconstruct --render`: one picture per photo or video frame, the posed meshes over the photo
with their landmarks, read back with OpenCV (libpng) and checked against the API's own result."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine.cli import main

cv2 = pytest.importorskip("cv2")


def run(*argv) -> int:
    return main([str(a) for a in argv])


def read_png(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img is not None, path
    return img[..., ::-1].copy()  # BGR -> RGB


@pytest.fixture(scope="module")
def astronaut_file(tmp_path_factory) -> Path:
    from PIL import Image
    from skimage import data

    d = tmp_path_factory.mktemp("photos")
    Image.fromarray(data.astronaut()).save(d / "astronaut.png")
    return d / "astronaut.png"


def expected_picture(photo: np.ndarray, name: str) -> np.ndarray:
    """What the picture must be: the API's posed mesh and landmarks of the photo's face, drawn by
    engine.render.overlay, with the SYNTHETIC mark the built-in models call for."""
    import engine
    from engine.render import overlay, stamp

    with engine.Reconstructor() as rec:
        faces = [(np.array(r.posed_vertices), np.array(r.colors), np.array(r.landmarks), r.faces)
                 for r in rec.reconstruct([(name, photo)], pose=True)]
    assert len(faces) == 1
    picture = overlay(photo, [f[:3] for f in faces], faces[0][3])
    return stamp(picture, ["SYNTHETIC network weights and morphable model: not a real reconstruction"])


def test_render_writes_the_posed_mesh_over_the_photo(tmp_path, astronaut_file):
    out = tmp_path / "out"
    assert run("reconstruct", astronaut_file, "-o", out, "--render", "-q") == 0
    picture = read_png(out / "astronaut.render.png")
    photo = read_png(astronaut_file)
    np.testing.assert_array_equal(picture, expected_picture(photo, "astronaut"))
    changed = (picture != photo).any(axis=2)
    assert changed[100:200, 180:280].mean() > 0.5  # her face is covered by the mesh
    assert not changed[300:, :].any()  # below the face (and away from the mark) the photo is intact
    summary = json.loads((out / "summary.json").read_text())
    assert summary["renders"] == [{"source": str(astronaut_file), "frame": None, "file": "astronaut.render.png",
                                   "faces": 1, "faces_drawn": 1, "not_drawn": [], "scale": None}]
    from PIL import Image

    assert "SYNTHETIC" in Image.open(out / "astronaut.render.png").text["Description"]
    assert sorted(p.name for p in out.iterdir()) == ["astronaut.render.png", "astronaut_face0.npy",
                                                     "astronaut_face0.ply", "summary.json"]


def test_render_and_no_mesh_are_a_usage_error(tmp_path, astronaut_file, capsys):
    assert run("reconstruct", astronaut_file, "-o", tmp_path / "out", "--render", "--no-mesh") == 2
    assert "not allowed with argument" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_faces_without_a_pose_are_listed_not_drawn(tmp_path, astronaut_file):
    """A plain box has no landmarks, so no pose: the picture is the photo (and the mark), and
    the summary says which face was not drawn and why."""
    boxes = tmp_path / "boxes.csv"
    boxes.write_text("image,x0,y0,x1,y1\nastronaut.png,179,87,272,178\n")
    out = tmp_path / "out"
    assert run("reconstruct", astronaut_file, "-o", out, "--render", "--boxes", boxes, "-q") == 0
    summary = json.loads((out / "summary.json").read_text())
    (record,) = summary["renders"]
    assert record["faces"] == 1 and record["faces_drawn"] == 0
    assert record["not_drawn"][0]["face_index"] == 0 and "landmark" in record["not_drawn"][0]["why"]
    picture, photo = read_png(out / "astronaut.render.png"), read_png(astronaut_file)
    assert not (picture != photo)[60:, :].any()  # nothing drawn below the mark


def test_video_frames_each_get_a_picture(tmp_path, astronaut_file):
    photo = read_png(astronaut_file)
    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 5, (512, 512))
    for k in range(4):
        writer.write(np.ascontiguousarray(np.roll(photo, 6 * k, axis=1)[..., ::-1]))
    writer.release()
    out = tmp_path / "out"
    assert run("reconstruct", clip, "-o", out, "--render", "--frame-step", "2", "-q") == 0
    names = sorted(p.name for p in out.glob("*.render.png"))
    assert names == ["clip_f000000.render.png", "clip_f000002.render.png"]
    from engine.images import iter_video_frames

    frames = dict(iter_video_frames(clip, step=2))
    for name, frame in (("clip_f000000.render.png", 0), ("clip_f000002.render.png", 2)):
        picture = read_png(out / name)
        same = (picture == frames[frame]).all(axis=2)
        assert same[300:, :].all()  # the frame the run saw, under the drawing
        assert not same[100:200, 180:280].all()
    summary = json.loads((out / "summary.json").read_text())
    assert [(r["frame"], r["faces_drawn"]) for r in summary["renders"]] == [(0, 1), (2, 1)]


def test_a_wide_photo_is_drawn_at_most_4096_pixels_wide(tmp_path, astronaut_file):
    from PIL import Image

    photo = read_png(astronaut_file)
    wide = np.zeros((512, 5120, 3), np.uint8) + 90
    wide[:, 2048:2560] = photo
    Image.fromarray(wide).save(tmp_path / "wide.png")
    out = tmp_path / "out"
    assert run("reconstruct", tmp_path / "wide.png", "-o", out, "--render", "-q") == 0
    picture = read_png(out / "wide.render.png")
    assert picture.shape == (410, 4096, 3)
    (record,) = json.loads((out / "summary.json").read_text())["renders"]
    assert record["scale"] == pytest.approx(0.8) and record["faces_drawn"] == 1
    # The mesh lands on her face in the scaled picture too: x 2048 + 180..280 at scale 0.8.
    changed = (picture != np.asarray(Image.fromarray(wide).resize((4096, 410), Image.LANCZOS))).any(axis=2)
    assert changed[80:160, int(0.8 * 2228):int(0.8 * 2328)].mean() > 0.5
