"""The lean CPU install (`pip install -e ".[cpu]"`, issue 8 section 10): conversion (tested in
tests/network/test_door.py), reconstruct, embed and the main benchmark run with no PyTorch.

Each command runs in a fresh interpreter in which `import torch` fails, as on a machine where
PyTorch is not installed; the [cpu] extra must name what those paths import."""
from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PRELUDE = ("import sys, runpy\n"
           "for m in ('torch', 'torchvision'): sys.modules[m] = None  # import fails, as if not installed\n"
           "sys.argv = [{prog!r}] + {argv!r}\n"
           "try:\n"
           "    runpy.run_module({module!r}, run_name='__main__', alter_sys=True)\n"
           "finally:\n"
           "    assert sys.modules.get('torch') is None, 'PyTorch was imported'\n")


def without_torch(module: str, *argv, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    code = PRELUDE.format(prog=module, argv=[str(a) for a in argv], module=module)
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO),
                               "HOME": str(Path.home())})


def test_the_cpu_extra_has_no_pytorch_and_names_what_the_cpu_paths_import():
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    cpu = {r.split(">")[0].split("=")[0].strip().lower() for r in extras["cpu"]}
    assert not {"torch", "torchvision", "onnxscript"} & cpu
    assert {"onnx", "onnxruntime", "safetensors", "dlib-bin", "face-recognition-models", "scikit-image"} <= cpu


@pytest.mark.slow
def test_embed_and_the_main_benchmark_run_without_pytorch(tmp_path):
    pytest.importorskip("onnxruntime")
    from PIL import Image
    from skimage import data

    photo = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()[:224, 140:364]).save(photo)
    r = without_torch("engine", "embed", photo, "--cropped", "-o", tmp_path / "desc", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "desc" / "descriptors.npy").is_file() and "SYNTHETIC" in r.stderr
    r = without_torch("engine.bench", "--quick", "--stages", "runners", "--batch-sizes", "1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "onnxruntime" in r.stdout and "SYNTHETIC" in r.stdout
