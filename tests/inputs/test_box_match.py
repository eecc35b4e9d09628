"""engine.box_match: which input a --boxes entry (or an API box mapping's key) belongs to.

The tester's case first: a sidecar row `img.jpg` was given to both album/a/img.jpg and
album/b/img.jpg (matched by bare file name), while keys relative to the folder given
(a/img.jpg) or written ./photo.jpg never matched."""
from __future__ import annotations

import logging
import os

import pytest

from engine.box_match import match_boxes
from engine.detect import FaceBox, load_boxes, lookup_boxes
from engine.errors import InputError

BOX = "179,87,272,178"


@pytest.fixture
def album(tmp_path, monkeypatch):
    """tmp_path as the working directory, holding album/a/img.jpg, album/b/img.jpg, photo.jpg."""
    monkeypatch.chdir(tmp_path)
    for rel in ("album/a/img.jpg", "album/b/img.jpg", "photo.jpg"):
        os.makedirs(os.path.dirname(rel) or ".", exist_ok=True)
        open(rel, "wb").close()
    return tmp_path


def sidecar(path, *keys):
    path.write_text("image,x0,y0,x1,y1\n" + "".join(f"{k},{BOX}\n" for k in keys))
    return load_boxes(path)


def boxes_of(matched, name, root=None):
    hit = matched.for_input(name, root)
    return None if hit is None else hit[0]


def test_a_bare_name_that_two_inputs_have_is_an_error_for_both(album):
    inputs = [("album/a/img.jpg", "album/a"), ("album/b/img.jpg", "album/b")]
    m = match_boxes(sidecar(album / "bs.csv", "img.jpg"), inputs, option="--boxes")
    for name, other in (("album/a/img.jpg", "album/b/img.jpg"), ("album/b/img.jpg", "album/a/img.jpg")):
        with pytest.raises(InputError) as e:
            m.for_input(name)
        msg = str(e.value)
        assert msg.startswith(f"{name}: --boxes {album / 'bs.csv'}: entry 'img.jpg' matches 2 inputs ")
        assert other in msg and name in msg and f"(this one: '{name}')" in msg
    # Found in one folder argument, the message proposes the path below it.
    m = match_boxes(sidecar(album / "bs.csv", "img.jpg"), [(n, "album") for n, _ in inputs])
    with pytest.raises(InputError, match=r"\(this one: 'a/img\.jpg'\)"):
        m.for_input("album/a/img.jpg")


def test_an_ambiguous_key_beside_the_inputs_own_entry_says_to_fix_the_short_key(album):
    """'img.jpg' matches both inputs; 'b/img.jpg' is album/b/img.jpg's own entry: the message must
    not propose the entry that is already there, but the short key to remove or rename."""
    inputs = [("album/a/img.jpg", "album"), ("album/b/img.jpg", "album")]
    m = match_boxes(sidecar(album / "bs.csv", "img.jpg", "b/img.jpg"), inputs, option="--boxes")
    with pytest.raises(InputError) as e:
        m.for_input("album/b/img.jpg")
    msg = str(e.value)
    assert "entry 'img.jpg' matches 2 inputs" in msg, msg
    assert msg.endswith("this input's own entry 'b/img.jpg' is there too; remove or rename the entry 'img.jpg'")
    with pytest.raises(InputError, match=r"\(this one: 'a/img\.jpg'\)"):  # a/img.jpg has no entry of its own
        m.for_input("album/a/img.jpg")


def test_keys_below_the_folder_given_relative_or_dotted_match_their_file_alone(album):
    inputs = [("album/a/img.jpg", "album"), ("album/b/img.jpg", "album"), ("photo.jpg", None)]
    m = match_boxes(sidecar(album / "bs.csv", "a/img.jpg", "./photo.jpg"), inputs)
    assert (boxes_of(m, "album/a/img.jpg"), boxes_of(m, "album/b/img.jpg"), boxes_of(m, "photo.jpg")) == (
        "a/img.jpg", None, "./photo.jpg")
    assert m.for_input("album/a/img.jpg")[1] == [FaceBox(179, 87, 272, 178)]
    # The path as given, absolute, or with ./ and .. in it: the same file.
    for key in ("album/a/img.jpg", str(album / "album/a/img.jpg"), "./album/x/../a//img.jpg"):
        m = match_boxes({key: [(1, 2, 30, 40)]}, inputs)
        assert boxes_of(m, "album/a/img.jpg") == key and boxes_of(m, "album/b/img.jpg") is None, key
    # A trailing path that one input alone ends with: a/img.jpg with the folders given separately.
    m = match_boxes({"a/img.jpg": []}, [("album/a/img.jpg", "album/a"), ("album/b/img.jpg", "album/b")])
    assert boxes_of(m, "album/a/img.jpg") == "a/img.jpg" and boxes_of(m, "album/b/img.jpg") is None


