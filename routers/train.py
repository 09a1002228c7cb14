"""Train a router on collected rows: does the target's step beat the draft's here?

Two kinds, both saved as a folder holding ``router.json`` (the metadata :class:`routers.judge.
RouterJudge` reads: ``format``, ``version``, ``kind``, the label's margin, the held-out metrics):

- ``lightweight``: scikit-learn on the cheap draft-side features of :mod:`routers.features`.
  A logistic regression (standardised features) and a gradient-boosted tree ensemble are
  compared by grouped cross-validation on the *training* problems (:func:`cross_validate`:
  ``cv_folds`` folds, all steps of a problem in one fold, mean ROC-AUC); the winner is refitted
  on all training rows and kept, in ``model.joblib`` (a pickle: load only routers you trained).
  ``router.json`` names the features in input order and the ``k`` top logprobs per draft token
  the entropy feature was read with.
- ``seq-classification``: a transformers model (``AutoModelForSequenceClassification``,
  two labels) fine-tuned on :func:`routers.features.row_text`, the problem, the answer so far
  with each step marked by who wrote it, and the drafted step. The folder is also a
  ``save_pretrained`` folder (weights, config, tokenizer).

Both predict ``P(y = 1)``, the probability that the target beats the draft by more than the
margin (:mod:`routers.labels`). Rows are split into training and held-out rows **by problem**
(the steps of a problem are alike; a row split would leak), the training rows balanced by
down-sampling the majority class. The held-out rows (not balanced) are used for the final report
only, never to choose a model: ROC-AUC, accuracy at ``P >= 0.5`` and the Spearman correlation
between ``P`` and the advantage, ROC-AUC and Spearman with 95% intervals from a bootstrap over
held-out *problems* (:func:`bootstrap_intervals`, seeded).

Routers train on *train* problems only: rows of a test split are refused.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reasoning.errors import UserError
from routers.features import FEATURES, row_features, row_text
from routers.labels import balance, class_counts, labels, row_advantage

log = logging.getLogger(__name__)

FORMAT = "stepspec-router"
"""``router.json``'s ``format``: what the folder holds."""
FORMAT_VERSION = 1
"""``router.json``'s ``version``: the layout this code writes and reads."""
META = "router.json"
MODEL_FILE = "model.joblib"
KINDS = ("lightweight", "seq-classification")
CANDIDATES = ("logistic", "gboost")
"""The lightweight models fitted and compared."""
CV_FOLDS = 5
"""Default folds of the grouped cross-validation that picks the lightweight model."""
BOOTSTRAP_RESAMPLES = 1000
"""Default resamples (of held-out problems) of the held-out metrics' 95% intervals."""

_TEST_ID = re.compile(r"(^|[-_/.])test([-_/.]|$)", re.IGNORECASE)


