"""`verify` and `evaluate` on pairs whose answer is known.

The network is the synthetic one, so 'same person' is built as 'same pixels' (cosine 1)
and 'different' as different photos, which the synthetic network maps to different
vectors: a pipeline that mixed up images, descriptors or pairs would not get 100%.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

PHOTOS = ("astronaut.png", "chelsea.jpg", "camera.png", "coffee.jpg")
RULE_WORDS = {"center": "the one nearest the image centre", "best": "the most confident", "largest": "the largest"}


def test_same_and_different(cli, photos, tmp_path):
    twin = tmp_path / "twin.png"
    twin.write_bytes((photos / "astronaut.png").read_bytes())
    r = cli("verify", photos / "astronaut.png", twin, "--cropped")
    assert r.rc == 0, r.err
    decision, sim, _ = r.out.split("\t")
    assert decision == "same" and float(sim) == pytest.approx(1.0, abs=1e-6)
    assert "SYNTHETIC" in r.err  # a similarity from synthetic weights is labelled as such
    r = cli("verify", photos / "astronaut.png", photos / "chelsea.jpg", "--cropped", "--json", "-q")
    assert r.rc == 0 and r.err == ""  # --quiet: not even the synthetic warning
    res = json.loads(r.out)
    assert res["same"] is (res["similarity"] >= 0.5) and res["similarity"] < 0.99
    # The threshold decides: at a threshold just above the similarity the answer flips.
    r = cli("verify", photos / "astronaut.png", photos / "chelsea.jpg", "--cropped", "--json", "-q",
            "--threshold", str(res["similarity"] - 1e-6))
    assert json.loads(r.out)["same"] is True


def test_folders_are_averaged_into_templates(cli, photos, tmp_path):
    from engine.descriptors import cosine_similarity

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    for name in ("astronaut.png", "chelsea.jpg"):
        (a / name).write_bytes((photos / name).read_bytes())
    (b / "camera.png").write_bytes((photos / "camera.png").read_bytes())
    emb = tmp_path / "emb"
    assert cli("embed", a, b, "--cropped", "-o", emb, "-q").rc == 0
    d = np.load(emb / "descriptors.npy")  # rows: a/astronaut, a/chelsea, b/camera
    expected = float(cosine_similarity(d[:2].mean(axis=0), d[2]))
    r = cli("verify", a, b, "--cropped", "--json", "-q")
    assert r.rc == 0, r.err
    res = json.loads(r.out)
    assert res["images"] == [2, 1]
    assert res["similarity"] == pytest.approx(expected, abs=1e-5)


def test_verify_without_a_face_on_one_side(cli, photos, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"")
    r = cli("verify", photos / "astronaut.png", bad, "--cropped")
    assert r.rc == 1
    assert "bad.jpg: empty file (0 bytes)" in r.err
    assert f"engine3dmm: error: {bad}: no face descriptor could be computed" in r.err


def lfw_tree(photos, root):
    """LFW layout, one 'person' per photo with two identical images each."""
    people = [p.split(".")[0].capitalize() for p in PHOTOS]
    for person, photo in zip(people, PHOTOS):
        (root / person).mkdir(parents=True)
        for n in (1, 2):
            (root / person / f"{person}_{n:04d}.jpg").write_bytes((photos / photo).read_bytes())
    return people


def write_pairs(path, p):
    """2 folds x (2 same + 2 different pairs), in LFW's pairs.txt format."""
    path.write_text("2\t2\n"
                    f"{p[0]}\t1\t2\n{p[1]}\t1\t2\n{p[0]}\t1\t{p[1]}\t1\n{p[2]}\t1\t{p[3]}\t2\n"
                    f"{p[2]}\t1\t2\n{p[3]}\t1\t2\n{p[0]}\t2\t{p[2]}\t1\n{p[1]}\t2\t{p[3]}\t1\n")


def test_evaluate_on_known_pairs(cli, photos, tmp_path):
    root = tmp_path / "lfw"
    p = lfw_tree(photos, root)
    pairs = tmp_path / "pairs.txt"
    write_pairs(pairs, p)
    result = tmp_path / "result.json"
    r = cli("evaluate", pairs, root, "--cropped", "--json", result)
    assert r.rc == 0, r.err
    assert "accuracy 100.00%" in r.out and "ROC AUC  1.0000" in r.out
    res = json.loads(result.read_text())
    assert res["n_pairs"] == 8 and res["n_skipped"] == 0 and len(res["fold_accuracies"]) == 2
    r = cli("evaluate", pairs, root, "--cropped", "--part", "alpha", "-q")  # shape coefficients only
    assert r.rc == 0 and "accuracy 100.00%" in r.out, r.err


