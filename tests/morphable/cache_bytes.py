"""`.e3dmm` files byte by byte, written from docs/model_cache_format.md alone (not with
engine.morphable.cache), plus field-level patches: the hostile files of the cache tests,
the differential test and the fuzz corpus are built here, small and exact."""
from __future__ import annotations

import json
import struct

import numpy as np

HEADER = "<8sIIQQQ24s"
RECORD = "<24sIIQQQQ"
ORDER = ("shape_mean", "shape_basis", "shape_sigma", "tex_mean", "tex_basis", "tex_sigma", "faces", "landmarks",
         "landmarks_outer", "expression_mean", "expression_basis", "expression_sigma")
CODES = {np.dtype("<f4"): 1, np.dtype("<i4"): 3}
# Field offsets inside a 64-byte record.
NAME, DTYPE, NDIM, DIM0, DIM1, OFFSET, NBYTES = 0, 24, 28, 32, 40, 48, 56
META = {"format": "e3dmm-cache", "synthetic": False, "name": "tiny", "source": "tests"}


def tiny_arrays(n: int = 4, ks: int = 2, kt: int = 3, f: int = 2, landmarks: int | None = 3,
                seed: int = 0, outer: bool = False, ke: int = 0) -> dict[str, np.ndarray]:
    """A small valid model as the arrays of the spec (float32 / int32, little-endian); `outer`
    adds landmarks_outer (with landmarks), `ke` > 0 the three expression arrays."""
    rng = np.random.default_rng(seed)
    f32 = lambda *s: rng.standard_normal(s).astype("<f4")  # noqa: E731
    arrays = {"shape_mean": f32(3 * n), "shape_basis": f32(ks, 3 * n), "shape_sigma": f32(ks) ** 2 + 1,
              "tex_mean": (rng.random(3 * n) * 255).astype("<f4"), "tex_basis": f32(kt, 3 * n),
              "tex_sigma": f32(kt) ** 2 + 1, "faces": rng.integers(0, n, (f, 3)).astype("<i4")}
    if landmarks:
        arrays["landmarks"] = rng.integers(0, n, landmarks).astype("<i4")
        if outer:
            arrays["landmarks_outer"] = rng.integers(0, n, landmarks).astype("<i4")
    if ke:
        arrays.update(expression_mean=f32(3 * n), expression_basis=f32(ke, 3 * n),
                      expression_sigma=f32(ke) ** 2 + 1)
    return arrays


def meta_bytes(**overrides) -> bytes:
    return json.dumps({**META, **overrides}, sort_keys=True).encode()


def build(arrays: dict[str, np.ndarray], meta: bytes = None) -> bytearray:
    """The file: header, table (records in `arrays` order), metadata right after the table,
    then each array at the next multiple of 64."""
    meta = meta_bytes() if meta is None else meta
    table_end = 64 + 64 * len(arrays)
    pos = -(-(table_end + len(meta)) // 64) * 64
    records, offsets = [], []
    for name, a in arrays.items():
        d0, d1 = (a.shape[0], a.shape[1]) if a.ndim == 2 else (a.shape[0], 1)
        records.append(struct.pack(RECORD, name.encode(), CODES[a.dtype], a.ndim, d0, d1, pos, a.nbytes))
        offsets.append(pos)
        pos = -(-(pos + a.nbytes) // 64) * 64
    last = list(arrays.values())[-1]
    size = offsets[-1] + last.nbytes
    out = bytearray(size)
    out[:64] = struct.pack(HEADER, b"E3DMMBIN", 1, len(arrays), table_end, len(meta), size, bytes(24))
    for i, r in enumerate(records):
        out[64 + 64 * i:128 + 64 * i] = r
    out[table_end:table_end + len(meta)] = meta
    for off, a in zip(offsets, arrays.values()):
        out[off:off + a.nbytes] = a.tobytes()
    return out


def valid(landmarks: bool = True, meta: bytes = None, **sizes) -> bytearray:
    return build(tiny_arrays(landmarks=3 if landmarks else None, **sizes), meta)


def record_at(data: bytes, name: str) -> int:
    """Byte offset of the table record of `name`."""
    count = struct.unpack_from("<I", data, 12)[0]
    for i in range(count):
        if data[64 + 64 * i:88 + 64 * i].rstrip(b"\0") == name.encode():
            return 64 + 64 * i
    raise KeyError(name)


def get(data: bytes, name: str, field: int) -> int:
    return struct.unpack_from("<I" if field in (DTYPE, NDIM) else "<Q", data, record_at(data, name) + field)[0]


def put(data: bytearray, name: str, field: int, value: int) -> bytearray:
    struct.pack_into("<I" if field in (DTYPE, NDIM) else "<Q", data, record_at(data, name) + field, value)
    return data


def put_header(data: bytearray, offset: int, value: int) -> bytearray:
    """Header field at `offset`: 8 version, 12 array_count (u32); 16, 24, 32 (u64)."""
    struct.pack_into("<I" if offset in (8, 12) else "<Q", data, offset, value)
    return data


# --- the two readers' verdicts ------------------------------------------------------

def python_verdict(path) -> tuple[bool, str]:
    """(accepted, summary or message) of engine.morphable.cache.read_cache. Any exception other
    than ModelFileError propagates: it is a bug in the reader."""
    from engine.errors import ModelFileError
    from engine.morphable.cache import read_cache

    try:
        m = read_cache(path)
    except ModelFileError as e:
        return False, str(e)
    lm = 0 if m.landmarks is None else m.landmarks.shape[0]
    return True, (f"N {m.num_vertices} F {m.num_faces} Ks {m.shape_components} Kt {m.tex_components} "
                  f"L {lm} outer {m.landmarks_outer is not None} Ke {m.expression_components} "
                  f"synthetic {m.synthetic} name {m.metadata['name']!r}")


def cpp_reader():
    """engine._C.load_cache_summary (the C++ reader), or None when the core is not built."""
    try:
        from engine import _C
    except ImportError:
        return None
    return _C.load_cache_summary


def cpp_verdict(path) -> tuple[bool, str]:
    """(accepted, summary or message) of the C++ reader, in python_verdict's words."""
    from engine.errors import ModelFileError

    try:
        s = cpp_reader()(str(path))
    except ModelFileError as e:
        return False, str(e)
    return True, (f"N {s['num_vertices']} F {s['num_faces']} Ks {s['shape_components']} "
                  f"Kt {s['tex_components']} L {s['num_landmarks']} outer {s['has_landmarks_outer']} "
                  f"Ke {s['expression_components']} synthetic {s['synthetic']} name {s['name']!r}")
