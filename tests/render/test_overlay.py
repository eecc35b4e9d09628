"""overlay(): posed meshes drawn over a real photo (skimage's astronaut) with their landmarks."""
from __future__ import annotations

import numpy as np
import pytest

from engine.errors import InputError
from engine.render import LANDMARK_GROUPS_68, overlay, render_buffers
from engine.render.overlay import OTHER_LANDMARK_COLOR
from tests.render.scenes import astronaut, face_in_box


@pytest.fixture(scope="module")
def photo():
    return astronaut()


def test_mesh_is_drawn_where_it_covers_and_the_photo_kept_elsewhere(photo):
    v, c, f, _ = face_in_box(yaw=20)
    before = photo.copy()
    out = overlay(photo, [(v, c, None)], f)
    np.testing.assert_array_equal(photo, before)  # the caller's photo is not changed
    h, w = photo.shape[:2]
    ref = render_buffers(v, f, c, w, h)
    assert 3000 < ref.mask.sum() < 0.2 * h * w  # a face, about the size of her face box
    np.testing.assert_array_equal(out[ref.mask], ref.rgb[ref.mask])
    np.testing.assert_array_equal(out[~ref.mask], photo[~ref.mask])


def test_partial_opacity_blends_with_the_photo(photo):
    v, c, f, _ = face_in_box()
    out = overlay(photo, [(v, c, None)], f, alpha=0.25)
    ref = render_buffers(v, f, c, photo.shape[1], photo.shape[0])
    m = ref.mask
    expect = np.floor(0.25 * ref.rgb[m].astype(np.float32) + 0.75 * photo[m].astype(np.float32) + 0.5)
    assert np.abs(out[m].astype(np.float32) - expect).max() <= 1


def test_landmarks_are_dots_coloured_by_dlibs_68_groups(photo):
    v, c, f, lm = face_in_box(yaw=-15)
    out = overlay(photo, [(v, c, lm)], f, landmark_radius=3)
    group = np.zeros(68, int)
    for k, (_, lo, hi, _) in enumerate(LANDMARK_GROUPS_68):
        group[lo:hi] = k
    gap = np.hypot(*(lm[:, None, :] - lm[None, :, :]).transpose(2, 0, 1))
    checked = 0
    for i, (x, y) in enumerate(lm):
        if (gap[i][group != group[i]] <= 2 * 3 + 1).any():
            continue  # a dot of another group overlaps this one
        centre = out[int(np.floor(y + 0.5)), int(np.floor(x + 0.5))]
        assert tuple(centre) == LANDMARK_GROUPS_68[group[i]][3], (i, x, y, tuple(centre))
        checked += 1
    assert checked >= 50
    # Away from every dot and from the mesh, the photo is untouched.
    ref = render_buffers(v, f, c, photo.shape[1], photo.shape[0])
    yy, xx = np.mgrid[:photo.shape[0], :photo.shape[1]]
    far = np.min((xx[..., None] - lm[:, 0]) ** 2 + (yy[..., None] - lm[:, 1]) ** 2, axis=2) > 6 ** 2  # beyond the dark rim (radius 4)
    np.testing.assert_array_equal(out[far & ~ref.mask], photo[far & ~ref.mask])


def test_other_landmark_layouts_are_plain_dots(photo):
    v, c, f, lm = face_in_box()
    out = overlay(photo, [(v, c, lm[:5])], f, landmark_radius=3)
    for x, y in lm[:5]:
        assert tuple(out[int(round(y)), int(round(x))]) == OTHER_LANDMARK_COLOR


def test_faces_are_drawn_in_list_order(photo):
    a = face_in_box((150, 80, 250, 180), seed=0)
    b = face_in_box((190, 90, 290, 190), seed=1)
    w, h = photo.shape[1], photo.shape[0]
    ra = render_buffers(a[0], a[2], a[1], w, h)
    rb = render_buffers(b[0], b[2], b[1], w, h)
    both = ra.mask & rb.mask
    assert both.sum() > 1000
    out = overlay(photo, [(a[0], a[1], None), (b[0], b[1], None)], a[2])
    np.testing.assert_array_equal(out[both], rb.rgb[both])
    out = overlay(photo, [(b[0], b[1], None), (a[0], a[1], None)], a[2])
    np.testing.assert_array_equal(out[both], ra.rgb[both])


def test_no_faces_gives_the_photo(photo):
    v, c, f, _ = face_in_box()
    np.testing.assert_array_equal(overlay(photo, [], f), photo)


def test_bad_input_names_the_face_and_the_argument(photo):
    v, c, f, lm = face_in_box()
    bad_lm = lm.copy()
    bad_lm[3, 0] = np.nan
    with pytest.raises(InputError, match=r"faces_to_draw\[1\]: landmarks\[3, 0\]"):
        overlay(photo, [(v, c, lm), (v, c, bad_lm)], f)
    bad_v = v.copy()
    bad_v[10, 1] = np.inf
    with pytest.raises(InputError, match=r"faces_to_draw\[0\]: rasterize: vertices\[10, 1\]"):
        overlay(photo, [(bad_v, c, None)], f)
    with pytest.raises(InputError, match=r"faces_to_draw\[0\]: expected \(vertices, colors, landmarks\)"):
        overlay(photo, [(v, c)], f)
    with pytest.raises(InputError, match="photo_rgb"):
        overlay(photo.astype(np.float32), [], f)
    with pytest.raises(InputError, match="photo_rgb"):
        overlay(photo[..., 0], [], f)
    with pytest.raises(InputError, match="alpha"):
        overlay(photo, [], f, alpha=1.5)
    with pytest.raises(InputError, match="faces_to_draw"):
        overlay(photo, None, f)
    with pytest.raises(InputError, match="landmark_radius"):
        overlay(photo, [(v, c, lm)], f, landmark_radius=float("nan"))
    with pytest.raises(InputError, match=r"landmarks: expected a real array \[L, 2\]"):
        overlay(photo, [(v, c, lm[:, :1])], f)
