"""Thin CMake wrapper: builds the one extension, engine._C, with CMake.

Environment switches (all optional):
  ENGINE_WITH_CUDA=AUTO|ON|OFF      build the CUDA kernels, decode and crop (AUTO: when nvcc is found)
  ENGINE_CUDA_ARCHITECTURES="80;90" CUDA architectures (default: 80;90 real plus 90 PTX)
  ENGINE_WITH_TENSORRT=AUTO|ON|OFF  build the C++ TensorRT runner (AUTO: when found)
  ENGINE_BUILD_TYPE=Release         CMake build type
  CMAKE_ARGS="..."                  extra arguments passed to CMake
"""
import os
import shlex
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


class CMakeExtension(Extension):
    def __init__(self, name: str):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext: Extension) -> None:
        out_dir = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        build_dir = Path(self.build_temp).resolve() / "cmake"
        build_dir.mkdir(parents=True, exist_ok=True)
        import pybind11

        args = [
            f"-DCMAKE_BUILD_TYPE={os.environ.get('ENGINE_BUILD_TYPE', 'Release')}",
            f"-DENGINE_PYTHON_OUTPUT_DIR={out_dir}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            "-DENGINE_BUILD_PYTHON=ON",
            "-DENGINE_BUILD_TESTS=OFF",
            "-DENGINE_BUILD_EXAMPLES=OFF",
        ]
        for key in ("ENGINE_WITH_CUDA", "ENGINE_CUDA_ARCHITECTURES", "ENGINE_WITH_TENSORRT"):
            if os.environ.get(key):
                args.append(f"-D{key}={os.environ[key]}")
        args += shlex.split(os.environ.get("CMAKE_ARGS", ""))
        generator = ["-G", "Ninja"] if _has_ninja() else []
        subprocess.run(["cmake", "-S", str(ROOT), "-B", str(build_dir), *generator, *args], check=True)
        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
        subprocess.run(["cmake", "--build", str(build_dir), "--target", "_C", "-j", jobs], check=True)


def _has_ninja() -> bool:
    try:
        subprocess.run(["ninja", "--version"], check=True, capture_output=True)
        return True
    except (OSError, subprocess.CalledProcessError):
        return False


setup(ext_modules=[CMakeExtension("engine._C")], cmdclass={"build_ext": CMakeBuild})
