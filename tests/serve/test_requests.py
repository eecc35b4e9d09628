"""The face service's query fields (engine.serve.requests), without Ray: every field refused the
same way when it is given twice, given empty or unknown, with the field, what it takes and what
was found in the message (the service answers these as 400, tests/serve/test_serve.py)."""
from __future__ import annotations

import pytest

from engine.serve.requests import EXPECTED, FACES_FIELDS, MESH_FIELDS, RequestError, parse_request, query_fields

GOOD = {"boxes": "[[1, 2, 30, 40]]", "cropped": "true", "pose": "perspective", "mesh": "1", "part": "alpha",
        "face": "0"}


@pytest.mark.parametrize("name", sorted(FACES_FIELDS | MESH_FIELDS))
def test_a_field_given_twice_is_refused(name):
    with pytest.raises(RequestError) as e:
        parse_request([(name, GOOD[name]), (name, GOOD[name])], mesh_endpoint=name == "face")
    assert e.value.status == 400
    assert str(e.value).startswith(f"query field {name}: expected it once, found it 2 times")


@pytest.mark.parametrize("value", ["", " "])
@pytest.mark.parametrize("name", sorted(FACES_FIELDS | MESH_FIELDS))
def test_a_field_given_empty_is_refused(name, value):
    with pytest.raises(RequestError) as e:
        parse_request([(name, value)], mesh_endpoint=name == "face")
    assert e.value.status == 400
    assert str(e.value) == f"query field {name}: expected {EXPECTED[name]}, found an empty value"


def test_every_field_of_both_endpoints_has_its_expectation():
    assert set(EXPECTED) == FACES_FIELDS | MESH_FIELDS


def test_face_is_a_field_of_mesh_only():
    with pytest.raises(RequestError, match="query field face: not a field of this endpoint"):
        query_fields([("face", "0")])
    assert query_fields([("face", "0")], mesh_endpoint=True) == {"face": "0"}


@pytest.mark.parametrize("name", sorted(FACES_FIELDS - MESH_FIELDS))
def test_fields_that_change_nothing_in_a_ply_are_refused_by_mesh(name):
    """/v1/mesh answers one face's PLY: pose, part or mesh there would be silently ignored."""
    with pytest.raises(RequestError) as e:
        parse_request([(name, GOOD[name])], mesh_endpoint=True)
    assert e.value.status == 400
    assert str(e.value) == f"query field {name}: not a field of this endpoint (expected boxes, cropped, face)"
    assert parse_request([("boxes", GOOD["boxes"]), ("face", "0")], mesh_endpoint=True).mesh_face == 0


def test_each_field_given_once_is_read():
    req = parse_request([("pose", "weak-perspective"), ("part", "beta"), ("mesh", "yes")])
    assert (req.pose, req.part, req.mesh, req.cropped) == ("weak_perspective", "beta", True, False)
    req = parse_request({"cropped": "1"})  # a mapping is taken too
    assert req.cropped and req.boxes is None


@pytest.mark.parametrize("name,value", [("cropped", "maybe"), ("mesh", "2"), ("pose", "sideways")])
def test_a_bad_flag_names_what_it_takes(name, value):
    with pytest.raises(RequestError) as e:
        parse_request([(name, value)])
    assert str(e.value) == f"query field {name}: expected {EXPECTED[name]}, found {value!r}"


@pytest.mark.parametrize("value,found", [("[[1,2]]", "found 2 values"), ("[[1,2,3,4,5,6]]", "found 6 values"),
                                         ("[7]", "found a number")])
def test_a_malformed_box_is_refused_in_the_querys_words(value, found):
    """An HTTP caller writes JSON: the refusal names the JSON forms a box takes, not a Python type."""
    with pytest.raises(RequestError) as e:
        parse_request({"boxes": value})
    msg = str(e.value)
    assert e.value.status == 400 and msg.startswith("query field boxes[0]: expected [x0, y0, x1, y1] or "), msg
    assert found in msg and "FaceBox" not in msg, msg


# Bad text for each field, as a caller (or a fuzzer) may send it: each is a 400 naming its field,
# never another exception (the service would answer 500) and never a silent reading.
LANDMARKS = [[float(i), 1.5 * i] for i in range(68)]


def _json(v) -> str:
    import json

    return json.dumps(v)