# -- rows ----------------------------------------------------------------------------------------
def load_rows(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[dict[str, Any]]:
    """Rows from collection folders (their ``steps.jsonl``) or ``steps.jsonl`` files.

    Raises:
        UserError: a path that does not exist, or no rows at all.
    """
    from routers.collect import STEPS, read_rows

    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    rows: list[dict[str, Any]] = []
    for p in map(Path, paths):
        file = p / STEPS if p.is_dir() else p
        if not file.is_file():
            raise UserError(f"no router data at {p}: give a folder written by recipes.collect_router_data "
                            f"(holding {STEPS}) or a {STEPS} file")
        rows += read_rows(file)
    if not rows:
        raise UserError(f"no rows in {', '.join(map(str, paths))}; collect some with "
                        "python -m recipes.collect_router_data")
    return rows


def check_train_rows(rows: Sequence[Mapping[str, Any]]) -> None:
    """Refuse rows of problems not from a train split: by the ``split`` a row carries (its
    collection config's ``dataset.split``); a row collected before rows carried it, by its id
    naming a test split (``gsm8k-test-3``).

    >>> check_train_rows([{"problem_id": "math500-3", "split": "train"}, {"problem_id": "gsm8k-train-3"}])
    >>> check_train_rows([{"problem_id": "math500-3", "split": "test"}])
    Traceback (most recent call last):
    ...
    reasoning.errors.UserError: row of problem 'math500-3' comes from split 'test'; ...
    >>> check_train_rows([{"problem_id": "gsm8k-test-3"}])
    Traceback (most recent call last):
    ...
    reasoning.errors.UserError: row of problem 'gsm8k-test-3' comes from a test split; ...
    """
    for r in rows:
        pid = str(r.get("problem_id"))
        split = r.get("split")
        if split is not None and str(split).strip().lower() != "train":
            raise UserError(f"row of problem {pid!r} comes from split {split!r}; routers train on train "
                            "splits only (collect with dataset.split=train)")
        if split is None and _TEST_ID.search(pid):
            raise UserError(f"row of problem {pid!r} comes from a test split; routers train on train splits "
                            "only (collect with dataset.split=train)")


def split_by_problem(rows: Sequence[Mapping[str, Any]], test_fraction: float = 0.25,
                     seed: int = 0) -> tuple[list[int], list[int]]:
    """Row indices of the training and held-out parts, all steps of a problem on one side.

    ``round(test_fraction * problems)`` problems, drawn with ``random.Random(seed)``, are held
    out (at least one when ``test_fraction > 0`` and there are two problems or more).

    >>> rows = [{"problem_id": p} for p in "aabbbcd"]
    >>> split_by_problem(rows, 0.5, seed=1)
    ([0, 1, 6], [2, 3, 4, 5])
    >>> split_by_problem(rows, 0.0)
    ([0, 1, 2, 3, 4, 5, 6], [])
    """
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    problems = sorted({str(r["problem_id"]) for r in rows})
    n = round(test_fraction * len(problems))
    if test_fraction > 0 and len(problems) >= 2:
        n = min(max(n, 1), len(problems) - 1)
    held = set(random.Random(seed).sample(problems, n))
    train = [i for i, r in enumerate(rows) if str(r["problem_id"]) not in held]
    test = [i for i, r in enumerate(rows) if str(r["problem_id"]) in held]
    return train, test


# -- metrics -------------------------------------------------------------------------------------
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


# -- the lightweight router ----------------------------------------------------------------------
def _candidate(name: str, seed: int) -> Any:
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if name == "logistic":
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    if name == "gboost":
        return GradientBoostingClassifier(n_estimators=100, max_depth=3, learning_rate=0.1, subsample=1.0,
                                          random_state=seed)
    raise ValueError(f"unknown lightweight model {name!r}: choose from {', '.join(CANDIDATES)}")


@dataclass
class LightweightRouter:
    """A fitted scikit-learn classifier on :data:`routers.features.FEATURES`, and its metadata.

    Attributes:
        model: The classifier (``predict_proba``; class 1 = the target beats the draft).
        meta: What ``router.json`` holds.
    """

    model: Any
    meta: dict[str, Any] = field(default_factory=dict)
    _linear: tuple[list[float], float] | None = field(default=None, init=False, repr=False)
    _checked: bool = field(default=False, init=False, repr=False)

    @property
    def feature_names(self) -> list[str]:
        return list(self.meta.get("feature_names", FEATURES))

    def predict(self, X: Sequence[Sequence[float]]) -> list[float]:
        """``P(target beats draft)`` for each feature vector.

        A standardised logistic regression is evaluated in plain Python from its coefficients
        (the same probabilities as ``predict_proba`` up to rounding, in microseconds instead of
        scikit-learn's fraction of a millisecond per call); any other model by ``predict_proba``.
        """
        if len(X) == 0:
            return []
        if not self._checked:
            self._linear = _linear_parts(self.model)
            self._checked = True
        if self._linear is not None:
            w, b = self._linear
            return [_sigmoid(b + sum(wi * xi for wi, xi in zip(w, x))) for x in X]
        import numpy as np

        proba = self.model.predict_proba(np.asarray(X, dtype=float))
        col = list(self.model.classes_).index(1)
        return [float(p) for p in proba[:, col]]

    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``model.joblib`` and ``router.json`` into ``folder``; returns the folder."""
        import joblib

        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        joblib.dump(self.model, out / MODEL_FILE)
        write_meta(out, self.meta)
        return out


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def _linear_parts(model: Any) -> tuple[list[float], float] | None:
    """``(w, b)`` with ``P(class 1) = sigmoid(w . x + b)`` for a fitted ``StandardScaler`` +
    binary ``LogisticRegression`` pipeline; None for any other model."""
    try:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler
    except ImportError:
        return None
    if not (isinstance(model, Pipeline) and len(model.steps) == 2):
        return None
    scaler, lr = model.steps[0][1], model.steps[1][1]
    if not (isinstance(scaler, StandardScaler) and isinstance(lr, LogisticRegression)):
        return None
    if lr.coef_.shape[0] != 1 or list(lr.classes_) not in ([0, 1], [1, 0]):
        return None
    n = lr.coef_.shape[1]
    mean = list(scaler.mean_) if scaler.with_mean and scaler.mean_ is not None else [0.0] * n
    scale = list(scaler.scale_) if scaler.with_std and scaler.scale_ is not None else [1.0] * n
    sign = 1.0 if list(lr.classes_) == [0, 1] else -1.0  # decision > 0 means classes_[1]
    w = [sign * float(c) / float(s) for c, s in zip(lr.coef_[0], scale)]
    b = sign * float(lr.intercept_[0]) - sum(wi * float(m) for wi, m in zip(w, mean))
    return w, b


def decision_cost(router: LightweightRouter, X: Sequence[Sequence[float]],
                  repeats: int = 200) -> dict[str, float]:
    """Milliseconds per decision: one row at a time (median of ``repeats``), and in a batch of 64."""
    import statistics

    if not X:
        return {}
    one = [X[0]]
    router.predict(one)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        router.predict(one)
        times.append(time.perf_counter() - t0)
    batch = [X[i % len(X)] for i in range(64)]
    t0 = time.perf_counter()
    for _ in range(10):
        router.predict(batch)
    per = (time.perf_counter() - t0) / (10 * 64)
    return {"single_ms": round(statistics.median(times) * 1e3, 4), "batch64_ms": round(per * 1e3, 4)}


def _prepare(rows: Sequence[Mapping[str, Any]], margin: float, average_samples: bool,
             balance_classes: bool, seed: int,
             test_fraction: float) -> tuple[list[int], list[int], list[int], list[int], list[float],
                                            list[int]]:
    """Labels, the (balanced) training indices, the held-out indices, the training labels,
    advantages, and the training indices before balancing."""
    if not rows:
        raise UserError("no rows to train on")
    check_train_rows(rows)
    ys = labels(rows, margin, average_samples)
    adv = [row_advantage(r, average_samples) for r in rows]
    train, test = split_by_problem(rows, test_fraction, seed)
    ytrain = [ys[i] for i in train]
    neg, pos = class_counts(ytrain)
    if neg == 0 or pos == 0:
        raise UserError(f"the training rows hold one class only ({pos} with advantage > margin={margin}, "
                        f"{neg} without): collect more problems or change the margin")
    unbalanced = list(train)
    if balance_classes:
        train = [train[i] for i in balance(ytrain, seed)]
    return ys, train, test, [ys[i] for i in train], adv, unbalanced


def cross_validate(X: Sequence[Sequence[float]], ys: Sequence[int], groups: Sequence[Any],
                   candidates: Sequence[str] = CANDIDATES, folds: int = CV_FOLDS, seed: int = 0,
                   balance_classes: bool = True) -> dict[str, Any]:
    """Grouped k-fold cross-validated ROC-AUC of each candidate, on the rows given (training rows).

    The folds are ``StratifiedGroupKFold(min(folds, problems), shuffle=True, random_state=seed)``
    over ``groups`` (the problem id of each row), the same folds for every candidate: a problem's
    rows are all in one fold. Each fold's training part is balanced like the final fit (when
    ``balance_classes``); its validation part is not. A fold whose validation part lacks a class,
    or whose training part does, scores None and is left out of the mean.

    Returns:
        ``{"folds": k, "splitter": ..., "scores": {name: {"roc_auc": mean | None, "folds": [...]}}}``;
        ``k = 0`` and no fold scores with fewer than two problems.
    """
    import numpy as np
    from sklearn.model_selection import StratifiedGroupKFold

    if folds < 2:
        raise ValueError(f"cv folds must be >= 2, got {folds}")
    keys = [str(g) for g in groups]
    k = min(folds, len(set(keys)))
    scores: dict[str, dict[str, Any]] = {name: {"roc_auc": None, "folds": []} for name in candidates}
    result = {"folds": k if k >= 2 else 0, "splitter": "StratifiedGroupKFold", "metric": "roc_auc",
              "scores": scores}
    if k < 2:
        return result
    Xa, ya = np.asarray(X, dtype=float), np.asarray(ys, dtype=int)
    splits = list(StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(Xa, ya, keys))
    for name in candidates:
        per_fold: list[float | None] = []
        for fit_idx, val_idx in splits:
            yfit = [int(v) for v in ya[fit_idx]]
            neg, pos = class_counts(yfit)
            if neg == 0 or pos == 0:
                per_fold.append(None)
                continue
            if balance_classes:
                fit_idx = fit_idx[balance(yfit, seed)]
            model = _candidate(name, seed)
            model.fit(Xa[fit_idx], ya[fit_idx])
            ps = LightweightRouter(model, {"feature_names": list(FEATURES)}).predict(Xa[val_idx].tolist())
            per_fold.append(roc_auc([int(v) for v in ya[val_idx]], ps))
        defined = [a for a in per_fold if a is not None]
        scores[name] = {"roc_auc": round(sum(defined) / len(defined), 12) if defined else None,
                        "folds": per_fold}
    return result


def select_candidate(cv: Mapping[str, Any], candidates: Sequence[str]) -> str:
    """The candidate with the highest mean CV ROC-AUC; ties and no score keep the earliest."""
    best = candidates[0]
    for name in candidates[1:]:
        a, b = cv["scores"][name]["roc_auc"], cv["scores"][best]["roc_auc"]
        if a is not None and (b is None or a > b):
            best = name
    return best


def train_lightweight(rows: Sequence[Mapping[str, Any]], margin: float = 0.0, average_samples: bool = False,
                      balance_classes: bool = True, seed: int = 0, test_fraction: float = 0.25,
                      candidates: Sequence[str] = CANDIDATES, cv_folds: int = CV_FOLDS,
                      bootstrap_resamples: int = BOOTSTRAP_RESAMPLES) -> LightweightRouter:
    """Choose a candidate by grouped cross-validation on the training problems, refit it on all
    training rows, and report it once on the held-out problems.

    Args:
        rows: Collected rows (train problems).
        margin, average_samples: The label (:mod:`routers.labels`).
        balance_classes: Down-sample the majority class of the rows each model is fitted on.
        seed: Seeds the split, balancing, CV folds, models and bootstrap.
        test_fraction: Share of problems held out for the final report (0: none).
        candidates: The models compared (:data:`CANDIDATES`).
        cv_folds: Folds of the grouped cross-validation that picks the model
            (:func:`cross_validate`; fewer when there are fewer training problems). The held-out
            rows never enter it.
        bootstrap_resamples: Resamples of held-out problems for the 95% intervals.

    ``meta["candidates"]`` holds every candidate's CV score, ``meta["cv_score"]`` the kept one's,
    ``meta["selection"]`` the method and folds, ``meta["heldout"]`` the kept model's held-out
    metrics with intervals (:func:`heldout_report`), ``meta["split"]`` rows and problems on each
    side, ``meta["cost_ms"]`` its cost per decision. Ties, and no CV score (fewer than two
    training problems, or no fold with both classes), keep the first candidate (the logistic
    regression, the cheaper).

    Raises:
        UserError: no rows, rows of a test split, or one class only among the training rows.
    """
    if cv_folds < 2:
        raise UserError(f"cv_folds must be >= 2, got {cv_folds}")
    if bootstrap_resamples < 1:
        raise UserError(f"bootstrap_resamples must be >= 1, got {bootstrap_resamples}")
    ys, train, test, ytrain, adv, train_all = _prepare(rows, margin, average_samples, balance_classes, seed,
                                                       test_fraction)
    X = [row_features(r) for r in rows]
    k = {int(r.get("top_logprobs", 0)) for r in rows}
    if len(k) > 1:
        raise UserError(f"the rows were collected with different top_logprobs ({sorted(k)}); the entropy "
                        "feature needs one: train on rows of one collection config")
    cv = cross_validate([X[i] for i in train_all], [ys[i] for i in train_all],
                        [rows[i]["problem_id"] for i in train_all], candidates, cv_folds, seed,
                        balance_classes)
    best = select_candidate(cv, candidates)
    model = _candidate(best, seed)
    model.fit([X[i] for i in train], ytrain)
    router = LightweightRouter(model)
    heldout = heldout_report([ys[i] for i in test], router.predict([X[i] for i in test]),
                             [adv[i] for i in test], [rows[i]["problem_id"] for i in test],
                             bootstrap_resamples, seed)
    scored = cv["scores"][best]["roc_auc"] is not None
    method = (f"grouped CV, {cv['folds']} folds on train" if cv["folds"]
              else "none (fewer than 2 training problems)")
    selected_by = (f"{method}, mean ROC-AUC" if scored else f"first candidate ({method}; no CV ROC-AUC)")
    router.meta = _meta(
        "lightweight", rows, train, test, ytrain, margin, average_samples, balance_classes, seed,
        test_fraction, train_all=train_all,
        model=best, model_file=MODEL_FILE, feature_names=list(FEATURES), top_logprobs=k.pop(),
        heldout=heldout, candidates=cv["scores"], cv_score=cv["scores"][best]["roc_auc"],
        selection={"method": method, "folds": cv["folds"], "requested_folds": cv_folds,
                   "splitter": cv["splitter"], "groups": "problem_id", "metric": "mean ROC-AUC over folds",
                   "data": "training split only", "chosen": best},
        cv_folds=cv_folds, selected_by=selected_by)
    router.meta["cost_ms"] = decision_cost(router, X)
    return router


def _meta(kind: str, rows, train, test, ytrain, margin, average_samples, balance_classes, seed,
          test_fraction, train_all=None, **extra: Any) -> dict[str, Any]:
    import importlib.metadata as md

    versions = {}
    for pkg in ("scikit-learn", "transformers", "torch"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return {
        "format": FORMAT, "version": FORMAT_VERSION, "kind": kind,
        "predicts": "P(target beats draft): advantage = target_score - draft_score > margin",
        "score": "1 - P (RouterJudge); ThresholdPolicy(threshold=1 - tau) sends a step to the target when "
                 "P > tau",
        "margin": margin, "average_samples": average_samples, "balanced": balance_classes, "seed": seed,
        "test_fraction": test_fraction,
        "train": {"rows": len(train), "problems": len({rows[i]["problem_id"] for i in train}),
                  "positives": sum(ytrain)},
        "heldout_problems": sorted({str(rows[i]["problem_id"]) for i in test}),
        "split": {"by": "problem_id", "train": _counts(rows, train if train_all is None else train_all),
                  "train_fitted": _counts(rows, train), "heldout": _counts(rows, test)},
        "versions": versions,
        **extra,
    }


def _counts(rows: Sequence[Mapping[str, Any]], idx: Sequence[int]) -> dict[str, int]:
    return {"rows": len(idx), "problems": len({str(rows[i]["problem_id"]) for i in idx})}


# -- the sequence-classification router -----------------------------------------------------------
def train_seq_router(rows: Sequence[Mapping[str, Any]], base_model: str, out: str | os.PathLike,
                     margin: float = 0.0, average_samples: bool = False, balance_classes: bool = True,
                     seed: int = 0, test_fraction: float = 0.25, epochs: int = 1,
                     max_steps: int | None = None, lr: float = 5e-5, batch_size: int = 8,
                     max_length: int = 512, device: str = "cpu",
                     bootstrap_resamples: int = BOOTSTRAP_RESAMPLES) -> dict[str, Any]:
    """Fine-tune ``AutoModelForSequenceClassification`` (two labels) on :func:`routers.features.row_text`.

    Args:
        rows: Collected rows (train problems).
        base_model: A short model name (``smollm2-135m``), a local folder or a hub id.
        out: The router folder to write (``save_pretrained`` files and ``router.json``).
        epochs: Passes over the (balanced) training rows.
        max_steps: Stop after this many optimiser steps (None: all epochs).
        lr: AdamW learning rate.
        batch_size: Rows per step.
        max_length: Tokens per text; longer texts lose their start (the drafted step is last).
        device: Torch device.
        bootstrap_resamples: Resamples of held-out problems for the 95% intervals.

    There is one model and no selection: the held-out problems give the final report only.

    Returns:
        The metadata written to ``router.json`` (held-out metrics with intervals under ``heldout``).
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from reasoning.cpu_models import resolve_model

    ys, train, test, ytrain, adv, train_all = _prepare(rows, margin, average_samples, balance_classes, seed,
                                                       test_fraction)
    if epochs < 1 or batch_size < 1 or max_length < 8 or (max_steps is not None and max_steps < 1):
        raise UserError("epochs, batch_size and max_steps must be >= 1, max_length >= 8")
    try:
        path = resolve_model(base_model)
    except ValueError as e:
        raise UserError(f"base model: {e}") from None
    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.truncation_side = "left"
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    model.config.pad_token_id = tok.pad_token_id
    model.to(device)
    texts = [row_text(r) for r in rows]
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    rng = random.Random(seed)
    steps = 0
    losses: list[float] = []
    model.train()
    for _epoch in range(epochs):
        order = list(train)
        rng.shuffle(order)
        for b in range(0, len(order), batch_size):
            idx = order[b:b + batch_size]
            enc = tok([texts[i] for i in idx], padding=True, truncation=True, max_length=max_length,
                      return_tensors="pt").to(device)
            out_ = model(**enc, labels=torch.tensor([ys[i] for i in idx], device=device))
            out_.loss.backward()
            opt.step()
            opt.zero_grad()
            losses.append(float(out_.loss.detach()))
            steps += 1
            if max_steps is not None and steps >= max_steps:
                break
        if max_steps is not None and steps >= max_steps:
            break
    model.eval()
    ps = seq_probabilities(model, tok, [texts[i] for i in test], max_length, batch_size, device)
    heldout = heldout_report([ys[i] for i in test], ps, [adv[i] for i in test],
                             [rows[i]["problem_id"] for i in test], bootstrap_resamples, seed)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    meta = _meta("seq-classification", rows, train, test, ytrain, margin, average_samples, balance_classes,
                 seed, test_fraction, train_all=train_all, selection={"method": "none (one model)"},
                 base_model=str(base_model), max_length=max_length, steps=steps,
                 epochs=epochs, lr=lr, batch_size=batch_size, last_loss=losses[-1] if losses else None,
                 heldout=heldout)
    write_meta(folder, meta)
    return meta


