"""The oracle router: escalate a step to the target when the target's step is better by more than tau.

Given, for each step of collected data, a score of the draft's step and a score of the
target's step written at the same place (by a process reward model, by the share of
rollouts from that step that reach the right answer, ...), the *advantage* of the target is
``target - draft``, and the oracle sends a step to the target exactly when that advantage
exceeds ``tau``. It is the upper bound a learned router is measured against, and its
decisions are the labels a router is trained on.

Pure functions over plain records: no torch, no model.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class StepScores:
    """One row of the oracle's table: the draft's and the target's score for one step.

    Attributes:
        problem_id: The problem the step belongs to.
        step_index: 0-based index of the step in that problem's answer.
        draft: Score of the draft's step (higher is better).
        target: Score of the target's step at the same place, on the same scale.
    """

    problem_id: str
    step_index: int
    draft: float
    target: float

    def __post_init__(self) -> None:
        for name in ("draft", "target"):
            v = getattr(self, name)
            if not isinstance(v, int | float) or math.isnan(v):
                raise ValueError(f"step {self.problem_id}/{self.step_index}: {name} score must be a number, "
                                 f"got {v!r}")
        if self.step_index < 0:
            raise ValueError(f"step {self.problem_id}/{self.step_index}: step_index must be >= 0")

    @property
    def advantage(self) -> float:
        """How much better the target's step scored: ``target - draft``."""
        return self.target - self.draft


def table_from_rows(rows: Iterable[Mapping[str, Any]]) -> list[StepScores]:
    """Parse dict rows (``problem_id``, ``step_index``, ``draft``, ``target``) into the table.

    Raises:
        ValueError: naming the row and the key that is missing or wrong.

    >>> table_from_rows([{"problem_id": "p", "step_index": 0, "draft": 0.2, "target": 0.9}])
    [StepScores(problem_id='p', step_index=0, draft=0.2, target=0.9)]
    """
    out = []
    for i, row in enumerate(rows):
        missing = [k for k in ("problem_id", "step_index", "draft", "target") if k not in row]
        if missing:
            raise ValueError(f"row {i} lacks {', '.join(missing)}; each row needs problem_id, step_index, "
                             f"draft and target")
        try:
            out.append(StepScores(str(row["problem_id"]), int(row["step_index"]),
                                  float(row["draft"]), float(row["target"])))
        except (TypeError, ValueError) as e:
            raise ValueError(f"row {i}: {e}") from None
    return out


def escalate(table: Sequence[StepScores], tau: float = 0.0) -> list[bool]:
    """The oracle's decision per row: True (the target writes the step) when ``advantage > tau``.

    A step whose advantage equals ``tau`` exactly stays with the draft.

    >>> t = table_from_rows([{"problem_id": "p", "step_index": i, "draft": d, "target": g}
    ...                      for i, (d, g) in enumerate([(0.5, 0.9), (0.5, 0.6), (0.8, 0.2)])])
    >>> escalate(t), escalate(t, tau=0.1), escalate(t, tau=-1.0)
    ([True, True, False], [True, False, False], [True, True, True])
    """
    if math.isnan(tau):
        raise ValueError("tau must be a number, got nan")
    return [row.advantage > tau for row in table]


def escalation_share(table: Sequence[StepScores], tau: float = 0.0) -> float:
    """The share of steps the oracle sends to the target (0.0 for an empty table).

    >>> t = [StepScores("p", 0, 0.5, 0.9), StepScores("p", 1, 0.5, 0.5)]
    >>> escalation_share(t), escalation_share(t, tau=0.5)
    (0.5, 0.0)
    """
    decisions = escalate(table, tau)
    return sum(decisions) / len(decisions) if decisions else 0.0


def outcome_shares(rows: Sequence[Mapping[str, Any]], margin: float = 0.0) -> dict[str, Any]:
    """What an oracle could keep, from collected rows (:mod:`routers.collect`): the share of steps
    whose draft step it keeps (advantage at most ``margin``), and the shares where the target's
    step is better, the draft's is better, or both score the same. With an outcome reward
    (``judge@reward=outcome``) this is the ceiling of step routing on the pair: the share of
    steps an outcome oracle can leave to the draft without losing a right answer.

    >>> outcome_shares([{"draft_score": 1.0, "target_score": 1.0}, {"draft_score": 0.0, "target_score": 1.0},
    ...                 {"draft_score": 1.0, "target_score": 0.0}, {"draft_score": 0.0, "target_score": 0.0}])
    {'rows': 4, 'keep_share': 0.75, 'target_better': 0.25, 'draft_better': 0.25, 'same': 0.5, 'margin': 0.0}
    """
    from routers.labels import row_advantage

    adv = [row_advantage(r) for r in rows]
    n = len(adv)
    share = (lambda k: k / n) if n else (lambda k: None)
    return {"rows": n, "keep_share": share(sum(a <= margin for a in adv)),
            "target_better": share(sum(a > 0 for a in adv)), "draft_better": share(sum(a < 0 for a in adv)),
            "same": share(sum(a == 0 for a in adv)), "margin": margin}


def oracle_scores(table: Sequence[StepScores], tau: float = 0.0) -> dict[str, list[float]]:
    """The oracle as judge scores: ``{problem_id: [score of step 0, 1, ...]}`` for a ScriptedJudge.

    A step the oracle keeps scores 1.0, one it escalates 0.0, so that any threshold in
    (0, 1] reproduces the oracle's decisions. Every problem's steps must be numbered 0, 1, ...
    without gaps or repeats.

    >>> oracle_scores([StepScores("p", 1, 0.9, 0.1), StepScores("p", 0, 0.1, 0.9)])
    {'p': [0.0, 1.0]}
    """
    by_problem: dict[str, dict[int, float]] = {}
    for row, up in zip(table, escalate(table, tau)):
        steps = by_problem.setdefault(row.problem_id, {})
        if row.step_index in steps:
            raise ValueError(f"step {row.problem_id}/{row.step_index} appears twice in the table")
        steps[row.step_index] = 0.0 if up else 1.0
    out = {}
    for pid, steps in by_problem.items():
        if sorted(steps) != list(range(len(steps))):
            raise ValueError(f"problem {pid!r} has steps {sorted(steps)}; expected 0..{len(steps) - 1}")
        out[pid] = [steps[i] for i in range(len(steps))]
    return out