HOSTILE = [
    ("face", "\u00b2", True, "found '\u00b2'"),  # '²': str.isdigit() is True, int() refuses it
    ("face", "\u2460", True, "found '\u2460'"),  # '①'
    ("face", "\u0660", True, "found '\u0660'"),  # '٠': int() reads it as 0
    ("face", "\uff11", True, "found '\uff11'"),  # '１' (fullwidth): int() reads it as 1
    ("face", "9" * 5000, True, "(5000 characters)"),  # beyond int()'s 4300-digit limit
    ("face", "257", True, "found '257'"),
    ("face", "-0", True, "found '-0'"),
    ("face", "+1", True, "found '+1'"),
    ("face", " 1", True, "found ' 1'"),
    ("face", "1_0", True, "found '1_0'"),
    ("boxes", "[" * 1000 + "]" * 1000, False, "JSON nested too deeply (1000 levels, at most 8)"),
    ("boxes", "[" * 100_000, False, "JSON nested too deeply (100000 levels"),
    ("boxes", "[[" + "9" * 5000 + ", 1, 2, 3]]", False, "boxes[0], field x0: expected a finite number"),
    ("boxes", "[[1e400, 1, 20, 30]]", False, "boxes[0], field x0: expected a finite number, found '1e400'"),
    ("boxes", "[[NaN, 1, 20, 30]]", False, "boxes[0], field x0: expected a finite number, found nan"),
    ("boxes", "[[1, 2, 30, 40, -Infinity]]", False, "boxes[0], field score: expected a finite number"),
    ("boxes", "[[true, 1, 20, 30]]", False, "boxes[0], field x0: expected a number, found a boolean"),
    ("boxes", "[[1, 2, 30, 40, null]]", False, "boxes[0], field score: expected a number, found null"),
    ("boxes", '[[1, 2, 30, "40"]]', False, "boxes[0], field y1: expected a number, found a string"),
    ("boxes", '[[1, 2, 30, [40]]]', False, "boxes[0], field y1: expected a number, found an array"),
    ("boxes", '[{"landmarks": {"a": [1]}}]', False, "boxes[0], field landmarks: expected 68 points"),
    ("boxes", _json([{"landmarks": [[{"x": 1}, 2]] + LANDMARKS[1:]}]), False, "point 0 x: expected a number"),
    ("boxes", _json([{"landmarks": LANDMARKS, "score": "high"}]), False, "field score: expected a number"),
    ("boxes", _json([{"landmarks": LANDMARKS, "box": {"box": [1, 2, 3, 4]}}]), False, "field box: expected"),
    ("boxes", '{"a.jpg": [[1, 2, 30, 40]]}', False, "found an object"),
    ("boxes", '"[[1, 2, 30, 40]]"', False, "found a string"),
    ("boxes", "[" + ", ".join(["[1, 2, 30, 40]"] * 257) + "]", False, "found an array of 257"),
    ("boxes", "[[1, 2, 30, 40]]" + " " * (1 << 20), False, "larger than the 1048576 expected"),
    ("boxes", "[[1, 2, 30, 40]]\x00", False, "query field boxes line 1: invalid JSON: Extra data"),
    ("boxes", "\ufffd", False, "invalid JSON"),  # a non-UTF-8 %-escape, as Starlette decodes it
    ("boxes", "\udcff", False, "invalid JSON"),  # ... or as surrogateescape would
    ("part", "\udcff", False, "found " + repr("\udcff")),
    ("part", "ALPHA", False, "found 'ALPHA'"),
    ("pose", "\ufffd", False, "found '\ufffd'"),
    ("pose", "x" * 10_000, False, "(10000 characters)"),
    ("pose", "WEA\u212a_PERSPECTIVE", False, "found 'WEA\u212a_PERSPECTIVE'"),  # the Kelvin sign lower()s to k
    ("cropped", "\u0131", False, "found '\u0131'"),  # dotless i
    ("cropped", " true", False, "found ' true'"),
    ("mesh", "2", False, "found '2'"),
]


@pytest.mark.parametrize("name,value,mesh,words", HOSTILE, ids=[f"{h[0]}-{i}" for i, h in enumerate(HOSTILE)])
def test_bad_text_in_any_field_is_a_400_naming_it(name, value, mesh, words):
    with pytest.raises(RequestError) as e:
        parse_request([(name, value)], mesh_endpoint=mesh)
    msg = str(e.value)
    assert e.value.status == 400 and msg.startswith(f"query field {name}") and words in msg, msg
    assert len(msg) < 600, msg  # a long value is cut short in the answer


@pytest.mark.parametrize("value,box", [
    ("[[-0.0, -0, 20, 30]]", (0.0, 0.0, 20.0, 30.0, 1.0)),
    ("[[1, 2, 30, 40, 0.5]]", (1.0, 2.0, 30.0, 40.0, 0.5)),
    ("[[" + "1" + "0" * 400 + "e-399, 2, 30, 40]]", (10.0, 2.0, 30.0, 40.0, 1.0)),  # a long number in range
])
def test_good_boxes_are_read_as_floats(value, box):
    import math

    (b,) = parse_request({"boxes": value}).boxes
    assert (b.x0, b.y0, b.x1, b.y1, b.score) == pytest.approx(box) and b.kind == "given"
    assert math.copysign(1, b.x0) == 1  # -0 is the coordinate 0


