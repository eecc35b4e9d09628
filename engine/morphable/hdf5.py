"""HDF5 model files (h5py's row-major layout and MATLAB v7.3's), every size checked before a read.

An HDF5 file declares shapes and storage that its bytes need not back: a dataset of
2^28 values may store nothing (HDF5 then reads the fill value), and a compressed chunk may
inflate to far more than its declared size (libhdf5's deflate filter grows its buffer until
the stream ends: a 1 MB file, 1 GB of memory). So, before any data is read:

- only hard links inside the file are followed (no external or soft links), to datasets
  that are not virtual and have no external storage;
- the type is a plain integer or float (no strings, compounds, references, enums, ...),
  the shape at most 2-D within the model bounds (engine.morphable.model);
- every byte the shape declares is stored (no never-written datasets or chunks);
- filtered chunks (deflate, shuffle, fletcher32 only) are decoded here, each inflated into
  at most its declared chunk size.
Unfiltered data is then read by h5py into an array of the checked size.
"""
from __future__ import annotations

import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import ModelFileError
from engine.morphable.model import MAX_ARRAY_ELEMENTS, MAX_ROWS

FILTER_DEFLATE, FILTER_SHUFFLE, FILTER_FLETCHER32 = 1, 2, 3
SUPPORTED_FILTERS = {FILTER_DEFLATE: "deflate (gzip)", FILTER_SHUFFLE: "shuffle", FILTER_FLETCHER32: "fletcher32"}
NUMERIC = {np.dtype(t) for t in ("i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8", "f2", "f4", "f8")}
MAX_LINKS = 4096  # members of one group
MAX_CHUNK_BYTES = 64 << 20  # h5py picks chunks of at most 1 MiB; MATLAB smaller
MAX_CHUNKS = 1 << 18  # a 128 MB basis in 1 MiB chunks has 128


@dataclass(frozen=True)
class Dataset:
    """A checked dataset: where it is and what it declares (nothing read yet)."""

    field: str
    h5path: str
    shape: tuple[int, ...]
    dtype: np.dtype


def _fail(path: Path, field: str, expected: str, found: str) -> ModelFileError:
    return ModelFileError(f"{path}: {field}: expected {expected}, found {found}")


def _hard_links(path: Path, group, where: str) -> list[str]:
    """Names of the members of `group` stored in this file (hard links); others are refused
    when they are asked for (see `_dataset`)."""
    import h5py

    if len(group) > MAX_LINKS:
        raise _fail(path, where, f"at most {MAX_LINKS} members", f"{len(group)}")
    return [k for k in group if isinstance(group.get(k, getlink=True), h5py.HardLink)]


def find(path: str | os.PathLike, wanted: tuple[str, ...]) -> tuple[bool, str, dict[str, Dataset]]:
    """(MATLAB v7.3?, location, the wanted datasets that exist) of an HDF5 file: datasets at
    the root, or in the one group that holds any of them. Raises ModelFileError."""
    import h5py

    path = Path(path)
    with open(path, "rb") as f:
        matlab = f.read(10) == b"MATLAB 7.3"
    with h5py.File(path, "r") as h5:
        members = set(_hard_links(path, h5, "root group"))
        group, location = "/", "root"
        if not any(w in members for w in wanted):
            groups = [k for k in sorted(members) if h5.get(k, getclass=True) is h5py.Group
                      and any(w in _hard_links(path, h5[k], f"group {k}") for w in wanted)]
            if len(groups) != 1:
                raise ModelFileError(f"{path}: expected datasets {', '.join(wanted)} at the root "
                                     f"or in one group, found {sorted(h5.keys())}")
            group, location = f"/{groups[0]}/", f"group {groups[0]}"
        found = {}
        for name in wanted:
            if name in h5[group]:
                dset = _dataset(path, h5, group + name, name)
                found[name] = Dataset(name, group + name, dset.shape, dset.dtype)
    return matlab, location, found


