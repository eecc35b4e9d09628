"""`fetch` (against a local server on 127.0.0.1 only), `convert`, `build`, `info`."""
from __future__ import annotations

import json
import socket
import zipfile
from pathlib import Path

import pytest

from tests.static_server import serving

from engine.fetch import ASSETS
from engine.morphable import write_cache


@pytest.fixture
def server(tmp_path):
    """Serves tmp_path/www over HTTP on 127.0.0.1; yields (base URL, www folder)."""
    www = tmp_path / "www"
    www.mkdir()
    with serving(www) as url:
        yield url, www


def publish(www: Path, asset: str, data: bytes) -> None:
    p = www / ASSETS[asset].path
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)


def release_zip(tmp_path: Path) -> bytes:
    z = tmp_path / "release.zip"
    with zipfile.ZipFile(z, "w") as f:
        f.writestr("deploy_network.prototxt", "name: 'stand-in'\n")
        f.writestr("3dmm_cnn_resnet_101.caffemodel", b"\0" * 100)
    return z.read_bytes()


def test_fetch_both_assets(cli, server, tmp_path, shared_dir):
    base, www = server
    # The topology file's checksum is pinned, so the server must serve the real file.
    publish(www, "topology", (shared_dir / "mod_struct_expr.mat").read_bytes())
    publish(www, "network", release_zip(tmp_path))
    dest = tmp_path / "downloads"
    r = cli("fetch", "--base-url", base, "--dest", dest)
    assert r.rc == 0, r.err
    assert (dest / "mod_struct_expr.mat").read_bytes() == (shared_dir / "mod_struct_expr.mat").read_bytes()
    assert (dest / "deploy_network.prototxt").read_text() == "name: 'stand-in'\n"  # extracted
    assert f"sha256 {ASSETS['topology'].sha256} (verified)" in r.out
    assert "no published checksum; pin this one" in r.out  # the zip has none
    assert "Basel Face Model" in r.out and "01_MorphableModel.mat" in r.out  # what cannot be fetched
    r = cli("fetch", "topology", "--base-url", base, "--dest", dest)
    assert r.rc == 0 and "topology: already present" in r.out


def test_fetch_checksum_mismatch_and_server_down(cli, server, tmp_path):
    base, www = server
    publish(www, "topology", b"not the release's file")
    publish(www, "network", release_zip(tmp_path))
    dest = tmp_path / "downloads"
    r = cli("fetch", "--base-url", base, "--dest", dest, "-q")
    assert r.rc == 1
    assert "sha256 mismatch for mod_struct_expr.mat" in r.err
    assert (dest / "3dmm_cnn_resnet_101.zip").is_file()  # the other asset still came
    assert sorted(p.name for p in dest.iterdir() if "mod_struct" in p.name) == []  # no bad or partial file
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = cli("fetch", "--base-url", f"http://127.0.0.1:{port}", "--dest", tmp_path / "d2", "--timeout", "5")
    assert r.rc == 1
    assert r.err.count("cannot connect") == 2 and "Traceback" not in r.err
    # offline: where to put each file downloaded elsewhere; no step that needs the missing network
    # files, but the Basel Face Model steps (they need no download), keeping the user's folder
    for name in ("network", "topology"):
        assert f"save it as {(tmp_path / 'd2' / ASSETS[name].filename).resolve()}" in r.err
    assert "Convert the network" not in r.out
    assert f"Put 01_MorphableModel.mat in {tmp_path / 'd2'}" in r.out
    assert f"engine3dmm fetch topology --downloads {tmp_path / 'd2'}" in r.out
    assert f"engine3dmm convert --downloads {tmp_path / 'd2'} (reads 01_MorphableModel.mat" in r.out


def test_fetch_unknown_asset(cli, tmp_path):
    r = cli("fetch", "weights", "--dest", tmp_path)
    assert r.rc == 1 and "unknown asset 'weights'" in r.err


def test_convert_nothing_to_convert(cli, tmp_path):
    r = cli("convert", "--network-dir", tmp_path / "card")
    assert r.rc == 1
    assert "nothing to convert" in r.err and f"run `engine3dmm fetch network --network-dir {tmp_path / 'card'}`" in r.err


def test_convert_corrupt_caffemodel_leaves_nothing(cli, tmp_path, shared_dir):
    card = tmp_path / "card"
    bad = tmp_path / "3dmm_cnn_resnet_101.caffemodel"
    bad.write_bytes(b"\x0a\xff\xff\xff\x0f truncated")
    r = cli("convert", "--prototxt", shared_dir / "deploy_network.prototxt", "--caffemodel", bad,
            "--mean", shared_dir / "mean.binaryproto", "--network-dir", card)
    assert r.rc == 1
    assert r.err.strip().splitlines()[-1].startswith("engine3dmm: error: ") and str(bad) in r.err
    assert "Traceback" not in r.err
    assert list(card.iterdir()) == []  # no weights, no ONNX, no temporary


def test_convert_bfm_files_are_checked(cli, tmp_path, shared_dir):
    bfm = tmp_path / "01_MorphableModel.mat"
    bfm.write_bytes(b"MATLAB 5.0 MAT-file, but cut short")
    card = tmp_path / "card"
    r = cli("convert", "--bfm", bfm, "--topology", shared_dir / "mod_struct_expr.mat", "--network-dir", card)
    assert r.rc == 1 and str(bfm) in r.err and "Traceback" not in r.err
    assert list(card.iterdir()) == []
    r = cli("convert", "--bfm", bfm, "--network-dir", card)
    assert r.rc == 1 and "--topology: not given and no mod_struct_expr.mat" in r.err