def test_pairs_without_a_descriptor_count_as_wrong_and_are_named(cli, photos, tmp_path):
    # The LFW protocol scores every pair: one image gone takes 2 of the 8 pairs (one per fold);
    # they count as wrong decisions (unless --missing skip), stay out of the AUC, and are named.
    root = tmp_path / "lfw"
    p = lfw_tree(photos, root)
    pairs = tmp_path / "pairs.txt"
    write_pairs(pairs, p)
    gone = f"{p[3]}/{p[3]}_0002.jpg"
    (root / gone).unlink()
    wrong, skip = tmp_path / "wrong.json", tmp_path / "skip.json"
    r = cli("evaluate", pairs, root, "--cropped", "--json", wrong)
    assert r.rc == 1 and f"{gone}: no such image" in r.err
    assert f"pairs    8 in the file: 6 scored, 2 without a descriptor (images: {gone})" in r.out
    assert "the 2 pair(s) without a descriptor count as wrong" in r.out
    r = cli("evaluate", pairs, root, "--cropped", "--json", skip, "--missing", "skip", "-q")
    assert r.rc == 1 and "over the 6 scored pairs only (--missing skip)" in r.out
    w, s = json.loads(wrong.read_text()), json.loads(skip.read_text())
    for res, mode in ((w, "wrong"), (s, "skip")):
        assert (res["n_pairs"], res["n_scored"], res["n_missing"], res["missing"]) == (8, 6, 2, mode)
        assert res["missing_images"] == [gone]
    assert w["n_skipped"] == 0 and s["n_skipped"] == 2
    # Same thresholds and AUC; each fold's accuracy is the same correct decisions over 4 pairs, not 3.
    assert w["thresholds"] == s["thresholds"] and w["auc"] == s["auc"]
    assert w["fold_accuracies"] == pytest.approx([a * 3 / 4 for a in s["fold_accuracies"]])
    assert w["accuracy"] < 1 and w["accuracy"] == pytest.approx(s["accuracy"] * 3 / 4)


def lfw_250(photos, root, people):
    """LFW-style 250x250 images of {person: "face" (the astronaut centred), "mirror" (the same,
    flipped: another person for the synthetic network) or a photo file name}."""
    from PIL import Image

    from tests.cli.helpers import ASTRONAUT_BOX

    x0, y0, x1, y1 = ASTRONAUT_BOX
    astronaut = Image.open(photos / "astronaut.png").convert("RGB")
    cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2 + 4, (x1 - x0) * 2.2 / 2  # LFW: detection box x 2.2
    face = astronaut.crop((int(cx - half), int(cy - half), int(cx + half), int(cy + half))).resize((250, 250))
    out = {}
    for person, kind in people.items():
        (root / person).mkdir(parents=True)
        for n in (1, 2):
            img = face if kind == "face" else face.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if kind == "mirror" \
                else Image.open(photos / kind).convert("RGB").resize((250, 250))
            path = root / person / f"{person}_{n:04d}.jpg"
            img.save(path, quality=95)
            out[(person, n)] = path
    return out


