"""`reconstruct --render`: one picture per photo or video frame, STEM.render.png (STEM_fFFFFFF for
frames): every face's posed mesh drawn over it (engine.render.overlay), with its landmarks.

Results come in input order, then face order, so the faces of one photo or frame arrive
together: they are collected, and the picture is drawn when the next input starts or the run
ends. The photo is read again (engine.images.load_image, as the run read it: same orientation,
same pixel limit); a video is read a second time, in step with the results; a camera's frames
are not kept, so they get no picture. A face without a pose (no landmarks, a failed fit) is
drawn as its landmarks alone, if it has any, and the run summary says which faces were not
drawn and why. A photo larger than MAX_SIDE pixels on its longer side is drawn at MAX_SIDE (a
full-size 80-megapixel picture of a face helps no one and costs a gigabyte). Pictures of results
from SYNTHETIC models say so, in the picture and in its PNG text.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from engine.errors import EngineError
from engine.pipeline.naming import INPUT_EXTENSIONS

RENDER_EXTENSION = INPUT_EXTENSIONS[0]
MAX_SIDE = 4096
log = logging.getLogger("engine.cli")


class Pictures:
    """The pictures of one `reconstruct --render` run (see the module docstring).

    add(result) for every face that succeeded, flush() at the end of the results, close()
    always. `records` lists the pictures written, for summary.json."""

    def __init__(self, out: Path, names, report, *, frame_step: int = 1, max_frames: int | None = None,
                 cameras=()):
        self.out, self.names, self.report = out, names, report
        self.frame_step, self.max_frames = frame_step, max_frames
        self.cameras = {f"camera {c}" for c in cameras}
        self.records: list[dict] = []
        self._key = None
        self._faces: list = []
        self._video = None  # (source, frame iterator, a frame read ahead or None)

    def add(self, r) -> None:
        key = (r.source, r.frame)
        if key != self._key:
            self.flush()
            self._key = key
        self._faces.append(r)

    def flush(self) -> None:
        faces, key = self._faces, self._key
        self._faces, self._key = [], None
        if not faces or key[0] in self.cameras:
            return
        source, frame = key
        try:
            self._draw(source, frame, faces)
        except (EngineError, OSError) as e:  # this input's picture fails; its meshes are written
            self.report.fail(source, f"--render: {getattr(e, 'strerror', None) or e}", frame=frame)

    def close(self) -> None:
        self._close_video()

    def _draw(self, source: str, frame: int | None, faces: list) -> None:
        from engine.render import overlay, stamp, write_png

        photo = self._photo(source, frame)
        h, w = photo.shape[:2]
        scale = min(1.0, MAX_SIDE / max(h, w))
        if scale < 1.0:
            from PIL import Image

            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            photo = np.asarray(Image.fromarray(photo).resize(size, Image.LANCZOS))
            scale_x, scale_y = size[0] / w, size[1] / h
        draw, missing = [], []
        for r in faces:
            posed, landmarks = r.posed_vertices, r.landmarks
            if posed is None:
                missing.append({"face_index": r.face_index, "why": r.pose_error or "no pose"})
                if landmarks is None:
                    continue
            if scale < 1.0:
                # Pixel centres are at integers: a coordinate x maps to (x + 0.5) * s - 0.5.
                s = np.array([scale_x, scale_y, scale_x])
                posed = None if posed is None else (posed + [0.5, 0.5, 0.0]) * s - [0.5, 0.5, 0.0]
                landmarks = None if landmarks is None else (landmarks + 0.5) * s[:2] - 0.5
            draw.append((posed, None if posed is None else r.colors, landmarks))
        picture = overlay(photo, draw, faces[0].faces)
        prov = faces[0].provenance
        synthetic = [what for key, what in (("network_synthetic", "network weights"),
                                            ("morphable_synthetic", "morphable model")) if prov.get(key)]
        text = {"Software": "engine3dmm", "Source": str(source) + ("" if frame is None else f" frame {frame}")}
        if synthetic:
            mark = f"SYNTHETIC {' and '.join(synthetic)}: not a real reconstruction"
            picture = stamp(picture, [mark])
            text["Description"] = mark
        name = self.names.input_name(source, frame) + RENDER_EXTENSION
        write_png(self.out / name, picture, text=text)
        self.records.append({"source": str(source), "frame": frame, "file": name, "faces": len(faces),
                             "faces_drawn": len(faces) - len(missing), "not_drawn": missing,
                             "scale": None if scale >= 1.0 else round(scale, 6)})
        log.debug("%s: drew %d face(s) of %s", name, len(faces) - len(missing), source)

    def _photo(self, source: str, frame: int | None) -> np.ndarray:
        from engine import images

        if frame is None:
            self._close_video()
            return images.load_image(Path(source))
        if self._video is None or self._video[0] != source:
            self._close_video()
            self._video = (source, images.iter_video_frames(source, step=self.frame_step,
                                                            max_frames=self.max_frames), None)
        src, frames, ahead = self._video
        if ahead is not None and ahead[0] == frame:
            return ahead[1]
        for index, image in frames:
            if index == frame:
                return image
            if index > frame:  # keep it: a later face may be of that frame
                self._video = (src, frames, (index, image))
                break
        raise EngineError(f"{source} frame {frame}: not found when the video was read again for its picture")

    def _close_video(self) -> None:
        if self._video is not None:
            close = getattr(self._video[1], "close", None)
            if close is not None:
                close()
            self._video = None
