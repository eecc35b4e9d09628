"""The CUDA kernel keeps its accumulators in registers: checked from ptxas's report, so
no GPU is needed. A runtime index into the per-thread tile, or its address taken, moves
the whole tile to local memory (a stack frame), several times slower on every GPU."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_decode_kernel_has_no_stack_frame_or_spills(tmp_path):
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("needs nvcc (the CUDA toolkit)")
    cmd = [nvcc, "-std=c++17", "-O3", "-Xptxas", "-v", "-gencode", "arch=compute_80,code=sm_80",
           "-gencode", "arch=compute_90,code=sm_90", f"-I{REPO / 'csrc/include'}", f"-I{REPO / 'csrc/src'}",
           "-c", str(REPO / "csrc/src/decode_cuda.cu"), "-o", str(tmp_path / "decode_cuda.o")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    frames = re.findall(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", r.stderr)
    assert len(frames) == 12, r.stderr  # tiles 1, 4, 16 x float and float16 kernels x sm_80 and sm_90
    assert all(f == ("0", "0", "0") for f in frames), r.stderr