def test_a_face_given_by_its_landmarks_is_read():
    (b,) = parse_request({"boxes": _json([{"landmarks": LANDMARKS, "score": 0.25}])}).boxes
    assert (b.x0, b.y0, b.x1, b.y1, b.score) == (0.0, 0.0, 67.0, 100.5, 0.25)
    assert b.landmarks.shape == (68, 2)


def test_the_boxes_field_and_a_boxes_file_share_one_reader(tmp_path):
    """The same JSON text of boxes gives the same FaceBoxes and the same refusal in words, as a
    --boxes file's entry (engine.detect.load_boxes) and as the service's boxes field."""
    from engine.detect import load_boxes

    for boxes in ([[1, 2, 30, 40, 0.5], {"landmarks": LANDMARKS}], [[1, 2, 3]], [[True, 2, 30, 40]]):
        path = tmp_path / "boxes.json"
        path.write_text(_json({"a.jpg": boxes}))
        sidecar = load_boxes(path)
        try:
            got = parse_request({"boxes": _json(boxes)}).boxes
        except RequestError as e:
            with pytest.raises(InputError) as file_error:
                sidecar["a.jpg"]
            tail = str(e).split("query field boxes[0]", 1)[1]
            assert str(file_error.value).endswith(tail), (str(file_error.value), str(e))
            continue
        assert [(b.x0, b.y0, b.x1, b.y1, b.score, b.kind) for b in got] == \
            [(b.x0, b.y0, b.x1, b.y1, b.score, b.kind) for b in sidecar["a.jpg"]]


def test_escaped_quotes_in_the_boxes_field_are_scanned_in_linear_time():
    """The nesting is measured before parsing; a scan that restarted at each quote would take
    hours on a megabyte of \\" (it did: engine.fileio's regex, 2 s for 32 KB)."""
    with pytest.raises(RequestError, match="invalid JSON"):
        parse_request({"boxes": '["' + '\\"' * 500_000})


def _cases(word: str) -> list[str]:
    return [word, word.upper(), word.title()]


@pytest.mark.parametrize("name", ["cropped", "mesh", "pose"])
def test_each_flag_accepts_exactly_the_words_its_message_lists(name):
    """EXPECTED[name] is the whole truth: every word it lists is read (in any case), and every
    word read is listed."""
    from engine.serve.requests import FALSE_WORDS, POSE_WORDS, TRUE_WORDS

    words = TRUE_WORDS + FALSE_WORDS + (POSE_WORDS if name == "pose" else ())
    for word in words:
        assert word in EXPECTED[name]
        for variant in _cases(word):
            req = parse_request({name: variant})
            value = {"cropped": req.cropped, "mesh": req.mesh, "pose": req.pose}[name]
            if word in POSE_WORDS:
                assert value == word.replace("-", "_")
            elif name == "pose":
                assert value == ("perspective" if word in TRUE_WORDS else None)
            else:
                assert value == (word in TRUE_WORDS)
    assert "any case" in EXPECTED[name]
    for wrong in ("y", "n", "t", "f", "enabled", "weak", "orthographic", "true.", "1.0", "01", "0x1"):
        with pytest.raises(RequestError, match=f"query field {name}: expected"):
            parse_request({name: wrong})


def test_part_and_face_accept_exactly_what_their_messages_list():
    from engine.serve.requests import MAX_BOXES, PARTS

    for part in PARTS:
        assert part in EXPECTED["part"] and parse_request({"part": part}).part == part
    assert f"0..{MAX_BOXES}" in EXPECTED["face"] and "digits 0-9" in EXPECTED["face"]
    for face in ("0", "7", "07", str(MAX_BOXES)):
        assert parse_request({"face": face}, mesh_endpoint=True).mesh_face == int(face)
    assert parse_request({}, mesh_endpoint=True).mesh_face == 0


# --- ServeOptions: the replicas' resources and runner (checked before Ray starts) ---

from engine.errors import InputError  # noqa: E402
from engine.serve.requests import ServeOptions, warm_up_batches  # noqa: E402


@pytest.mark.parametrize("runner, cluster_gpus, gpus", [("auto", 0, 0.0), ("auto", 1, 1.0), ("auto", 8, 1.0),
                                                        ("torch-cuda", 2, 1.0), ("tensorrt", 1, 1.0),
                                                        ("onnxruntime", 4, 0.0), ("torch-cpu", 4, 0.0)])
