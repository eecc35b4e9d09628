"""Face descriptors from 3DMM coefficients, and face verification maths.

The network's 198 outputs (alpha = shape [0:99], beta = texture [99:198], in standard
deviations) are the descriptor. Two faces are compared by the cosine of their vectors.
For a set of images of one subject (a template, or the frames of a video) the paper
pools the per-image 3DMM estimates into one vector by (weighted) element-wise
averaging of the raw coefficients, then compares pooled vectors by cosine; that is
`average_descriptors` / `pool_by_label` (uniform weights unless the caller gives some,
e.g. detector scores).

Public API
----------
- ``descriptor(coeffs, part="all") -> float32 [..., D]``  part: "all" (198), "alpha" or "beta" (99)
- ``cosine_similarity(a, b) -> float64 [...]``         row-wise, broadcasting
- ``similarity_matrix(a, b=None) -> float64 [N, M]``   all pairs
- ``average_descriptors(descs, weights=None) -> float32 [D]``
- ``pool_by_label(descs, labels, weights=None) -> (list of labels, float32 [K, D])``
- ``Pair``, ``PairsList``, ``parse_pairs(path) -> PairsList``, ``lfw_image_name(name, n)``
- ``pair_scores(pairs, descriptors, part="all", key=lfw_image_name, missing="error") -> (scores, kept)``
- ``best_threshold(scores, same, score_range=(-1, 1)) -> (threshold, accuracy)``  always finite
- ``roc_auc(scores, same) -> float``; ``roc_curve(scores, same) -> (fpr, tpr, thresholds)``
- ``auc_undefined(same) -> str | None``  why a ROC AUC cannot be computed (one class only)
- ``evaluate_verification(scores, same, folds=None, n_folds=10, fold_sizes=None, fold_ids=None) -> VerificationResult``
- ``evaluate_pairs(pairs, descriptors, part="all", missing="error"|"wrong"|"skip") -> VerificationResult``
- ``choose_face(boxes, image_size=None, rule="center") -> int``  which face of an image describes it
- ``center_box(width, height) -> FaceBox``  LFW's fixed face region, for images without a detection
- ``image_descriptors(reconstructor, images, face=..., fallback_box=None, part=...) -> ImageDescriptors``

A pair is predicted "same person" when its score >= threshold. Every number the evaluation
returns is finite or None with its reason (e.g. no ROC AUC when missing pairs leave no same
pair scored): never NaN or infinity, so results are valid JSON as they are.

Pairs without a descriptor (no face found in one of its images). The LFW protocol scores every
pair of the file, so by default (missing="wrong") such a pair counts as a wrong decision in the
accuracy of its fold; it cannot enter the ROC AUC (it has no score), which is therefore over the
scored pairs; the result says how many and which images. missing="skip" leaves them out of
the accuracy too (a number over fewer pairs than the file holds: say so when you report it).
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from engine.errors import InputError, describe_array

N_COEFFS = 198
PARTS = {"all": slice(0, 198), "alpha": slice(0, 99), "beta": slice(99, 198)}
COSINE_RANGE = (-1.0, 1.0)  # what a cosine similarity can be: the thresholds evaluation chooses lie inside
MISSING = ("error", "wrong", "skip")  # what a pair without a descriptor does (see the module docstring)
FACE_RULES = ("center", "best", "largest")


# --------------------------------------------------------------------------- descriptors


def descriptor(coeffs, part: str = "all") -> np.ndarray:
    """Descriptor from coefficients [..., 198]: all 198, alpha (shape) or beta (texture)."""
    if part not in PARTS:
        raise InputError(f"part: expected one of {sorted(PARTS)}, found {part!r}")
    a = np.asarray(coeffs)
    if a.ndim < 1 or a.shape[-1] != N_COEFFS or not np.issubdtype(a.dtype, np.number):
        raise InputError(f"coeffs: expected numbers [..., {N_COEFFS}], found {describe_array(a)}")
    return np.ascontiguousarray(a[..., PARTS[part]], dtype=np.float32)


def _as_vectors(x, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim < 1 or a.shape[-1] == 0 or not np.issubdtype(a.dtype, np.number):
        raise InputError(f"{name}: expected numeric vectors [..., D], found {describe_array(a)}")
    a = a.astype(np.float64, copy=False)
    if not np.all(np.isfinite(a)):
        raise InputError(f"{name}: expected finite values, found NaN or infinity")
    return a


def _unit(a: np.ndarray, name: str) -> np.ndarray:
    n = np.linalg.norm(a, axis=-1, keepdims=True)
    if np.any(n == 0):
        raise InputError(f"{name}: cosine similarity is undefined for an all-zero vector")
    return a / n


def cosine_similarity(a, b) -> np.ndarray:
    """Cosine of corresponding vectors: a [..., D] and b [..., D] broadcast -> [...].
    Two single vectors give a 0-d array (use float() for a Python number)."""
    a = _as_vectors(a, "a")
    b = _as_vectors(b, "b")
    if a.shape[-1] != b.shape[-1]:
        raise InputError(f"b: expected vectors of length {a.shape[-1]} like a, found {describe_array(b)}")
    return np.clip(np.sum(_unit(a, "a") * _unit(b, "b"), axis=-1), -1.0, 1.0)


def similarity_matrix(a, b=None) -> np.ndarray:
    """Cosine similarity of every row of a [N, D] with every row of b [M, D] -> [N, M]
    (b defaults to a)."""
    ua = _unit(_as_vectors(a, "a"), "a")
    if ua.ndim != 2:
        raise InputError(f"a: expected [N, D], found {describe_array(np.asarray(a))}")
    ub = ua if b is None else _unit(_as_vectors(b, "b"), "b")
    if ub.ndim != 2 or ub.shape[1] != ua.shape[1]:
        raise InputError(f"b: expected [M, {ua.shape[1]}], found {describe_array(np.asarray(b))}")
    return np.clip(ua @ ub.T, -1.0, 1.0)


def _weights(weights, n: int) -> np.ndarray | None:
    if weights is None:
        return None
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,) or not np.all(np.isfinite(w)) or np.any(w < 0):
        raise InputError(f"weights: expected {n} finite non-negative numbers, found {describe_array(w)}")
    return w


def average_descriptors(descs, weights=None) -> np.ndarray:
    """Pool a template/video: (weighted) mean of descriptors [N, D] -> [D]."""
    d = _as_vectors(descs, "descs")
    if d.ndim != 2 or d.shape[0] == 0:
        raise InputError(f"descs: expected [N, D] with N >= 1, found {describe_array(d)}")
    w = _weights(weights, d.shape[0])
    if w is not None and w.sum() == 0:
        raise InputError("weights: expected at least one positive weight, found all zero")
    return np.average(d, axis=0, weights=w).astype(np.float32)


def pool_by_label(descs, labels: Sequence, weights=None) -> tuple[list, np.ndarray]:
    """Average descriptors [N, D] per label (subject or template id).

    Returns (labels sorted, pooled [K, D]); row k pools every descriptor with label k."""
    d = _as_vectors(descs, "descs")
    labels = list(labels)
    if d.ndim != 2 or d.shape[0] != len(labels):
        raise InputError(f"descs: expected [{len(labels)}, D] (one row per label), found {describe_array(d)}")
    w = _weights(weights, len(labels))
    try:
        uniq = sorted(set(labels))
    except TypeError:
        raise InputError("labels: expected mutually comparable labels (all str or all int)") from None
    if not uniq:
        return [], np.zeros((0, d.shape[-1]), np.float32)
    idx = {lab: i for i, lab in enumerate(uniq)}
    group = np.array([idx[lab] for lab in labels])
    pooled = np.stack(
        [average_descriptors(d[group == k], None if w is None else w[group == k]) for k in range(len(uniq))]
    )
    return uniq, pooled


# --------------------------------------------------------------------------- pairs.txt


@dataclass(frozen=True)
class Pair:
    name1: str
    n1: int
    name2: str
    n2: int
    same: bool
    fold: int
    line: int  # line number in the pairs file (1-based), for messages


@dataclass(frozen=True)
class PairsList:
    pairs: tuple[Pair, ...]
    n_folds: int
    per_fold: int  # same-person pairs per fold (and as many different-person pairs)

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def same(self) -> np.ndarray:
        return np.array([p.same for p in self.pairs], dtype=bool)

    @property
    def folds(self) -> np.ndarray:
        return np.array([p.fold for p in self.pairs], dtype=np.int64)


def lfw_image_name(name: str, n: int) -> str:
    """LFW file naming: ('Aaron_Peirsol', 1) -> 'Aaron_Peirsol/Aaron_Peirsol_0001.jpg'."""
    return f"{name}/{name}_{n:04d}.jpg"


def _pos_int(tok: str, where: str) -> int:
    try:
        v = int(tok)
    except ValueError:
        raise InputError(f"{where}: expected a positive integer, found {tok!r}") from None
    if v < 1:
        raise InputError(f"{where}: expected a positive integer, found {tok!r}")
    return v


def parse_pairs(path: str | os.PathLike) -> PairsList:
    """Parse an LFW-style pairs file.

    Header: "FOLDS N" (pairs.txt: "10 300") or "N" (pairsDevTrain.txt: one fold).
    Then FOLDS blocks of N same-person lines "name n1 n2" followed by N
    different-person lines "name1 n1 name2 n2" (tabs or spaces). Blank lines are
    ignored. Fold of a pair = its position // (2N). Raises InputError naming the line.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise InputError(f"{path}: no such pairs file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read pairs file: {e}") from None
    numbered = [(i + 1, ln.split()) for i, ln in enumerate(lines) if ln.strip()]
    if not numbered:
        raise InputError(f"{path}: empty pairs file, expected a header 'FOLDS N'")
    hline, head = numbered[0]
    if len(head) == 2:
        n_folds = _pos_int(head[0], f"{path} line {hline}, header folds")
        per_fold = _pos_int(head[1], f"{path} line {hline}, header pairs per fold")
    elif len(head) == 1:
        n_folds, per_fold = 1, _pos_int(head[0], f"{path} line {hline}, header pairs")
    else:
        raise InputError(f"{path} line {hline}: header: expected 'FOLDS N' or 'N', found {' '.join(head)!r}")
    pairs = []
    for k, (lineno, tok) in enumerate(numbered[1:]):
        where = f"{path} line {lineno}"
        fold = k // (2 * per_fold)
        if len(tok) == 3:
            pairs.append(Pair(tok[0], _pos_int(tok[1], f"{where}, field n1"), tok[0],
                              _pos_int(tok[2], f"{where}, field n2"), True, fold, lineno))
        elif len(tok) == 4:
            pairs.append(Pair(tok[0], _pos_int(tok[1], f"{where}, field n1"), tok[2],
                              _pos_int(tok[3], f"{where}, field n2"), False, fold, lineno))
        else:
            raise InputError(
                f"{where}: expected 'name n1 n2' (same person) or 'name1 n1 name2 n2' (different), "
                f"found {len(tok)} fields"
            )
    expected = n_folds * 2 * per_fold
    if len(pairs) != expected:
        raise InputError(
            f"{path}: header promises {n_folds} folds x {2 * per_fold} pairs = {expected} pairs, found {len(pairs)}"
        )
    return PairsList(tuple(pairs), n_folds, per_fold)


