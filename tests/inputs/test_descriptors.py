"""engine.descriptors: similarity, pooling, the LFW pairs format and verification
metrics, on synthetic data whose answer is known."""
from __future__ import annotations

import math

import numpy as np
import pytest

from engine.descriptors import (
    PairsList,
    average_descriptors,
    best_threshold,
    cosine_similarity,
    descriptor,
    evaluate_pairs,
    evaluate_verification,
    lfw_image_name,
    pair_scores,
    parse_pairs,
    pool_by_label,
    roc_auc,
    roc_curve,
    similarity_matrix,
)
from engine.errors import InputError


def test_descriptor_parts():
    c = np.arange(2 * 198, dtype=np.float64).reshape(2, 198)
    np.testing.assert_array_equal(descriptor(c), c.astype(np.float32))
    np.testing.assert_array_equal(descriptor(c, "alpha"), c[:, :99])
    np.testing.assert_array_equal(descriptor(c[0], "beta"), c[0, 99:])
    assert descriptor(c).dtype == np.float32
    with pytest.raises(InputError, match=r"coeffs: expected numbers \[\.\.\., 198\], found float64\[2, 99\]"):
        descriptor(c[:, :99])
    with pytest.raises(InputError, match="part"):
        descriptor(c, "gamma")


def test_cosine_similarity_known_values():
    assert float(cosine_similarity([1, 0], [0, 1])) == pytest.approx(0.0)
    assert float(cosine_similarity([1, 1], [2, 2])) == pytest.approx(1.0)
    assert float(cosine_similarity([1, 0], [-3, 0])) == pytest.approx(-1.0)
    assert float(cosine_similarity([1, 0], [1, 1])) == pytest.approx(1 / math.sqrt(2))
    got = cosine_similarity(np.array([[1, 0], [0, 2]]), np.array([1, 1]))  # broadcasting
    np.testing.assert_allclose(got, [1 / math.sqrt(2)] * 2)
    with pytest.raises(InputError, match="all-zero"):
        cosine_similarity([0, 0], [1, 0])
    with pytest.raises(InputError, match="length 2"):
        cosine_similarity([1, 0], [1, 0, 0])
    with pytest.raises(InputError, match="finite"):
        cosine_similarity([np.nan, 0], [1, 0])


def test_similarity_matrix_matches_pairwise():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 198)), rng.normal(size=(3, 198))
    m = similarity_matrix(a, b)
    assert m.shape == (5, 3)
    for i in range(5):
        for j in range(3):
            assert m[i, j] == pytest.approx(a[i] @ b[j] / np.linalg.norm(a[i]) / np.linalg.norm(b[j]))
    s = similarity_matrix(a)
    np.testing.assert_allclose(np.diag(s), 1.0)
    np.testing.assert_allclose(s, s.T)


def test_pooling():
    d = np.array([[1.0, 2.0], [3.0, 6.0], [10.0, 0.0]])
    np.testing.assert_allclose(average_descriptors(d[:2]), [2.0, 4.0])
    np.testing.assert_allclose(average_descriptors(d[:2], weights=[3, 1]), [1.5, 3.0])
    with pytest.raises(InputError, match="positive weight"):
        average_descriptors(d, weights=[0, 0, 0])
    with pytest.raises(InputError, match="weights"):
        average_descriptors(d, weights=[1, 1])
    labels, pooled = pool_by_label(d, ["bob", "al", "bob"])
    assert labels == ["al", "bob"]
    np.testing.assert_allclose(pooled, [[3.0, 6.0], [5.5, 1.0]])
    with pytest.raises(InputError, match="one row per label"):
        pool_by_label(d, ["a", "b"])


