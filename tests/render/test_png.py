"""write_png: read back by an independent reader (OpenCV's libpng), written atomically."""
from __future__ import annotations

import numpy as np
import pytest

from engine.errors import InputError
from engine.render import write_png


def test_rgb_and_grey_read_back_by_libpng(tmp_path):
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    write_png(tmp_path / "a.png", rgb)
    back = cv2.imread(str(tmp_path / "a.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(back[..., ::-1], rgb)  # OpenCV gives BGR
    grey = rgb[..., 1].copy()
    write_png(tmp_path / "g.png", grey)
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "g.png"), cv2.IMREAD_UNCHANGED), grey)
    assert (tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("bad", [np.zeros((4, 4, 3), np.float32), np.zeros((4, 4, 4), np.uint8),
                                 np.zeros((0, 4, 3), np.uint8), np.zeros(5, np.uint8)])
def test_bad_image_leaves_the_old_file_and_no_partial_one(tmp_path, bad):
    path = tmp_path / "out.png"
    path.write_bytes(b"old")
    with pytest.raises(InputError, match="write_png"):
        write_png(path, bad)
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]


def test_missing_folder_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        write_png(tmp_path / "nope" / "x.png", np.zeros((2, 2, 3), np.uint8))
