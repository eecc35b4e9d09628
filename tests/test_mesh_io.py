"""Mesh files read back by independent readers (plyfile, trimesh) and compared exactly."""
from __future__ import annotations

import os

import numpy as np
import pytest

# The independent readers: in the test extra, but absent on some machines (the GPU image).
plyfile = pytest.importorskip("plyfile")
trimesh = pytest.importorskip("trimesh")

from engine.errors import InputError
from engine.mesh_io import VERTEX_DTYPE, ply_bytes, write_mesh, write_obj, write_ply


def mesh(n=500, f=900, seed=0):
    rng = np.random.default_rng(seed)
    rec = np.empty(n, VERTEX_DTYPE)
    xyz = (rng.standard_normal((n, 3)) * 60).astype(np.float32)
    # Values that a careless text format would not round-trip.
    xyz[:6, 0] = [1e-30, -3.4e38, 1.0000001, 1 / 3, np.float32(2.0 ** -140), 0.0]
    rec["x"], rec["y"], rec["z"] = xyz.T
    col = rng.integers(0, 256, (n, 3)).astype(np.uint8)
    col[0], col[1] = 0, 255
    rec["red"], rec["green"], rec["blue"] = col.T
    faces = rng.integers(0, n, (f, 3)).astype(np.int32)
    faces[0] = [0, n - 1, 1]
    return rec, faces


def read_ply(path):
    data = plyfile.PlyData.read(str(path))
    v = data["vertex"].data
    xyz = np.stack([v["x"], v["y"], v["z"]], 1)
    rgb = np.stack([v["red"], v["green"], v["blue"]], 1)
    faces = np.stack(data["face"].data["vertex_indices"]).astype(np.int64)
    return data, xyz, rgb, faces


def check(rec, faces, xyz, rgb, got_faces):
    assert xyz.dtype == np.float32
    np.testing.assert_array_equal(xyz, np.stack([rec["x"], rec["y"], rec["z"]], 1))
    np.testing.assert_array_equal(rgb, np.stack([rec["red"], rec["green"], rec["blue"]], 1))
    np.testing.assert_array_equal(got_faces, faces)


def test_vertex_dtype_is_the_packed_ply_record():
    assert VERTEX_DTYPE.itemsize == 15
    assert [VERTEX_DTYPE.fields[k][1] for k in ("x", "y", "z", "red", "green", "blue")] == [0, 4, 8, 12, 13, 14]


def test_binary_ply(tmp_path):
    rec, faces = mesh()
    write_ply(tmp_path / "m.ply", rec, faces, comments=["synthetic model", "engine3dmm"])
    data, xyz, rgb, got = read_ply(tmp_path / "m.ply")
    assert data.text is False and data.byte_order == "<"
    assert "synthetic model" in data.comments
    check(rec, faces, xyz, rgb, got)
    size = (tmp_path / "m.ply").stat().st_size
    header = (tmp_path / "m.ply").read_bytes().index(b"end_header\n") + len(b"end_header\n")
    assert size == header + 15 * len(rec) + 13 * len(faces)
    assert (tmp_path / "m.ply").read_bytes() == ply_bytes(rec, faces, ["synthetic model", "engine3dmm"])


def test_ascii_ply_has_the_release_layout_and_agrees_with_binary(tmp_path):
    rec, faces = mesh()
    write_ply(tmp_path / "a.ply", rec, faces, binary=False, comments=["synthetic model"])
    write_ply(tmp_path / "b.ply", rec, faces)
    text = (tmp_path / "a.ply").read_text()
    head = text[:text.index("end_header")]
    for line in ("format ascii 1.0", "property float x", "property uchar red",
                 "property list uchar int vertex_indices", "comment synthetic model"):
        assert line + "\n" in head
    _, xyz_a, rgb_a, f_a = read_ply(tmp_path / "a.ply")
    _, xyz_b, rgb_b, f_b = read_ply(tmp_path / "b.ply")
    check(rec, faces, xyz_a, rgb_a, f_a)
    np.testing.assert_array_equal(xyz_a, xyz_b)
    np.testing.assert_array_equal(rgb_a, rgb_b)
    np.testing.assert_array_equal(f_a, f_b)
    for p in ("a.ply", "b.ply"):  # a second reader: trimesh
        tm = trimesh.load(tmp_path / p, process=False)
        np.testing.assert_array_equal(tm.vertices.astype(np.float32), xyz_a)
        np.testing.assert_array_equal(tm.faces, faces)
        np.testing.assert_array_equal(tm.visual.vertex_colors[:, :3], rgb_a)


