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
    # An image missing from the tree: its two pairs are skipped, the rest is evaluated, exit 1.
    (root / p[3] / f"{p[3]}_0002.jpg").unlink()
    r = cli("evaluate", pairs, root, "--cropped", "-q")
    assert r.rc == 1
    assert f"{p[3]}_0002.jpg: no such image" in r.err
    assert "6 scored, 2 skipped" in r.out


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
