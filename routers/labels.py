"""Labels for router training: does the target's step beat the draft's by more than a margin?

A collected row (see :mod:`routers.collect`) holds the reward's score of the draft's step and
of the target's step written from the same prefix; their difference is the target's
*advantage*. The label is ``y = 1`` (send the step to the target) when the advantage exceeds
``margin``, else ``y = 0`` (keep the draft): the oracle's decision (:mod:`routers.oracle`).

With several target samples per step (``target_scores`` in a row, the first being the step the
answer continued with), ``average_samples=True`` compares the draft with their mean, a less
noisy estimate of what the target would write there.

Pure functions: no torch, no model.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from typing import Any


def label(advantage: float, margin: float = 0.0) -> int:
    """1 when ``advantage > margin`` (the target is better by more than the margin), else 0.

    >>> label(0.3), label(0.0), label(0.3, margin=0.3), label(-0.1, margin=-0.2)
    (1, 0, 0, 1)
    """
    if math.isnan(advantage) or math.isnan(margin):
        raise ValueError(f"advantage and margin must be numbers, got {advantage} and {margin}")
    return int(advantage > margin)


def same_step(a: str | None, b: str | None) -> bool:
    """Whether two steps are the same text (but for surrounding whitespace).

    >>> same_step("x = 2.\\n\\n", "x = 2."), same_step("x = 2.", "x = 3."), same_step(None, "x")
    (True, False, False)
    """
    return a is not None and b is not None and a.strip() == b.strip()


def row_advantage(row: Mapping[str, Any], average_samples: bool = False) -> float:
    """A row's advantage: ``target_score - draft_score``, or the mean over its target samples.

    A target step (or sample) whose text is the draft's step counts at the draft's score:
    sending the step to the target would change nothing, whatever the reward said when it
    scored the same text twice (rows collected before the collector did this themselves).

    >>> row = {"draft_score": 0.25, "target_score": 0.75, "target_scores": [0.75, 0.25]}
    >>> row_advantage(row), row_advantage(row, average_samples=True)
    (0.5, 0.25)
    >>> row_advantage({"draft_step": "a", "target_step": "a\\n\\n", "draft_score": 0.5, "target_score": 0.6})
    0.0
    """
    try:
        draft = float(row["draft_score"])
        target = float(row["target_score"])
    except KeyError as e:
        raise ValueError(f"row {row.get('problem_id')}/{row.get('step_index')} lacks {e.args[0]!r}") from None
    text = row.get("draft_step")
    if same_step(text, row.get("target_step")):
        target = draft
    if average_samples:
        samples = [float(s) for s in (row.get("target_scores") or [target])]
        samples[0] = target
        for i, t in enumerate(row.get("target_sample_steps") or [], start=1):
            if i < len(samples) and same_step(text, t):
                samples[i] = draft
        target = sum(samples) / len(samples)
    return target - draft


def labels(rows: Sequence[Mapping[str, Any]], margin: float = 0.0,
           average_samples: bool = False) -> list[int]:
    """The label of every row (see :func:`label` and :func:`row_advantage`).

    >>> labels([{"draft_score": 0.5, "target_score": 0.9}, {"draft_score": 0.5, "target_score": 0.5}])
    [1, 0]
    """
    return [label(row_advantage(r, average_samples), margin) for r in rows]


def class_counts(ys: Sequence[int]) -> tuple[int, int]:
    """``(negatives, positives)`` among labels of 0 and 1.

    >>> class_counts([1, 0, 0, 1, 0])
    (3, 2)
    """
    pos = sum(1 for y in ys if y == 1)
    if pos + sum(1 for y in ys if y == 0) != len(ys):
        raise ValueError("labels must be 0 or 1")
    return len(ys) - pos, pos


def balance(ys: Sequence[int], seed: int = 0) -> list[int]:
    """Indices of a class-balanced subset: the majority class down-sampled to the minority's size.

    The kept majority rows are drawn with ``random.Random(seed)``; every minority row is kept.
    Indices come back sorted (the data's order). With one class absent, nothing can be
    balanced and every index comes back.

    >>> balance([1, 0, 0, 0, 1, 0], seed=0)
    [0, 2, 4, 5]
    >>> balance([0, 0, 0])
    [0, 1, 2]
    """
    neg, pos = class_counts(ys)
    if neg == 0 or pos == 0 or neg == pos:
        return list(range(len(ys)))
    major = 0 if neg > pos else 1
    majority = [i for i, y in enumerate(ys) if y == major]
    minority = [i for i, y in enumerate(ys) if y != major]
    kept = random.Random(seed).sample(majority, len(minority))
    return sorted(minority + kept)
