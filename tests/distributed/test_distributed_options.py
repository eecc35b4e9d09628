"""`embed --ray`'s option and refusals, checked before anything runs (no Ray needed)."""
from __future__ import annotations

import importlib.util

import pytest

from engine.cli import main


@pytest.mark.parametrize("argv, address", [(["--ray"], "local"), (["--ray", "auto"], "auto"),
                                           (["--ray=ray://head.example:10001"], "ray://head.example:10001"),
                                           (["--ray", "10.0.0.1:6379"], "10.0.0.1:6379"), ([], None)])
def test_ray_address_is_parsed(argv, address):
    from engine.cli.parser import build_parser

    assert build_parser().parse_args(["embed", "photos/", *argv]).ray == address


def test_an_input_after_a_bare_ray_is_a_usage_error(tmp_path, capsys):
    """argparse gives the word after a bare --ray to the option: a folder there is refused,
    saying how to write it, and nothing is created."""
    rc = main(["embed", "--ray", str(tmp_path), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2
    assert f"argument --ray: expected local, auto, ray://HOST:PORT or HOST:PORT, found '{tmp_path}'" in err
    assert "put --ray last" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("sidecar, text", [("boxes.csv", "a.png,0,0,10,10\n"), ("boxes.json", "[1, 2]"),
                                           ("missing.csv", None)])
def test_a_bad_sidecar_with_ray_fails_as_without_before_ray_starts(tmp_path, capsys, monkeypatch, sidecar, text):
    """--boxes with --ray reads the sidecar once, on the driver: one that cannot be read fails
    with the single-process message and exit code, leaves no output folder, and Ray is never
    reached (`--ray auto` with no cluster running would fail otherwise, on joining it)."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    if text is not None:
        (tmp_path / sidecar).write_text(text)
    from PIL import Image

    (tmp_path / "in").mkdir()
    Image.new("RGB", (32, 32)).save(tmp_path / "in" / "a.png")  # an input the run would take
    argv = ["embed", str(tmp_path / "in"), "--boxes", str(tmp_path / sidecar), "-o", str(tmp_path / "out")]
    rc_single = main(argv)
    err_single = capsys.readouterr().err
    rc_ray = main([*argv, "--ray", "auto"])
    err_ray = capsys.readouterr().err
    assert rc_single == rc_ray == 1
    assert err_ray == err_single and f"engine3dmm: error: {tmp_path / sidecar}" in err_ray, err_ray
    assert "Ray" not in err_ray and not (tmp_path / "out").exists()
    assert not ray.is_initialized()


def test_the_api_reads_a_bad_sidecar_before_ray_starts(tmp_path, monkeypatch):
    """engine.distributed.embed(boxes=PATH): the sidecar is read on the driver, at the first
    next(), before Ray is joined (address "auto" with no cluster would fail otherwise)."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    from engine.distributed import embed
    from engine.errors import InputError

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(InputError, match=r"missing\.csv: no such boxes file"):
        next(embed([str(tmp_path / "a.png")], boxes=tmp_path / "missing.csv", address="auto"))
    with pytest.raises(InputError, match=r"boxes: expected a mapping"):
        next(embed([str(tmp_path / "a.png")], boxes=[(0, 0, 10, 10)], address="auto"))
    assert not ray.is_initialized()


def test_the_api_refuses_compile_on_a_runner_that_cannot_before_ray_starts(tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    from engine.distributed import embed
    from engine.errors import InputError

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(InputError, match="the onnxruntime runner cannot compile"):
        next(embed([str(tmp_path / "a.png")], runner="onnxruntime", compile=True, address="auto"))
    with pytest.raises(InputError, match="compile_mode"):
        next(embed([str(tmp_path / "a.png")], compile_mode="default", address="auto"))
    assert not ray.is_initialized()


@pytest.mark.parametrize("kwargs, error, words", [
    # the CPU runners never run on a GPU: the reason Reconstructor(device_input=True) gives without Ray
    (dict(runner="onnxruntime", device_input=True), "UnavailableError",
     "device_input=True (--device-input on): the onnxruntime runner runs on the cpu: the device input needs a "
     "CUDA runner (torch-cuda, tensorrt) and a GPU"),
    (dict(runner="torch-cpu", device_input=True), "UnavailableError", "the torch-cpu runner runs on the cpu"),
    (dict(device_input=True, gpus=False), "UnavailableError",
     "device_input=True (--device-input on) needs a GPU in each actor, and a CUDA runner (torch-cuda, tensorrt); "
     "gpus=False gives the actors none"),
    (dict(runner="torch-cuda", gpus=False), "UnavailableError",
     "runner torch-cuda (--runner) needs a GPU in each actor; gpus=False gives the actors none"),
    (dict(runner="tensorrt", gpus=False), "UnavailableError", "runner tensorrt (--runner) needs a GPU"),
    (dict(runner="cuda"), "InputError", "distributed embed: runner: expected one of"),
    (dict(precision="fp64"), "InputError", "distributed embed: precision: expected one of"),
    (dict(runner="torch-cpu", precision="fp16"), "InputError", "precision fp16: the CPU runners do not run float16"),
    (dict(runner="torch-cuda", precision="int8"), "InputError", "the torch-cuda runner supports"),
    (dict(max_error=0), "InputError", "max_error: expected a number of coefficient sd > 0, found 0"),
    (dict(device_input="yes"), "InputError", "device_input: expected 'auto', 'on', 'off', True or False, found 'yes'"),
    (dict(device_input="on", runner="onnxruntime"), "UnavailableError", "device_input=True (--device-input on)"),
])
def test_options_no_actor_could_run_are_refused_before_ray_starts(tmp_path, monkeypatch, kwargs, error, words):
    """What each actor would refuse after Ray started and loaded it (a traceback per actor
    before): refused on the driver at the first next(), with Ray never joined (address "auto"
    with no cluster running would fail otherwise)."""
    ray = pytest.importorskip("ray")
    from engine import errors
    from engine.distributed import embed

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(getattr(errors, error)) as e:
        next(embed([str(tmp_path / "a.png")], address="auto", **kwargs))
    assert type(e.value) is getattr(errors, error) and words in str(e.value), str(e.value)
    assert not ray.is_initialized()


def test_a_gpu_need_on_a_machine_without_one_is_refused_before_the_local_ray_starts(tmp_path):
    """--ray (a local Ray): its GPUs are this machine's, counted as Ray counts them, before it
    starts; here none, so device_input=True or a GPU runner cannot run on any actor."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    from engine.distributed import embed
    from engine.distributed.embed import _local_gpus
    from engine.errors import BackendError, UnavailableError

    if _local_gpus(ray) != 0:
        pytest.skip("this machine has a GPU")
    for kwargs in (dict(device_input=True), dict(runner="torch-cuda")):
        with pytest.raises(UnavailableError, match=r"this machine \(the local Ray\) has no GPU, so the actors run "
                                                   "on CPUs"):
            next(embed([str(tmp_path / "a.png")], **kwargs))
    with pytest.raises(BackendError, match=r"gpus=True, but this machine \(the local Ray\) has no GPU"):
        next(embed([str(tmp_path / "a.png")], gpus=True))
    assert not ray.is_initialized()


@pytest.mark.parametrize("text, cls, message", [
    # Ray's own words for an actor whose constructor raised (ray.exceptions.ActorDiedError), colours and all
    ("The actor died because of an error raised in its creation task, \x1b[36mray::MapWorker(MapBatches(_EmbedActor))"
     ".__init__()\x1b[39m (pid=1, ip=10.0.0.2)\n  File \"engine/network/weights.py\", line 149, in load_weights\n"
     "    raise ModelFileError(...)\nengine.errors.ModelFileError: net/cnn3dmm.safetensors: not a readable "
     "safetensors weight file\n\n", "ModelFileError", "net/cnn3dmm.safetensors: not a readable safetensors weight file"),
    ("...\nengine.pipeline.device_input.DeviceInputUnavailable: Reconstructor: device_input=True: no nvJPEG",
     "BackendError", "engine.pipeline.device_input.DeviceInputUnavailable: Reconstructor: device_input=True: no nvJPEG"),
    ("...\n\x1b[31mModuleNotFoundError: No module named 'dlib'\x1b[0m", "BackendError",
     "ModuleNotFoundError: No module named 'dlib'"),
    ("The actor died unexpectedly before finishing this task.\n\tclass_name: MapWorker\n\tpid: 7\n"
     "The actor is dead because its worker process has died. Worker exit type: SYSTEM_ERROR", "BackendError",
     "The actor is dead because its worker process has died. Worker exit type: SYSTEM_ERROR"),
])
def test_an_actors_failure_is_one_engine_error_in_its_own_words(text, cls, message):
    from engine import errors
    from engine.distributed.cluster import actor_reason, raise_actor_failure

    with pytest.raises(errors.EngineError) as e:
        raise_actor_failure(RuntimeError(text), "distributed embed: a Ray actor failed")
    assert type(e.value) is getattr(errors, cls)
    assert str(e.value) == f"distributed embed: a Ray actor failed: {message}"
    assert "\n" not in str(e.value) and "\x1b" not in str(e.value)
    assert actor_reason(text).endswith(message)


def test_each_actor_compiles_its_own_runner():
    """--ray --compile: the actor builds a compiled PyTorch runner where it runs (Inductor
    compiles lazily, at the first batch of each size: building the actor stays cheap)."""
    pytest.importorskip("torch")
    pytest.importorskip("ray.data")
    from engine.distributed.embed import _EmbedActor

    actor = _EmbedActor({"runner": "auto", "detector": None, "threads": 1}, compile=True, compile_mode="default")
    try:
        assert actor.rec.runner.name == "torch-cpu" and actor.rec.runner.compiled
        assert actor.rec.runner.compile_mode == "default"
    finally:
        actor.rec.close()
        actor.rec.runner.close()
    plain = _EmbedActor({"runner": "onnxruntime", "detector": None, "threads": 1})
    try:
        assert plain.rec.runner.name == "onnxruntime"
    finally:
        plain.rec.close()


@pytest.mark.skipif(importlib.util.find_spec("pandas") is not None and importlib.util.find_spec("ray") is not None,
                    reason="Ray Data is importable here")
def test_without_ray_data_the_run_says_what_to_install(tmp_path, capsys):
    rc = main(["embed", str(tmp_path), "-o", str(tmp_path / "out"), "--ray"])
    assert rc == 1
    assert "--ray needs Ray Data (ray with pandas and pyarrow): pip install 'ray[data]' (the 'distributed' extra)" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def _closed_port() -> int:
    import socket

    with socket.socket() as s:  # bound, never listening: a connection to it is refused
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("form", ["{}", "ray://{}"])
def test_an_unreachable_cluster_fails_at_once_before_the_output_folder(tmp_path, capsys, form):
    """Nothing listens at the address: a one-line error naming the option, the address and the
    TCP connection tried, in seconds (not after Ray's GCS timeout), and no output folder."""
    import time

    pytest.importorskip("ray")
    address = form.format(f"127.0.0.1:{_closed_port()}")
    t = time.monotonic()
    rc = main(["embed", str(tmp_path), "-o", str(tmp_path / "out"), "--ray", address])
    took = time.monotonic() - t
    err = capsys.readouterr().err
    assert rc == 1, err
    assert f"--ray {address}: cannot reach a Ray cluster there: a TCP connection to 127.0.0.1:" in err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()
    assert took < 60  # a hang bound, not a speed claim: Ray's own wait is minutes


def test_check_reachable_accepts_a_listening_address_and_leaves_auto_to_ray():
    import socket

    from engine.distributed.cluster import check_reachable, host_port

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        check_reachable(f"127.0.0.1:{port}", "--ray")
        check_reachable(f"ray://127.0.0.1:{port}", "--ray")
    assert host_port("auto") is None and host_port(None) is None and host_port("ray://head") is None
    assert host_port("[::1]:6379") == ("::1", 6379) and host_port("head.example:10001") == ("head.example", 10001)


def test_check_reachable_names_an_unknown_host():
    from engine.distributed.cluster import check_reachable
    from engine.errors import BackendError

    with pytest.raises(BackendError, match=r"--ray no-such-host\.invalid:6379: cannot reach a Ray cluster there"):
        check_reachable("no-such-host.invalid:6379", "--ray", timeout_s=2)


@pytest.mark.parametrize("runner, n_gpus, gpus, expected", [
    ("auto", 2, None, True), ("torch-cuda", 1, None, True), ("tensorrt", 4, None, True),
    ("onnxruntime", 2, None, False), ("torch-cpu", 2, None, False),  # a CPU runner holds no GPU
    ("auto", 0, None, False), ("auto", 2, False, False), ("onnxruntime", 2, True, True),
])
def test_actors_reserve_a_gpu_by_the_services_rule(runner, n_gpus, gpus, expected):
    """embed --ray's actors and serve's replicas reserve GPUs by one rule (engine.runners.can_use_gpu)."""
    pytest.importorskip("ray")
    from engine.distributed.embed import _gpu_actors
    from engine.serve.requests import ServeOptions

    assert _gpu_actors(n_gpus, gpus, runner, "auto", "the Ray cluster") is expected
    if gpus is None:
        assert (ServeOptions(runner=runner).gpus_per_replica(n_gpus) > 0) is expected
