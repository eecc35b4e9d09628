"""The README's Python API example runs as written (issue 8, section 10), on real photos
(scikit-image's astronaut) and a real video made from them, in a fresh folder."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def readme_api_block() -> str:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Python API"):]
    m = re.search(r"```python\n(.*?)```", section, re.S)
    assert m, "README: no python block under '## Python API'"
    return m.group(1)


def test_the_readme_api_example_runs_as_written(tmp_path, monkeypatch):
    pytest.importorskip("dlib")
    cv2 = pytest.importorskip("cv2")
    from PIL import Image
    from skimage import data

    face = data.astronaut()
    Image.fromarray(face).save(tmp_path / "photo.jpg")
    (tmp_path / "album").mkdir()
    Image.fromarray(face).save(tmp_path / "album" / "photo.png")  # the same stem as photo.jpg
    Image.fromarray(face[:, ::-1]).save(tmp_path / "album" / "mirrored.jpg")
    video = cv2.VideoWriter(str(tmp_path / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (512, 512))
    assert video.isOpened()
    for shift in range(0, 30, 3):
        video.write(np.ascontiguousarray(np.roll(face, shift, axis=1)[:, :, ::-1]))
    video.release()

    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(readme_api_block(), "README.md (Python API)", "exec"), namespace)

    meshes = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert len(meshes) == 3, meshes  # three photos, one face each, three files: no name collides
    assert len(set(m.lower() for m in meshes)) == 3
    assert namespace["batch"].vertices.shape == (1, namespace["model"].num_vertices, 3)