def test_obj_with_vertex_colours(tmp_path):
    rec, faces = mesh()
    write_obj(tmp_path / "m.obj", rec, faces, comments=["synthetic model"])
    assert (tmp_path / "m.obj").read_text().startswith("# synthetic model\n")
    tm = trimesh.load(tmp_path / "m.obj", process=False, maintain_order=True)
    xyz = tm.vertices.astype(np.float32)
    check(rec, faces, xyz, tm.visual.vertex_colors[:, :3], tm.faces)


def test_synthetic_model_mean_face(tmp_path):
    """Full size (46,990 vertices, 93,323 faces) through write_mesh in all three formats."""
    from engine.morphable import synthetic_model

    m = synthetic_model(0)
    rec = np.empty(m.num_vertices, VERTEX_DTYPE)
    v, c = m.shape_mean.reshape(-1, 3), m.tex_mean.reshape(-1, 3).astype(np.uint8)
    rec["x"], rec["y"], rec["z"] = v.T
    rec["red"], rec["green"], rec["blue"] = c.T
    for fmt in ("ply", "ply-ascii", "obj"):
        write_mesh(tmp_path / f"face.{fmt.split('-')[0]}", rec, m.faces, fmt=fmt, comments=["synthetic model"])
        if fmt != "obj":
            _, xyz, rgb, got = read_ply(tmp_path / "face.ply")
        else:
            tm = trimesh.load(tmp_path / "face.obj", process=False, maintain_order=True)
            xyz, rgb, got = tm.vertices.astype(np.float32), tm.visual.vertex_colors[:, :3], tm.faces
        check(rec, m.faces, xyz, rgb, got)


# --- bad input: InputError naming the argument, and no file left behind ----------------

def _bad(kind):
    rec, faces = mesh(n=20, f=10)
    if kind == "dtype":
        return np.zeros((20, 6), np.float32), faces, "records"
    if kind == "2d":
        return rec.reshape(4, 5), faces, "records"
    if kind == "empty":
        return rec[:0], faces[:0], "records"
    if kind == "nan":
        rec["y"][7] = np.nan
        return rec, faces, "records"
    if kind == "range":
        faces[3, 1] = 20
        return rec, faces, "faces"
    if kind == "negative":
        faces[0, 0] = -1
        return rec, faces, "faces"
    if kind == "float faces":
        return rec, faces.astype(np.float32), "faces"
    if kind == "quads":
        return rec, np.zeros((4, 4), np.int32), "faces"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["dtype", "2d", "empty", "nan", "range", "negative", "float faces", "quads"])
@pytest.mark.parametrize("fmt", ["ply", "ply-ascii", "obj"])
def test_bad_input_raises_and_leaves_no_file(tmp_path, kind, fmt):
    rec, faces, arg = _bad(kind)
    target = tmp_path / "out.mesh"
    target.write_bytes(b"previous content")  # an old file must survive a failed write
    with pytest.raises(InputError) as e:
        write_mesh(target, rec, faces, fmt=fmt)
    assert str(e.value).startswith(arg + ":") and "expected" in str(e.value) and "found" in str(e.value)
    assert target.read_bytes() == b"previous content"
    assert sorted(os.listdir(tmp_path)) == ["out.mesh"]  # no temporary left either