def test_keys_relative_to_the_sidecars_folder(album, monkeypatch):
    # A sidecar kept in the photos' folder names them by file name, wherever the run starts.
    boxes = sidecar(album / "album" / "a" / "boxes.csv", "img.jpg", "../b/img.jpg")
    monkeypatch.chdir(album / "album" / "b")  # the working directory is not the sidecar's folder
    inputs = [(str(album / "album/a/img.jpg"), None), ("img.jpg", None)]  # the second is album/b/img.jpg
    m = match_boxes(boxes, inputs)
    # Level 1: 'img.jpg' names album/b/img.jpg from here and album/a/img.jpg from the sidecar's
    # folder: two inputs, so it is ambiguous; '../b/img.jpg' names album/b/img.jpg from the sidecar.
    with pytest.raises(InputError, match="entry 'img.jpg' matches 2 inputs"):
        m.for_input(str(album / "album/a/img.jpg"))
    with pytest.raises(InputError, match="entry 'img.jpg' matches 2 inputs"):
        m.for_input("img.jpg")
    m = match_boxes(sidecar(album / "album" / "a" / "boxes.csv", "img.jpg"), [(str(album / "album/a/img.jpg"), None)])
    assert boxes_of(m, str(album / "album/a/img.jpg")) == "img.jpg"


def test_the_same_file_comes_before_a_folder_or_an_end_of_path(album):
    # 'photo.jpg' names ./photo.jpg (level 1), so the photo of the same name in a folder is not a
    # candidate (it would be at level 3).
    (album / "album" / "a" / "photo.jpg").write_bytes(b"")
    inputs = [("photo.jpg", None), ("album/a/photo.jpg", "album")]
    m = match_boxes({"photo.jpg": [(1, 2, 30, 40)]}, inputs)
    assert boxes_of(m, "photo.jpg") == "photo.jpg" and boxes_of(m, "album/a/photo.jpg") is None


def test_an_input_named_by_two_entries_fails(album):
    m = match_boxes({"a/img.jpg": [], str(album / "album/a/img.jpg"): []}, [("album/a/img.jpg", "album")])
    with pytest.raises(InputError, match=r"^album/a/img\.jpg: boxes: entries .* all match this input: give its "
                                         r"boxes under one name$"):
        m.for_input("album/a/img.jpg")


def test_entries_that_match_no_input_are_one_warning(album, caplog):
    keys = [f"gone{i}.jpg" for i in range(7)] + ["photo.jpg"]
    with caplog.at_level(logging.WARNING, logger="engine"):
        m = match_boxes(sidecar(album / "bs.csv", *keys), ["photo.jpg"], option="--boxes")
    (said,) = [r.getMessage() for r in caplog.records]
    assert said.startswith(f"--boxes {album / 'bs.csv'}: 7 of its 8 entries match no input of this run: "
                           "'gone0.jpg', 'gone1.jpg', 'gone2.jpg', 'gone3.jpg', 'gone4.jpg' and 2 more (")
    assert m.unmatched == keys[:7] and boxes_of(m, "photo.jpg") == "photo.jpg"
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="engine"):
        match_boxes(sidecar(album / "bs.csv", "photo.jpg"), ["photo.jpg"])
    assert caplog.records == []


def test_without_the_whole_input_list_each_input_is_matched_alone(album):
    # A one-shot iterator in the API: levels 1 and 2 only, no guessing by file name.
    m = match_boxes({"a/img.jpg": [], "./photo.jpg": [], "img.jpg": []})
    assert not m.complete
    assert boxes_of(m, "photo.jpg") == "./photo.jpg"
    assert boxes_of(m, "album/a/img.jpg", "album") == "a/img.jpg"
    assert boxes_of(m, "album/b/img.jpg", "album/b") == "img.jpg"  # below its folder
    assert boxes_of(m, "album/b/img.jpg") is None  # a bare name alone does not decide


def test_no_box_messages_use_the_callers_words(album):
    cli = match_boxes(sidecar(album / "bs.csv", "photo.jpg"), ["photo.jpg"], option="--boxes")
    assert cli.missing("x.jpg") == (f"x.jpg: no face box for this input in --boxes {album / 'bs.csv'}, and no "
                                    "detector runs with --boxes: add its row, or run it without --boxes (faces "
                                    "detected) or with --cropped (the image is a face crop)")
    api = match_boxes(sidecar(album / "bs.csv", "photo.jpg"), ["photo.jpg"])
    assert api.missing("x.jpg") == (f"x.jpg: no face box given for this input in boxes file {album / 'bs.csv'} and "
                                    "detection is off (detector=None): pass boxes for it, or cropped=True")
    assert "--" not in match_boxes({}, []).missing("x.jpg")


def test_lookup_boxes_is_the_rule_for_one_image(album):
    boxes = {"sub/a.jpg": [FaceBox(0, 0, 1, 1)], "b.jpg": [FaceBox(0, 0, 2, 2)]}
    assert lookup_boxes(boxes, "sub/a.jpg") == [FaceBox(0, 0, 1, 1)]
    assert lookup_boxes(boxes, "./sub/a.jpg") == [FaceBox(0, 0, 1, 1)]
    assert lookup_boxes(boxes, "/data/photos/b.jpg") == [FaceBox(0, 0, 2, 2)]
    assert lookup_boxes(boxes, "/data/sub/a.jpg") == [FaceBox(0, 0, 1, 1)]  # the end of its path
    assert lookup_boxes(boxes, "c.jpg") == []
    with pytest.raises(InputError, match="expected a mapping"):
        match_boxes([FaceBox(0, 0, 1, 1)], [])
