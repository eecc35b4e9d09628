"""Head pose and expression from 68 landmarks, batched (issue 9).

Public surface:
- `Pose`: rotation, translation, camera, projection, yaw/pitch/roll, landmark_error_px and
  `to_image(vertices)` (the mesh in the photo's pixels);
- `fit_poses(landmarks, inner, outer, ...)`: the release's procedure over a batch (engine.pose.fit);
- `LandmarkModel.from_model(model)`: a morphable model's landmark vertices and expression basis
  at them; `check_landmarks`, `landmark_problem`;
- `release_camera(landmarks)`: the release's perspective camera for a face (engine.pose.camera);
- `rotation_from_euler`, `euler_from_rotation`: THE angle convention (engine.pose.angles);
- `write_pts`, `read_pts`: the release's .pts landmark files (engine.pose.pts).

Depends only on numpy and engine's errors; the pipeline (engine.pipeline) calls it.
"""
from engine.pose.angles import euler_from_rotation, rotation_from_euler
from engine.pose.camera import release_camera
from engine.pose.fit import LandmarkModel, PoseFit, check_landmarks, fit_poses, landmark_problem
from engine.pose.pts import read_pts, write_pts
from engine.pose.result import Pose

__all__ = ["LandmarkModel", "Pose", "PoseFit", "check_landmarks", "euler_from_rotation", "fit_poses",
           "landmark_problem", "read_pts", "release_camera", "rotation_from_euler", "write_pts"]
