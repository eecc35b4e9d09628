"""Landmarks, pose and expression through the pipeline (issue 9 sections 1-3): dlib's landmarks
on FaceResult, the caller's through the API and the boxes sidecar, the pose fitted per batch,
the posed mesh, and a clear error per face when a pose cannot be fitted (the run goes on)."""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from engine.detect import FaceBox, landmark_model_path
from engine.errors import InputError

skimage_data = pytest.importorskip("skimage.data")
HAS_LANDMARKS = importlib.util.find_spec("dlib") is not None and landmark_model_path() is not None
needs_dlib = pytest.mark.skipif(not HAS_LANDMARKS, reason="needs dlib and its 68-point landmark model")
BOX = (170.0, 75.0, 280.0, 185.0)  # around the astronaut's face


@pytest.fixture(scope="module")
def dlib_landmarks(astronaut):
    if not HAS_LANDMARKS:
        pytest.skip("needs dlib and its 68-point landmark model")
    from engine.detect import FaceDetector

    return FaceDetector(landmarks=True).detect(astronaut)[0].landmarks


def make(runner, model, **kw):
    from engine.pipeline import Reconstructor

    kw.setdefault("workers", 0)
    return Reconstructor(runner=runner, model=model, **kw)


def _check_pose_result(r, model):
    from engine.decode import Decoder
    from engine.pose import LandmarkModel

    assert r.error is None and r.pose_error is None, (r.error, r.pose_error)
    assert r.landmarks.shape == (68, 2) and r.landmarks.dtype == np.float32
    assert r.expression.shape == (29,) and r.expression.dtype == np.float32
    posed = r.posed_vertices
    assert posed.shape == (model.num_vertices, 3) and posed.dtype == np.float32
    # The posed mesh is the face's own shape with its expression, through its pose.
    shape = Decoder(model).decode(r.coeffs[None], expression=r.expression[None]).vertices[0]
    np.testing.assert_allclose(posed, r.pose.to_image(shape), atol=1e-3)
    # Its landmark vertices lie on the landmarks (brows, nose, eyes, mouth: no jaw rule there).
    lmm = LandmarkModel.from_model(model)
    d = np.sqrt(((posed[lmm.inner[17:], :2] - r.landmarks[17:]) ** 2).sum(1))
    assert np.sqrt((d ** 2).mean()) < 0.05 * np.ptp(r.landmarks[:, 0]), d


@needs_dlib
def test_dlib_landmarks_pose_and_posed_mesh(runner, model, astronaut):
    with make(runner, model) as rec:
        (r,) = list(rec.reconstruct(astronaut, pose=True))
        assert rec.provenance["expression_basis"] is True
    _check_pose_result(r, model)
    assert r.pose.camera["model"] == "perspective" and abs(r.pose.yaw) < 20 and abs(r.pose.roll) < 20
    assert r.box.kind == "landmarks"


def test_caller_landmarks_through_the_api_in_every_form(runner, model, astronaut, dlib_landmarks):
    lm = dlib_landmarks
    forms = {"FaceBox": [FaceBox(*BOX, landmarks=lm)], "dict": [{"landmarks": lm.tolist()}],
             "dict with box": [{"landmarks": lm, "box": BOX}], "array": [np.asarray(lm, np.float64)]}
    with make(runner, model, detector=None) as rec:
        for form, faces in forms.items():
            (r,) = list(rec.reconstruct(("photo", astronaut), boxes={"photo": faces}, pose=True))
            _check_pose_result(r, model)
            np.testing.assert_allclose(r.landmarks, lm, err_msg=form)
            if form in ("dict", "array"):  # the box is the landmarks' tight box, cropped as dlib's
                assert r.box.kind == "landmarks" and r.box.as_tuple() == tuple(float(v) for v in
                                                                                 (*lm.min(0), *lm.max(0)))


def test_caller_landmarks_through_a_json_sidecar(runner, model, astronaut, dlib_landmarks, tmp_path):
    from PIL import Image

    Image.fromarray(astronaut).save(tmp_path / "a.png")
    Image.fromarray(astronaut).save(tmp_path / "b.png")
    side = tmp_path / "boxes.json"
    side.write_text(json.dumps({"a.png": [{"landmarks": dlib_landmarks.tolist(), "score": 0.9}],
                                "b.png": [{"box": list(BOX), "landmarks": [[1, 2]] * 67}]}))
    with make(runner, model, detector=None) as rec:
        res = {r.source.split("/")[-1]: r for r in rec.reconstruct([tmp_path / "a.png", tmp_path / "b.png"],
                                                                     boxes=side, pose=True)}
    _check_pose_result(res["a.png"], model)
    assert res["a.png"].box.score == 0.9
    assert res["b.png"].error is not None and "expected 68 points" in res["b.png"].error