def test_bad_format_comment_and_folder(tmp_path):
    rec, faces = mesh(n=20, f=10)
    with pytest.raises(InputError, match="fmt: expected one of ply, ply-ascii, obj, ply-release, found 'stl'"):
        write_mesh(tmp_path / "m.stl", rec, faces, fmt="stl")
    with pytest.raises(InputError, match="comments"):
        write_ply(tmp_path / "m.ply", rec, faces, comments=["two\nlines"])
    with pytest.raises(InputError, match="does not exist"):
        write_ply(tmp_path / "missing" / "m.ply", rec, faces)
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError):
        write_obj(tmp_path / "file" / "m.obj", rec, faces)
    assert sorted(os.listdir(tmp_path)) == ["file"]


# --- the release's files: byte for byte what its demo wrote -------------------------------

def release_write_ply(fname, S, T, faces):
    """demoCode/utils.py `write_ply` of anhttran/3dmm_cnn, as released (Python 2 there; the same
    statements here), writing to `fname`: the reference our "ply-release" must equal."""
    nV = S.shape[0]
    nF = faces.shape[0]
    f = open(fname, 'w')
    f.write('ply\n')
    f.write('format ascii 1.0\n')
    f.write('element vertex ' + str(nV) + '\n')
    f.write('property float x\n')
    f.write('property float y\n')
    f.write('property float z\n')
    f.write('property uchar red\n')
    f.write('property uchar green\n')
    f.write('property uchar blue\n')
    f.write('element face ' + str(nF) + '\n')
    f.write('property list uchar int vertex_indices\n')
    f.write('end_header\n')
    for i in range(0, nV):
        f.write('%0.4f %0.4f %0.4f %d %d %d\n' % (S[i, 0], S[i, 1], S[i, 2], T[i, 0], T[i, 1], T[i, 2]))
    for i in range(0, nF):
        f.write('3 %d %d %d\n' % (faces[i, 0], faces[i, 1], faces[i, 2]))
    f.close()


def test_release_ply_is_byte_for_byte_the_demos(tmp_path):
    rec, faces = mesh()
    S = np.stack([rec["x"], rec["y"], rec["z"]], 1).astype(np.float64)
    T = np.stack([rec["red"], rec["green"], rec["blue"]], 1)
    release_write_ply(tmp_path / "release.ply", S, T, faces)
    write_mesh(tmp_path / "ours.ply", rec, faces, fmt="ply-release")
    assert (tmp_path / "ours.ply").read_bytes() == (tmp_path / "release.ply").read_bytes()
    # plyfile reads it: 4 decimals of each vertex (then float32), colours and faces exact.
    data, xyz, rgb, got = read_ply(tmp_path / "ours.ply")
    assert data.text and not data.comments
    expected = np.array([[float("%0.4f" % v) for v in row] for row in S], dtype=np.float32)
    assert np.array_equal(xyz, expected) and np.array_equal(rgb, T) and np.array_equal(got, faces)
    with pytest.raises(InputError, match="comments: the release's PLY header has no comment lines"):
        write_mesh(tmp_path / "c.ply", rec, faces, fmt="ply-release", comments=["synthetic"])


def test_release_coefficient_files_are_np_savetxt(tmp_path):
    from engine.mesh_io import release_coefficients_text, write_release_coefficients

    rng = np.random.default_rng(3)
    alpha = (rng.standard_normal(99) * 3).astype(np.float32)
    alpha[:3] = [0.0, -1e-30, 3.4e38]
    np.savetxt(tmp_path / "release.ply.alpha", alpha)  # what the demo called
    write_release_coefficients(tmp_path / "ours.ply.alpha", alpha)
    assert (tmp_path / "ours.ply.alpha").read_bytes() == (tmp_path / "release.ply.alpha").read_bytes()
    assert release_coefficients_text(alpha) == (tmp_path / "release.ply.alpha").read_text()
    lines = (tmp_path / "ours.ply.alpha").read_text().splitlines()
    assert len(lines) == 99 and np.array_equal(np.array([float(v) for v in lines], np.float32), alpha)
    for bad in (alpha.reshape(9, 11), np.array([1.0, np.nan], np.float32), np.arange(3), np.zeros(0, np.float32)):
        with pytest.raises(InputError, match="values"):
            release_coefficients_text(bad)