def test_the_fallback_box_for_images_without_a_detected_face(cli, photos, tmp_path):
    pytest.importorskip("dlib")
    root = tmp_path / "lfw"
    files = lfw_250(photos, root, {"Astro": "face", "Mirror": "mirror", "Coffee": "coffee.jpg"})
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("1\t3\nAstro\t1\t2\nMirror\t1\t2\nCoffee\t1\t2\n"
                     "Astro\t1\tMirror\t1\nAstro\t2\tCoffee\t1\nMirror\t2\tCoffee\t2\n")
    # Coffee has no face: without a fallback its pairs have no descriptor and count as wrong.
    r = cli("evaluate", pairs, root, "--json", tmp_path / "a.json")
    res = json.loads((tmp_path / "a.json").read_text())
    assert r.rc == 1 and "no face found" in r.err
    assert (res["n_missing"], res["n_fallback"]) == (3, 0)
    assert res["missing_images"] == ["Coffee/Coffee_0001.jpg", "Coffee/Coffee_0002.jpg"]
    assert res["accuracy"] <= 0.5  # 3 of the 6 pairs are wrong whatever the threshold
    # --fallback-box center: LFW's face region stands in for the detection, and is counted;
    # the same with the descriptors kept in a folder (a resumable evaluation).
    for extra in ([], ["--descriptors", tmp_path / "store"]):
        r = cli("evaluate", pairs, root, "--fallback-box", "center", "--json", tmp_path / "b.json", *extra)
        res = json.loads((tmp_path / "b.json").read_text())
        assert r.rc == 0, r.err
        assert (res["n_pairs"], res["n_missing"], res["n_fallback"]) == (6, 0, 2)
        assert res["fallback_images"] == [str(files[("Coffee", 1)]), str(files[("Coffee", 2)])]
        assert "2 image(s) had no face found and are described from LFW's centre face region" in r.err


def test_image_descriptors_choose_and_fall_back_as_documented(photos, tmp_path):
    # The library behind `evaluate`: the fallback descriptor is the network's on LFW's face
    # region; the centre rule takes the face nearest the centre.
    pytest.importorskip("dlib")
    from engine.descriptors import LFW_FACE_REGION, center_box, image_descriptors
    from engine.pipeline import Reconstructor

    root = tmp_path / "lfw"
    files = lfw_250(photos, root, {"Astro": "face", "Coffee": "coffee.jpg"})
    astro, coffee = str(files[("Astro", 1)]), str(files[("Coffee", 1)])
    assert center_box(250, 250).as_tuple() == LFW_FACE_REGION
    with Reconstructor(runner="onnxruntime", workers=1) as rec:
        got = image_descriptors(rec, [astro, coffee], fallback_box="center")
        assert got.fallback == [coffee] and got.failures == {} and set(got.vectors) == {astro, coffee}
        ref = list(rec.embed([coffee], boxes={coffee: [LFW_FACE_REGION]}))[0]
        assert np.array_equal(got.vectors[coffee], ref.coeffs)
        plain = image_descriptors(rec, [astro, coffee])
        twice = image_descriptors(rec, [astro, astro])  # one image given twice is one image, one face
        assert twice.several == {} and list(twice.vectors) == [astro]
        assert np.array_equal(twice.vectors[astro], plain.vectors[astro])
        assert plain.fallback == [] and list(plain.failures) == [coffee] and "no face found" in plain.failures[coffee]
        # Two given faces, the confident one off-centre: "center" and "best" disagree.
        boxes = {astro: [(10, 10, 60, 60, 2.0), (83, 92, 166, 175, 1.0)]}
        centre = image_descriptors(rec, [astro], boxes=boxes, face="center")
        best = image_descriptors(rec, [astro], boxes=boxes, face="best")
        assert centre.several == best.several == {astro: 2}
        for got, box in ((centre, boxes[astro][1]), (best, boxes[astro][0])):
            ref = list(rec.embed([astro], boxes={astro: [box[:4]]}))[0]
            assert np.array_equal(got.vectors[astro], ref.coeffs)


