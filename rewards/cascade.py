"""A cascade of judges: a cheap judge decides where it is sure, the next judge where it is not.

The first stage scores every drafted step. A score outside the stage's *uncertain band*
``[low, high)`` is a verdict: it is returned as the step's score. A score inside the band sends
the step on to the next stage, which scores it afresh, and so on; the last stage has no band and
decides every step that reaches it. Each stage is one batched ``score`` call on the steps still
undecided, so a stage is never called on a step an earlier stage decided.

``judge=self-verify`` (ConfSpec's self-verifying draft) is such a cascade: the draft rates its
own step with the target-as-judge prompt (:class:`rewards.target_judge.TargetJudge` with
``judge_with: draft``), a confident rating decides, and an uncertain one goes to the target as
judge. ``judge=cascade`` is the general form: any judges, any bands.

Where a score outside the band means a verdict on the policy's side of its threshold, the
band holds the threshold: ``low <= policy.threshold <= high``. A stage's band is on its own
scale (a confidence, a 0-9 rating / 9), the threshold on every stage's.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from reasoning.judge_calls import judge_logprobs, timed_scores
from reasoning.judges import bind_judge
from reasoning.protocols import Generator, JudgeRequest, option
from reasoning.schedule import takes_concurrent_calls

STAGE_KEYS = ("judge", "low", "high")
"""The keys of one stage in a config: its judge and its uncertain band ``[low, high)``."""


@dataclass(frozen=True, slots=True)
class CascadeStage:
    """One stage of a :class:`CascadeJudge`: a judge and its uncertain band ``[low, high)``.

    A score ``s`` with ``low <= s < high`` passes the step on to the next stage; any other
    score decides. ``low == high`` is an empty band: the stage decides every step it sees. The
    last stage has no band (both None): it decides every step that reaches it.

    Attributes:
        judge: The stage's judge (a partial, ``_partial_: true``, is bound by the cascade).
        low: The band's lower end, in [0, 1] (included).
        high: The band's upper end, in [0, 1] (excluded).
    """

    judge: Any
    low: float | None = None
    high: float | None = None

    def uncertain(self, score: float) -> bool:
        """Whether ``score`` falls in the band, so that the next stage must score the step.

        >>> s = CascadeStage(None, 0.25, 0.75)
        >>> [s.uncertain(x) for x in (0.2, 0.25, 0.5, 0.75)]
        [False, True, True, False]
        """
        return self.low is not None and self.low <= score < self.high


@dataclass(frozen=True, slots=True)
class Verdict:
    """How a cascade scored one step.

    Attributes:
        score: The step's score: that of the stage that decided.
        decided_by: Index of the stage that decided (0: the first).
        stage_scores: The score each stage gave it, from the first to the deciding one.
    """

    score: float
    decided_by: int
    stage_scores: tuple[float, ...]

    def as_dict(self) -> dict[str, Any]:
        """The JSON-ready record of the verdict (what the step's record carries as ``judge_info``).

        >>> Verdict(0.9, 1, (0.5, 0.9)).as_dict()
        {'decided_by': 1, 'stage_scores': [0.5, 0.9]}
        """
        return {"decided_by": self.decided_by, "stage_scores": list(self.stage_scores)}


class CascadeJudge:
    """Judges in stages: each decides the steps it is sure of and passes the rest on.

    Stage ``k`` scores, in one batched call, the steps no earlier stage decided; a score outside
    its uncertain band ``[low, high)`` is returned as the step's score, a score inside sends the
    step to stage ``k + 1``; the last stage decides every step it sees. See the module.

    The optional attributes the engine, the async schedule and the step cache read
    (:data:`reasoning.protocols.OPTIONS`) come from the stages: ``needs_logprobs`` is the most
    any stage asks of the draft; ``concurrent_calls`` is True only when every stage takes
    concurrent calls (one stage on an in-process engine and the cascade runs on the engine
    thread); ``cache_identity`` lists the stages' (None when none has one); ``score_timed``
    charges each step its share of every stage's cost.

    What each step's verdict was (which stage decided, each stage's score) is in :attr:`last`
    for the last call, returned by :meth:`verdicts`, and as JSON-ready records beside the
    scores by :meth:`score_info`, which the engine keeps in each step's record (``judge_info``);
    :meth:`stage_counts` counts calls and steps per stage over the judge's life.

    Args:
        stages: The stages, in order: :class:`CascadeStage` or mappings ``{judge, low, high}``
            (a config's list); every stage but the last has a band, the last has none.
        generator: The run's target, handed to a stage judge given as a partial (recipes bind
            it with ``_partial_: true``).
        draft: The run's draft, handed on the same way (e.g. to a ``TargetJudge`` with
            ``judge_with: draft``).

    Raises:
        ValueError: no stage; a band missing, on the last stage, out of [0, 1] or with
            ``low > high``; a stage without a judge or with an unknown key. One line each.

    >>> from reasoning.judges import CallableJudge
    >>> from reasoning.types import Completion, FinishReason, Problem
    >>> cheap = CallableJudge(lambda r: {"a": 0.1, "b": 0.5, "c": 0.9}[r.step.text])
    >>> dear = CallableJudge(lambda r: 1.0)
    >>> judge = CascadeJudge([CascadeStage(cheap, low=0.3, high=0.7), CascadeStage(dear)])
    >>> reqs = [JudgeRequest(Problem("p", "q"), (), (), Completion(t, (1,), FinishReason.STOP), 0)
    ...         for t in "abc"]
    >>> judge.score(reqs), [v.decided_by for v in judge.last]
    ([0.1, 1.0, 0.9], [0, 1, 0])
    """

    def __init__(self, stages: Sequence[CascadeStage | Mapping[str, Any]], generator: Generator | None = None,
                 draft: Generator | None = None) -> None:
        if isinstance(stages, str | bytes | Mapping) or not isinstance(stages, Sequence) or not stages:
            raise ValueError("judge.stages must list at least one stage: [{judge: ..., low: ..., high: ...}, "
                             f"..., {{judge: ...}}] (the last decides every step it sees), got {stages!r}")
        self.stages: tuple[CascadeStage, ...] = tuple(
            _stage(k, s, k == len(stages) - 1, generator, draft) for k, s in enumerate(stages))
        self.last: list[Verdict] = []
        """The verdict on each step of the last call, in order."""
        self._lock = threading.Lock()
        self._calls = [0] * len(self.stages)
        self._items = [0] * len(self.stages)
        self._decided = [0] * len(self.stages)

    def __repr__(self) -> str:
        return f"CascadeJudge({list(self.stages)!r})"

    # -- the optional attributes (reasoning.protocols.OPTIONS) ---------------------------------
    @property
    def needs_logprobs(self) -> int | bool:
        """The most any stage asks of the draft's logprobs (False: none asks)."""
        asked = [x for x in (judge_logprobs(s.judge) for s in self.stages) if x is not None]
        return max(asked) if asked else False

    @property
    def concurrent_calls(self) -> bool:
        """True when every stage takes concurrent calls (else one stage needs the engine thread)."""
        return all(takes_concurrent_calls(s.judge) for s in self.stages)

    @property
    def cache_identity(self) -> list[Any] | None:
        """Each stage's ``cache_identity``, in order, or None when no stage has one."""
        ids = [option(s.judge, "cache_identity") for s in self.stages]
        return ids if any(i is not None for i in ids) else None

    # -- scoring --------------------------------------------------------------------------------
    def score(self, requests: Sequence[JudgeRequest]) -> list[float]:
        return [v.score for v in self.verdicts(requests)]

    def score_timed(self, requests: Sequence[JudgeRequest]) -> tuple[list[float], float]:
        """The scores and the seconds per step: every stage's seconds (its own ``score_timed``
        where it has one, else its call's wall time), summed and spread over the steps."""
        scores, seconds, _ = self.score_info(requests)
        return scores, seconds

    def score_info(self, requests: Sequence[JudgeRequest]) -> tuple[list[float], float, list[dict[str, Any]]]:
        """:meth:`score_timed` and, per step, its verdict as a JSON-ready record
        (:meth:`Verdict.as_dict`: ``decided_by``, ``stage_scores``). The engine calls this instead
        of :meth:`score_timed` (see :func:`reasoning.judge_calls.timed_score_info`) and keeps each
        step's verdict in its record, ``StepRecord.judge_info``; ``summary.json`` counts the steps
        each stage decided (``judge_decided_by``)."""
        verdicts, seconds = self._run(requests)
        return ([v.score for v in verdicts], seconds / max(len(requests), 1),
                [v.as_dict() for v in verdicts])

    def verdicts(self, requests: Sequence[JudgeRequest]) -> list[Verdict]:
        """The verdict on each step of ``requests`` (also kept in :attr:`last`).

        Raises:
            ValueError: a stage gave a score outside [0, 1] (or NaN), naming the stage.
            RuntimeError: a stage returned another number of scores than it was given steps.
        """
        return self._run(requests)[0]

    def stage_counts(self) -> dict[str, list[int]]:
        """Per stage, over this judge's life: ``calls`` (score calls), ``steps`` (steps it
        scored), ``decided`` (steps whose score it gave)."""
        with self._lock:
            return {"calls": list(self._calls), "steps": list(self._items), "decided": list(self._decided)}

    def _run(self, requests: Sequence[JudgeRequest]) -> tuple[list[Verdict], float]:
        n = len(requests)
        scores: list[list[float]] = [[] for _ in range(n)]
        decided: list[int | None] = [None] * n
        todo = list(range(n))
        seconds = 0.0
        calls, items, took = [0] * len(self.stages), [0] * len(self.stages), [0] * len(self.stages)
        for k, stage in enumerate(self.stages):
            if not todo:
                break
            got, per_item = timed_scores(stage.judge, [requests[i] for i in todo])
            calls[k], items[k] = 1, len(todo)
            seconds += per_item * len(todo)
            passed = []
            for i, s in zip(todo, got):
                s = float(s)
                if not 0.0 <= s <= 1.0:  # NaN too
                    raise ValueError(f"cascade stage {k} ({type(stage.judge).__name__}) returned score {s} "
                                     f"for {requests[i].problem.id!r} step {requests[i].step_index}; "
                                     "scores must be in [0, 1]")
                scores[i].append(s)
                if stage.uncertain(s):
                    passed.append(i)
                else:
                    decided[i] = k
                    took[k] += 1
            todo = passed
        verdicts = [Verdict(sc[-1], d, tuple(sc)) for sc, d in zip(scores, decided)]  # type: ignore[arg-type]
        with self._lock:
            self.last = verdicts
            for k in range(len(self.stages)):
                self._calls[k] += calls[k]
                self._items[k] += items[k]
                self._decided[k] += took[k]
        return verdicts, seconds


