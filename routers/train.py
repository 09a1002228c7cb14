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
held-out *problems* (:func:`routers.metrics.bootstrap_intervals`, seeded).

Routers train on *train* problems only: rows of a test split are refused.

The rows and their split live in :mod:`routers.rows`, the held-out metrics in
:mod:`routers.metrics`, the saved folder (``router.json``, the fitted model's predictions) in
:mod:`routers.saved`; their names stay importable from here.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from reasoning.errors import UserError
from routers.features import FEATURES, row_features, row_text
from routers.labels import balance, class_counts
from routers.metrics import (  # noqa: F401 - kept importable from here
    BOOTSTRAP_RESAMPLES,
    bootstrap_intervals,
    evaluate,
    heldout_report,
    roc_auc,
    spearman,
)
from routers.rows import (  # noqa: F401 - kept importable from here
    check_train_rows,
    load_rows,
    prepare,
    split_by_problem,
)
from routers.saved import (  # noqa: F401 - kept importable from here
    FORMAT,
    FORMAT_VERSION,
    KINDS,
    META,
    MODEL_FILE,
    LightweightRouter,
    judge_score,
    read_meta,
    seq_probabilities,
    training_meta,
    write_meta,
)

CANDIDATES = ("logistic", "gboost")
"""The lightweight models fitted and compared."""
CV_FOLDS = 5
"""Default folds of the grouped cross-validation that picks the lightweight model."""


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
        ``{"folds": k, "splitter": ..., "scores": {name: {"roc_auc": mean | None, "folds": [...]}},
        "out_of_fold": {name: [P | None per row]}}``: each row's ``P`` from the fold that held it
        out (None where that fold was not fitted); ``k = 0`` and no fold scores with fewer than
        two problems.
    """
    import numpy as np
    from sklearn.model_selection import StratifiedGroupKFold

    if folds < 2:
        raise ValueError(f"cv folds must be >= 2, got {folds}")
    keys = [str(g) for g in groups]
    k = min(folds, len(set(keys)))
    scores: dict[str, dict[str, Any]] = {name: {"roc_auc": None, "folds": []} for name in candidates}
    oof: dict[str, list[float | None]] = {name: [None] * len(keys) for name in candidates}
    result = {"folds": k if k >= 2 else 0, "splitter": "StratifiedGroupKFold", "metric": "roc_auc",
              "scores": scores, "out_of_fold": oof}
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
            for i, p in zip(val_idx, ps):
                oof[name][int(i)] = p
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


def operating_point(train_p: Sequence[float | None], share: float,
                    heldout_p: Sequence[float] = ()) -> dict[str, Any]:
    """The ``policy.threshold`` that sends ``share`` of the training steps to the target.

    ``train_p`` is the router's ``P`` of each training step (None: not predicted, left out);
    the judge scores a step ``1 - P`` (:func:`routers.saved.judge_score`) and the policy keeps
    it when the score is at least the threshold, so :func:`routers.calibration.calibrate` on
    those scores gives the threshold (ties stay with the draft; the share achieved is at most
    the one asked). ``heldout_share`` is the share of ``heldout_p``'s steps that threshold
    sends to the target (None without held-out steps): what it does on problems it was not
    fitted on.

    >>> operating_point([0.9, 0.6, 0.2, 0.1, None], 0.25)
    {'threshold': 0.4, 'share': 0.25, 'requested': 0.25, 'steps': 4, 'heldout_share': None}
    >>> operating_point([0.9, 0.6, 0.2, 0.1], 0.5, heldout_p=[0.7, 0.1])["heldout_share"]
    0.5
    """
    from routers.calibration import calibrate, target_share

    scores = [judge_score(p) for p in train_p if p is not None]
    if not scores:
        raise UserError("no training step has a router probability to calibrate the threshold on")
    cal = calibrate(scores, share)
    held = [judge_score(p) for p in heldout_p]
    return {"threshold": cal.threshold, "share": round(cal.share, 12), "requested": share, "steps": cal.steps,
            "heldout_share": round(target_share(held, cal.threshold), 12) if held else None}


def train_lightweight(rows: Sequence[Mapping[str, Any]], margin: float = 0.0, average_samples: bool = False,
                      balance_classes: bool = True, seed: int = 0, test_fraction: float = 0.25,
                      candidates: Sequence[str] = CANDIDATES, cv_folds: int = CV_FOLDS,
                      bootstrap_resamples: int = BOOTSTRAP_RESAMPLES,
                      target_share: float | str | None = "oracle") -> LightweightRouter:
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
        target_share: The share of steps the router should send to the target, for the
            operating point ``meta["operating_point"]`` (:func:`operating_point`): a number in
            [0, 1], ``"oracle"`` (the share of training steps whose label says the target is
            better, what an outcome oracle sends) or None (no operating point). The threshold is
            calibrated on the kept candidate's *out-of-fold* ``P`` of the training steps (each
            from the CV fold that held its problem out, so it is what the router does on new
            problems), or on the refitted model's own ``P`` when there is no CV; ``from`` says
            which. The routers are fitted on balanced rows, so ``P`` centres near 0.5 and
            ``policy.threshold = 0.5`` would send far more steps than the oracle does.

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
    if not candidates or set(candidates) - set(CANDIDATES):
        raise UserError(f"candidates must be some of {', '.join(CANDIDATES)}, got {list(candidates)}")
    if isinstance(target_share, str) and target_share != "oracle" or (
            isinstance(target_share, int | float) and not 0.0 <= target_share <= 1.0):
        raise UserError(f"target_share must be a number in [0, 1], 'oracle' or None, got {target_share!r}")
    ys, train, test, ytrain, adv, train_all = prepare(rows, margin, average_samples, balance_classes, seed,
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
    router.meta = training_meta(
        "lightweight", rows, train, test, ytrain, margin, average_samples, balance_classes, seed,
        test_fraction, train_all=train_all,
        model=best, model_file=MODEL_FILE, feature_names=list(FEATURES), top_logprobs=k.pop(),
        heldout=heldout, candidates=cv["scores"], cv_score=cv["scores"][best]["roc_auc"],
        selection={"method": method, "folds": cv["folds"], "requested_folds": cv_folds,
                   "splitter": cv["splitter"], "groups": "problem_id", "metric": "mean ROC-AUC over folds",
                   "data": "training split only", "chosen": best},
        cv_folds=cv_folds, selected_by=selected_by)
    if target_share is not None:
        share = (sum(ys[i] for i in train_all) / len(train_all) if target_share == "oracle"
                 else float(target_share))
        oof = [cv["out_of_fold"][best][j] for j in range(len(train_all))] if scored else []
        from_oof = any(p is not None for p in oof)
        train_p = oof if from_oof else router.predict([X[i] for i in train_all])
        op = operating_point(train_p, share, router.predict([X[i] for i in test]))
        op["asked"] = "the oracle's share of training steps" if target_share == "oracle" else "a share"
        op["from"] = ("out-of-fold P of the training steps (grouped CV)" if from_oof
                      else "the refitted model's P of its own training steps (no CV)")
        router.meta["operating_point"] = op
    router.meta["cost_ms"] = decision_cost(router, X)
    return router


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

    ys, train, test, ytrain, adv, train_all = prepare(rows, margin, average_samples, balance_classes, seed,
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
    meta = training_meta("seq-classification", rows, train, test, ytrain, margin, average_samples,
                         balance_classes, seed, test_fraction, train_all=train_all,
                         selection={"method": "none (one model)"},
                         base_model=str(base_model), max_length=max_length, steps=steps, epochs=epochs,
                         lr=lr, batch_size=batch_size, last_loss=losses[-1] if losses else None,
                         heldout=heldout)
    write_meta(folder, meta)
    return meta