def test_best_threshold_by_hand():
    # sorted: 0.1 diff, 0.35 same, 0.4 diff, 0.8 same. Cuts at 0.225 and 0.6 both get 3/4
    # right; the rule takes the median of the best cuts -> 0.6.
    thr, acc = best_threshold([0.1, 0.4, 0.35, 0.8], [False, False, True, True])
    assert (thr, acc) == (pytest.approx(0.6), 0.75)
    thr, acc = best_threshold([0.2, 0.9], [False, True])
    assert thr == pytest.approx(0.55) and acc == 1.0
    # all scores equal: a cut inside the tie is impossible; only "all same" (midway between -1,
    # cosine's lowest value, and the lowest score) or "all different" (midway to 1)
    thr, acc = best_threshold([0.5, 0.5, 0.5], [True, True, False])
    assert thr == pytest.approx(-0.25) and acc == pytest.approx(2 / 3)
    thr, acc = best_threshold([0.5, 0.5, 0.5], [False, False, True])
    assert thr == pytest.approx(0.75) and acc == pytest.approx(2 / 3)
    # only different pairs: "all different" is right, just above the top score (was +inf)
    assert best_threshold([0.2, 0.6], [False, False]) == (pytest.approx(0.8), 1.0)
    # a different pair scoring 1 cannot be called different by any threshold in [-1, 1]
    assert best_threshold([1.0, 1.0], [False, False]) == (pytest.approx(0.0), 0.0)
    # unbounded scores: the edges are the lowest score and the float just above the top one
    thr, acc = best_threshold([3.0, 5.0], [False, False], score_range=None)
    assert thr == math.nextafter(5.0, math.inf) and acc == 1.0
    assert best_threshold([3.0, 5.0], [True, True], score_range=None) == (3.0, 1.0)
    with pytest.raises(InputError, match="score_range"):
        best_threshold([0.1], [True], score_range=(1, -1))


@pytest.mark.parametrize("seed", range(8))
def test_best_threshold_is_finite_in_range_and_as_accurate_as_brute_force(seed):
    # Against a plain reference: every threshold that decides these scores differently (each
    # distinct score, and above the top one while that is below 1), tried one by one.
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40))
    s = np.round(rng.uniform(-1, 1, n), 1)  # many ties
    s[rng.random(n) < 0.2] = 1.0  # and cosine's top value
    y = rng.random(n) < [0.0, 0.5, 1.0, 0.3][seed % 4]  # one class only in some
    thr, acc = best_threshold(s, y)
    assert math.isfinite(thr) and -1.0 <= thr <= 1.0
    assert acc == np.mean((s >= thr) == y)  # the accuracy it reports is the threshold's own
    candidates = list(np.unique(s)) + ([(s.max() + 1) / 2] if s.max() < 1 else [])
    assert acc == max(np.mean((s >= t) == y) for t in candidates)


def _auc_bruteforce(s, y) -> float:
    pos, neg = s[y], s[~y]
    return float(np.mean((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])))


def test_roc_auc_against_bruteforce_and_curve():
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [False, False, True, True]) == pytest.approx(0.75)
    assert roc_auc([1, 2, 3, 4], [0, 0, 1, 1]) == 1.0
    assert roc_auc([1, 2, 3, 4], [1, 1, 0, 0]) == 0.0
    assert roc_auc([5, 5, 5, 5], [1, 0, 1, 0]) == 0.5
    rng = np.random.default_rng(1)
    s = rng.integers(0, 20, 400).astype(float)  # many ties on purpose
    y = rng.random(400) < 0.4
    y[s > 15] = True
    auc = roc_auc(s, y)
    assert auc == pytest.approx(_auc_bruteforce(s, y), abs=1e-12)
    fpr, tpr, thr = roc_curve(s, y)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0) and thr[0] == math.inf
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2) == pytest.approx(auc)  # trapezoid area
    with pytest.raises(InputError, match="both same and different"):
        roc_auc([1, 2], [True, True])


