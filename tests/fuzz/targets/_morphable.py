"""Shared by the morphable-model fuzz targets: a scratch folder, and the test writers of
tests/morphable/bfm_files.py (the seeds are built with them, like the tests' own files)."""
from __future__ import annotations

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[2]
SHARED = TESTS.parent.parent / "shared" / "cnn3dmm"
sys.path.insert(0, str(TESTS / "morphable"))

import bfm_files  # noqa: E402  (needs the path above)
from _scratch import file_bytes, scratch  # noqa: E402,F401  (re-exported to the targets)
