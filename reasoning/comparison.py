"""A run beside its baselines on the same problems: engine seconds, the speed-up over target-only,
the mixing line (what routing whole problems at random to draft-only or target-only reaches at
the same cost) and the paired accuracy difference (seeded bootstrap over problems, McNemar's
exact test). :mod:`reasoning.metrics` re-exports every name."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def engine_seconds(summary: Mapping[str, Any]) -> float:
    """A run's draft, judge and target seconds (step-cache hits counted at the seconds they took
    when computed): its cost on the engines, the loop's own time left out.

    >>> engine_seconds({"seconds": {"draft": 1.0, "judge": 0.5, "target": 2.0}})
    3.5
    """
    return sum(summary["seconds"].values())


def mixing_accuracy(cost: float, draft_only: tuple[float, float],
                    target_only: tuple[float, float]) -> float | None:
    """The mixing line: the accuracy of sending each whole problem at random to the draft alone
    or the target alone, in the proportion that costs ``cost`` on average.

    ``draft_only`` and ``target_only`` are ``(accuracy, engine seconds)`` of the two baselines on
    the same problems. A share ``f = (cost - c_d) / (c_t - c_d)`` of the problems goes to the
    target; the accuracy is ``a_d + f (a_t - a_d)``. At or above the target's cost the line stays
    at ``a_t`` (no mix does better than the target alone by spending more); under the draft's
    cost it falls to 0 at no cost (leaving problems unanswered is the only cheaper mix). A method
    under this line is worse than no judge at all. None when the baselines' costs are equal.

    >>> mixing_accuracy(60.0, (0.2, 40.0), (0.6, 80.0))  # half the problems to each model
    0.4
    >>> mixing_accuracy(100.0, (0.2, 40.0), (0.6, 80.0)), mixing_accuracy(20.0, (0.2, 40.0), (0.6, 80.0))
    (0.6, 0.1)
    """
    (a_d, c_d), (a_t, c_t) = draft_only, target_only
    if c_t <= c_d:
        return None
    if cost >= c_t:
        return a_t
    if cost <= c_d:
        return a_d * max(cost, 0.0) / c_d if c_d > 0 else a_d
    return a_d + (cost - c_d) / (c_t - c_d) * (a_t - a_d)


def speedup(baseline: float | None, run: float | None) -> float | None:
    """A baseline's seconds over a run's (None when either is unknown or zero).

    >>> speedup(10.0, 4.0), speedup(10.0, 0.0), speedup(None, 1.0)
    (2.5, None, None)
    """
    if not baseline or not run or baseline <= 0 or run <= 0:
        return None
    return baseline / run


def headline_speedup(summary: Mapping[str, Any], base: Mapping[str, Any] | None) -> tuple[float | None, bool]:
    """A run's speed-up over target-only, the headline figure: target-only's engine seconds over
    the run's (:func:`engine_seconds`), and whether it is an estimate (either had step-cache hits,
    so not all its seconds were measured in that run).

    >>> headline_speedup({"seconds": {"draft": 1.0, "judge": 0.0, "target": 1.0}},
    ...                  {"seconds": {"draft": 0.0, "judge": 0.0, "target": 5.0}})
    (2.5, False)
    >>> headline_speedup({"seconds": {"draft": 2.0, "judge": 0.0, "target": 0.0}, "cache_hits": 3},
    ...                  {"seconds": {"draft": 0.0, "judge": 0.0, "target": 5.0}, "cache_hits": 0})
    (2.5, True)
    """
    if base is None:
        return None, False
    cached = bool(summary.get("cache_hits")) or bool(base.get("cache_hits"))
    return speedup(engine_seconds(base), engine_seconds(summary)), cached


def versus_baselines(summary: Mapping[str, Any], correct: Mapping[str, bool],
                     base: tuple[Mapping[str, Any], Mapping[str, bool]] | None,
                     draft: tuple[Mapping[str, Any], Mapping[str, bool]] | None) -> dict[str, Any]:
    """A run beside the baselines on the same problems (each given as ``(summary, {problem id:
    correct})``): its accuracy difference from target-only with a paired interval
    (``paired_vs_target_only``, see :func:`paired_difference`), and the mixing line at its engine
    seconds (``mixing_accuracy``, see :func:`mixing_accuracy`) with its margin over it
    (``above_mixing_line``, a difference of accuracies; negative: worse than no judge).

    >>> t = ({"accuracy": 0.6, "seconds": {"draft": 0, "judge": 0, "target": 80.0}}, {"a": True, "b": True})
    >>> d = ({"accuracy": 0.2, "seconds": {"draft": 40.0, "judge": 0, "target": 0}}, {"a": False, "b": True})
    >>> run = {"accuracy": 0.5, "seconds": {"draft": 40.0, "judge": 0.0, "target": 20.0}}
    >>> v = versus_baselines(run, {"a": True, "b": False}, t, d)
    >>> round(v["mixing_accuracy"], 3), round(v["above_mixing_line"], 3)
    (0.4, 0.1)
    >>> v["paired_vs_target_only"]["difference"]
    -0.5
    """
    out: dict[str, Any] = {}
    if base is not None:
        out["paired_vs_target_only"] = paired_difference(correct, base[1])
    if base is not None and draft is not None and summary.get("accuracy") is not None:
        (bs, _), (ds, _) = base, draft
        if bs.get("accuracy") is not None and ds.get("accuracy") is not None:
            mix = mixing_accuracy(engine_seconds(summary), (ds["accuracy"], engine_seconds(ds)),
                                  (bs["accuracy"], engine_seconds(bs)))
            out["mixing_accuracy"] = mix
            out["above_mixing_line"] = None if mix is None else summary["accuracy"] - mix
    return out


def _binom_two_sided(k: int, n: int) -> float:
    """Exact two-sided p-value of ``k`` successes in ``n`` fair coin flips (McNemar's exact test)."""
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(0, min(k, n - k) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def paired_difference(run: Mapping[str, bool], base: Mapping[str, bool], *, resamples: int = 10000,
                      seed: int = 0, level: float = 0.95) -> dict[str, Any] | None:
    """``run``'s accuracy minus ``base``'s over the problems both graded, with a paired interval.

    Both map problem id -> correct. The interval is the percentile bootstrap over problems
    (each resample draws problems with replacement and keeps each problem's pair of outcomes
    together), seeded, so it is the same every time; ``mcnemar_p`` is McNemar's exact test on
    the problems where the two differ (``run_only`` right only in ``run``, ``base_only`` only in
    ``base``). None when no problem is shared.

    >>> d = paired_difference({"a": True, "b": True, "c": False}, {"a": True, "b": False, "c": False})
    >>> d["shared"], d["difference"], d["run_only"], d["base_only"], d["mcnemar_p"]
    (3, 0.3333333333333333, 1, 0, 1.0)
    """
    import random

    ids = sorted(set(run) & set(base))
    n = len(ids)
    if not n:
        return None
    diffs = [int(bool(run[i])) - int(bool(base[i])) for i in ids]
    run_only, base_only = diffs.count(1), diffs.count(-1)
    rng = random.Random(seed)
    stats = sorted(sum(rng.choices(diffs, k=n)) / n for _ in range(resamples))
    lo_q, hi_q = (1 - level) / 2, 1 - (1 - level) / 2
    lo = stats[min(resamples - 1, max(0, math.floor(lo_q * resamples)))]
    hi = stats[min(resamples - 1, max(0, math.ceil(hi_q * resamples) - 1))]
    return {"shared": n, "difference": sum(diffs) / n, "ci95": [lo, hi], "run_only": run_only,
            "base_only": base_only, "correct_run": sum(bool(run[i]) for i in ids),
            "correct_base": sum(bool(base[i]) for i in ids),
            "mcnemar_p": _binom_two_sided(run_only, run_only + base_only), "resamples": resamples,
            "method": "paired percentile bootstrap over problems; McNemar exact"}


def problem_oracle(target_only: Mapping[str, tuple[bool, float]],
                   draft_only: Mapping[str, tuple[bool, float]]) -> dict[str, Any] | None:
    """The ceiling of routing whole problems: per problem, the cheaper baseline that does not
    lose it, as an oracle that knew both outcomes would pick.

    Each baseline maps problem id -> ``(correct, seconds charged to the problem)``. A problem goes
    to the draft where draft-only got it right, or where both got it wrong (nothing to lose),
    and it is the cheaper of the two; to the target otherwise. So the oracle is never less
    accurate than target-only (more where only the draft got a problem right), and its seconds
    are the least any problem-level router reaches at that accuracy on these problems. An
    estimate from the baselines' recorded per-problem seconds, not a run. None when no problem
    is shared.

    >>> t = {"a": (True, 10.0), "b": (False, 12.0), "c": (True, 8.0), "d": (False, 9.0)}
    >>> d = {"a": (True, 4.0), "b": (False, 5.0), "c": (False, 3.0), "d": (True, 4.0)}
    >>> o = problem_oracle(t, d)
    >>> o["to_draft"], o["correct"], o["correct_target_only"], o["seconds"], round(o["speedup"], 3)
    (3, 3, 2, 21.0, 1.857)
    """
    ids = sorted(set(target_only) & set(draft_only))
    if not ids:
        return None
    seconds = correct = to_draft = 0
    base_seconds = sum(target_only[i][1] for i in ids)
    for i in ids:
        (t_ok, t_s), (d_ok, d_s) = target_only[i], draft_only[i]
        # the one that alone gets it right; the cheaper where both do, or neither
        use_draft = d_ok > t_ok or (d_ok == t_ok and d_s <= t_s)
        to_draft += use_draft
        seconds += d_s if use_draft else t_s
        correct += d_ok if use_draft else t_ok
    return {"shared": len(ids), "to_draft": to_draft, "correct": correct,
            "correct_target_only": sum(target_only[i][0] for i in ids), "seconds": seconds,
            "speedup": speedup(base_seconds, seconds),
            "note": "estimate: each problem's cheaper baseline that does not lose it, from the "
                    "baselines' recorded per-problem seconds"}
