"""Helpers for the hostile-file tests (issue 13): a MATLAB v5 element writer to build any
file byte by byte, and `bounded()` to run a load in a forked child under a memory limit and a
timeout, so a regression that crashes, hangs or allocates gigabytes fails its test instead of
taking the test process (or the machine) down with it.

The writer follows MathWorks' "MAT-File Format" (Level 5) and is checked against scipy's own
reader by the tests that use it (valid files it writes load in scipy.io.loadmat).
"""
from __future__ import annotations

import faulthandler
import os
import pickle
import resource
import select
import signal
import struct
import time
import zlib

import numpy as np

MI_INT8, MI_UINT8, MI_INT16, MI_UINT16, MI_INT32, MI_UINT32 = 1, 2, 3, 4, 5, 6
MI_SINGLE, MI_DOUBLE, MI_INT64, MI_UINT64, MI_MATRIX, MI_COMPRESSED, MI_UTF8 = 7, 9, 12, 13, 14, 15, 16
MX_CELL, MX_STRUCT, MX_OBJECT, MX_CHAR, MX_SPARSE, MX_DOUBLE = 1, 2, 3, 4, 5, 6
_MI_OF = {np.dtype("f8"): (MI_DOUBLE, 6), np.dtype("f4"): (MI_SINGLE, 7), np.dtype("i1"): (MI_INT8, 8),
          np.dtype("u1"): (MI_UINT8, 9), np.dtype("i2"): (MI_INT16, 10), np.dtype("u2"): (MI_UINT16, 11),
          np.dtype("i4"): (MI_INT32, 12), np.dtype("u4"): (MI_UINT32, 13)}


# --- MATLAB v5 writer ------------------------------------------------------------

def header(order: str = "<") -> bytes:
    return (b"MATLAB 5.0 MAT-file, written by the engine3dmm tests".ljust(116, b" ") + bytes(8)
            + struct.pack(order + "H", 0x0100) + (b"IM" if order == "<" else b"MI"))


def element(mdtype: int, data: bytes, order: str = "<", nbytes: int | None = None) -> bytes:
    """A full-tag element, data padded to 8 bytes; `nbytes` overrides the declared count."""
    n = len(data) if nbytes is None else nbytes
    return struct.pack(order + "II", mdtype, n) + data + bytes(-len(data) % 8)


def small(mdtype: int, data: bytes, order: str = "<") -> bytes:
    """A small data element (at most 4 bytes packed in the tag)."""
    return struct.pack(order + "I", len(data) << 16 | mdtype) + data.ljust(4, b"\0")


def array(mclass: int, dims, name: str, body: bytes, *, flags: int = 0, order: str = "<",
          dims_type: int = MI_INT32, name_type: int = MI_INT8) -> bytes:
    """An miMATRIX element: array flags, dimensions, name, then `body` (what the class needs)."""
    content = (element(MI_UINT32, struct.pack(order + "II", mclass | flags, 0), order)
               + element(dims_type, struct.pack(f"{order}{len(dims)}i", *dims), order)
               + element(name_type, name.encode("latin1"), order) + body)
    return element(MI_MATRIX, content, order)


def numeric(name: str, a, order: str = "<") -> bytes:
    """A numeric matrix, stored column-major as MATLAB does."""
    a = np.asarray(a)
    a = a.reshape(-1, 1) if a.ndim == 1 else a
    mi, mx = _MI_OF[a.dtype.newbyteorder("=")]
    data = np.asfortranarray(a).astype(a.dtype.newbyteorder(order)).tobytes(order="F")
    return array(mx, a.shape, name, element(mi, data, order), order=order)


def struct_array(name: str, fields: dict[str, bytes], dims=(1, 1), slot: int = 32, order: str = "<") -> bytes:
    """A struct whose members are already-written arrays (`fields` in order; name-less)."""
    names = b"".join(f.encode().ljust(slot, b"\0") for f in fields)
    body = small(MI_INT32, struct.pack(order + "i", slot), order) + element(MI_INT8, names, order)
    return array(MX_STRUCT, dims, name, body + b"".join(fields.values()), order=order)


def compressed(variable: bytes, order: str = "<") -> bytes:
    """An miCOMPRESSED element holding `variable` (a top-level miMATRIX); not padded, as MATLAB writes it."""
    data = zlib.compress(variable)
    return struct.pack(order + "II", MI_COMPRESSED, len(data)) + data


