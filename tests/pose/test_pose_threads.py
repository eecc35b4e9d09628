"""The pose fit runs numpy's BLAS on one thread (engine.pose.fit._one_blas_thread): in a
pipeline it runs beside the network's threads, and a multi-threaded BLAS on its small matrices
made a batch of 128 fits ten times slower on this machine's two cores. The BLAS state is read
with threadpoolctl, inside the fit (in its EPnP step) and after it."""
from __future__ import annotations

import numpy as np
import pytest

from engine.pose import fit, fit_poses, solvers
from tests.pose.faces import landmark_model, pose_landmarks

threadpoolctl = pytest.importorskip("threadpoolctl")


def _blas_threads() -> list[int]:
    return [lib["num_threads"] for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "blas"]


def test_the_fit_runs_blas_on_one_thread_and_restores_it(monkeypatch):
    if not _blas_threads():
        pytest.skip("numpy has no BLAS that threadpoolctl can see")
    seen = []
    real = solvers.epnp

    def epnp_reading_the_threads(*args, **kwargs):  # the real EPnP, with the BLAS state read first
        seen.append(_blas_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(solvers, "epnp", epnp_reading_the_threads)
    # A controller made now: it knows every BLAS loaded so far (cv2's comes with a test module);
    # the engine's is made at the first fit, after numpy's, the one the fit uses.
    monkeypatch.setattr(fit, "_BLAS", [])
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        before = _blas_threads()
        lmm = landmark_model()
        uv, inner, outer = pose_landmarks(lmm, np.array([10.0, -20.0]), np.zeros(2), np.zeros(2))
        fits = fit_poses(uv, inner, outer)
        after = _blas_threads()
    assert all(f.pose is not None for f in fits)
    assert seen and all(t == [1] * len(t) for t in seen), seen
    assert after == before and max(before) == 2, (before, after)


def test_one_blas_thread_is_one_controller():
    """The controller scans the process's libraries once, not per fit."""
    with fit._one_blas_thread():
        pass
    first = fit._BLAS[0]
    with fit._one_blas_thread():
        pass
    assert fit._BLAS == [first]