def test_bad_landmarks_fail_that_faces_pose_only(runner, model, astronaut, dlib_landmarks):
    """NaN landmarks, landmarks collapsed to a point, and no landmarks: each face gets a pose
    error naming why, keeps its mesh, and the other faces are fitted."""
    nan = dlib_landmarks.copy()
    nan[40] = np.nan
    point = np.repeat(dlib_landmarks.mean(0, keepdims=True), 68, axis=0)
    faces = [FaceBox(*BOX, landmarks=nan), FaceBox(*BOX, landmarks=point), FaceBox(*BOX),
             FaceBox(*BOX, landmarks=dlib_landmarks)]
    with make(runner, model, detector=None, batch_size=4) as rec:
        res = list(rec.reconstruct(("photo", astronaut), boxes={"photo": faces}, pose=True))
    assert [r.error for r in res] == [None] * 4 and all(r.vertices is not None for r in res)
    assert "non-finite" in res[0].pose_error or "finite pixel coordinates" in res[0].pose_error
    assert "point 40" in res[0].pose_error
    assert "collapsed" in res[1].pose_error
    assert "no landmarks for this face" in res[2].pose_error
    assert all(r.pose is None and r.posed_vertices is None for r in res[:3])
    _check_pose_result(res[3], model)


def test_a_model_without_landmark_vertices_and_cropped_inputs(runner, model, astronaut, dlib_landmarks):
    bare = model.replace(landmarks=None, landmarks_outer=None)
    with make(runner, bare, detector=None) as rec:
        (r,) = list(rec.reconstruct(("photo", astronaut), boxes={"photo": [FaceBox(*BOX, landmarks=dlib_landmarks)]},
                                    pose=True))
    assert r.error is None and r.vertices is not None and r.pose is None
    assert "has no 68 landmark vertices" in r.pose_error
    from engine.crop import crop_face

    crop = crop_face(astronaut, BOX, kind="given")
    with make(runner, model, detector=None) as rec:
        (r,) = list(rec.reconstruct(np.ascontiguousarray(crop.transpose(1, 2, 0)[..., ::-1]).clip(0, 255)
                                    .astype(np.uint8), cropped=True, pose=True))
    assert r.pose is None and "already-cropped" in r.pose_error


def test_weak_perspective_without_meshes_and_without_an_expression_basis(runner, model, astronaut, dlib_landmarks):
    plain = model.replace(expression_mean=None, expression_basis=None, expression_sigma=None)
    box = [FaceBox(*BOX, landmarks=dlib_landmarks)]
    with make(runner, plain, detector=None) as rec:
        assert rec.provenance["expression_basis"] is False
        (r,) = list(rec.reconstruct(("p", astronaut), boxes={"p": box}, pose="weak_perspective", decode=False))
    assert r.vertices is None and r.expression is None
    assert r.pose.camera["model"] == "weak_perspective" and r.pose.camera["scale"] > 0
    from engine.decode import Decoder

    shape = Decoder(plain).decode(r.coeffs[None]).vertices[0]
    np.testing.assert_allclose(r.posed_vertices, r.pose.to_image(shape), atol=1e-3)


def test_reconstruct_crops_with_landmarks_and_bad_arguments(runner, model, astronaut, dlib_landmarks):
    from engine.crop import crop_face

    crops = np.stack([crop_face(astronaut, BOX, kind="given")] * 2)
    lm = np.stack([dlib_landmarks, dlib_landmarks])
    lm[1, 0, 0] = np.nan
    with make(runner, model, detector=None) as rec:
        res = rec.reconstruct_crops(crops, landmarks=lm, pose=True)
        assert res[0].pose is not None and res[1].pose is None and "point 0" in res[1].pose_error
        np.testing.assert_array_equal(res[0].landmarks, dlib_landmarks)
        with pytest.raises(InputError, match=r"landmarks: expected \[2, 68, 2\]"):
            rec.reconstruct_crops(crops, landmarks=lm[:1], pose=True)
        with pytest.raises(InputError, match="pose: expected False, True, 'perspective' or 'weak_perspective'"):
            rec.reconstruct(astronaut, pose="orthographic")
    with pytest.raises(InputError, match=r"field landmarks: expected 68 \(x, y\) pixel coordinates"):
        FaceBox(*BOX, landmarks=np.zeros((5, 2)))
    with pytest.raises(InputError, match="expected finite pixel coordinates"):
        FaceBox.from_landmarks(lm[1])


def test_caller_landmarks_that_cannot_be_one_face_are_refused(dlib_landmarks):
    """Landmarks whose centre lies outside their box (the crop and the pose would be two faces),
    landmarks collapsed to a point without a box (the box is theirs), and numbers no pixel has
    (read in float64: the message quotes the caller's value, no overflow warning)."""
    import warnings

    far = FaceBox(*BOX).as_tuple()
    with pytest.raises(InputError, match=r"the landmarks and the box describe different faces: expected the "
                                         r"landmarks' centre inside the box \(0, 300\)-\(100, 400\)"):
        FaceBox(0, 300, 100, 400, landmarks=dlib_landmarks)
    assert FaceBox(*far, landmarks=dlib_landmarks).landmarks.shape == (68, 2)
    point = np.repeat(dlib_landmarks[:1], 68, axis=0)
    with pytest.raises(InputError, match=r"expected 68 points spread over a face .* found them collapsed to 0 x 0 px"):
        FaceBox.from_landmarks(point)
    huge = dlib_landmarks.astype(np.float64)
    huge[3, 1] = 1e300
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(InputError, match=r"within \+-2147483648, found 1e\+300 at point 3 \(y\)"):
            FaceBox.from_landmarks(huge)