def _cluster_pairs(noise: float, n_subjects=60, n_pairs=600, seed=0):
    """Descriptors of subjects = centre + noise; half the pairs same subject, half not."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_subjects, 198))
    a, b, same = [], [], []
    for k in range(n_pairs):
        i = rng.integers(n_subjects)
        j = i if k % 2 == 0 else (i + 1 + rng.integers(n_subjects - 1)) % n_subjects
        a.append(centres[i] + noise * rng.normal(size=198))
        b.append(centres[j] + noise * rng.normal(size=198))
        same.append(i == j)
    return cosine_similarity(np.array(a), np.array(b)), np.array(same)


def test_separable_clusters_give_perfect_scores():
    s, y = _cluster_pairs(noise=0.1)
    r = evaluate_verification(s, y)
    assert r.accuracy == 1.0 and r.auc == 1.0
    assert len(r.fold_accuracies) == 10 and r.accuracy_std == 0.0 and r.n_pairs == 600


def test_random_scores_give_chance():
    rng = np.random.default_rng(3)
    s, y = rng.random(6000), rng.random(6000) < 0.5
    r = evaluate_verification(s, y)
    assert abs(r.accuracy - 0.5) < 0.03 and abs(r.auc - 0.5) < 0.03


def test_gaussian_scores_match_theory():
    # same ~ N(+1, 1), different ~ N(-1, 1): best accuracy Phi(1) = 0.8413,
    # AUC = P(X - Y > 0) with X - Y ~ N(2, 2) = Phi(sqrt(2)) = 0.9214.
    rng = np.random.default_rng(4)
    y = np.arange(20000) % 2 == 0
    s = np.where(y, 1.0, -1.0) + rng.normal(size=y.size)
    r = evaluate_verification(s, y)
    phi = lambda x: 0.5 * (1 + math.erf(x / math.sqrt(2)))  # noqa: E731
    assert r.accuracy == pytest.approx(phi(1.0), abs=0.01)
    assert r.auc == pytest.approx(phi(math.sqrt(2)), abs=0.01)
    assert all(abs(t) < 0.15 for t in r.thresholds)  # the optimum is 0
    assert r.standard_error == pytest.approx(r.accuracy_std / math.sqrt(10))


def test_thresholds_come_from_the_other_folds():
    # fold 0 alone would want a threshold near 10, the other folds near 0: the fold's own
    # data must not leak into its threshold, so fold 0 scores badly.
    s = np.array([9.0, 11.0] + [-1.0, 1.0] * 9)
    y = np.array([False, True] * 10)
    r = evaluate_verification(s, y, folds=np.repeat(np.arange(10), 2))
    assert r.fold_accuracies[0] == 0.5 and all(a == 1.0 for a in r.fold_accuracies[1:])
    assert r.thresholds[0] == pytest.approx(0.0)


PAIRS = """2\t2
Ann\t1\t2
Bob\t1\t3
Ann\t1\tBob\t2
Cid\t1\tAnn\t2

