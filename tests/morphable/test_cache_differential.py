"""Differential test of the two `.e3dmm` readers (issue 13, finding 7): the Python reader
(engine.morphable.cache) and the C++ one (e3dmm::MorphableModel::load, through engine._C) read
the same few thousand mutated small caches and must give the same verdict on each, and the
same model when both accept. docs/model_cache_format.md is the one specification they follow.

The mutations are seeded (the same files every run): bits flipped in the header, the table
and the metadata; record and header fields set to boundary values; dims changed with a
consistent nbytes; metadata texts mutated at the JSON-token level; array values poisoned.
"""
from __future__ import annotations

import random
import struct

import numpy as np
import pytest

import cache_bytes as cb

pytestmark = pytest.mark.skipif(cb.cpp_reader() is None, reason="engine._C (the C++ reader) is not built")

U64_EDGES = [0, 1, 2, 3, 12, 63, 64, 65, 68, 384, 385, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**62, 2**63,
             2**64 - 64, 2**64 - 1]
U32_EDGES = [0, 1, 2, 3, 4, 7, 8, 9, 2**31, 2**32 - 1]
JSON_BYTES = b'{}[]",:0123456789-+.eE\\/ntrfalsu \t\n\r\x00\x7f\xc3\xa9\xed\xa0\x80\xef\xbb\xbfNIa'


def bases() -> list[bytearray]:
    nested = cb.meta_bytes(extra={"list": [1, -2.5e-3, None, True, "x\u00e9\\"], "o": {"k": [[{}]]}})
    return [cb.valid(), cb.valid(landmarks=False), cb.valid(meta=nested),
            cb.build(cb.tiny_arrays(n=1, ks=1, kt=1, f=1, landmarks=1, seed=3)),
            cb.build(cb.tiny_arrays(n=7, ks=4, kt=2, f=5, landmarks=None, seed=4)),
            # the optional arrays of issue 9: outer landmarks, an expression basis, both
            cb.build(cb.tiny_arrays(n=5, ks=2, kt=2, f=3, landmarks=4, outer=True, seed=5)),
            cb.build(cb.tiny_arrays(n=4, ks=3, kt=2, f=2, landmarks=None, ke=3, seed=6)),
            cb.build(cb.tiny_arrays(n=6, ks=2, kt=3, f=4, landmarks=2, outer=True, ke=2, seed=7))]


def layout(data: bytes) -> tuple[int, int, int]:
    """(table end, metadata offset, metadata length) of a valid base."""
    count, meta_off, meta_n = struct.unpack_from("<IQQ", data, 12)
    return 64 + 64 * count, meta_off, meta_n


def flip_bits(rng, data):
    _, meta_off, meta_n = layout(data)
    hot = meta_off + meta_n  # header, table and metadata: where a reader decides
    for _ in range(rng.randint(1, 4)):
        data[rng.randrange(hot)] ^= 1 << rng.randrange(8)
    return "bits flipped"


def record_field(rng, data):
    count = struct.unpack_from("<I", data, 12)[0]
    i = rng.randrange(count)
    field, fmt = rng.choice([(24, "<I"), (28, "<I"), (32, "<Q"), (40, "<Q"), (48, "<Q"), (56, "<Q")])
    at = 64 + 64 * i + field
    old = struct.unpack_from(fmt, data, at)[0]
    edges = U32_EDGES if fmt == "<I" else U64_EDGES
    value = rng.choice(edges + [old + d for d in (-64, -4, -1, 1, 4, 64)] +
                       [struct.unpack_from("<Q", data, 64 + 64 * j + 48)[0] for j in range(count)])
    struct.pack_into(fmt, data, at, value % (2**32 if fmt == "<I" else 2**64))
    return f"record {i} field {field} = {value}"


def header_field(rng, data):
    at, fmt = rng.choice([(8, "<I"), (12, "<I"), (16, "<Q"), (24, "<Q"), (32, "<Q"), (40, "<Q"), (56, "<Q")])
    value = rng.choice((U32_EDGES if fmt == "<I" else U64_EDGES) + [len(data), layout(data)[0]])
    struct.pack_into(fmt, data, at, value % (2**32 if fmt == "<I" else 2**64))
    return f"header {at} = {value}"


def consistent_dims(rng, data):
    """A record's dims changed with nbytes to match: the model-level rules decide."""
    count = struct.unpack_from("<I", data, 12)[0]
    i = rng.randrange(count)
    at = 64 + 64 * i
    d0 = rng.choice([0, 1, 2, 3, 4, 5, 6, 12, 21, 68, 383, 384, 385, 2**31 - 1])
    d1 = rng.choice([1, 1, 3, 12, 0, 2]) if struct.unpack_from("<I", data, at + 28)[0] == 2 else 1
    struct.pack_into("<QQ", data, at + 32, d0, d1)
    struct.pack_into("<Q", data, at + 56, d0 * d1 * 4)
    return f"record {i} dims ({d0}, {d1})"