def pair_scores(
    pairs: PairsList | Sequence[Pair],
    descriptors: Mapping[str, np.ndarray],
    *,
    part: str = "all",
    key: Callable[[str, int], str] = lfw_image_name,
    missing: str = "error",
) -> tuple[np.ndarray, np.ndarray]:
    """Cosine score of every pair from a {image key: 198-vector} mapping.

    `key(name, n)` names the image (default: LFW's 'name/name_0001.jpg'). When an image
    has no descriptor (e.g. no face found): missing="error" raises InputError naming
    up to 5 of them; "wrong" and "skip" leave those pairs out of the scores (how they
    count is `evaluate_pairs`'s business). Returns (scores float64 [K], indices int64 [K]
    of the pairs scored).
    """
    if missing not in MISSING:
        raise InputError(f"missing: expected one of {', '.join(MISSING)}, found {missing!r}")
    plist = pairs.pairs if isinstance(pairs, PairsList) else tuple(pairs)
    a_rows, b_rows, kept, absent = [], [], [], []
    for i, p in enumerate(plist):
        k1, k2 = key(p.name1, p.n1), key(p.name2, p.n2)
        lost = [k for k in (k1, k2) if k not in descriptors]
        if lost:
            absent.extend(lost)
            continue
        a_rows.append(descriptor(descriptors[k1], part))
        b_rows.append(descriptor(descriptors[k2], part))
        kept.append(i)
    if absent and missing == "error":
        uniq = sorted(set(absent))
        raise InputError(
            f"descriptors: expected one for every image in the pairs, found {len(uniq)} missing "
            f"(e.g. {', '.join(uniq[:5])}); pass missing='wrong' to count those pairs as wrong decisions"
        )
    if not kept:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    return cosine_similarity(np.stack(a_rows), np.stack(b_rows)), np.array(kept, dtype=np.int64)


