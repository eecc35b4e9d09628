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
- ``best_threshold(scores, same) -> (threshold, accuracy)``
- ``roc_auc(scores, same) -> float``; ``roc_curve(scores, same) -> (fpr, tpr, thresholds)``
- ``evaluate_verification(scores, same, folds=None, n_folds=10) -> VerificationResult``
- ``evaluate_pairs(pairs, descriptors, part="all", ...) -> VerificationResult``

A pair is predicted "same person" when its score >= threshold.
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
    up to 5 of them; missing="skip" drops those pairs. Returns (scores float64 [K],
    indices int64 [K] of the pairs kept).
    """
    if missing not in ("error", "skip"):
        raise InputError(f"missing: expected 'error' or 'skip', found {missing!r}")
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
            f"(e.g. {', '.join(uniq[:5])}); pass missing='skip' to drop those pairs"
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


def best_threshold(scores, same) -> tuple[float, float]:
    """Threshold maximising accuracy of 'same iff score >= threshold' on these pairs.

    Candidates are midpoints between consecutive distinct scores, plus -inf and +inf.
    Among equally accurate thresholds the median candidate is taken (deterministic,
    away from the edges of the best range). Returns (threshold, accuracy).
    """
    s, y = _scores_labels(scores, same)
    n = s.size
    if n == 0:
        raise InputError("scores: expected at least one pair, found none")
    order = np.argsort(s, kind="mergesort")
    ss, yy = s[order], y[order]
    # cut i: pairs [i:] predicted same. correct(i) = same in [i:] + different in [:i].
    same_after = np.concatenate([np.cumsum(yy[::-1])[::-1], [0]])
    diff_before = np.concatenate([[0], np.cumsum(~yy)])
    correct = same_after + diff_before
    valid = np.ones(n + 1, dtype=bool)
    valid[1:n] = ss[1:] > ss[:-1]  # a cut inside a run of equal scores is not realisable
    best = np.flatnonzero(valid & (correct == correct[valid].max()))
    i = int(best[len(best) // 2])
    thr = -np.inf if i == 0 else (np.inf if i == n else (ss[i - 1] + ss[i]) / 2.0)
    return float(thr), float(correct[i] / n)


def _average_ranks(s: np.ndarray) -> np.ndarray:
    """1-based ranks of s, ties sharing the mean of their ranks."""
    order = np.argsort(s, kind="mergesort")
    _, inv, counts = np.unique(s[order], return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    mean_rank = ends - (counts - 1) / 2.0
    ranks = np.empty(s.size, dtype=np.float64)
    ranks[order] = mean_rank[inv]
    return ranks


def roc_auc(scores, same) -> float:
    """Area under the ROC curve by the rank-sum (Mann-Whitney U) formula, ties counted
    as half: P(score of a same pair > score of a different pair)."""
    s, y = _scores_labels(scores, same)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise InputError(f"same: ROC AUC needs both same and different pairs, found {n_pos} same, {n_neg} different")
    r = _average_ranks(s)
    return float((r[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_curve(scores, same) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC points for thresholds at each distinct score (descending), starting at (0, 0).
    Returns (false positive rate, true positive rate, thresholds); thresholds[0] = +inf."""
    s, y = _scores_labels(scores, same)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise InputError(f"same: ROC needs both same and different pairs, found {n_pos} same, {n_neg} different")
    order = np.argsort(-s, kind="mergesort")
    ss, yy = s[order], y[order]
    last = np.r_[np.flatnonzero(ss[1:] != ss[:-1]), ss.size - 1]  # last index of each distinct score
    tp = np.cumsum(yy)[last]
    fp = np.cumsum(~yy)[last]
    return np.r_[0.0, fp / n_neg], np.r_[0.0, tp / n_pos], np.r_[np.inf, ss[last]]


@dataclass(frozen=True)
class VerificationResult:
    accuracy: float  # mean of the per-fold test accuracies
    accuracy_std: float  # sample standard deviation over folds (ddof=1; 0 for one fold)
    standard_error: float  # accuracy_std / sqrt(folds), as the LFW protocol reports
    fold_accuracies: tuple[float, ...]
    thresholds: tuple[float, ...]  # threshold chosen on the other folds, per fold
    auc: float  # ROC AUC over all pairs
    n_pairs: int
    n_skipped: int = 0  # pairs dropped for missing descriptors (pair_scores missing="skip")


def evaluate_verification(scores, same, folds=None, n_folds: int = 10) -> VerificationResult:
    """k-fold verification accuracy and ROC AUC.

    For each fold, the threshold is chosen (best_threshold) on all other folds and the
    accuracy measured on that fold. `folds` gives each pair's fold id; when None the
    pairs are split into `n_folds` contiguous, equal blocks (LFW's pairs.txt order).
    With a single fold, the threshold is chosen and tested on the same pairs.
    """
    s, y = _scores_labels(scores, same)
    if folds is None:
        if isinstance(n_folds, bool) or not isinstance(n_folds, int) or n_folds < 1 or s.size < n_folds:
            raise InputError(f"n_folds: expected an integer in 1..{s.size}, found {n_folds!r}")
        f = np.arange(s.size) * n_folds // max(s.size, 1)
    else:
        f = np.asarray(folds)
        if f.shape != s.shape or not np.issubdtype(f.dtype, np.integer):
            raise InputError(f"folds: expected one integer fold id per score ({s.size}), found {describe_array(f)}")
    ids = np.unique(f)
    accs, thrs = [], []
    for k in ids:
        test = f == k
        train = ~test if ids.size > 1 else test
        thr, _ = best_threshold(s[train], y[train])
        thrs.append(thr)
        accs.append(float(np.mean((s[test] >= thr) == y[test])))
    acc = np.array(accs)
    std = float(acc.std(ddof=1)) if acc.size > 1 else 0.0
    return VerificationResult(
        accuracy=float(acc.mean()),
        accuracy_std=std,
        standard_error=std / float(np.sqrt(acc.size)),
        fold_accuracies=tuple(accs),
        thresholds=tuple(thrs),
        auc=roc_auc(s, y),
        n_pairs=int(s.size),
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
    and ROC AUC. The paper reports 92.35% on LFW for this model."""
    plist = pairs if isinstance(pairs, PairsList) else parse_pairs(pairs)
    scores, kept = pair_scores(plist, descriptors, part=part, key=key, missing=missing)
    if scores.size == 0:
        raise InputError("descriptors: no pair has both descriptors; nothing to evaluate")
    r = evaluate_verification(scores, plist.same[kept], folds=plist.folds[kept])
    return dataclasses.replace(r, n_skipped=len(plist) - int(kept.size))