Dee 2 4
Cid 1 2
Dee 1 Cid 2
Bob 3 Dee 4
"""


def test_parse_pairs(tmp_path):
    p = tmp_path / "pairs.txt"
    p.write_text(PAIRS)
    pl = parse_pairs(p)
    assert (pl.n_folds, pl.per_fold, len(pl)) == (2, 2, 8)
    assert pl.same.tolist() == [True, True, False, False] * 2
    assert pl.folds.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    first, diff = pl.pairs[0], pl.pairs[2]
    assert (first.name1, first.n1, first.name2, first.n2, first.line) == ("Ann", 1, "Ann", 2, 2)
    assert (diff.name1, diff.n1, diff.name2, diff.n2) == ("Ann", 1, "Bob", 2)
    assert pl.pairs[4].line == 7  # blank line skipped, numbering kept
    assert lfw_image_name("Ann", 1) == "Ann/Ann_0001.jpg"
    one = tmp_path / "dev.txt"
    one.write_text("1\nAnn 1 2\nAnn 1 Bob 1\n")
    assert parse_pairs(one).n_folds == 1


@pytest.mark.parametrize(
    "text,msg",
    [
        ("", "empty pairs file"),
        ("10 300 7\n", "line 1: header"),
        ("x 3\n", "line 1, header folds: expected a positive integer, found 'x'"),
        ("1 1\nAnn 1 2\nAnn 1 Bob\n", "line 3, field n2: expected a positive integer, found 'Bob'"),
        ("1 1\nAnn 1\nAnn 1 Bob 2\n", "line 2: expected 'name n1 n2'.*found 2 fields"),
        ("1 1\nAnn 1 2\nAnn 1 Bob 2 extra\n", "line 3: expected .*found 5 fields"),
        ("1 1\nAnn one 2\nAnn 1 Bob 2\n", "line 2, field n1: expected a positive integer, found 'one'"),
        ("1 1\nAnn 1 0\nAnn 1 Bob 2\n", "line 2, field n2"),
        ("1 2\nAnn 1 2\nAnn 1 Bob 2\n", "promises 1 folds x 4 pairs = 4 pairs, found 2"),
    ],
)
def test_parse_pairs_malformed(tmp_path, text, msg):
    p = tmp_path / "pairs.txt"
    p.write_text(text)
    with pytest.raises(InputError, match=msg) as e:
        parse_pairs(p)
    assert "pairs.txt" in str(e.value)


def test_evaluate_pairs_end_to_end(tmp_path):
    # Ten folds of LFW-like pairs over 30 synthetic people; every image's descriptor is
    # its person's centre plus small noise, so the answer is known: accuracy 1.
    rng = np.random.default_rng(5)
    people = [f"Person_{k:02d}" for k in range(30)]
    centres = {p: rng.normal(size=198) for p in people}
    lines, descs = ["10\t3"], {}
    for f in range(10):
        for _ in range(3):
            p = people[rng.integers(30)]
            lines.append(f"{p}\t1\t2")
        for _ in range(3):
            i, j = rng.choice(30, 2, replace=False)
            lines.append(f"{people[i]}\t1\t{people[j]}\t3")
    for p in people:
        for n in (1, 2, 3):
            descs[lfw_image_name(p, n)] = centres[p] + 0.05 * rng.normal(size=198)
    path = tmp_path / "pairs.txt"
    path.write_text("\n".join(lines) + "\n")
    r = evaluate_pairs(path, descs)
    assert r.accuracy == 1.0 and r.auc == 1.0 and r.n_pairs == 60 and r.n_skipped == 0
    assert evaluate_pairs(parse_pairs(path), descs, part="alpha").accuracy == 1.0
    gone = lines[1].split("\t")[0]
    del descs[lfw_image_name(gone, 2)]
    with pytest.raises(InputError, match=rf"missing \(e\.g\. {gone}/{gone}_0002\.jpg"):
        evaluate_pairs(path, descs)
    r2 = evaluate_pairs(path, descs, missing="skip")
    assert r2.n_skipped >= 1 and r2.n_pairs == 60 and r2.n_scored == 60 - r2.n_skipped == 60 - r2.n_missing
    assert r2.accuracy == 1.0 and r2.missing_images == (f"{gone}/{gone}_0002.jpg",)
    scores, kept = pair_scores(parse_pairs(path), descs, missing="skip")
    assert scores.shape == kept.shape and 0 not in kept.tolist()
    assert isinstance(parse_pairs(path), PairsList)


def lfw_like(tmp_path, rng, n_folds=4, per_fold=5):
    """A pairs file over people whose descriptors separate perfectly (every scored pair is right)."""
    people = [f"P{k:02d}" for k in range(20)]
    centres = {p: rng.normal(size=198) for p in people}
    lines = [f"{n_folds}\t{per_fold}"]
    for _ in range(n_folds):
        lines += [f"{people[rng.integers(20)]}\t1\t2" for _ in range(per_fold)]
        for _ in range(per_fold):
            i, j = rng.choice(20, 2, replace=False)
            lines.append(f"{people[i]}\t1\t{people[j]}\t2")
    path = tmp_path / "pairs.txt"
    path.write_text("\n".join(lines) + "\n")
    descs = {lfw_image_name(p, n): centres[p] + 0.05 * rng.normal(size=198) for p in people for n in (1, 2)}
    return path, descs


def test_pairs_without_a_descriptor_count_as_wrong_decisions(tmp_path):
    # The protocol scores every pair: a pair with a missing image is a wrong decision of its fold,
    # outside the AUC, and named. Every scored pair is right, so each fold's accuracy is exactly
    # (its pairs - its missing pairs) / its pairs.
    path, descs = lfw_like(tmp_path, np.random.default_rng(7))
    plist = parse_pairs(path)
    for key in [lfw_image_name(plist.pairs[0].name1, 1), lfw_image_name(plist.pairs[13].name2, 2)]:
        descs.pop(key, None)
    missing = [any(lfw_image_name(n, k) not in descs for n, k in ((p.name1, p.n1), (p.name2, p.n2)))
               for p in plist.pairs]
    r = evaluate_pairs(path, descs, missing="wrong")
    per_fold = [1 - sum(m for m, p in zip(missing, plist.pairs) if p.fold == f) / 10 for f in range(4)]
    assert r.fold_accuracies == pytest.approx(per_fold) and r.accuracy == pytest.approx(np.mean(per_fold))
    assert r.accuracy < 1 and r.auc == 1.0
    assert (r.n_pairs, r.n_missing, r.n_scored, r.n_skipped, r.missing) == (40, sum(missing), 40 - sum(missing), 0,
                                                                             "wrong")
    assert len(r.missing_images) == 2
    s = evaluate_pairs(path, descs, missing="skip")
    assert s.accuracy == 1.0 and s.n_skipped == sum(missing) and s.missing == "skip" and s.n_pairs == 40
    # A fold whose every pair lost an image scores 0 in "wrong"; its threshold still comes from
    # the other folds.
    for p in plist.pairs[30:40]:
        descs.pop(lfw_image_name(p.name1, p.n1), None)
    r = evaluate_pairs(path, descs, missing="wrong")
    assert r.fold_accuracies[3] == 0.0 and len(r.thresholds) == 4
    with pytest.raises(InputError, match="missing"):
        evaluate_pairs(path, descs, missing="drop")


def test_fold_sizes_divide_by_every_pair_of_the_fold():
    s = np.array([0.9, 0.8, 0.1, 0.2, 0.9, 0.1])
    y = np.array([True, True, False, False, True, False])
    f = np.array([0, 0, 0, 0, 1, 1])
    plain = evaluate_verification(s, y, folds=f)
    sized = evaluate_verification(s, y, folds=f, fold_sizes={0: 4, 1: 4, 2: 3})
    assert plain.fold_accuracies == (1.0, 1.0) and sized.fold_accuracies == (1.0, 0.5, 0.0)
    assert sized.n_pairs == 11 and sized.n_scored == 6
    with pytest.raises(InputError, match="fold_sizes"):
        evaluate_verification(s, y, folds=f, fold_sizes={0: 3, 1: 4})  # fold 0 holds 4 scores


def test_choose_face_rules():
    from engine.descriptors import FACE_RULES, choose_face
    from engine.detect import FaceBox

    # Detector order: most confident first. Off-centre and small / centred / big and low.
    boxes = [FaceBox(10, 10, 50, 50, score=2.0), FaceBox(100, 100, 150, 150, score=1.0),
             FaceBox(0, 150, 120, 250, score=0.3)]
    assert choose_face(boxes, (250, 250), "center") == 1
    assert choose_face(boxes, None, "best") == 0
    assert choose_face(boxes, None, "largest") == 2
    assert choose_face([(10, 10, 50, 50, 1.0), (200, 200, 240, 240, 1.0)], (250, 250), "center") == 0  # a tie: first
    assert choose_face([None], None, "center") == 0 and choose_face([boxes[2]], None, "center") == 0
    assert FACE_RULES == ("center", "best", "largest")
    with pytest.raises(InputError, match="image_size"):
        choose_face(boxes, None, "center")
    with pytest.raises(InputError, match="rule"):
        choose_face(boxes, (250, 250), "first")
    with pytest.raises(InputError, match="at least one face"):
        choose_face([], (250, 250))


def test_center_box_is_lfwcrops_region_scaled():
    from engine.descriptors import LFW_FACE_REGION, center_box

    assert center_box(250, 250).as_tuple() == LFW_FACE_REGION == (83.0, 92.0, 166.0, 175.0)
    assert center_box(500, 250).as_tuple() == (166.0, 92.0, 332.0, 175.0)
    assert center_box(250, 250).kind == "given"
    for bad in ((0, 250), (250, -1), (2.5, 250), (True, 250)):
        with pytest.raises(InputError, match="center_box"):
            center_box(*bad)


def test_pick_faces_counts_several_and_fails_what_it_cannot_place():
    from engine.descriptors import pick_faces

    a, b = np.ones(3), np.full(3, 2.0)
    faces = {"one.jpg": [((0, 0, 10, 10, 1.0), a)],
             "two.jpg": [((0, 0, 10, 10, 2.0), a), ((95, 95, 105, 105, 1.0), b)],
             "clip.avi": [((0, 0, 10, 10, 2.0), a), ((95, 95, 105, 105, 1.0), b)], "none.jpg": []}

    def size(image):
        if image.endswith(".avi"):
            raise InputError(f"{image}: not a recognised image format")
        return (200, 200)

    chosen, several, failed, picked = pick_faces(faces, "center", size)
    assert chosen["one.jpg"] is a and chosen["two.jpg"] is b and set(chosen) == {"one.jpg", "two.jpg"}
    assert several == {"two.jpg": 2, "clip.avi": 2}
    assert list(failed) == ["clip.avi"] and "cannot be told" in failed["clip.avi"]
    assert picked == {"two.jpg": (1, (95, 95, 105, 105, 1.0))}  # which face, for the message
    chosen, _, failed, picked = pick_faces(faces, "best", size)  # no size needed
    assert chosen["clip.avi"] is a and failed == {}
    assert picked == {"two.jpg": (0, (0, 0, 10, 10, 2.0)), "clip.avi": (0, (0, 0, 10, 10, 2.0))}


def two_kinds_of_people(tmp_path, n_folds=2, per_fold=3, seed=11):
    """A pairs file whose same pairs use only people S00.. and different pairs only D00..: the
    descriptors of one kind can be removed without touching the other's pairs."""
    rng = np.random.default_rng(seed)
    lines, descs = [f"{n_folds}\t{per_fold}"], {}
    for f in range(n_folds):
        for k in range(per_fold):
            person = f"S{f}{k}"
            lines.append(f"{person}\t1\t2")
            centre = rng.normal(size=198)
            for n in (1, 2):
                descs[lfw_image_name(person, n)] = centre + 0.05 * rng.normal(size=198)
        for k in range(per_fold):
            a, b = f"D{f}{k}a", f"D{f}{k}b"
            lines.append(f"{a}\t1\t{b}\t1")
            descs[lfw_image_name(a, 1)], descs[lfw_image_name(b, 1)] = rng.normal(size=198), rng.normal(size=198)
    path = tmp_path / "pairs.txt"
    path.write_text("\n".join(lines) + "\n")
    return path, descs