# --------------------------------------------------------------------------- evaluation


def _scores_labels(scores, same) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(same)
    if y.shape != s.shape:
        raise InputError(f"same: expected one label per score ({s.shape[0]}), found {describe_array(y)}")
    if y.dtype != np.bool_:
        if not np.all(np.isin(y, (0, 1))):
            raise InputError("same: expected booleans (or 0/1)")
        y = y.astype(bool)
    if not np.all(np.isfinite(s)):
        raise InputError("scores: expected finite values, found NaN or infinity")
    return s, y


def best_threshold(scores, same, *, score_range: tuple[float, float] | None = COSINE_RANGE) -> tuple[float, float]:
    """Threshold maximising accuracy of 'same iff score >= threshold' on these pairs.

    Always a finite number that realises its cut exactly (so `verify --threshold` takes it and
    decides these pairs as counted): midway between two neighbouring distinct scores; below
    every score ("all same"): midway between the low end of `score_range` and the lowest score;
    above every score ("all different"): midway between the top score and the high end, a
    candidate only when the top score is below it (no cosine exceeds 1: a pair scoring 1 is
    "same" at every threshold in [-1, 1]). score_range None: unbounded scores, the edges are
    the lowest score and the float just above the top one. Among equally accurate thresholds
    the median candidate is taken (deterministic, away from the edges of the best range).
    Returns (threshold, accuracy); InputError when there is no pair.
    """
    s, y = _scores_labels(scores, same)
    n = s.size
    if n == 0:
        raise InputError("scores: expected at least one pair, found none")
    lo, hi = _score_range(score_range)
    order = np.argsort(s, kind="mergesort")
    ss, yy = s[order], y[order]
    # cut i: pairs [i:] predicted same. correct(i) = same in [i:] + different in [:i].
    same_after = np.concatenate([np.cumsum(yy[::-1])[::-1], [0]])
    diff_before = np.concatenate([[0], np.cumsum(~yy)])
    correct = same_after + diff_before
    thr = np.empty(n + 1)
    thr[1:n] = ss[:-1] / 2.0 + ss[1:] / 2.0  # halves first: no overflow to infinity near the float limit
    thr[1:n] = np.where(thr[1:n] > ss[:-1], thr[1:n], ss[1:])  # neighbours one float apart: the upper one
    thr[0] = min(ss[0], lo / 2.0 + ss[0] / 2.0) if np.isfinite(lo) else ss[0]
    with np.errstate(over="ignore"):  # above the largest float: infinity, not a candidate (valid[n])
        thr[n] = ss[-1] / 2.0 + hi / 2.0 if np.isfinite(hi) else np.nextafter(ss[-1], np.inf)
    valid = np.ones(n + 1, dtype=bool)
    valid[1:n] = ss[1:] > ss[:-1]  # a cut inside a run of equal scores is not realisable
    valid[n] = bool(np.isfinite(thr[n]) and ss[-1] < thr[n] and (not np.isfinite(hi) or thr[n] <= hi))
    best = np.flatnonzero(valid & (correct == correct[valid].max()))
    i = int(best[len(best) // 2])
    return float(thr[i]), float(correct[i] / n)


def _score_range(score_range) -> tuple[float, float]:
    if score_range is None:
        return -np.inf, np.inf
    try:
        lo, hi = (float(v) for v in score_range)
    except (TypeError, ValueError):
        raise InputError(f"score_range: expected (low, high) or None, found {score_range!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise InputError(f"score_range: expected finite low < high, found {score_range!r}")
    return lo, hi


def _average_ranks(s: np.ndarray) -> np.ndarray:
    """1-based ranks of s, ties sharing the mean of their ranks."""
    order = np.argsort(s, kind="mergesort")
    _, inv, counts = np.unique(s[order], return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    mean_rank = ends - (counts - 1) / 2.0
    ranks = np.empty(s.size, dtype=np.float64)
    ranks[order] = mean_rank[inv]
    return ranks


def auc_undefined(same) -> str | None:
    """Why the ROC AUC of pairs labelled `same` (bool [K]) is undefined, or None when it is
    defined: it compares same pairs with different pairs, so it needs at least one of each."""
    y = np.asarray(same, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos and n_neg:
        return None
    return "no pairs scored" if not (n_pos or n_neg) else "no same pairs scored" if not n_pos \
        else "no different pairs scored"


def roc_auc(scores, same) -> float:
    """Area under the ROC curve by the rank-sum (Mann-Whitney U) formula, ties counted
    as half: P(score of a same pair > score of a different pair). InputError when the pairs
    are not both same and different (see auc_undefined)."""
    s, y = _scores_labels(scores, same)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if auc_undefined(y):
        raise InputError(f"same: a ROC AUC needs both same and different pairs, found {n_pos} same, "
                         f"{n_neg} different")
    r = _average_ranks(s)
    return float((r[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_curve(scores, same) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC points for thresholds at each distinct score (descending), starting at (0, 0).
    Returns (false positive rate, true positive rate, thresholds); thresholds[0] = +inf."""
    s, y = _scores_labels(scores, same)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if auc_undefined(y):
        raise InputError(f"same: a ROC curve needs both same and different pairs, found {n_pos} same, "
                         f"{n_neg} different")
    order = np.argsort(-s, kind="mergesort")
    ss, yy = s[order], y[order]
    last = np.r_[np.flatnonzero(ss[1:] != ss[:-1]), ss.size - 1]  # last index of each distinct score
    tp = np.cumsum(yy)[last]
    fp = np.cumsum(~yy)[last]
    return np.r_[0.0, fp / n_neg], np.r_[0.0, tp / n_pos], np.r_[np.inf, ss[last]]


@dataclass(frozen=True)
class VerificationResult:
    """k-fold verification numbers. A number that cannot be measured is None, never NaN or
    infinity, and its `*_undefined` field says why (every field is valid JSON as it is)."""

    accuracy: float | None  # mean of the per-fold test accuracies that are defined; None: none is
    accuracy_std: float  # sample standard deviation over those folds (ddof=1; 0 for one fold)
    standard_error: float  # accuracy_std / sqrt(those folds), as the LFW protocol reports
    fold_accuracies: tuple[float | None, ...]  # per fold (fold ids ascending); None: no pair to measure
    thresholds: tuple[float | None, ...]  # threshold chosen per fold; None: no scored pair to choose it on
    auc: float | None  # ROC AUC over the scored pairs; None: undefined (auc_undefined says why)
    n_pairs: int  # every pair evaluated: all of the pairs file for evaluate_pairs
    n_skipped: int = 0  # pairs left out of the accuracy (missing="skip")
    n_scored: int | None = None  # pairs with both descriptors (in the AUC); None: all n_pairs
    n_missing: int = 0  # pairs with an image without a descriptor
    missing: str = "wrong"  # how those pairs counted: "wrong" decisions or "skip"ped
    missing_images: tuple[str, ...] = ()  # the images (keys) without a descriptor
    auc_undefined: str | None = None  # e.g. "no same pairs scored"
    accuracy_undefined: str | None = None  # e.g. "no pairs scored"
    # The threshold to use (e.g. with `verify --threshold`): the mean of the per-fold thresholds
    # (finite, inside the score range); None when no fold has one (threshold_undefined says why).
    threshold: float | None = None
    threshold_undefined: str | None = None
    # Folds whose threshold was chosen on their own test pairs (a single fold, or no scored pair
    # in the other folds): their accuracy is optimistic, not a held-out measurement.
    threshold_fit_on_test: tuple[int, ...] = ()


def evaluate_verification(scores, same, folds=None, n_folds: int = 10, *, fold_sizes=None, fold_ids=None,
                          score_range: tuple[float, float] | None = COSINE_RANGE) -> VerificationResult:
    """k-fold verification accuracy and ROC AUC.

    For each fold, the threshold is chosen (best_threshold, within score_range) on the scored
    pairs of all other folds and the accuracy measured on that fold. `folds` gives each pair's
    fold id; when None the pairs are split into `n_folds` contiguous, equal blocks (LFW's
    pairs.txt order). With a single fold, or when the other folds hold no scored pair, the
    threshold is chosen on the fold's own pairs, and `threshold_fit_on_test` names that fold.
    `fold_ids` lists every fold to report (default: the ids in `folds`); `fold_sizes` ({fold
    id: pairs}, its keys the folds to report) divides each fold's correct decisions by the
    pairs it holds rather than by its scores: pairs that have no score count as wrong, and a
    fold with no score at all scores 0 (evaluate_pairs, missing="wrong"). Without fold_sizes a
    fold with no score has no accuracy (None), and is left out of the mean.
    Degenerate inputs give numbers marked undefined (None and a reason), never an exception:
    one class only (no ROC AUC), no score at all (no AUC, no threshold).
    """
    s, y = _scores_labels(scores, same)
    if folds is None:
        if isinstance(n_folds, bool) or not isinstance(n_folds, int) or n_folds < 1 or s.size < n_folds:
            raise InputError(f"n_folds: expected an integer in 1..{s.size}, found {n_folds!r}")
        f = np.arange(s.size) * n_folds // max(s.size, 1)
    else:
        f = np.asarray(folds)
        if f.shape != s.shape or (f.size and not np.issubdtype(f.dtype, np.integer)):
            raise InputError(f"folds: expected one integer fold id per score ({s.size}), found {describe_array(f)}")
        f = f.astype(np.int64)
    sizes = None
    if fold_sizes is not None:
        try:
            sizes = {int(k): int(v) for k, v in fold_sizes.items()}
        except (AttributeError, TypeError, ValueError):
            raise InputError(f"fold_sizes: expected {{fold id: pairs}}, found {fold_sizes!r}") from None
        counts = {k: int(np.sum(f == k)) for k in sizes}
        if not set(np.unique(f).tolist()) <= set(sizes) or any(counts[k] > sizes[k] or sizes[k] < 1 for k in sizes):
            raise InputError(f"fold_sizes: expected each fold's pairs (>= 1, >= its scores), found {fold_sizes!r}")
        ids = np.array(sorted(sizes), dtype=np.int64)
    elif fold_ids is not None:
        ids = np.array(sorted({int(k) for k in fold_ids}), dtype=np.int64)
        if not set(np.unique(f).tolist()) <= set(ids.tolist()):
            raise InputError(f"fold_ids: expected every fold id of `folds`, found {sorted(ids.tolist())}")
    else:
        ids = np.unique(f)
    if ids.size == 0:
        raise InputError("scores: expected at least one pair or fold, found none")
    accs: list[float | None] = []
    thrs: list[float | None] = []
    own: list[int] = []
    for k in ids:
        test = f == k
        train = ~test
        if ids.size == 1 or not train.any():  # nothing held out to choose on: the fold's own pairs
            train = test
            if test.any():
                own.append(int(k))
        thr = best_threshold(s[train], y[train], score_range=score_range)[0] if train.any() else None
        thrs.append(thr)
        n_test = int(test.sum()) if sizes is None else sizes[int(k)]
        if n_test == 0:
            accs.append(None)  # no pair to measure (missing="skip" and every pair of the fold missing)
            continue
        correct = int(np.sum((s[test] >= thr) == y[test])) if test.any() else 0
        accs.append(correct / n_test)
    defined = np.array([a for a in accs if a is not None])
    std = float(defined.std(ddof=1)) if defined.size > 1 else 0.0
    used = [t for t in thrs if t is not None]
    return VerificationResult(
        accuracy=float(defined.mean()) if defined.size else None,
        accuracy_std=std,
        standard_error=std / float(np.sqrt(defined.size)) if defined.size else 0.0,
        fold_accuracies=tuple(accs),
        thresholds=tuple(thrs),
        auc=None if auc_undefined(y) else roc_auc(s, y),
        auc_undefined=auc_undefined(y),
        accuracy_undefined=None if defined.size else "no pairs scored",
        threshold=float(np.mean(used)) if used else None,
        threshold_undefined=None if used else "no pairs scored",
        threshold_fit_on_test=tuple(own),
        n_pairs=int(s.size) if sizes is None else int(sum(sizes.values())),
        n_scored=int(s.size),
    )


def evaluate_pairs(
    pairs: PairsList | str | os.PathLike,
    descriptors: Mapping[str, np.ndarray],
    *,
    part: str = "all",
    key: Callable[[str, int], str] = lfw_image_name,
    missing: str = "error",
) -> VerificationResult:
    """LFW-protocol evaluation: parse (if a path) the pairs file, score every pair by
    cosine similarity of its descriptors, and run 10-fold (the file's folds) accuracy
    and ROC AUC. The paper reports 92.35% on LFW for this model.

    missing: a pair with an image without a descriptor raises ("error"), counts as a wrong
    decision in the accuracy of its fold ("wrong": the protocol scores every pair), or is left
    out of the accuracy ("skip"). Either way it is outside the ROC AUC, and the result counts
    it (n_missing, missing_images). n_pairs is every pair of the file; every fold of the file
    is reported. When missing pairs leave one class (or nothing) scored, the numbers that need
    it are None with the reason (auc_undefined, ...), not an exception."""
    plist = pairs if isinstance(pairs, PairsList) else parse_pairs(pairs)
    scores, kept = pair_scores(plist, descriptors, part=part, key=key, missing=missing)
    folds = plist.folds
    ids, counts = np.unique(folds, return_counts=True)
    sizes = dict(zip(ids.tolist(), counts.tolist())) if missing == "wrong" else None
    r = evaluate_verification(scores, plist.same[kept], folds=folds[kept], fold_sizes=sizes, fold_ids=ids.tolist())
    absent = sorted({k for p in plist.pairs for k in (key(p.name1, p.n1), key(p.name2, p.n2)) if k not in descriptors})
    n_missing = len(plist) - int(kept.size)
    why = r.accuracy_undefined and ("no pairs scored (--missing skip leaves out every pair, each without a "
                                    "descriptor)" if missing == "skip" and n_missing else r.accuracy_undefined)
    return dataclasses.replace(r, n_pairs=len(plist), n_scored=int(kept.size), n_missing=n_missing,
                               n_skipped=n_missing if missing == "skip" else 0, accuracy_undefined=why,
                               missing="skip" if missing == "skip" else "wrong", missing_images=tuple(absent))

# --------------------------------------------------------------------------- which face describes an image

# LFWcrop's fixed face region of LFW's 250x250 images: corners (83, 92) and (166, 175),
# chosen on 40 LFW faces (C. Sanderson, B. C. Lovell, ICB 2009; conradsanderson.id.au/lfwcrop).
# LFW centred every image on a detected face, so this region holds the face in the vast
# majority of images; a box of about the size dlib's detector gives there.
LFW_SIZE = 250
LFW_FACE_REGION = (83.0, 92.0, 166.0, 175.0)


def center_box(width: int, height: int):
    """The LFW convention's face box for an image of `width` x `height` pixels (the LFWcrop
    region, scaled from 250 x 250): the face an LFW-style image is centred on, for images
    where detection finds none. A FaceBox of kind "given" (cropped like a detector box)."""
    from engine.detect import FaceBox

    if isinstance(width, bool) or isinstance(height, bool) or not all(
            isinstance(v, (int, np.integer)) and v > 0 for v in (width, height)):
        raise InputError(f"center_box: expected a positive width and height, found {width!r} x {height!r}")
    x0, y0, x1, y1 = LFW_FACE_REGION
    sx, sy = width / LFW_SIZE, height / LFW_SIZE
    return FaceBox(x0 * sx, y0 * sy, x1 * sx, y1 * sy, score=1.0, kind="given")


def _box_numbers(box) -> tuple[float, float, float, float, float]:
    if hasattr(box, "as_tuple"):
        return (*map(float, box.as_tuple()), float(getattr(box, "score", 1.0)))
    vals = [float(v) for v in box]
    if len(vals) not in (4, 5):
        raise InputError(f"boxes: expected (x0, y0, x1, y1[, score]), found {len(vals)} numbers")
    return (*vals[:4], vals[4] if len(vals) == 5 else 1.0)


def choose_face(boxes: Sequence, image_size: tuple[int, int] | None = None, rule: str = "center") -> int:
    """Index of the face that describes an image with several: `boxes` are its faces in
    detector order (most confident first; FaceBox or (x0, y0, x1, y1[, score])).

    rule "center": the box whose centre is nearest the image's centre (LFW-style images are
    centred on their subject); needs image_size (width, height). "best": the highest score.
    "largest": the largest area. Ties go to the earlier (more confident) face."""
    if rule not in FACE_RULES:
        raise InputError(f"rule: expected one of {', '.join(FACE_RULES)}, found {rule!r}")
    if len(boxes) == 0:
        raise InputError("boxes: expected at least one face, found none")
    if len(boxes) == 1 or any(b is None for b in boxes):  # one face, or already-cropped inputs
        return 0
    nums = np.array([_box_numbers(b) for b in boxes], dtype=np.float64)
    if rule == "best":
        cost = -nums[:, 4]
    elif rule == "largest":
        cost = -(nums[:, 2] - nums[:, 0]) * (nums[:, 3] - nums[:, 1])
    else:
        if image_size is None:
            raise InputError("image_size: rule 'center' needs the image's (width, height)")
        w, h = image_size
        cost = np.hypot((nums[:, 0] + nums[:, 2]) / 2 - w / 2, (nums[:, 1] + nums[:, 3]) / 2 - h / 2)
    return int(np.flatnonzero(cost == cost.min())[0])


@dataclass
class ImageDescriptors:
    """One descriptor per image, and what it took (see `image_descriptors`).

    vectors: {image: float32 [D]} for every image described.
    failures: {image: why it has no descriptor}.
    several: {image: faces found} for images with more than one face (one was chosen by `rule`).
    fallback: images described from `center_box` because detection found no face there.
    provenance: of the run (runner, synthetic flags...), None when nothing ran.
    chosen: {image: (index of the face used among its faces, in detector order, its box)} for
        the images in `several` (the box as given: a FaceBox or (x0, y0, x1, y1[, score]))."""

    vectors: dict
    failures: dict
    several: dict
    fallback: list
    rule: str
    provenance: dict | None = None
    chosen: dict = dataclasses.field(default_factory=dict)


def pick_faces(faces: Mapping[str, Sequence[tuple]], rule: str, image_size: Callable[[str], tuple[int, int]]
               ) -> tuple[dict, dict, dict, dict]:
    """{image: [(box, vector), ...]} (faces in detector order) -> ({image: chosen vector},
    {image: number of faces} for images with several, {image: why no face could be chosen},
    {image: (index, box) of the face chosen} for images with several).
    image_size(image) is asked only for images with several faces under rule "center"; when it
    raises InputError (e.g. a video file), that image fails rather than use another rule."""
    chosen, several, failed, picked = {}, {}, {}, {}
    for image, found in faces.items():
        if not found:
            continue
        if len(found) > 1:
            several[image] = len(found)
        try:
            size = image_size(image) if len(found) > 1 and rule == "center" else None
            k = choose_face([b for b, _ in found], size, rule)
        except InputError as e:
            failed[image] = f"{image}: {len(found)} faces, and the one nearest the centre cannot be told: {e}"
            continue
        chosen[image] = found[k][1]
        if len(found) > 1:
            picked[image] = (k, found[k][0])
    return chosen, several, failed, picked


def image_descriptors(reconstructor, images: Sequence[str], *, face: str = "center", fallback_box: str | None = None,
                      part: str = "all", boxes: Mapping | None = None, cropped: bool = False,
                      progress: Callable[[str], None] | None = None) -> ImageDescriptors:
    """One descriptor per image file: run `reconstructor.embed` on `images`, take the face that
    `face` (a FACE_RULES rule, see `choose_face`) picks where an image has several, and with
    fallback_box="center" describe the images where nothing was found from `center_box`
    (LFW's face region; a second, small pass). progress(image) is called once per image done."""
    from engine.images import image_size

    if fallback_box not in (None, "center"):
        raise InputError(f"fallback_box: expected None or 'center', found {fallback_box!r}")
    if face not in FACE_RULES:
        raise InputError(f"face: expected one of {', '.join(FACE_RULES)}, found {face!r}")
    # Each image once: the results are grouped by their source, so an image given twice (verify
    # a.jpg a.jpg) would otherwise look like one image holding each of its faces twice.
    images = list(dict.fromkeys(str(p) for p in images))
    out = ImageDescriptors({}, {}, {}, [], face)
    if not images:
        return out
    faces: dict[str, list] = {}
    results = reconstructor.embed(images, boxes=boxes, cropped=cropped)
    try:
        for r in results:
            if r.source not in faces:
                faces[r.source] = []
                if progress is not None:
                    progress(r.source)
            if r.error is not None:
                out.failures[r.source] = r.error
                continue
            out.provenance = out.provenance or dict(r.provenance or {})
            faces[r.source].append((r.box, descriptor(r.coeffs, part)))
    finally:
        results.close()
    out.vectors, out.several, unpicked, out.chosen = pick_faces(faces, face, image_size)
    for image in out.vectors:
        out.failures.pop(image, None)  # a frame or face failed, another one described it
    out.failures.update(unpicked)
    if fallback_box == "center" and not cropped:
        fallback_descriptors(reconstructor, [i for i in images if i not in out.vectors], part, out)
    return out


def fallback_descriptors(reconstructor, images: Sequence[str], part: str, out: ImageDescriptors) -> None:
    """Describe `images` from `center_box` (their own size) into `out`: each one described
    moves from out.failures to out.vectors and out.fallback. An image that cannot be read
    keeps its failure."""
    from engine.images import image_size

    given = {}
    for image in images:
        try:
            given[image] = [center_box(*image_size(image))]
        except InputError:
            continue  # unreadable: its first failure stands
    if not given:
        return
    results = reconstructor.embed(list(given), boxes=given)
    try:
        for r in results:
            if r.error is None and r.source not in out.vectors:
                out.vectors[r.source] = descriptor(r.coeffs, part)
                out.fallback.append(r.source)
                out.failures.pop(r.source, None)
                out.provenance = out.provenance or dict(r.provenance or {})
    finally:
        results.close()