def seq_probabilities(model: Any, tokenizer: Any, texts: Sequence[str], max_length: int, batch_size: int = 8,
                      device: str = "cpu") -> list[float]:
    """``P(label 1)`` of a sequence-classification model for each text (softmax over two logits)."""
    import torch

    out: list[float] = []
    with torch.no_grad():
        for b in range(0, len(texts), batch_size):
            enc = tokenizer(list(texts[b:b + batch_size]), padding=True, truncation=True,
                            max_length=max_length, return_tensors="pt").to(device)
            logits = model(**enc).logits.float()
            out += [float(p) for p in torch.softmax(logits, dim=-1)[:, 1]]
    return out


# -- metadata ------------------------------------------------------------------------------------
def write_meta(folder: str | os.PathLike, meta: Mapping[str, Any]) -> Path:
    """Write ``router.json`` atomically."""
    p = Path(folder) / META
    tmp = p.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(dict(meta), indent=2, sort_keys=True) + "\n")
    os.replace(tmp, p)
    return p


def read_meta(path: str | os.PathLike) -> tuple[Path, dict[str, Any]]:
    """The router folder and its checked ``router.json`` (``path``: the folder or the file).

    Raises:
        UserError: a missing folder or file, a file that is not a router's, an unknown kind or
            a format version this code does not read.
    """
    p = Path(path).expanduser()
    folder = p.parent if p.is_file() or p.name == META else p
    file = folder / META
    if not file.is_file():
        what = "no such folder" if not folder.exists() else f"no {META} in it"
        raise UserError(f"router {str(path)!r}: {what}; train one with python -m recipes.train_router "
                        "(after python -m recipes.collect_router_data) and set judge.path to its folder")
    try:
        meta = json.loads(file.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"router {str(file)!r} is not readable JSON ({e})") from None
    fmt = meta.get("format") if isinstance(meta, dict) else None
    if fmt != FORMAT:
        raise UserError(f"{file} is not a stepspec router (format {fmt!r}, expected {FORMAT!r})")
    if meta.get("version") != FORMAT_VERSION:
        raise UserError(f"router {str(folder)!r} has format version {meta.get('version')!r}; this stepspec "
                        f"reads version {FORMAT_VERSION}: retrain it with python -m recipes.train_router")
    if meta.get("kind") not in KINDS:
        raise UserError(f"router {str(folder)!r} has kind {meta.get('kind')!r}; expected one of "
                        f"{', '.join(KINDS)}")
    return folder, meta
