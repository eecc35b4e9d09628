"""The CUDA kernels keep their accumulators and taps in registers: checked from ptxas's report,
so no GPU is needed (the .cu files build for sm_80 and sm_90 wherever nvcc is). A runtime index
into a per-thread array, or its address taken, moves it to local memory (a stack frame), several
times slower on every GPU."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


# Each CUDA source and its kernels' count in ptxas's report: decode tiles 1, 4, 16 x float and
# float16 kernels, crop float32 and float16 outputs; each x sm_80 and sm_90.
@pytest.mark.slow
@pytest.mark.parametrize("source,kernels", [("decode_cuda.cu", 12), ("crop_cuda.cu", 4)])
def test_cuda_kernels_have_no_stack_frame_or_spills(tmp_path, source, kernels):
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("needs nvcc (the CUDA toolkit)")
    cmd = [nvcc, "-std=c++17", "-O3", "-Xptxas", "-v", "-gencode", "arch=compute_80,code=sm_80",
           "-gencode", "arch=compute_90,code=sm_90", f"-I{REPO / 'csrc/include'}", f"-I{REPO / 'csrc/src'}",
           "-c", str(REPO / "csrc/src" / source), "-o", str(tmp_path / (source + ".o"))]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    frames = re.findall(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", r.stderr)
    assert len(frames) == kernels, r.stderr
    assert all(f == ("0", "0", "0") for f in frames), r.stderr