def test_the_face_rule_picks_the_face_and_counts_the_images(cli, photos, tmp_path):
    # One image with three boxes, whose score order, distance to the centre and size disagree;
    # its twin holds only the face the rule should pick: same pixels, same box -> similarity 1.
    from tests.cli.helpers import ASTRONAUT_BOX

    img, twin = tmp_path / "astronaut.png", tmp_path / "twin.png"
    for f in (img, twin):
        f.write_bytes((photos / "astronaut.png").read_bytes())  # 512 x 512: centre (256, 256)
    faces = [(*ASTRONAUT_BOX, 2.0), (210, 210, 310, 310, 1.0), (0, 290, 220, 510, 0.5)]
    for rule, expected in (("best", 0), ("center", 1), ("largest", 2)):
        boxes = tmp_path / f"{rule}.csv"
        boxes.write_text("image,x0,y0,x1,y1,score\n" + "".join(f"{img},{','.join(map(str, b))}\n" for b in faces)
                         + f"{twin},{','.join(map(str, faces[expected]))}\n")
        r = cli("verify", img, twin, "--boxes", boxes, "--face", rule, "--json")
        assert r.rc == 0, r.err
        res = json.loads(r.out)
        assert res["similarity"] == pytest.approx(1.0, abs=1e-6), rule
        assert res["several_faces"] == [str(img)]
        # The note names the image, how many faces it held and which one describes it.
        assert f"note: {img}: 3 faces found; described by face {expected} at ({faces[expected][0]}, " \
               f"{faces[expected][1]})-({faces[expected][2]}, {faces[expected][3]}), score " \
               f"{faces[expected][4]:.2f}, {RULE_WORDS[rule]} (--face {rule})" in r.err
        assert res["face_choices"] == [{"image": str(img), "faces": 3, "used": expected,
                                        "box": [float(v) for v in faces[expected][:4]],
                                        "score": faces[expected][4], "video": False}]
        wrong = (expected + 1) % 3  # and another face of the twin is not the one chosen
        boxes.write_text("image,x0,y0,x1,y1,score\n" + "".join(f"{img},{','.join(map(str, b))}\n" for b in faces)
                         + f"{twin},{','.join(map(str, faces[wrong]))}\n")
        r = cli("verify", img, twin, "--boxes", boxes, "--face", rule, "--json", "-q")
        assert json.loads(r.out)["similarity"] < 0.999, rule


def test_evaluate_keeps_descriptors_for_the_next_run(cli, photos, tmp_path):
    root = tmp_path / "lfw"
    p = lfw_tree(photos, root)
    pairs = tmp_path / "pairs.txt"
    write_pairs(pairs, p)
    store = tmp_path / "desc"
    r = cli("evaluate", pairs, root, "--cropped", "--descriptors", store, "--json", tmp_path / "a.json")
    assert r.rc == 0, r.err
    assert np.load(store / "descriptors.npy").shape == (8, 198)  # 8 images, all coefficients kept
    r = cli("evaluate", pairs, root, "--cropped", "--descriptors", store, "--part", "beta", "--json", tmp_path / "b.json")
    assert r.rc == 0, r.err
    assert "8 input(s) already done" in r.err  # nothing was run again
    assert json.loads((tmp_path / "a.json").read_text())["accuracy"] == 1.0
    assert json.loads((tmp_path / "b.json").read_text())["part"] == "beta"


def test_evaluate_bad_pairs_file(cli, photos, tmp_path):
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("1\t1\nAaron\t1\nBob\t1\tCarl\t1\n")
    r = cli("evaluate", pairs, tmp_path, "--cropped")
    assert r.rc == 1
    assert f"{pairs} line 2: expected 'name n1 n2'" in r.err and "Traceback" not in r.err


def strict_json(text: str):
    """json.loads that refuses NaN and Infinity (Python's json accepts them; JSON does not)."""
    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_one_file_given_twice_is_one_image_with_its_one_face(cli, photos, tmp_path):
    # The tester's `verify photo.jpg photo.jpg` said "1 image(s) held several faces": the file was
    # embedded twice and both results were grouped under its one name. The detector's default rule
    # keeps the astronaut's face (score 1.16) and drops the suit (0.12, under 0.5): one face.
    pytest.importorskip("dlib")
    photo, copy = photos / "astronaut.png", tmp_path / "copy.png"
    copy.write_bytes(photo.read_bytes())
    for b in (photo, copy):  # the file itself, and a copy (which never said it)
        r = cli("verify", photo, b, "--json")
        assert r.rc == 0, r.err
        res = strict_json(r.out)
        assert res["similarity"] == pytest.approx(1.0, abs=1e-6) and res["same"] is True
        assert res["several_faces"] == [] and res["face_choices"] == [] and "several" not in r.err
        assert "faces found" not in r.err
    # The same file under two spellings of its path is still one image, described once.
    r = cli("verify", photo, f"{photos}/./astronaut.png", "--json", "-q")
    assert strict_json(r.out)["several_faces"] == []


