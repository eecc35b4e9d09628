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
        assert res["several_faces"] == [str(img)] and "1 image(s) held several faces" in r.err
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