def test_build_says_what_is_missing(cli):
    from engine import _core

    if _core.has_tensorrt():
        pytest.skip("TensorRT and a GPU are present here: build would really build")
    r = cli("build")
    assert r.rc == 1
    assert r.err.strip() in {
        "engine3dmm: error: build: TensorRT is not installed: pip install tensorrt (needs an NVIDIA GPU and driver); "
        "on CPU-only machines use --runner onnxruntime instead, no build needed",
        "engine3dmm: error: build: no usable NVIDIA GPU (or engine._C was built without CUDA): a TensorRT engine "
        "is built for one specific GPU, on that GPU"}


def _fresh_install(monkeypatch, tmp_path) -> Path:
    """The engine as an installed copy sees it before `fetch`/`convert`: no variable, no
    checkout, a per-user card not made yet (tests/network/test_model_location.py runs a real
    copy outside the checkout; this is the in-process stand-in, for speed). Returns that folder."""
    from engine.network import resolve

    monkeypatch.delenv("ENGINE3DMM_MODEL_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setattr(resolve, "checkout_model_dir", lambda: None)
    return tmp_path / "data" / "engine3dmm" / "cnn3dmm"


def _bfm_card(folder: Path) -> Path:
    """A model card holding only a (tiny) converted Basel Face Model: runs use the SYNTHETIC network."""
    from tests.cli.helpers import tiny_model

    folder.mkdir(parents=True, exist_ok=True)
    write_cache(tiny_model(), folder / "bfm2009_trimmed.e3dmm")
    return folder


def test_info_reports_runners_and_synthetic_models(cli, tmp_path, monkeypatch):
    from engine.runners import available_runners

    card = _fresh_install(monkeypatch, tmp_path)  # the default card, not made yet: synthetic, no error
    r = cli("info", "--json")
    report = json.loads(r.out)
    assert r.rc == 0, report["problems"]
    assert report["runners"] == available_runners() and report["auto_runner"] == available_runners()[0]
    assert report["network"]["status"] == "SYNTHETIC" and report["morphable_model"]["status"] == "SYNTHETIC"
    assert report["network"]["folder"] == str(card)
    assert report["network"]["folder_from"] == "the per-user data folder"
    assert "cpu_kernels" in report["compiled_core"]
    text = cli("doctor").out  # the alias, human-readable
    assert "network:         SYNTHETIC" in text and "runners:" in text
    assert f"model card {card} (from the per-user data folder)" in text
    assert not card.exists()  # info created nothing
    # a card named by the variable is reported as coming from it
    monkeypatch.setenv("ENGINE3DMM_MODEL_DIR", str(_bfm_card(tmp_path / "card")))
    report = json.loads(cli("info", "--json").out)
    assert report["problems"] == [] and report["network"]["status"] == "SYNTHETIC"
    assert (report["network"]["folder"], report["network"]["folder_from"]) == (str(tmp_path / "card"),
                                                                               "$ENGINE3DMM_MODEL_DIR")
    assert f"model card {tmp_path / 'card'} (from $ENGINE3DMM_MODEL_DIR)" in cli("info").out


def test_info_recognises_converted_weights(cli, tmp_path):
    # What `convert` writes (our safetensors file, not synthetic) is reported as converted, and
    # never as official while the official caffemodel's sha256 is unknown to the project.
    from engine.network.synthetic import make_synthetic
    from engine.network.weights import save_weights

    weights, mean, _ = make_synthetic(0)
    source = {"caffemodel": {"file": "3dmm_cnn_resnet_101.caffemodel", "sha256": "ab" * 32}}
    save_weights(tmp_path / "cnn3dmm.safetensors", weights, mean, {"synthetic": False, "source": source})
    r = cli("info", "--network-dir", tmp_path)
    assert r.rc == 0, r.out
    assert ("network:         converted (not verified: the official caffemodel's sha256 is not known to this "
            "project)\n                 converted from 3dmm_cnn_resnet_101.caffemodel (sha256 abababab") in r.out
    assert "official" not in r.out.split("morphable model:")[0].replace("the official caffemodel", "")
    report = json.loads(cli("info", "--json", "--network-dir", tmp_path).out)
    assert report["network"]["status"] == "converted" and report["network"]["verified"] is False


def _official_card(folder: Path, caffemodel_sha: str, mean: dict | None) -> Path:
    from engine.network.convert import OFFICIAL_SHA256
    from engine.network.synthetic import make_synthetic
    from engine.network.weights import save_weights

    weights, mean_img, _ = make_synthetic(0)
    mean = mean if mean is not None else {"file": "mean.binaryproto", "sha256": OFFICIAL_SHA256["mean.binaryproto"]}
    source = {"caffemodel": {"file": "x.caffemodel", "sha256": caffemodel_sha}, "mean": mean}
    folder.mkdir()
    save_weights(folder / "cnn3dmm.safetensors", weights, mean_img,
                 {"synthetic": False, "source": source, "mean_kind": "image" if mean.get("file") else "per-channel"})
    return folder


def test_info_calls_a_conversion_official_only_when_the_sha256_match(cli, tmp_path, monkeypatch):
    # The day the project records the official caffemodel's sha256 (manifest and OFFICIAL_SHA256),
    # conversions of that file with the release's mean image are official, and only those.
    from engine.network import convert

    known = "cd" * 32
    monkeypatch.setitem(convert.OFFICIAL_SHA256, convert.CAFFEMODEL, known)
    cases = {"same": (known, None), "other": ("ef" * 32, None),
             "channel": (known, {"file": None, "note": "per-channel mean"}),
             "othermean": (known, {"file": "m.binaryproto", "sha256": "00" * 32})}
    status = {}
    for name, (sha, mean) in cases.items():
        report = json.loads(cli("info", "--json", "--network-dir", _official_card(tmp_path / name, sha, mean)).out)
        status[name] = (report["network"]["status"], report["network"]["verification"])
    assert status["same"] == ("official", "verified: the caffemodel and the mean image match the release's sha256")
    assert status["other"][0] == "converted" and "not the official caffemodel: sha256 efefefef" in status["other"][1]
    assert status["channel"][0] == "converted, PER-CHANNEL MEAN" and "per-channel mean" in status["channel"][1]
    assert status["othermean"][0] == "converted" and "mean image differs" in status["othermean"][1]


# --------------------------------------------------------------------------- convert: files by role

FACE_SWAP = ("3dmm_cnn_resnet_101_deploy.prototxt", "3dmm_cnn_resnet_101.caffemodel",
             "3dmm_cnn_resnet_101_mean.binaryproto")
AUTHORS = ("deploy_network.prototxt", "3dmm_cnn_resnet_101.caffemodel", "mean.binaryproto")
NOT_A_CAFFEMODEL = b"\x0a\xff\xff\xff\x0f truncated"


def _downloads(card: Path, shared_dir: Path, names, sub: str = "") -> tuple[Path, Path]:
    """A downloads folder holding the real prototxt and mean and a broken caffemodel, under `names`."""
    folder = card / "downloads" / sub
    folder.mkdir(parents=True)
    proto, caffemodel, mean = (folder / n for n in names)
    proto.write_bytes((shared_dir / "deploy_network.prototxt").read_bytes())
    mean.write_bytes((shared_dir / "mean.binaryproto").read_bytes())
    caffemodel.write_bytes(NOT_A_CAFFEMODEL)
    return folder, caffemodel


@pytest.mark.parametrize("names, sub", [(FACE_SWAP, ""), (AUTHORS, ""), (FACE_SWAP, "3dmm_cnn_resnet_101")])
def test_convert_finds_the_release_files_by_role(cli, tmp_path, shared_dir, names, sub):
    card = tmp_path / "card"
    folder, caffemodel = _downloads(card, shared_dir, names, sub)
    (folder / "3dmm_cnn_resnet_101.zip").write_bytes(b"PK")  # the archive itself is not a candidate
    (folder / ".x.caffemodel.1234.partial").write_bytes(b"")  # nor an unfinished write
    r = cli("convert", "--network-dir", card)
    # the prototxt and the mean were found and checked; then the caffemodel was read (and is broken)
    assert r.rc == 1 and f"reading {caffemodel}" in r.err
    assert f"{caffemodel}: not a valid Caffe weights" in r.err


def test_convert_checks_the_prototxt_before_the_long_read(cli, tmp_path, shared_dir):
    card = tmp_path / "card"
    folder, caffemodel = _downloads(card, shared_dir, AUTHORS)
    (folder / "deploy_network.prototxt").write_text((shared_dir / "deploy_network.prototxt").read_text()
                                                    .replace("num_output: 198", "num_output: 10"))
    r = cli("convert", "--network-dir", card)
    assert r.rc == 1 and "num_output expected 198, found 10" in r.err
    assert "reading" not in r.err and list(card.iterdir()) == [card / "downloads"]


def test_convert_lists_several_candidates_and_the_flag_that_picks_one(cli, tmp_path, shared_dir):
    card = tmp_path / "card"
    folder, caffemodel = _downloads(card, shared_dir, AUTHORS)
    (folder / "old").mkdir()
    (folder / "old" / "snapshot_iter_1000.caffemodel").write_bytes(NOT_A_CAFFEMODEL)
    r = cli("convert", "--network-dir", card)
    assert r.rc == 1
    assert (f"--caffemodel: 2 candidate *.caffemodel files under {card / 'downloads'}: {caffemodel}, "
            f"{folder / 'old' / 'snapshot_iter_1000.caffemodel'}; pass --caffemodel FILE to pick one") in r.err
    # a solver definition beside the deploy prototxt is not a candidate by content ...
    (folder / "old" / "snapshot_iter_1000.caffemodel").unlink()
    (folder / "solver.prototxt").write_text('net: "train_val.prototxt"\nbase_lr: 0.01\n')
    r = cli("convert", "--network-dir", card)
    assert r.rc == 1 and f"reading {caffemodel}" in r.err
    # ... but two deploy prototxts are ambiguous
    (folder / "copy_deploy.prototxt").write_bytes((shared_dir / "deploy_network.prototxt").read_bytes())
    r = cli("convert", "--network-dir", card)
    assert r.rc == 1 and "--prototxt: 2 candidate *.prototxt files" in r.err and "pass --prototxt FILE" in r.err
    r = cli("convert", "--network-dir", card, "--prototxt", folder / "copy_deploy.prototxt")
    assert r.rc == 1 and f"reading {caffemodel}" in r.err


def test_convert_without_a_mean_image_is_refused_unless_asked(cli, tmp_path, shared_dir):
    card = tmp_path / "card"
    folder, caffemodel = _downloads(card, shared_dir, AUTHORS)
    (folder / "mean.binaryproto").unlink()
    r = cli("convert", "--network-dir", card)
    assert r.rc == 1 and "reading" not in r.err
    assert "no mean image (*.binaryproto)" in r.err and "part of the network" in r.err and "--channel-mean" in r.err
    r = cli("convert", "--network-dir", card, "--channel-mean")
    assert r.rc == 1 and f"reading {caffemodel}" in r.err  # asked for: goes on
    r = cli("convert", "--network-dir", card, "--channel-mean", "--mean", shared_dir / "mean.binaryproto")
    assert r.rc == 2  # one or the other


def test_convert_caffe_api_refuses_a_missing_mean(tmp_path, shared_dir):
    from engine.errors import InputError
    from engine.network import convert_caffe

    with pytest.raises(InputError, match="mean: not given; the mean image .* channel_mean=True"):
        convert_caffe(shared_dir / "deploy_network.prototxt", tmp_path / "w.caffemodel", None, tmp_path)


def test_info_says_when_a_card_was_converted_with_the_channel_mean(cli, tmp_path):
    from engine.network.synthetic import make_synthetic
    from engine.network.weights import save_weights

    weights, mean, _ = make_synthetic(0)
    source = {"caffemodel": {"file": "3dmm_cnn_resnet_101.caffemodel", "sha256": "ab" * 32},
              "mean": {"file": None, "note": "per-channel mean"}}
    save_weights(tmp_path / "cnn3dmm.safetensors", weights, mean,
                 {"synthetic": False, "source": source, "mean_kind": "per-channel"})
    r = cli("info", "--network-dir", tmp_path)
    assert "network:         converted, PER-CHANNEL MEAN (not verified: " in r.out
    assert "                 converted from 3dmm_cnn_resnet_101.caffemodel" in r.out
    assert "converted without the release's mean image" in r.out
    report = json.loads(cli("info", "--json", "--network-dir", tmp_path).out)
    assert report["network"]["mean"] == "per-channel"


# --------------------------------------------------------------------------- fetch: the guidance it prints


def _closed_port() -> str:
    with socket.socket() as s:  # a port nobody listens on: as offline as a test can be
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_fetch_guidance_keeps_the_users_folders(cli, tmp_path):
    offline = _closed_port()
    card, elsewhere = tmp_path / "my card", tmp_path / "dl"
    quoted = f"'{card}'"  # a folder with a space, quoted as a shell needs it
    r = cli("fetch", "topology", "--base-url", offline, "--timeout", "5", "--network-dir", card)
    assert r.rc == 1 and "cannot connect" in r.err
    assert f"Put 01_MorphableModel.mat in {card / 'downloads'}." in r.out
    assert f"engine3dmm fetch topology --network-dir {quoted}\n" in r.out
    assert f"engine3dmm convert --network-dir {quoted} (reads" in r.out
    # --downloads (as `convert` calls it; --dest is the old name) is repeated too, with --network-dir
    r = cli("fetch", "topology", "--base-url", offline, "--timeout", "5", "--network-dir", card,
            "--downloads", elsewhere)
    # a failed fetch leaves no folder it created (tests/inputs/test_fetch.py); the guidance still names it
    assert (not elsewhere.exists() and f"Put 01_MorphableModel.mat in {elsewhere}." in r.out
            and f"engine3dmm convert --network-dir {quoted} --downloads {elsewhere} (reads" in r.out)
    # where the downloads folder is the card's own, it is not repeated
    r = cli("fetch", "topology", "--base-url", offline, "--timeout", "5", "--network-dir", card,
            "--dest", card / "downloads")
    assert f"engine3dmm convert --network-dir {quoted} (reads" in r.out
    # the card already holds a converted Basel Face Model: its steps are no longer relevant
    from tests.cli.helpers import tiny_model

    card.mkdir(exist_ok=True)  # the failed fetches above left no folder behind
    write_cache(tiny_model(), card / "bfm2009_trimmed.e3dmm")
    r = cli("fetch", "topology", "--base-url", offline, "--timeout", "5", "--network-dir", card)
    assert r.rc == 1 and "01_MorphableModel.mat" not in r.out


def test_fetch_says_to_replace_a_bad_file_placed_by_hand(cli, tmp_path):
    dest = tmp_path / "downloads"
    dest.mkdir()
    (dest / ASSETS["network"].filename).write_bytes(b"<html>Sign in to GitHub</html>")  # a saved login page
    (dest / ASSETS["topology"].filename).write_bytes(b"not the release's file")
    r = cli("fetch", "--downloads", dest, "--base-url", _closed_port(), "--timeout", "5")
    assert r.rc == 1 and "Traceback" not in r.err
    zip_path = dest / ASSETS["network"].filename
    assert (f"{zip_path}: not a readable zip archive: File is not a zip file; delete {zip_path} and run fetch again "
            f"to download it anew, or download {ASSETS['network'].url()} elsewhere and save it as") in r.err
    assert f"The file now at {dest / ASSETS['topology'].filename} is not the release's (sha256 " in r.err


def test_fetch_then_convert_share_the_downloads_option(cli, server, tmp_path):
    base, www = server
    publish(www, "network", release_zip(tmp_path))
    card, dl = tmp_path / "card", tmp_path / "dl"
    r = cli("fetch", "network", "--base-url", base, "--downloads", dl, "--network-dir", card)
    assert r.rc == 0, r.err
    assert (dl / "3dmm_cnn_resnet_101.caffemodel").is_file()
    step = f"Convert the network: engine3dmm convert --network-dir {card} --downloads {dl}"
    assert step in r.out
    # the suggested command, run as printed, looks where fetch put the files (this stand-in
    # release has no mean image, which convert then asks for)
    r = cli(*step.split(": ", 1)[1].split()[1:])
    assert r.rc == 1 and f"--mean: not given and no mean image (*.binaryproto) under {dl};" in r.err


def _next(out: str) -> str:
    """The "Next:" part of fetch's output ("" when nothing is left to do)."""
    return out.split("\nNext:\n", 1)[1] if "\nNext:\n" in out else ""


def test_fetch_next_steps_leave_out_what_is_done(cli, server, tmp_path, shared_dir):
    """After each fetch, the steps listed are those still to do, numbered as shown: the topology
    file once fetched (verified), putting the BFM in place once it is there, converting the
    network once it is converted (and not downloaded anew), all the BFM steps once it is converted."""
    base, www = server
    publish(www, "topology", (shared_dir / "mod_struct_expr.mat").read_bytes())
    publish(www, "network", release_zip(tmp_path))
    card = tmp_path / "card"
    dl = card / "downloads"
    r = cli("fetch", "topology", "--base-url", base, "--network-dir", card)
    assert r.rc == 0 and "topology: downloaded" in r.out
    steps = _next(r.out)
    assert "fetch topology" not in steps and "Convert the network" not in steps  # done; nothing fetched for it
    assert "1. Register and download 01_MorphableModel.mat at https://faces.dmi.unibas.ch/bfm/" in steps
    assert f"2. Put 01_MorphableModel.mat in {dl}.\n3. Convert: engine3dmm convert --network-dir {card} (reads" in steps
    r = cli("fetch", "topology", "--base-url", base, "--network-dir", card)  # again: already there, verified
    assert "topology: already present" in r.out and "(verified)" in r.out and _next(r.out) == steps
    # a topology file that is not the release's is not done: its step stays (and fetch replaces the file)
    (dl / "mod_struct_expr.mat").write_bytes(b"not the release's file")
    r = cli("fetch", "network", "--base-url", base, "--network-dir", card)
    assert r.rc == 0 and "3. Download the release's topology file (public): engine3dmm fetch topology" in _next(r.out)
    assert f"Convert the network: engine3dmm convert --network-dir {card}" in _next(r.out)  # just downloaded
    cli("fetch", "topology", "--base-url", base, "--network-dir", card)
    # the user put the Basel Face Model in place (in a folder of its own: found anywhere below)
    (dl / "bfm").mkdir()
    (dl / "bfm" / "01_MorphableModel.mat").write_bytes(b"MATLAB 5.0 MAT-file")
    (card / "cnn3dmm.safetensors").write_bytes(b"")  # as if the network were converted
    r = cli("fetch", "network", "--base-url", base, "--network-dir", card)  # already present: nothing new
    assert "network: already present" in r.out
    steps = _next(r.out)
    assert steps.startswith(f"\nThe Basel Face Model (01_MorphableModel.mat under {dl}) is there, not converted yet:"
                            f"\n\n1. Convert: engine3dmm convert --network-dir {card} (reads"), steps
    assert "Register" not in steps and "Put " not in steps and "2. " not in steps and "Convert the network" not in steps
    # the card holds the converted BFM: nothing is left, and no "Next:" is printed
    _bfm_card(card)
    r = cli("fetch", "--base-url", base, "--network-dir", card)
    assert r.rc == 0 and "Next:" not in r.out, r.out


def test_setup_messages_say_where_each_missing_file_comes_from(cli, tmp_path, shared_dir):
    """`fetch` cannot get the Basel Face Model: convert says where it comes from in the words
    fetch prints (engine.fetch.bfm_source), and suggests `fetch` only for what fetch gets, with
    the user's folder options."""
    from engine.fetch import BFM_DOWNLOAD, BFM_NOT_DOWNLOADABLE, bfm_instructions, bfm_source

    card = tmp_path / "card"
    dl = card / "downloads"
    r = cli("convert", "--topology", shared_dir / "mod_struct_expr.mat", "--network-dir", card)
    assert r.rc == 1
    assert r.err == (f"engine3dmm: error: --bfm: not given and no 01_MorphableModel.mat under {dl}: {bfm_source()}; "
                     f"put it in {dl}, or pass --bfm FILE\n")
    assert "fetch" not in r.err
    # fetch prints the same text for it
    guidance = bfm_instructions(dl).lower()
    assert BFM_NOT_DOWNLOADABLE.lower() in guidance and BFM_DOWNLOAD.lower() in guidance
    assert bfm_source() == f"{BFM_NOT_DOWNLOADABLE}; {BFM_DOWNLOAD}"
    r = cli("convert", "--network-dir", card)  # nothing at all: both, each from where it comes
    assert r.rc == 1 and f"run `engine3dmm fetch network --network-dir {card}`" in r.err
    assert f"{bfm_source()}; put it in {dl}, or pass --bfm/--topology" in r.err
    r = cli("convert", "--bfm", tmp_path / "x.mat", "--network-dir", card)  # --bfm checked as a file first
    assert r.rc == 1 and "expected a file" in r.err
    (tmp_path / "x.mat").write_bytes(b"MATLAB 5.0 MAT-file")
    r = cli("convert", "--bfm", tmp_path / "x.mat", "--network-dir", card, "--downloads", tmp_path / "dl")
    assert r.rc == 1 and r.err == (f"engine3dmm: error: --topology: not given and no mod_struct_expr.mat under "
                                   f"{tmp_path / 'dl'}: run `engine3dmm fetch topology --network-dir {card} "
                                   f"--downloads {tmp_path / 'dl'}`, or pass --topology FILE\n")
    r = cli("convert", "--caffemodel", tmp_path / "x.mat", "--network-dir", card)
    assert r.rc == 1 and r.err == (f"engine3dmm: error: --prototxt: not given and no *.prototxt file under {dl}: "
                                   f"run `engine3dmm fetch network --network-dir {card}`, or pass --prototxt FILE\n")


# --------------------------------------------------------------------------- what a model card is


def test_a_card_with_only_the_basel_face_model_is_a_model_card(cli, photos, tmp_path):
    from tests.cli.helpers import tiny_model

    card = tmp_path / "cardbfm"
    card.mkdir()
    write_cache(tiny_model(), card / "bfm2009_trimmed.e3dmm")  # what `convert --bfm ... --topology ...` writes
    out = tmp_path / "out"
    r = cli("reconstruct", photos / "astronaut.png", "--cropped", "--network-dir", card, "-o", out)
    assert r.rc == 0, r.err
    assert "using the built-in SYNTHETIC weights" in r.err  # the run says which network it used
    prov = json.loads((out / "summary.json").read_text())["provenance"]
    assert prov["network_synthetic"] is True
    assert prov["morphable_model"] == "tiny-test-model" and prov["morphable_synthetic"] is False  # the card's BFM
    report = json.loads(cli("info", "--json", "--network-dir", card).out)
    assert report["problems"] == [] and report["network"]["status"] == "SYNTHETIC"
    assert report["morphable_model"]["status"] == "converted"
    assert report["morphable_model"]["file"] == str(card / "bfm2009_trimmed.e3dmm")


def _name_the_folder(monkeypatch, how: str, folder: Path) -> tuple[list, str]:
    """(the options that name `folder`, how messages name it): --network-dir, or the variable
    --network-dir defaults to. Either way one rule applies."""
    if how == "option":
        monkeypatch.delenv("ENGINE3DMM_MODEL_DIR", raising=False)
        return ["--network-dir", folder], f"--network-dir {folder}"
    monkeypatch.setenv("ENGINE3DMM_MODEL_DIR", str(folder))
    return [], f"$ENGINE3DMM_MODEL_DIR={folder}"


@pytest.mark.parametrize("how", ["option", "variable"])
@pytest.mark.parametrize("what", ["missing", "empty", "file"])
def test_a_folder_that_is_no_model_card_is_an_error_everywhere(cli, photos, tmp_path, monkeypatch, what, how):
    card = tmp_path / "card"
    if what == "empty":
        card.mkdir()
    elif what == "file":
        card.write_text("not a folder")
    named, label = _name_the_folder(monkeypatch, how, card)
    expected = {"missing": f"{label}: does not exist",
                "file": f"{label}: is not a folder",
                "empty": f"{label}: not a model card: it holds neither converted network weights "
                         "(cnn3dmm.safetensors) nor a converted Basel Face Model (bfm2009_trimmed.e3dmm) nor "
                         "validated variants (*.variants.json)"}[what]
    remedy = {"option": f"`engine3dmm convert --network-dir {card}`", "variable": "`engine3dmm convert`"}[how]
    before = sorted(tmp_path.iterdir())
    for argv in (["reconstruct", photos / "astronaut.png", "--cropped", "-o", tmp_path / "o"],
                 ["validate", "--variants", "int8"], ["build"]):
        r = cli(*argv, *named)
        assert r.rc == 1 and f"engine3dmm: error: {expected}" in r.err and "SYNTHETIC" not in r.err, (argv, r.err)
        assert remedy in r.err and "Traceback" not in r.err
    r = cli("info", "--json", *named)
    report = json.loads(r.out)
    assert r.rc == 1 and report["network"]["status"] == "NOT A MODEL CARD"
    assert any(p.startswith(f"network: {expected}") for p in report["problems"])
    assert sorted(tmp_path.iterdir()) == before  # nothing created: no output, no variants, no card
    if what == "empty":
        assert list(card.iterdir()) == []


@pytest.mark.parametrize("how", ["option", "variable"])
def test_the_commands_that_make_a_card_accept_a_new_or_empty_folder_either_way(cli, server, tmp_path, shared_dir,
                                                                               monkeypatch, how):
    """fetch and convert create the card: a new or empty folder is what they start from,
    named by --network-dir or by the variable alike."""
    base, www = server
    publish(www, "topology", (shared_dir / "mod_struct_expr.mat").read_bytes())
    for state in ("new", "empty"):
        card = tmp_path / state
        if state == "empty":
            card.mkdir()
        named, _ = _name_the_folder(monkeypatch, how, card)
        r = cli("fetch", "topology", "--base-url", base, *named)
        assert r.rc == 0, r.err
        assert (card / "downloads" / "mod_struct_expr.mat").read_bytes() == (
            shared_dir / "mod_struct_expr.mat").read_bytes()
        # convert finds the files in the card's downloads folder and gets as far as reading them
        # (this caffemodel is broken): the folder itself was accepted
        folder, caffemodel = _downloads(card, shared_dir, AUTHORS, "release")
        r = cli("convert", *named)
        assert r.rc == 1 and f"reading {caffemodel}" in r.err and "not a model card" not in r.err, r.err
    # ...while the commands that read a card refuse the folder that holds downloads only
    r = cli("validate", *named)
    assert r.rc == 1 and "not a model card" in r.err


# --------------------------------------------------------------------------- convert: what it says it uses


def test_convert_says_which_files_it_picked_and_what_channel_mean_leaves_out(cli, tmp_path, shared_dir):
    card = tmp_path / "card"
    folder, caffemodel = _downloads(card, shared_dir, FACE_SWAP)
    given = tmp_path / "given.prototxt"
    given.write_bytes((shared_dir / "deploy_network.prototxt").read_bytes())
    r = cli("convert", "--network-dir", card, "--prototxt", given)
    assert r.rc == 1  # the caffemodel is broken: everything before its reading was said
    assert f"prototxt:   {given} (given)\n" in r.err
    assert f"caffemodel: {caffemodel} (found under {card / 'downloads'})\n" in r.err
    assert f"mean:       {folder / FACE_SWAP[2]} (found under {card / 'downloads'})\n" in r.err
    assert "warning" not in r.err
    r = cli("convert", "--network-dir", card, "--channel-mean")
    assert r.rc == 1
    assert (f"engine3dmm: warning: --channel-mean: ignoring the mean image {folder / FACE_SWAP[2]}, as asked: "
            "outputs move by up to about 10% of their spread") in r.err
    assert "\nmean: " not in r.err
    r = cli("convert", "--network-dir", card, "--channel-mean", "-q")
    assert r.rc == 1 and "prototxt:" not in r.err and "warning" not in r.err  # -q: errors only


def test_the_summary_of_ignored_layers_is_one_line():
    from engine.network.convert import ignored_summary

    assert ignored_summary((), set()) is None
    assert ignored_summary(("prob",), {"fc1000", "conv0", "loss", "aux"}) == (
        "ignored, as Caffe does: 1 prototxt layer(s) that do not feed the output (prob); 4 caffemodel layer(s) the "
        "network does not use (aux, conv0, fc1000, ...) (-v lists them all)")


def test_build_refuses_a_folder_that_is_no_model_card(cli, tmp_path):
    r = cli("build", "--network-dir", tmp_path / "typo")
    assert r.rc == 1 and f"engine3dmm: error: --network-dir {tmp_path / 'typo'}: does not exist" in r.err
    assert not (tmp_path / "typo").exists()


# --------------------------------------------------------------------------- CPU variants (issue 12)


def test_convert_checks_the_calibration_folder_before_the_long_read(cli, tmp_path, shared_dir):
    card = tmp_path / "card"
    bad = tmp_path / "3dmm_cnn_resnet_101.caffemodel"
    bad.write_bytes(b"\x0a\xff\xff\xff\x0f truncated")  # would fail later: the folder is refused first
    r = cli("convert", "--prototxt", shared_dir / "deploy_network.prototxt", "--caffemodel", bad,
            "--mean", shared_dir / "mean.binaryproto", "--network-dir", card, "--calibration", tmp_path / "typo")
    assert r.rc == 1 and (f"engine3dmm: error: --calibration {tmp_path / 'typo'}: expected a folder of face photos, "
                          "found nothing (no such file or folder)") in r.err
    assert not card.exists() or list(card.iterdir()) == []
    # validate: the same message, exit 1 as every other file argument's error (argparse's usage errors are 2)
    r = cli("validate", "--calibration", tmp_path / "nosuchdir")
    assert r.rc == 1 and r.err == (f"engine3dmm: error: --calibration {tmp_path / 'nosuchdir'}: expected a folder of "
                                   "face photos, found nothing (no such file or folder)\n")
    r = cli("validate", "--calibration", bad)
    assert r.rc == 1
    assert r.err == f"engine3dmm: error: --calibration {bad}: expected a folder of face photos, found a file\n"


def test_the_variants_hint_of_each_command_names_its_own_options(cli):
    """convert announces the variants' build with --no-variants (its own option); validate,
    whose user asked for exactly this, with no option it does not have."""
    import re

    from engine.cli.setup import _VARIANTS_HINT

    assert "--no-variants" in _VARIANTS_HINT["convert"] and "--no-variants" not in _VARIANTS_HINT["validate"]
    for command, hint in _VARIANTS_HINT.items():
        text = cli(command, "--help").out
        for option in re.findall(r"--[a-z][a-z-]+", hint):
            assert option in text, (command, option)


def test_file_options_say_what_is_there_instead_of_a_file(cli, tmp_path):
    """--expression, --bfm, --topology, --prototxt... name the option, expect a file, and say what
    was found: a folder, or nothing (exit 1, as every engine error)."""
    folder = tmp_path / "some_folder"
    folder.mkdir()
    card = tmp_path / "card"
    a_file = tmp_path / "a_file"
    a_file.write_bytes(b"x")  # the other files of a group are picked before any is read
    groups = (("--expression",), ("--bfm", "--topology"), ("--prototxt", "--caffemodel", "--mean"))
    for group in groups:
        for option in group:
            argv = [a for o in group for a in (o, folder if o == option else a_file)]
            r = cli("convert", *argv, "--network-dir", card)
            assert r.rc == 1, r.err
            assert f"engine3dmm: error: {option} {folder}: expected a file, found a folder" in r.err, r.err
    r = cli("convert", "--expression", tmp_path / "missing.mat", "--network-dir", card)
    assert r.rc == 1 and f"--expression {tmp_path / 'missing.mat'}: expected a file, no such file" in r.err


def test_convert_expression_of_the_wrong_size_gives_the_numbers(cli, tmp_path, shared_dir):
    """mu_exp of 10 values: the message gives M's lower bound (from the release's
    mod_struct_expr.mat, read here with scipy), the values that makes, and what was found."""
    import numpy as np
    import scipy.io

    from engine.morphable import synthetic_model

    topology = shared_dir / "mod_struct_expr.mat"
    ms = scipy.io.loadmat(topology, squeeze_me=True, struct_as_record=False)
    ms = next(v for k, v in ms.items() if not k.startswith("__"))
    need = int(np.asarray(ms.vertex_expr_ref)[np.asarray(ms.vertex_indices).astype(int) - 1].max())
    card = tmp_path / "card"
    card.mkdir()
    write_cache(synthetic_model(0).replace(expression_mean=None, expression_basis=None, expression_sigma=None),
                card / "bfm2009_trimmed.e3dmm")
    expr = tmp_path / "Model_Expression.mat"
    scipy.io.savemat(expr, {"mu_exp": np.zeros((10, 1), np.float32), "w_exp": np.zeros((10, 29), np.float32)})
    r = cli("convert", "--expression", expr, "--topology", topology, "--network-dir", card)
    assert r.rc == 1
    assert (f"{expr}: mu_exp: expected 3M values, x y z for each of the M vertices of 3DDFA's model: M >= {need:,} "
            f"(mod_struct_expr.mat's vertex_expr_ref refers to vertex {need:,}), so at least {3 * need:,} values "
            "(3DDFA's own file: M = 53,215, 159,645 values); found 10 (not a multiple of 3)") in r.err, r.err


def test_fp16_on_a_cpu_runner_is_refused_as_help_says(cli, photos, tmp_path, monkeypatch):
    """--help promises a validated error for an explicit precision; fp16 on the CPU has none
    (and wrote an 87 MB graph): refused, naming the CPU variants, nothing written."""
    from engine.runners import available_runners

    text = cli("reconstruct", "--help").out
    assert "fp16 on a GPU runner only (refused on the CPU runners: use int8 or bf16)" in " ".join(text.split())
    monkeypatch.setenv("ENGINE3DMM_MODEL_DIR", str(_bfm_card(tmp_path / "card")))
    runs = [(["--runner", "onnxruntime"], 2)]  # a CPU runner named: a usage error, before anything runs
    if all(r in ("onnxruntime", "torch-cpu") for r in available_runners()):
        runs.append(([], 1))  # a CPU machine: auto's runner is a CPU one (this machine's to say: exit 1)
    for extra, code in runs:
        r = cli("reconstruct", photos / "astronaut.png", "-o", tmp_path / "out", "--precision", "fp16", *extra)
        assert r.rc == code and "precision fp16: the CPU runners do not run float16" in r.err, r.err
        assert "use --precision int8 (onnxruntime) or bf16 (torch-cpu)" in r.err
    assert list((tmp_path / "card").iterdir()) == [tmp_path / "card" / "bfm2009_trimmed.e3dmm"]
    assert not (tmp_path / "out").exists()


def test_variant_options_are_checked_by_the_parser(cli):
    for argv in (["reconstruct", "x.jpg", "--max-error", "0"], ["embed", "x", "--max-error", "nan"],
                 ["verify", "a", "b", "--precision", "int4"], ["validate", "--variants", "fp16"]):
        r = cli(*argv)
        assert r.rc == 2, argv
    assert "expected a number > 0, found '0'" in cli("reconstruct", "x.jpg", "--max-error", "0").err
    for cmd in ("reconstruct", "embed", "verify", "evaluate"):
        text = cli(cmd, "--help").out
        assert "--precision {auto,fp32,fp16,bf16,int8}" in text and "--max-error SD" in text
    text = cli("convert", "--help").out
    assert "--calibration DIR" in text and "--no-variants" in text
    assert "held-out real faces" in cli("validate", "--help").out


def test_info_says_when_no_variants_were_built(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("ENGINE3DMM_MODEL_DIR", str(_bfm_card(tmp_path / "card")))
    r = cli("info")
    assert "CPU variants:    none: no variants built: `engine3dmm validate` builds and measures them" in r.out
    assert json.loads(cli("info", "--json").out)["network"]["variants"]["status"] == "none"


def test_validate_with_a_folder_without_a_face_builds_no_int8(cli, photos, tmp_path, monkeypatch):
    """The bad calibration folder (issue 12 section 5): a clear message, no int8, float32. The
    message names each path once; validate's opening line suggests no convert-only option."""
    pytest.importorskip("dlib")
    import shutil

    monkeypatch.setenv("ENGINE3DMM_MODEL_DIR", str(_bfm_card(tmp_path / "card")))
    mine = tmp_path / "mine"
    mine.mkdir()
    shutil.copy(photos / "coffee.jpg", mine)  # no face
    (mine / "broken.jpg").write_bytes(b"not a jpeg")
    (mine / "notes.txt").write_text("not an image")
    r = cli("validate", "--calibration", mine, "--variants", "int8")
    assert r.rc == 0, r.err
    warning = next(ln for ln in r.err.splitlines() if ln.startswith("engine3dmm: warning: calibration folder"))
    assert warning == (f"engine3dmm: warning: calibration folder {mine}: no usable face (0 face(s) from 2 image(s); "
                       f"1 image(s) without a detected face; 1 unreadable (e.g. {mine / 'broken.jpg'}: not a "
                       "recognised image format (is it really an image?))): the int8 variant is not built; runs use "
                       "float32")
    assert warning.count(str(mine / "broken.jpg")) == 1 and warning.count(str(mine)) == 2  # the folder, the file
    opening = next(ln for ln in r.err.splitlines() if "building and validating the CPU variants" in ln)
    assert opening.endswith("weights: about a minute") and "--no-variants" not in r.err
    assert "onnxruntime int8: not built (calibration folder" in r.out and "auto picks onnxruntime fp32" in r.out
    card = json.loads(next((tmp_path / "card").glob("*.variants.json")).read_text())
    assert [e["status"] for e in card["variants"]] == ["ok", "not built"] and card["synthetic"] is True
    assert card["validation"]["faces"] == 34 and card["variants"][0]["speed"]["batch1_ms"] > 0
    r = cli("validate", "--calibration", tmp_path / "card", "--variants", "int8", "--json")  # a folder of no images
    assert r.rc == 0 and "no usable face (no image files in" in r.err
    assert json.loads(r.out)["variants"][1]["status"] == "not built"
