"""Where the model card lives (engine.network.resolve.locate_model_dir): never inside an
installed package. $ENGINE3DMM_MODEL_DIR, else models/cnn3dmm of the source checkout the
package runs from, else the per-user $XDG_DATA_HOME/engine3dmm/cnn3dmm (default
~/.local/share/engine3dmm/cnn3dmm).

The installed cases run the package from a copy outside any checkout (fast), and from a real
wheel installed into a fresh venv (slow: builds the C++ core)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from tests.static_server import serving

from engine.network.resolve import locate_model_dir, user_model_dir

REPO = Path(__file__).resolve().parents[2]


def test_a_checkout_uses_its_own_model_card(monkeypatch, tmp_path):
    monkeypatch.delenv("ENGINE3DMM_MODEL_DIR", raising=False)
    assert locate_model_dir() == (REPO / "models" / "cnn3dmm", "the source checkout")
    assert (REPO / "models" / "cnn3dmm" / "manifest.json").is_file()  # what marks the checkout
    monkeypatch.setenv("ENGINE3DMM_MODEL_DIR", str(tmp_path))
    assert locate_model_dir() == (tmp_path, "$ENGINE3DMM_MODEL_DIR")
    monkeypatch.setenv("ENGINE3DMM_MODEL_DIR", "")  # set but empty: not a folder name
    assert locate_model_dir()[0] == REPO / "models" / "cnn3dmm"


def test_the_per_user_folder_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    assert user_model_dir() == tmp_path / "home" / ".local" / "share" / "engine3dmm" / "cnn3dmm"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert user_model_dir() == tmp_path / "data" / "engine3dmm" / "cnn3dmm"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/data")  # invalid per the XDG spec: ignored
    assert user_model_dir() == tmp_path / "home" / ".local" / "share" / "engine3dmm" / "cnn3dmm"


def test_one_rule_for_a_folder_named_by_the_option_or_the_variable(monkeypatch, tmp_path):
    """--network-dir defaults to $ENGINE3DMM_MODEL_DIR: a folder named either way must be a
    model card (a typo is never run on synthetic weights); the unnamed defaults are not checked
    (a fresh install runs the synthetic network and says so). Messages name the source."""
    from engine.errors import ModelFileError
    from engine.fileio import atomic_write
    from engine.network.resolve import (MORPHABLE_CACHE_FILE, WEIGHTS_FILE, check_model_card, model_card_problem)

    monkeypatch.delenv("ENGINE3DMM_MODEL_DIR", raising=False)
    assert check_model_card(None) == REPO / "models" / "cnn3dmm"  # the checkout's, whatever it holds
    folder = tmp_path / "card"
    assert locate_model_dir(folder) == (folder, "--network-dir")
    monkeypatch.setenv("ENGINE3DMM_MODEL_DIR", str(tmp_path / "other"))
    assert locate_model_dir(folder) == (folder, "--network-dir")  # the option wins over the variable
    for state, problem in (("missing", "does not exist"), ("file", "is not a folder"), ("empty", "not a model card")):
        if state == "file":
            folder.write_text("x")
        elif state == "empty":
            folder.unlink()
            folder.mkdir()
        assert model_card_problem(folder).startswith(problem)
        monkeypatch.setenv("ENGINE3DMM_MODEL_DIR", str(folder))
        messages = []
        for named in (folder, None):  # --network-dir FOLDER, then $ENGINE3DMM_MODEL_DIR=FOLDER alone
            with pytest.raises(ModelFileError) as e:
                check_model_card(named)
            messages.append(str(e.value))
        assert messages[0].startswith(f"--network-dir {folder}: {problem}")
        assert messages[1].startswith(f"$ENGINE3DMM_MODEL_DIR={folder}: {problem}")
        # the same rule, only the source and the command to repeat differ
        assert messages[0].split(": ", 1)[1].split(";")[0] == messages[1].split(": ", 1)[1].split(";")[0]
        assert f"engine3dmm convert --network-dir {folder}`" in messages[0] and "engine3dmm convert`" in messages[1]
    for name in (WEIGHTS_FILE, MORPHABLE_CACHE_FILE, "cnn3dmm.synthetic-seed0.variants.json"):
        with atomic_write(folder / name) as f:
            f.write(b"")
        assert model_card_problem(folder) is None and check_model_card(None) == folder == check_model_card(folder)
        (folder / name).unlink()
    (folder / "downloads").mkdir()  # what `fetch` leaves: not a card yet
    assert model_card_problem(folder).startswith("not a model card")


@pytest.fixture
def server(tmp_path):
    """Serves tmp_path/www on 127.0.0.1; yields the base URL."""
    www = tmp_path / "www"
    www.mkdir()
    from engine.fetch import ASSETS

    zip_path = www / ASSETS["network"].path
    zip_path.parent.mkdir(parents=True)
    with zipfile.ZipFile(zip_path, "w") as z:
        z.writestr("deploy_network.prototxt", "name: 'stand-in'\n")
    with serving(www) as url:
        yield url


def _run(python: str, *argv, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([python, *map(str, argv)], env=env, cwd=cwd, capture_output=True, text=True, timeout=600)


def _clean_env(tmp_path: Path, **extra) -> dict:
    """No variable of the user's that could choose the folder; a home of our own."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("ENGINE3DMM_MODEL_DIR", "XDG_DATA_HOME", "PYTHONPATH", "HOME")}
    env["HOME"] = str(tmp_path / "home")
    env.update(extra)
    return env