def poison_value(rng, data):
    count = struct.unpack_from("<I", data, 12)[0]
    i = rng.randrange(count)
    name = data[64 + 64 * i:88 + 64 * i].rstrip(b"\0").decode()
    off, nbytes = struct.unpack_from("<QQ", data, 64 + 64 * i + 48)
    pos = off + 4 * rng.randrange(nbytes // 4)
    if name in ("faces", "landmarks", "landmarks_outer"):
        n = struct.unpack_from("<Q", data, cb.record_at(data, "shape_mean") + 32)[0] // 3
        struct.pack_into("<i", data, pos, rng.choice([-1, n, n - 1, 0, 2**31 - 1, -2**31]))
    else:
        struct.pack_into("<f", data, pos, rng.choice([float("nan"), float("inf"), -float("inf"), 3.4e38, -0.0]))
    return f"value in {name}"


def mutate_json(rng, data):
    _, meta_off, meta_n = layout(data)
    text = bytearray(data[meta_off:meta_off + meta_n])
    for _ in range(rng.randint(1, 3)):
        op, pos = rng.randrange(4), rng.randrange(len(text) + 1)
        piece = bytes([rng.choice(JSON_BYTES)])
        if op == 0 and pos < len(text):
            text[pos:pos + 1] = piece
        elif op == 1:
            text[pos:pos] = piece
        elif op == 2 and pos < len(text):
            del text[pos]
        else:
            text[pos:pos] = rng.choice([b'"format": "e3dmm-cache", ', b'"a": 1, "a": 2, ', b"NaN", b"-Infinity",
                                        b"01", b"1e999", b"[" * 70, b"]" * 70, b'"\\ud800"', b'"\\udc00\\ud800"',
                                        b"9" * 70, b"-0", b'{"n": {"n": 1, "n": 2}}, ', b"\\u0000", b"/* */"])
    data[:] = cb.build(_arrays_of(data), bytes(text))
    return f"metadata {bytes(text)[:200]!r}"


def _arrays_of(data) -> dict:
    arrays = {}
    count = struct.unpack_from("<I", data, 12)[0]
    for i in range(count):
        name = data[64 + 64 * i:88 + 64 * i].rstrip(b"\0").decode()
        code, ndim, d0, d1, off, nbytes = struct.unpack_from("<IIQQQQ", data, 64 + 64 * i + 24)
        a = np.frombuffer(bytes(data[off:off + nbytes]), "<f4" if code == 1 else "<i4")
        arrays[name] = a.reshape((d0, d1) if ndim == 2 else (d0,))
    return arrays


def optional_groups(rng, data):
    """The optional arrays' group rules (issue 9): an array dropped, or one taken from another
    base (outer landmarks or expression arrays of other sizes), then a valid layout."""
    arrays = _arrays_of(data)
    name = rng.choice(sorted(arrays))
    if rng.random() < 0.5:
        del arrays[name]
        what = f"dropped {name}"
    else:
        donor = _arrays_of(cb.build(cb.tiny_arrays(n=rng.choice([4, 5, 6]), landmarks=rng.choice([2, 3, 4]),
                                                   outer=True, ke=rng.choice([1, 3]), seed=rng.randrange(99))))
        name = rng.choice(["landmarks_outer", "expression_mean", "expression_basis", "expression_sigma"])
        arrays[name] = donor[name]
        what = f"{name} from another model"
    meta = data[layout(data)[1]:layout(data)[1] + layout(data)[2]]
    data[:] = cb.build(arrays, bytes(meta))
    return what


MUTATIONS = [(flip_bits, 600), (record_field, 400), (header_field, 150), (consistent_dims, 250),
             (poison_value, 150), (mutate_json, 600), (optional_groups, 300)]


def test_both_readers_give_the_same_verdict_on_every_mutated_file(tmp_path):
    rng = random.Random(13)
    path = tmp_path / "m.e3dmm"
    disagreements, verdicts = [], {True: 0, False: 0}
    for mutate, n in MUTATIONS:
        for k in range(n):
            data = bytearray(rng.choice(bases()))
            what = mutate(rng, data)
            path.write_bytes(bytes(data))
            py, cpp = cb.python_verdict(path), cb.cpp_verdict(path)
            verdicts[py[0]] += 1
            if py[0] != cpp[0] or (py[0] and py[1] != cpp[1]):
                disagreements.append(f"{mutate.__name__} #{k} ({what}):\n  Python: {py}\n  C++:    {cpp}\n"
                                     f"  file (hex): {bytes(data[:1024]).hex()}")
    assert not disagreements, f"{len(disagreements)} disagreements; the first:\n" + "\n".join(disagreements[:3])
    # The mutations must exercise both outcomes, or this test would prove little.
    assert verdicts[True] > 100 and verdicts[False] > 1500, verdicts


def test_both_readers_accept_the_bases_and_see_the_same_model(tmp_path):
    for i, data in enumerate(bases()):
        path = tmp_path / f"b{i}.e3dmm"
        path.write_bytes(bytes(data))
        py = cb.python_verdict(path)
        assert py[0], py
        assert cb.cpp_verdict(path) == py