def _json_ok(r) -> None:
    """Every field is valid JSON as it is: no NaN or infinity anywhere."""
    import dataclasses
    import json

    json.dumps(dataclasses.asdict(r), allow_nan=False)


def test_missing_pairs_that_remove_a_class_leave_the_auc_undefined_not_an_error(tmp_path):
    # Every same pair lost an image: the accuracy is still measured (those pairs count as wrong),
    # the ROC AUC is undefined and says why, and the threshold is a number verify takes.
    path, descs = two_kinds_of_people(tmp_path)
    no_same = {k: v for k, v in descs.items() if not k.startswith("S")}
    r = evaluate_pairs(path, no_same, missing="wrong")
    # Only different pairs are scored: the best rule calls every pair different, right for the
    # 3 different pairs of each fold of 6.
    assert r.fold_accuracies == (0.5, 0.5) and r.accuracy == 0.5
    assert (r.auc, r.auc_undefined) == (None, "no same pairs scored")
    assert r.threshold is not None and -1 <= r.threshold <= 1 and all(-1 <= t <= 1 for t in r.thresholds)
    assert (r.n_scored, r.n_missing) == (6, 6)
    _json_ok(r)
    s = evaluate_pairs(path, no_same, missing="skip")  # over the scored (different) pairs: all right
    assert s.accuracy == 1.0 and s.auc is None
    no_diff = {k: v for k, v in descs.items() if not k.startswith("D")}
    r = evaluate_pairs(path, no_diff, missing="wrong")
    assert r.accuracy == 0.5 and (r.auc, r.auc_undefined) == (None, "no different pairs scored")
    _json_ok(r)


