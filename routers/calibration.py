"""Calibrate a judge's threshold to a share of steps written by the target.

A judge with :class:`reasoning.policies.ThresholdPolicy` keeps a drafted step when its score
is at least the threshold, so the target writes the steps that score *below* it. Given the
judge's scores on collected steps and the share of target steps one can afford (say 0.3),
:func:`calibrate` returns the threshold that sends that share of those steps to the target.

Use scores of *training* steps only: a threshold calibrated on the steps it is then evaluated
on reports a share (and an accuracy) it was fitted to, not one it would get on new problems.

Ties, exactly: a step whose score equals the threshold is kept (goes to the draft), as the
policy keeps ``score >= threshold``. Steps with equal scores therefore always land on the
same side, so not every share can be had; the share returned is the largest achievable one
that does not exceed the request (the request is a budget), and the threshold is a score of
the data itself, the lowest score that stays with the draft. Share 0 gives threshold 0.0 and
share 1 gives 1.0 (when every score is below 1), so that the extremes hold on new data too.

Pure functions: no torch, no model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

_EPS = 1e-9
"""Slack on ``share * steps`` so that e.g. 0.29 * 100 (28.999999999999996) counts as 29 steps."""


@dataclass(frozen=True, slots=True)
class Calibration:
    """A threshold fitted to a share of target steps.

    Attributes:
        threshold: Keep a draft when its score is ``>= threshold``.
        share: Share of the calibration steps that score below ``threshold`` (the target's).
        requested: The share asked for; ``share <= requested``, lower only where ties forced it.
        steps: Number of calibration steps.
    """

    threshold: float
    share: float
    requested: float
    steps: int


def _check_scores(scores: Sequence[float]) -> list[float]:
    if len(scores) == 0:
        raise ValueError("scores is empty; calibrate on the judge's scores of some training steps")
    out = []
    for i, s in enumerate(scores):
        s = float(s)
        if math.isnan(s) or not 0.0 <= s <= 1.0:
            raise ValueError(f"scores[{i}] = {s}; judge scores must be in [0, 1]")
        out.append(s)
    return out


def target_share(scores: Sequence[float], threshold: float) -> float:
    """The share of ``scores`` strictly below ``threshold`` (the steps the target would write).

    >>> target_share([0.1, 0.5, 0.5, 0.9], 0.5)
    0.25
    """
    xs = _check_scores(scores)
    return sum(x < threshold for x in xs) / len(xs)


def calibrate(scores: Sequence[float], share: float) -> Calibration:
    """The threshold that sends ``share`` of the steps scored ``scores`` to the target.

    Args:
        scores: The judge's scores in [0, 1] of calibration (training) steps.
        share: The share of steps the target may write, in [0, 1].

    Returns:
        The threshold and the share it achieves on ``scores``: the largest share, not above
        ``share``, that a threshold can give (equal scores fall on the same side, the draft's
        when equal to the threshold).

    Raises:
        ValueError: if ``scores`` is empty or holds a value outside [0, 1], or ``share`` is
            outside [0, 1].

    >>> xs = [0.1, 0.2, 0.2, 0.4, 0.9]
    >>> calibrate(xs, 0.6)
    Calibration(threshold=0.4, share=0.6, requested=0.6, steps=5)
    >>> calibrate(xs, 0.4)  # 2 of 5 would split the tie at 0.2: both stay with the draft
    Calibration(threshold=0.2, share=0.2, requested=0.4, steps=5)
    >>> calibrate(xs, 0.0).threshold, calibrate(xs, 1.0).threshold
    (0.0, 1.0)
    >>> calibrate([0.5, 1.0], 1.0)  # a score of 1.0 is kept by every threshold in [0, 1]
    Calibration(threshold=1.0, share=0.5, requested=1.0, steps=2)
    """
    if math.isnan(share) or not 0.0 <= share <= 1.0:
        raise ValueError(f"share must be in [0, 1] (the share of steps the target writes), got {share}")
    xs = sorted(_check_scores(scores))
    n = len(xs)
    # c = steps sent to the target: achievable when the c lowest scores are all below the rest.
    c = min(n, math.floor(share * n + _EPS))
    while c > 0:
        if c == n and xs[-1] < 1.0:
            return Calibration(1.0, 1.0, share, n)
        if c < n and xs[c - 1] < xs[c]:
            return Calibration(xs[c], c / n, share, n)
        c -= 1
    return Calibration(0.0, 0.0, share, n)


def threshold_for_share(scores: Sequence[float], share: float) -> float:
    """:func:`calibrate`'s threshold alone.

    >>> threshold_for_share([0.3, 0.6, 0.7, 0.8], 0.5)
    0.7
    """
    return calibrate(scores, share).threshold