def test_an_image_with_two_faces_is_named_with_the_face_used(cli, photos, tmp_path):
    # A real photo of two faces: the astronaut beside her mirror image (dlib scores both above 0.5).
    pytest.importorskip("dlib")
    from PIL import Image

    a = np.asarray(Image.open(photos / "astronaut.png").convert("RGB"))
    two = tmp_path / "two.png"
    Image.fromarray(np.concatenate([a, a[:, ::-1]], axis=1)).save(two)
    r = cli("verify", two, photos / "astronaut.png", "--json")
    assert r.rc == 0, r.err
    res = strict_json(r.out)
    [choice] = res["face_choices"]
    assert (choice["image"], choice["faces"], choice["used"]) == (str(two), 2, 0)
    assert choice["score"] > 0.5 and choice["box"][0] > 512  # the most confident: the mirrored face
    assert f"note: {two}: 2 faces found; described by face 0 at (" in r.err
    assert "the most confident (--face best)" in r.err


@pytest.mark.parametrize("value, ok", [("2", False), ("1.0001", False), ("-1.5", False), ("nan", False),
                                       ("inf", False), ("1", True), ("-1", True), ("0.7", True)])
def test_the_threshold_is_a_cosine_similarity(cli, photos, value, ok):
    r = cli("verify", photos / "astronaut.png", photos / "astronaut.png", "--cropped", "--json", "-q",
            "--threshold", value)
    if ok:
        assert r.rc == 0 and strict_json(r.out)["threshold"] == float(value)
    else:
        assert r.rc == 2 and "--threshold" in r.err and "[-1, 1]" in r.err


def test_json_output_on_failure_is_one_json_object(cli, photos, tmp_path):
    # With --json, stdout always holds one JSON object, the error in it when the run fails.
    missing = tmp_path / "b.png"
    r = cli("verify", photos / "astronaut.png", missing, "--cropped", "--json")
    assert r.rc == 1
    res = strict_json(r.out)
    assert res["similarity"] is None and res["same"] is None
    assert res["error"] == f"{missing}: no face descriptor could be computed (see the failures above)"
    assert [f["source"] for f in res["failures"]] == [str(missing)]
    assert f"engine3dmm: error: {missing}: no face descriptor" in r.err  # stderr says it too
    # An error of the engine's (here: a model card that is not one) also comes back as JSON.
    r = cli("verify", photos / "astronaut.png", photos / "astronaut.png", "--cropped", "--json",
            "--network-dir", tmp_path / "nowhere")
    assert r.rc == 1 and "nowhere" in strict_json(r.out)["error"]
    ok = strict_json(cli("verify", photos / "astronaut.png", photos / "astronaut.png", "--cropped", "--json",
                         "-q").out)
    assert ok["error"] is None and ok["same"] is True


@pytest.mark.parametrize("command, default", [("verify", "best"), ("evaluate", "center")])
def test_face_help_states_its_default_and_lists_the_choices_as_the_usage(cli, command, default):
    import re

    r = cli(command, "--help")
    assert r.rc == 0
    text = " ".join(r.out.split())
    usage = re.search(r"\[--face \{([a-z,]+)\}\]", text).group(1).split(",")
    help_ = text[text.index("--face {center,best,largest} which face"):]
    help_ = help_[:help_.index(" --", 5)]
    assert [w for w in re.findall(r"\b(center|best|largest)\b", help_)][:3] == usage
    assert f"default: {default}" in help_


def no_same_pair_tree(photos, root):
    """2 folds x (2 same + 2 different pairs) where every same pair names an image that is
    absent (X_0002.jpg): only different pairs can be scored."""
    people = [p.split(".")[0].capitalize() for p in PHOTOS]
    for person, photo in zip(people, PHOTOS):
        (root / person).mkdir(parents=True)
        (root / person / f"{person}_0001.jpg").write_bytes((photos / photo).read_bytes())
    a, b, c, d = people
    return people, ("2\t2\n"
                    f"{a}\t1\t2\n{b}\t1\t2\n{a}\t1\t{b}\t1\n{c}\t1\t{d}\t1\n"
                    f"{c}\t1\t2\n{d}\t1\t2\n{a}\t1\t{c}\t1\n{b}\t1\t{d}\t1\n")


