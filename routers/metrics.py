"""Held-out metrics of a router: ROC-AUC, accuracy, Spearman, bootstrap intervals by problem.

Pure Python for one evaluation (:func:`evaluate`); numpy for the bootstrap's resamples
(:func:`bootstrap_intervals`), which resample *problems*, not rows: the steps of a problem are
alike, so a row bootstrap would be too narrow.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from routers.labels import class_counts

BOOTSTRAP_RESAMPLES = 1000
"""Default resamples (of held-out problems) of the held-out metrics' 95% intervals."""


def _ranks(xs: Sequence[float]) -> list[float]:
    """1-based ranks, ties sharing their mean rank."""
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    ranks = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rank correlation (ties get mean ranks); None when either side is constant.

    >>> spearman([1, 2, 3, 4], [10, 20, 30, 40]), spearman([1, 2, 3], [3, 2, 1])
    (1.0, -1.0)
    >>> spearman([1, 1, 1], [1, 2, 3]) is None
    True
    """
    if len(x) != len(y):
        raise ValueError(f"spearman: {len(x)} and {len(y)} values")
    if len(x) < 2:
        return None
    rx, ry = _ranks(x), _ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx = sum((a - mx) ** 2 for a in rx)
    syy = sum((b - my) ** 2 for b in ry)
    if sxx == 0 or syy == 0:
        return None
    return round(sxy / math.sqrt(sxx * syy), 12)


def roc_auc(ys: Sequence[int], ps: Sequence[float]) -> float | None:
    """Area under the ROC curve: the chance a positive scores above a negative (ties count
    half); None when one class is absent.

    >>> roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    >>> roc_auc([1, 1], [0.2, 0.3]) is None
    True
    """
    neg, pos = class_counts(ys)
    if neg == 0 or pos == 0:
        return None
    r = _ranks(ps)
    rank_sum = sum(rk for rk, y in zip(r, ys) if y == 1)
    return round((rank_sum - pos * (pos + 1) / 2) / (pos * neg), 12)


def evaluate(ys: Sequence[int], ps: Sequence[float], advantages: Sequence[float]) -> dict[str, Any]:
    """Held-out metrics of router probabilities ``ps`` against labels and advantages.

    >>> evaluate([0, 1, 1], [0.2, 0.9, 0.4], [-0.5, 0.5, 0.1])
    {'rows': 3, 'positives': 2, 'roc_auc': 1.0, 'accuracy': 0.666666666667, 'spearman': 1.0}
    """
    n = len(ys)
    acc = sum(int(p >= 0.5) == y for y, p in zip(ys, ps)) / n if n else None
    return {"rows": n, "positives": sum(ys), "roc_auc": roc_auc(ys, ps) if n else None,
            "accuracy": None if acc is None else round(acc, 12),
            "spearman": spearman(ps, advantages) if n else None}


def _np_ranks(a: Any) -> Any:
    """1-based ranks of a numpy vector, ties sharing their mean rank (as :func:`_ranks`)."""
    import numpy as np

    order = np.argsort(a, kind="mergesort")
    s = a[order]
    new = np.r_[True, s[1:] != s[:-1]]
    starts = np.flatnonzero(new)
    ends = np.r_[starts[1:], len(s)]
    ranks = np.empty(len(a))
    ranks[order] = ((starts + ends - 1) / 2 + 1)[np.cumsum(new) - 1]
    return ranks


def _np_auc(y: Any, p: Any) -> float | None:
    pos = int(y.sum())
    neg = len(y) - pos
    if pos == 0 or neg == 0:
        return None
    return float((_np_ranks(p)[y == 1].sum() - pos * (pos + 1) / 2) / (pos * neg))


def _np_spearman(x: Any, y: Any) -> float | None:
    import numpy as np

    if len(x) < 2:
        return None
    rx, ry = _np_ranks(x), _np_ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    sxx, syy = float((rx * rx).sum()), float((ry * ry).sum())
    if sxx == 0 or syy == 0:
        return None
    return float(np.dot(rx, ry) / math.sqrt(sxx * syy))


def bootstrap_intervals(ys: Sequence[int], ps: Sequence[float], advantages: Sequence[float],
                        groups: Sequence[Any], resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0,
                        level: float = 0.95) -> dict[str, Any]:
    """Percentile bootstrap intervals of ROC-AUC and Spearman, resampling **problems**, not rows.

    Each resample draws as many problems as there are, with replacement
    (``numpy.random.default_rng(seed)``: deterministic for a seed), and takes all rows of every
    drawn problem; the steps of a problem are alike, so a row bootstrap would be too narrow.
    A resample where a metric is undefined (one class, a constant side) is left out of that
    metric's interval.

    Returns:
        ``{"roc_auc_ci": [lo, hi] | None, "spearman_ci": [lo, hi] | None, "bootstrap": {...}}``:
        None with fewer than two problems or no resample where the metric is defined.
    """
    import numpy as np

    if not len(ys) == len(ps) == len(advantages) == len(groups):
        raise ValueError("bootstrap_intervals: ys, ps, advantages and groups differ in length")
    if resamples < 1 or not 0.0 < level < 1.0:
        raise ValueError(f"resamples must be >= 1 and level in (0, 1), got {resamples}, {level}")
    info = {"unit": "problem", "resamples": resamples, "seed": seed, "level": level, "method": "percentile"}
    keys = [str(g) for g in groups]
    problems = sorted(set(keys))
    out: dict[str, Any] = {"roc_auc_ci": None, "spearman_ci": None, "bootstrap": info}
    if len(problems) < 2:
        return out
    y, p, a = np.asarray(ys, dtype=int), np.asarray(ps, dtype=float), np.asarray(advantages, dtype=float)
    where = {pid: [] for pid in problems}
    for i, k in enumerate(keys):
        where[k].append(i)
    rows_of = [np.asarray(where[pid]) for pid in problems]
    rng = np.random.default_rng(seed)
    aucs: list[float] = []
    rhos: list[float] = []
    for _ in range(resamples):
        idx = np.concatenate([rows_of[j] for j in rng.integers(0, len(problems), len(problems))])
        auc, rho = _np_auc(y[idx], p[idx]), _np_spearman(p[idx], a[idx])
        if auc is not None:
            aucs.append(auc)
        if rho is not None:
            rhos.append(rho)
    q = [(1 - level) / 2, 1 - (1 - level) / 2]
    for name, vals in (("roc_auc_ci", aucs), ("spearman_ci", rhos)):
        if vals:
            out[name] = [round(float(v), 12) for v in np.quantile(np.asarray(vals), q)]
    info["defined"] = {"roc_auc": len(aucs), "spearman": len(rhos)}
    return out


def heldout_report(ys: Sequence[int], ps: Sequence[float], advantages: Sequence[float],
                   groups: Sequence[Any], resamples: int = BOOTSTRAP_RESAMPLES,
                   seed: int = 0) -> dict[str, Any]:
    """:func:`evaluate` on the held-out rows, their problem count, and :func:`bootstrap_intervals`."""
    report = evaluate(ys, ps, advantages)
    report["problems"] = len({str(g) for g in groups})
    if ys:
        report.update(bootstrap_intervals(ys, ps, advantages, groups, resamples, seed))
    else:
        report.update({"roc_auc_ci": None, "spearman_ci": None})
    return report