def test_replicas_reserve_a_gpu_when_their_runner_can_use_one(runner, cluster_gpus, gpus):
    """Ray hides every GPU from an actor that reserves none: a replica of a GPU runner must ask."""
    o = ServeOptions(runner=runner)
    assert o.gpus_per_replica(cluster_gpus) == gpus
    assert ServeOptions(runner=runner, replica_cpus=2, replica_gpus=None).actor_options() == \
        {"num_cpus": 2, "num_gpus": 0.0}  # unresolved (Service.start fixes it for the cluster)


def test_an_explicit_gpu_share_is_kept_and_reaches_ray():
    o = ServeOptions(replica_gpus=0.5)
    assert o.gpus_per_replica(0) == 0.5 and o.actor_options() == {"num_cpus": 1.0, "num_gpus": 0.5}
    assert ServeOptions(replica_gpus=0).gpus_per_replica(8) == 0.0


@pytest.mark.parametrize("kwargs, words", [
    (dict(replica_gpus=-1), "serve: replica_gpus: expected a number in 0..64 or None (auto), found -1"),
    (dict(replica_gpus=True), "replica_gpus: expected a number"),
    (dict(replica_gpus=1, runner="onnxruntime"), "the onnxruntime runner runs on the CPU, found 1 GPU(s)"),
    (dict(runner="cuda"), "serve: runner: expected one of"),
    (dict(precision="fp64"), "serve: precision: expected one of"),
    (dict(precision="fp16", runner="torch-cpu"), "precision fp16: the CPU runners do not run float16"),
    (dict(precision="int8", runner="torch-cuda"), "the torch-cuda runner supports ['fp16', 'bf16', 'fp32']"),
    (dict(max_error=0), "max_error: expected a number of coefficient sd > 0, found 0"),
    (dict(compile=True, runner="tensorrt"), "the tensorrt runner cannot compile"),
    (dict(compile="yes"), "compile: expected True or False, found 'yes'"),
    (dict(compile_mode="max-autotune"), "compile_mode 'max-autotune' needs compile=True"),
    (dict(direct_ingress=True, replicas=2), "serve: replicas: direct ingress serves with exactly 1 replica"),
])
def test_runner_options_that_cannot_work_are_refused_before_ray(kwargs, words):
    with pytest.raises(InputError) as e:
        ServeOptions(**kwargs)
    assert words in str(e.value)


def test_a_compiled_replica_warms_every_bucket_its_batches_use():
    """engine.runners.torch_compile pads a chunk to its bucket; each bucket compiles once."""
    from types import SimpleNamespace

    from engine.runners.torch_compile import bucket

    runner = SimpleNamespace(compiled=True, max_batch=32)
    assert warm_up_batches(8, runner) == [1, 2, 4, 8]
    assert warm_up_batches(10, runner) == [1, 2, 4, 8, 16]
    assert warm_up_batches(100, runner) == [1, 2, 4, 8, 16, 32]  # chunks of at most the runner's 32
    for max_batch in (1, 3, 8, 10, 33, 100):
        used = {bucket(min(n, 32), 32) for n in range(1, max_batch + 1)}
        assert set(warm_up_batches(max_batch, runner)) == used
    assert warm_up_batches(8, SimpleNamespace(compiled=False, max_batch=32)) == [1]


@pytest.mark.parametrize("options, gpus, started, result", [
    (dict(runner="torch-cuda"), 0, True, "serve: --runner torch-cuda needs a GPU in each replica; the Ray cluster has 0 GPUs"),
    (dict(runner="tensorrt", replica_gpus=0), 4, False, "needs a GPU in each replica; the Ray cluster has 4 GPUs and --replica-gpus is 0"),
    (dict(replicas=3), 2, True, "3 replicas of 1 GPU(s) each need 3 GPUs; they do not fit in the local Ray's 2 GPUs"),
    (dict(replicas=3), 2, False, 1.0),  # a joined cluster may grow: start waits, saying what is missing
    (dict(replicas=4, replica_gpus=0.5), 2, True, 0.5),
    (dict(), 0, True, 0.0),
    (dict(runner="onnxruntime"), 8, True, 0.0),
])
def test_service_fixes_each_replicas_gpus_for_its_cluster(options, gpus, started, result):
    """Service.start's GPU rule, given the cluster's GPU count as Ray reports it."""
    from types import SimpleNamespace

    from engine.serve import Service

    svc = Service(ServeOptions(**options), num_cpus=64)
    svc._started_ray = started
    ray = SimpleNamespace(cluster_resources=lambda: {"CPU": 64, "GPU": gpus})
    if isinstance(result, str):
        with pytest.raises(InputError) as e:
            svc._resolve_gpus(ray)
        assert str(e.value).endswith(result) or result in str(e.value), str(e.value)
    else:
        svc._resolve_gpus(ray)
        assert svc.options.replica_gpus == result
        assert svc.options.actor_options()["num_gpus"] == result