def test_evaluate_when_every_same_pair_is_missing(cli, photos, tmp_path):
    # It used to stop with "error: same: ROC AUC needs both...": now the accuracy is measured
    # (the 4 missing pairs are wrong, the 4 different pairs right) and the AUC is undefined.
    root = tmp_path / "lfw"
    _, text = no_same_pair_tree(photos, root)
    pairs = tmp_path / "pairs.txt"
    pairs.write_text(text)
    result = tmp_path / "r.json"
    r = cli("evaluate", pairs, root, "--cropped", "--json", result)
    assert r.rc == 1  # the missing images are failures
    assert "accuracy 50.00%" in r.out and "ROC AUC  undefined (no same pairs scored)" in r.out
    assert "error" not in r.err
    res = strict_json(result.read_text())
    assert (res["auc"], res["auc_undefined"], res["accuracy"]) == (None, "no same pairs scored", 0.5)
    # The recommended threshold is a number verify takes (it was Infinity, and `verify
    # --threshold inf` was refused): calling the different pairs different, as it was chosen.
    t = res["threshold"]
    assert -1 <= t <= 1 and f"threshold {t:.6f}" in r.out
    a, b = root / "Astronaut" / "Astronaut_0001.jpg", root / "Chelsea" / "Chelsea_0001.jpg"
    v = cli("verify", a, b, "--cropped", "--threshold", str(t), "--json", "-q")
    assert v.rc == 0 and strict_json(v.out)["same"] is False


def test_evaluate_when_no_pair_is_scored(cli, photos, tmp_path):
    root = tmp_path / "lfw"
    root.mkdir()
    pairs = tmp_path / "pairs.txt"
    write_pairs(pairs, [p.split(".")[0].capitalize() for p in PHOTOS])
    r = cli("evaluate", pairs, root, "--cropped", "--json", tmp_path / "w.json")
    assert r.rc == 1 and "Traceback" not in r.err and "error:" not in r.err
    assert "accuracy 0.00%" in r.out and "ROC AUC  undefined (no pairs scored)" in r.out
    assert "threshold undefined (no pairs scored)" in r.out
    w = strict_json((tmp_path / "w.json").read_text())
    assert (w["accuracy"], w["auc"], w["threshold"], w["thresholds"]) == (0.0, None, None, [None, None])
    r = cli("evaluate", pairs, root, "--cropped", "--missing", "skip", "--json", tmp_path / "s.json")
    assert r.rc == 1 and "accuracy undefined (no pairs scored" in r.out
    s = strict_json((tmp_path / "s.json").read_text())
    assert s["accuracy"] is None and "no pairs scored" in s["accuracy_undefined"]


def test_a_single_fold_says_the_threshold_was_chosen_on_the_test_pairs(cli, photos, tmp_path):
    root = tmp_path / "lfw"
    p = lfw_tree(photos, root)
    pairs = tmp_path / "pairs.txt"
    pairs.write_text(f"2\n{p[0]}\t1\t2\n{p[1]}\t1\t2\n{p[0]}\t1\t{p[1]}\t1\n{p[2]}\t1\t{p[3]}\t2\n")
    r = cli("evaluate", pairs, root, "--cropped", "--json", tmp_path / "r.json")
    assert r.rc == 0, r.err
    assert "note     the pairs file has one fold, so the threshold was chosen on the same pairs" in r.out
    res = strict_json((tmp_path / "r.json").read_text())
    assert res["threshold_fit_on_test_folds"] == [0] and "optimistic" in res["threshold_note"]
    write_pairs(pairs, p)  # two folds: each threshold from the other fold, nothing to say
    r = cli("evaluate", pairs, root, "--cropped", "--json", tmp_path / "r.json")
    assert "note" not in r.out and strict_json((tmp_path / "r.json").read_text())["threshold_note"] is None


def test_evaluate_descriptors_folder_refuses_other_face_settings(cli, photos, tmp_path):
    # The folder keeps descriptors made one way: evaluating with faces found another way must
    # not mix them in (nor reuse them as if they were the same).
    root = tmp_path / "lfw"
    p = lfw_tree(photos, root)
    pairs = tmp_path / "pairs.txt"
    write_pairs(pairs, p)
    store = tmp_path / "desc"
    assert cli("evaluate", pairs, root, "--cropped", "--descriptors", store, "-q").rc == 0
    r = cli("evaluate", pairs, root, "--det-upsample", "0", "--descriptors", store)
    assert r.rc == 1 and "(--cropped there, the detector in this run)" in r.err
    assert "use another --descriptors folder" in r.err