def _dataset(path: Path, h5, h5path: str, field: str):
    """The h5py dataset at `h5path`, after every check that needs no data."""
    import h5py
    from h5py import h5d, h5t

    parts = h5path.strip("/").split("/")
    for i, name in enumerate(parts):  # the dataset and the group above it: hard links only
        link = h5["/" + "/".join(parts[:i])].get(name, getlink=True)
        if not isinstance(link, h5py.HardLink):
            raise _fail(path, field, "a dataset stored in this file (a hard link)",
                        f"a {type(link).__name__} to {getattr(link, 'filename', '')}{getattr(link, 'path', '')}"
                        if link is not None else "nothing (the file changed?)")
    if h5.get(h5path, getclass=True) is not h5py.Dataset:
        raise _fail(path, field, "a numeric dataset", f"a {h5.get(h5path, getclass=True).__name__}")
    dset = h5[h5path]
    tclass = dset.id.get_type().get_class()
    if tclass not in (h5t.INTEGER, h5t.FLOAT) or dset.dtype.newbyteorder("=") not in NUMERIC:
        kinds = {h5t.STRING: "strings", h5t.COMPOUND: "a compound type", h5t.ENUM: "an enum",
                 h5t.REFERENCE: "object references (a MATLAB cell array?)", h5t.VLEN: "variable-length data",
                 h5t.OPAQUE: "opaque data", h5t.ARRAY: "an array type", h5t.BITFIELD: "a bitfield"}
        raise _fail(path, field, "integer or float numbers of 1 to 8 bytes",
                    kinds.get(tclass, f"HDF5 type {dset.dtype}"))
    shape = dset.shape
    if shape is None or len(shape) > 2:
        raise _fail(path, field, "a numeric matrix (at most 2 dimensions)",
                    "no dataspace" if shape is None else f"{dset.dtype}{list(shape)}")
    if any(d > MAX_ROWS for d in shape) or math.prod(shape) > MAX_ARRAY_ELEMENTS:
        raise _fail(path, field, f"at most {MAX_ROWS} per dimension and {MAX_ARRAY_ELEMENTS} values "
                    f"(engine.morphable.model bounds)", f"shape {shape}")
    if dset.is_virtual:
        raise _fail(path, field, "data stored in this file", "a virtual dataset (it maps other files)")
    if dset.external:
        raise _fail(path, field, "data stored in this file", f"external storage in {dset.external[0][0]!r}")
    plist = dset.id.get_create_plist()
    filters = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
    for code in filters:
        if code not in SUPPORTED_FILTERS:
            raise _fail(path, field, f"filters {', '.join(SUPPORTED_FILTERS.values())} only",
                        f"HDF5 filter {code} ({plist.get_filter(filters.index(code))[3].decode(errors='replace')})")
    nbytes = math.prod(shape) * dset.dtype.itemsize
    if nbytes == 0:
        return dset
    size = path.stat().st_size
    layout = plist.get_layout()
    if layout == h5d.CHUNKED:
        chunk = dset.chunks
        chunk_bytes = math.prod(chunk) * dset.dtype.itemsize
        expected = math.prod(-(-s // c) for s, c in zip(shape, chunk))
        if chunk_bytes > MAX_CHUNK_BYTES or expected > MAX_CHUNKS:
            raise _fail(path, field, f"chunks of at most {MAX_CHUNK_BYTES} bytes, at most {MAX_CHUNKS} of them",
                        f"chunk shape {chunk} for shape {shape}")
        stored = []
        dset.id.chunk_iter(stored.append)
        if len(stored) != expected:
            raise _fail(path, field, f"all {expected} chunks of shape {shape} stored",
                        f"{len(stored)} (never written?)")
        for info in stored:
            if info.byte_offset + info.size > size or (not filters and info.size != chunk_bytes):
                raise _fail(path, field, f"chunk {info.chunk_offset} inside the file ({size} bytes)"
                            f"{'' if filters else f' and {chunk_bytes} bytes long'}",
                            f"{info.size} bytes at byte {info.byte_offset}")
    elif layout == h5d.CONTIGUOUS:
        offset, stored = dset.id.get_offset(), dset.id.get_storage_size()
        if offset is None or stored < nbytes or offset + nbytes > size:
            raise _fail(path, field, f"{nbytes} bytes of data ({shape} x {dset.dtype}) inside the file "
                        f"({size} bytes)", "none (never written?)" if offset is None
                        else f"{stored} bytes at byte {offset}")
    elif layout != h5d.COMPACT:  # compact data lives in the object header, already read
        raise _fail(path, field, "a contiguous, chunked or compact dataset", f"layout {layout}")
    return dset


def read(path: str | os.PathLike, ds: Dataset) -> np.ndarray:
    """The data of a dataset found by `find`, checked again (the file may have changed)."""
    import h5py

    path = Path(path)
    with h5py.File(path, "r") as h5:
        dset = _dataset(path, h5, ds.h5path, ds.field)
        if dset.shape != ds.shape or dset.dtype != ds.dtype:
            raise _fail(path, ds.field, f"{ds.dtype}{list(ds.shape)} as when the file was opened",
                        f"{dset.dtype}{list(dset.shape)} (the file changed)")
        plist = dset.id.get_create_plist()
        if plist.get_nfilters() == 0 or dset.size == 0:
            return dset[()]
        return _read_filtered(path, dset, ds.field, [plist.get_filter(i)[0] for i in range(plist.get_nfilters())])


def _read_filtered(path: Path, dset, field: str, filters: list[int]) -> np.ndarray:
    """Decode each stored chunk here: libhdf5's deflate filter would inflate without bound."""
    shape, chunk, dtype = dset.shape, dset.chunks, dset.dtype
    chunk_bytes = math.prod(chunk) * dtype.itemsize
    out = np.empty(shape, dtype)
    stored = []
    dset.id.chunk_iter(stored.append)
    seen = set()
    for info in stored:
        origin = tuple(info.chunk_offset)
        if origin in seen or any(o % c or o >= s for o, c, s in zip(origin, chunk, shape)):
            raise _fail(path, field, f"chunks on the {chunk} grid inside {shape}, each once", f"chunk at {origin}")
        seen.add(origin)
        mask, raw = dset.id.read_direct_chunk(origin)
        data = _decode(path, field, origin, raw, mask, filters, chunk_bytes, dtype.itemsize)
        block = np.frombuffer(data, dtype).reshape(chunk)
        region = tuple(slice(o, min(o + c, s)) for o, c, s in zip(origin, chunk, shape))
        out[region] = block[tuple(slice(0, r.stop - r.start) for r in region)]
    return out


def _decode(path: Path, field: str, origin, raw: bytes, mask: int, filters: list[int],
            chunk_bytes: int, itemsize: int) -> bytes:
    """Undo the filter pipeline (applied in `filters` order on writing; a set bit in `mask`
    means that filter was skipped for this chunk)."""
    def fail(found: str) -> ModelFileError:
        return _fail(path, field, f"chunk {origin} to decode to {chunk_bytes} bytes", found)

    data = raw
    for i in reversed(range(len(filters))):
        if mask >> i & 1:
            continue
        if filters[i] == FILTER_FLETCHER32:
            if len(data) < 4:
                raise fail(f"{len(data)} bytes, too short for its fletcher32 checksum")
            data = data[:-4]
        elif filters[i] == FILTER_DEFLATE:
            d = zlib.decompressobj()
            try:
                out = d.decompress(data, chunk_bytes + 1)  # one byte more tells an oversized chunk
            except zlib.error as e:
                raise fail(f"corrupt deflate data ({e})") from None
            if len(out) > chunk_bytes or not d.eof:
                raise fail("deflate data that inflates beyond the chunk size" if len(out) > chunk_bytes
                           else "a cut-off deflate stream")
            data = out
        elif filters[i] == FILTER_SHUFFLE:
            if len(data) != chunk_bytes:
                raise fail(f"{len(data)} bytes before unshuffling")
            data = np.frombuffer(data, np.uint8).reshape(itemsize, -1).T.tobytes()
    if len(data) != chunk_bytes:
        raise fail(f"{len(data)} bytes")
    return data
