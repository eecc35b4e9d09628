"""engine.fileio.atomic_write: complete files or none, with the usual permissions."""
from __future__ import annotations

import os
import stat

import pytest

from engine.errors import InputError
from engine.fileio import atomic_write


def test_writes_whole_file_with_umask_mode(tmp_path):
    target = tmp_path / "out.bin"
    with atomic_write(target) as f:
        f.write(b"abc")
    assert target.read_bytes() == b"abc"
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask
    assert os.listdir(tmp_path) == ["out.bin"]


def test_error_leaves_no_file_and_keeps_the_old_one(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(target, "w") as f:
            f.write("partial")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.txt"]


def test_missing_folder_and_bad_mode(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        with atomic_write(tmp_path / "nope" / "x.bin"):
            pass
    with pytest.raises(InputError, match="mode"):
        with atomic_write(tmp_path / "x.bin", "a"):
            pass


# --------------------------------------------------------------------------- read_json


@pytest.mark.parametrize("text, message", [
    ("[" * 65 + "]" * 65, "nested 65 levels deep, at most 64"),
    ("[" * 200000, "nested 200000 levels deep"),  # unterminated too: refused before parsing
    ('{"a": "' + "[" * 100 + '"}' + "x", "not valid JSON"),  # brackets in strings do not nest
    ('{"a": NaN}', "NaN is not JSON"),
    ('{"a": -Infinity}', "-Infinity is not JSON"),
    ('{"a": 1e400}', "out of range"),
    ('{"a": ' + "9" * 5000 + "}", "not valid JSON"),  # Python's int digit limit: a ValueError, typed
    ("", "not valid JSON"),
])
def test_read_json_refuses_hostile_text_with_a_typed_error(tmp_path, text, message):
    from engine.errors import ModelFileError
    from engine.fileio import read_json

    path = tmp_path / "record.json"
    path.write_text(text)
    with pytest.raises(ModelFileError, match=message) as e:
        read_json(path, max_bytes=10 ** 6)
    assert str(path) in str(e.value)


def test_read_json_bounds_size_and_accepts_what_we_write(tmp_path):
    from engine.errors import InputError, ModelFileError
    from engine.fileio import read_json

    path = tmp_path / "record.json"
    data = {"a": [[[1, 2.5, "x[{"]]], "b": {"c": None, "d": True}, "e": "\u00e9\U0001f600"}
    with atomic_write(path, "w") as f:
        import json

        f.write(json.dumps(data))
    assert read_json(path, max_bytes=1000) == data
    assert read_json(path, max_bytes=1000, max_depth=4) == data  # the depth of "a" is 4 with the outer object
    with pytest.raises(ModelFileError, match="nested 4 levels deep, at most 3"):
        read_json(path, max_bytes=1000, max_depth=3)
    with pytest.raises(ModelFileError, match="larger than the 10 a file"):
        read_json(path, max_bytes=10)
    with pytest.raises(InputError, match="cannot read"):  # the caller picks the error class
        read_json(tmp_path / "missing.json", max_bytes=10, error=InputError)
    path.write_bytes(b'{"a": "\xff"}')
    with pytest.raises(ModelFileError, match="not UTF-8"):
        read_json(path, max_bytes=1000)