def _stage(k: int, spec: Any, last: bool, generator: Generator | None,
           draft: Generator | None) -> CascadeStage:
    """Stage ``k`` of a cascade from a :class:`CascadeStage` or a config mapping, checked and bound."""
    where = f"judge.stages.{k}"
    if isinstance(spec, CascadeStage):
        judge, low, high = spec.judge, spec.low, spec.high
    elif isinstance(spec, Mapping):
        unknown = sorted(str(x) for x in spec if x not in STAGE_KEYS)
        if unknown:
            raise ValueError(f"{where} has unknown key(s) {', '.join(unknown)}: a stage takes "
                             f"{', '.join(STAGE_KEYS)}")
        judge, low, high = spec.get("judge"), spec.get("low"), spec.get("high")
    else:
        raise ValueError(f"{where} must be a mapping {{judge: ..., low: ..., high: ...}}, got {spec!r}")
    if judge is None:
        raise ValueError(f"{where} has no judge: give {where}.judge")
    if last and (low is not None or high is not None):
        raise ValueError(f"{where} is the last stage, which decides every step it sees: it takes no "
                         f"low/high (got low={low}, high={high})")
    if not last:
        for name, v in (("low", low), ("high", high)):
            if v is None:
                raise ValueError(f"{where}.{name} is missing: every stage but the last needs a band "
                                 "[low, high) of scores it passes on")
            if isinstance(v, bool) or not isinstance(v, int | float) or math.isnan(v) or not 0.0 <= v <= 1.0:
                raise ValueError(f"{where}.{name} must be a number in [0, 1], got {v!r}")
        if low > high:
            raise ValueError(f"{where}: low ({low}) must be <= high ({high}); the band [low, high) holds "
                             "the scores passed on to the next stage")
        low, high = float(low), float(high)
    judge = bind_judge(judge, generator, draft)
    if not callable(getattr(judge, "score", None)):
        raise ValueError(f"{where}.judge is not a judge (it has no score method): {judge!r}; in a config, "
                         "give the cascade `_convert_: all` (else OmegaConf turns a dataclass judge into a "
                         "mapping of its fields)")
    return CascadeStage(judge, low, high)