def test_no_pair_scored_at_all(tmp_path):
    path, _ = two_kinds_of_people(tmp_path)
    r = evaluate_pairs(path, {}, missing="wrong")  # every pair a wrong decision
    assert r.accuracy == 0.0 and r.fold_accuracies == (0.0, 0.0)
    assert (r.auc_undefined, r.threshold, r.threshold_undefined) == ("no pairs scored", None, "no pairs scored")
    assert r.thresholds == (None, None) and r.n_scored == 0 and r.n_missing == 12
    _json_ok(r)
    s = evaluate_pairs(path, {}, missing="skip")  # nothing left to measure
    assert s.accuracy is None and "no pairs scored" in s.accuracy_undefined and s.fold_accuracies == (None, None)
    _json_ok(s)


def test_an_empty_fold(tmp_path):
    path, descs = two_kinds_of_people(tmp_path, n_folds=3)
    in_fold_1 = {k for k in descs if k[1] == "1"}  # S1k, D1k..: the people of fold 1
    some = {k: v for k, v in descs.items() if k not in in_fold_1}
    # skip: fold 1 has nothing to measure; it is reported as such and left out of the mean.
    s = evaluate_pairs(path, some, missing="skip")
    assert s.fold_accuracies == (1.0, None, 1.0) and s.accuracy == 1.0 and s.n_skipped == 6
    # wrong: fold 1 scores 0 (its pairs are wrong decisions); its threshold still comes from the others.
    r = evaluate_pairs(path, some, missing="wrong")
    assert r.fold_accuracies == (1.0, 0.0, 1.0) and r.accuracy == pytest.approx(2 / 3)
    assert r.threshold_fit_on_test == () and all(t is not None for t in r.thresholds)
    _json_ok(r), _json_ok(s)
    # Two folds, one empty: the other has no held-out pairs to choose its threshold on, so it is
    # chosen on its own pairs, and the result names that fold.
    path, descs = two_kinds_of_people(tmp_path, n_folds=2)
    r = evaluate_pairs(path, {k: v for k, v in descs.items() if k[1] == "0"}, missing="wrong")
    assert r.fold_accuracies == (1.0, 0.0) and r.threshold_fit_on_test == (0,)


def test_all_scores_equal():
    y = np.array([True, False] * 10)
    r = evaluate_verification(np.full(20, 0.3), y)
    assert r.auc == 0.5 and r.accuracy == 0.5  # ties count half; no threshold splits a tie
    assert all(t is not None and math.isfinite(t) and -1 <= t <= 1 for t in r.thresholds)
    r = evaluate_verification(np.ones(20), y)  # all 1.0: every threshold in [-1, 1] says "same"
    assert r.accuracy == 0.5 and -1 <= r.threshold <= 1
    _json_ok(r)


def test_a_single_fold_says_its_threshold_was_fit_on_the_test_pairs(tmp_path):
    path, descs = two_kinds_of_people(tmp_path, n_folds=1)
    r = evaluate_pairs(path, descs)
    assert r.accuracy == 1.0 and r.threshold_fit_on_test == (0,) and len(r.thresholds) == 1
    path, descs = two_kinds_of_people(tmp_path, n_folds=2)
    assert evaluate_pairs(path, descs).threshold_fit_on_test == ()