def _check_installed(python: str, site: Path, tmp_path: Path, base_url: str) -> None:
    """`info` and `fetch` of the package installed at `site`: the card is the per-user folder,
    and nothing is written into `site`."""
    before = sorted(p.name for p in site.iterdir())
    # the copy is found through PYTHONPATH; the venv finds its own site-packages
    env = _clean_env(tmp_path, **({"PYTHONPATH": str(site)} if python == sys.executable else {}))
    where = _run(python, "-c", "import engine; print(engine.__file__)", env=env, cwd=tmp_path)
    assert Path(where.stdout.strip()).is_relative_to(site), where  # the copy runs, not the checkout
    card = tmp_path / "home" / ".local" / "share" / "engine3dmm" / "cnn3dmm"
    r = _run(python, "-m", "engine", "info", "--json", env=env, cwd=tmp_path)
    report = json.loads(r.stdout)
    assert report["network"]["folder"] == str(card), report["network"]
    assert report["network"]["folder_from"] == "the per-user data folder"
    assert report["network"]["status"] == "SYNTHETIC"
    r = _run(python, "-m", "engine", "fetch", "network", "--base-url", base_url, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (card / "downloads" / "deploy_network.prototxt").is_file()
    assert sorted(p.name for p in site.iterdir()) == before  # no models/ beside the package
    r = _run(python, "-m", "engine", "info", "--json", env={**env, "XDG_DATA_HOME": str(tmp_path / "xdg")},
             cwd=tmp_path)
    assert json.loads(r.stdout)["network"]["folder"] == str(tmp_path / "xdg" / "engine3dmm" / "cnn3dmm")


def test_a_copy_outside_a_checkout_uses_the_per_user_folder(tmp_path, server):
    # The package as an installer lays it out (engine/ alone in a folder), outside any checkout.
    site = tmp_path / "site"
    shutil.copytree(REPO / "engine", site / "engine", ignore=shutil.ignore_patterns("__pycache__"))
    _check_installed(sys.executable, site, tmp_path, server)


@pytest.mark.slow
def test_a_real_non_editable_install_uses_the_per_user_folder(tmp_path, server):
    # What a user does: `pip install /path/to/checkout` (not -e) into a venv. The wheel is built
    # from a copy of the working tree, so the checkout is left alone.
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, check=True).stdout.decode().split("\0")
    src = tmp_path / "src"
    for name in filter(None, files):
        if (REPO / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, src / name)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"),
                            str(src)], capture_output=True, text=True, timeout=1800,
                           env={**os.environ, "CMAKE_BUILD_PARALLEL_LEVEL": "2"})
    if build.returncode and ("No matching distribution" in build.stderr or "Could not find a version" in build.stderr):
        pytest.skip(f"the build requirements cannot be installed here: {build.stderr[-500:]}")
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("engine3dmm-*.whl")
    # The venv sees the test environment's packages (numpy...) but holds its own engine3dmm.
    venv.create(tmp_path / "v", system_site_packages=True, with_pip=True)
    python = str(tmp_path / "v" / "bin" / "python")
    r = subprocess.run([python, "-m", "pip", "install", "--no-deps", "-q", str(wheel)], capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    _check_installed(python, site, tmp_path, server)
