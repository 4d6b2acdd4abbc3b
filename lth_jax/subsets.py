"""Choose training examples by score; flip labels to make noisy data.

Every function returns sorted example indices (positions in the training
arrays as `data.load` returns them). Scores are "higher = harder" (EL2N,
GraNd, forgetting counts). Ties are broken by position (stable sort).
"""
from __future__ import annotations

import numpy as np

from lth_jax.errors import LthError, check

METHODS = ("hardest", "easiest", "window", "random")


def check_fraction(fraction: float) -> None:
    check(0 < fraction <= 1, f"kept fraction must be in (0, 1], got {fraction}")


def count(n: int, fraction: float) -> int:
    """Examples kept: round(fraction * n), at least 1."""
    check_fraction(fraction)
    return max(1, int(np.floor(fraction * n + 0.5)))


def _ranked(scores: np.ndarray, labels=None, num_classes=None, balanced=False):
    """Indices sorted from hardest to easiest; with `balanced`, classes are
    interleaved so that any prefix holds each class in proportion to its size."""
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    if not balanced:
        return order
    check(labels is not None, "class-balanced selection needs the labels")
    labels = np.asarray(labels)
    # position of each example within its class's ranking, scaled by class size
    rank_in_class = np.empty(len(order), np.float64)
    for c in np.unique(labels):
        members = order[labels[order] == c]
        rank_in_class[members] = (np.arange(len(members)) + 0.5) / len(members)
    return np.argsort(rank_in_class, kind="stable")


def choose(method: str, scores, fraction: float, *, offset: float = 0.0, seed: int = 0, labels=None,
           balanced: bool = False) -> np.ndarray:
    """Indices of the examples kept.

    hardest: the `fraction` with the highest scores (Paul et al.'s pruning).
    easiest: the lowest scores.
    window: skip the hardest `offset` share, then keep `fraction`: the window
      counts from the hardest end, so offset=0 equals "hardest" (the sliding
      window of Paul et al. that also drops the very hardest, often mislabelled).
    random: a uniform subset (seeded), the baseline; `scores` only gives N.
    balanced: keep each class's share of the training set.
    """
    scores = np.asarray(scores)
    n = len(scores)
    k = count(n, fraction)
    if method == "random":
        rng = np.random.default_rng(seed)
        if not balanced:
            return np.sort(rng.choice(n, size=k, replace=False))
        ranked = _ranked(rng.random(n), labels, balanced=True)
        return np.sort(ranked[:k])
    if method not in METHODS:
        raise LthError(f"unknown subset method {method!r}; valid: {', '.join(METHODS)}")
    ranked = _ranked(scores, labels, balanced=balanced)
    if method == "hardest":
        return np.sort(ranked[:k])
    if method == "easiest":
        return np.sort(ranked[::-1][:k])
    check(0 <= offset < 1, f"window offset must be in [0, 1), got {offset}")
    start = int(np.floor(offset * n + 0.5))
    check(start + k <= n, f"window offset {offset} + kept fraction {fraction} exceed the training set (> 1)")
    return np.sort(ranked[start:start + k])


def flip_labels(labels, num_classes: int, fraction: float, seed: int):
    """Flip `fraction` of the labels to a different class, uniformly (seeded).
    Returns (noisy labels, sorted indices of the flipped examples)."""
    check(0 <= fraction < 1, f"label noise fraction must be in [0, 1), got {fraction}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    k = int(np.floor(fraction * len(labels) + 0.5))
    flipped = np.sort(rng.choice(len(labels), size=k, replace=False))
    noisy = labels.copy()
    shift = rng.integers(1, num_classes, size=k)  # never the original class
    noisy[flipped] = (labels[flipped] + shift) % num_classes
    return noisy, flipped


def auroc(scores, positives) -> float:
    """Area under the ROC curve of `scores` for finding the `positives`
    (indices); ties count half (Mann-Whitney U)."""
    scores = np.asarray(scores, np.float64)
    is_pos = np.zeros(len(scores), bool)
    is_pos[np.asarray(positives, np.int64)] = True
    n_pos, n_neg = is_pos.sum(), (~is_pos).sum()
    check(n_pos > 0 and n_neg > 0, "AUROC needs both positives and negatives")
    from scipy.stats import rankdata
    ranks = rankdata(scores)
    return float((ranks[is_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def precision_at(scores, positives, k: int | None = None) -> float:
    """Share of the top-k scores that are positives (k defaults to the number of positives)."""
    positives = np.asarray(positives, np.int64)
    k = len(positives) if k is None else k
    top = np.argsort(-np.asarray(scores, np.float64), kind="stable")[:k]
    return float(np.isin(top, positives).mean())
