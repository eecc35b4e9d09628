"""The face service's query fields (engine.serve.requests), without Ray: every field refused the
same way when it is given twice, given empty or unknown, with the field, what it takes and what
was found in the message (the service answers these as 400, tests/serve/test_serve.py)."""
from __future__ import annotations

import pytest

from engine.serve.requests import EXPECTED, RequestError, parse_request, query_fields

FACES_FIELDS = ("boxes", "cropped", "pose", "mesh", "part")
GOOD = {"boxes": "[[1, 2, 30, 40]]", "cropped": "true", "pose": "perspective", "mesh": "1", "part": "alpha",
        "face": "0"}


@pytest.mark.parametrize("name", [*FACES_FIELDS, "face"])
def test_a_field_given_twice_is_refused(name):
    with pytest.raises(RequestError) as e:
        parse_request([(name, GOOD[name]), (name, GOOD[name])], mesh_endpoint=name == "face")
    assert e.value.status == 400
    assert str(e.value).startswith(f"query field {name}: expected it once, found it 2 times")


@pytest.mark.parametrize("value", ["", " "])
@pytest.mark.parametrize("name", [*FACES_FIELDS, "face"])
def test_a_field_given_empty_is_refused(name, value):
    with pytest.raises(RequestError) as e:
        parse_request([(name, value)], mesh_endpoint=name == "face")
    assert e.value.status == 400
    assert str(e.value) == f"query field {name}: expected {EXPECTED[name]}, found an empty value"


def test_every_field_of_both_endpoints_has_its_expectation():
    assert set(EXPECTED) == {*FACES_FIELDS, "face"}


def test_face_is_a_field_of_mesh_only():
    with pytest.raises(RequestError, match="query field face: not a field of this endpoint"):
        query_fields([("face", "0")])
    assert query_fields([("face", "0")], mesh_endpoint=True) == {"face": "0"}


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


@pytest.mark.parametrize("value,found", [("[[1,2]]", "found 2 values"), ("[[1,2,3,4,5,6]]", "found 6 or more values"),
                                         ("[7]", "found int")])
def test_a_malformed_box_is_refused_in_the_querys_words(value, found):
    """An HTTP caller writes JSON: the refusal names the JSON forms a box takes, not a Python type."""
    with pytest.raises(RequestError) as e:
        parse_request({"boxes": value})
    msg = str(e.value)
    assert e.value.status == 400 and msg.startswith("query field boxes[0]: expected [x0, y0, x1, y1], "), msg
    assert found in msg and "FaceBox" not in msg, msg