def mat_file(*variables: bytes, order: str = "<") -> bytes:
    return header(order) + b"".join(variables)


def nested_cells(depth: int, name: str = "shapeMU") -> bytes:
    """A 1x1 cell in a 1x1 cell ... `depth` deep, ending in an empty 0x0 cell; built front to
    back with computed sizes (nesting by concatenation would copy O(depth^2) bytes)."""
    def name_element(level: int) -> bytes:
        return element(MI_INT8, (name if level == 0 else "").encode())

    contents = [0] * (depth + 1)
    for level in reversed(range(depth)):  # flags + dims = 32 bytes, then the name, then the child
        contents[level] = 32 + len(name_element(level)) + (8 + contents[level + 1] if level < depth - 1 else 0)
    return b"".join(struct.pack("<II", MI_MATRIX, contents[level])
                    + element(MI_UINT32, struct.pack("<II", MX_CELL, 0))
                    + element(MI_INT32, struct.pack("<2i", *((1, 1) if level < depth - 1 else (0, 0))))
                    + name_element(level) for level in range(depth))


def zlib_zeros(mib: int, prefix: bytes = b"") -> bytes:
    """A valid zlib stream of `prefix` then `mib` MiB of zeros (about 1 KB per MiB), made by
    repeating one fully flushed block: compressing a GiB for real takes seconds."""
    c, zeros = zlib.compressobj(9), bytes(1 << 20)
    head = c.compress(prefix) + c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)
    block = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)  # the same bytes for every further MiB
    checksum = zlib.adler32(prefix)
    for _ in range(mib):
        checksum = zlib.adler32(zeros, checksum)
    return head + block * (mib - 1) + c.flush()[:-4] + struct.pack(">I", checksum)


def patch_u32(data: bytes, offset: int, value: int, order: str = "<") -> bytes:
    out = bytearray(data)
    struct.pack_into(order + "I", out, offset, value)
    return bytes(out)


def inflated_elements(data: bytes) -> list[tuple[int, bytes]]:
    """(offset, inflated bytes) of every top-level miCOMPRESSED element of a little-endian file."""
    out, pos = [], 128
    while pos < len(data):
        t, n = struct.unpack_from("<II", data, pos)
        if t == MI_COMPRESSED:
            out.append((pos, zlib.decompress(data[pos + 8:pos + 8 + n])))
        pos += 8 + n
    return out


def replace_compressed(data: bytes, offset: int, inflated: bytes) -> bytes:
    """`data` with the miCOMPRESSED element at `offset` holding `inflated` instead."""
    n = struct.unpack_from("<I", data, offset + 4)[0]
    return data[:offset] + compressed(inflated) + data[offset + 8 + n:]


# --- running a load in a bounded child ---------------------------------------------

def bounded(fn, *args, mem_mb: int = 768, timeout_s: float = 60.0):
    """Run fn(*args) in a forked child with `mem_mb` MiB of address space beyond what the
    parent has mapped, and a timeout. Returns ('returned', repr) or ('raised', class name,
    message) from the child, or ('signal', number) / ('timeout',) when it died or hung."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 0
        try:
            os.close(read_end)
            # A crash is an expected outcome here: keep pytest's faulthandler (inherited by
            # fork) from dumping every thread of the child into the test log.
            faulthandler.disable()
            with open("/proc/self/status") as f:
                vm = next(int(line.split()[1]) for line in f if line.startswith("VmSize:")) * 1024
            limit = vm + (mem_mb << 20)
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
            try:
                result = ("returned", repr(fn(*args))[:2000])
            except BaseException as e:  # everything, to report it
                result = ("raised", type(e).__name__, str(e))
            os.write(write_end, pickle.dumps(result))
        except BaseException:
            code = 3
        finally:
            os._exit(code)
    os.close(write_end)
    chunks, deadline = [], time.monotonic() + timeout_s
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return ("timeout",)
            ready, _, _ = select.select([read_end], [], [], left)
            if ready:
                chunk = os.read(read_end, 1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
    finally:
        os.close(read_end)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return ("signal", os.WTERMSIG(status))
    return pickle.loads(b"".join(chunks)) if chunks else ("exit", os.WEXITSTATUS(status))
