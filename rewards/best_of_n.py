"""Several drafts per step: the draft writes N candidate steps, a judge scores each, the best one
is the step's draft (after SpecCoT and GSI's best-of-N over drafts).

:class:`BestOfNJudge` wraps any judge (the draft's confidence, the target as judge, a PRM, a
router, a cascade) and asks the step engine for ``candidates`` drafts of every drafted step,
through its ``draft_candidates``, ``draft_temperature`` and ``draft_seed`` attributes
(:data:`reasoning.protocols.OPTIONS`). The engine then, for each problem of a round:

1. has the draft write the ``N`` candidates in the round's one draft call (``N`` requests per
   problem, sampled at ``temperature``, each with its own seed: ``loop.seed`` or ``seed``,
   hashed with the request id ``<problem>/<step>/d0c<i>``; no engine here takes an ``n`` per
   request, so ``N`` requests it is);
2. has the wrapped judge score every candidate of every problem in one batched call;
3. takes each problem's best-scored candidate (the first of equals) as the step's draft, which
   the policy decides on as it would on a single draft: kept if it clears the threshold, else
   the target writes the step.

Each step's record keeps every candidate with its score (``StepRecord.candidates``,
``best_candidate``); the draft's seconds and tokens of the step are all its candidates', and
the candidates not kept count as wasted draft seconds (``summary.json``'s ``cost``). A policy
that calls no judge (draft-only) gets one greedy draft, as without this wrapper. It does not
combine with a policy that drafts a step piece by piece (``glimpse``, ``abort``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from reasoning.delegating import Delegating
from reasoning.judges import bind_judge
from reasoning.protocols import Generator, JudgeRequest


class BestOfNJudge(Delegating):
    """A judge that asks for ``candidates`` drafts of each step and scores them with ``judge``.

    Scoring is ``judge``'s, and so is every optional attribute the engine reads but the three
    this adds (``needs_logprobs``, ``concurrent_calls``, ``cache_identity``, ``score_timed``,
    ``score_info``: see :class:`reasoning.delegating.Delegating`). See the module for what the
    engine does with them.

    Args:
        judge: The judge that scores each candidate (a partial, ``_partial_: true``, is bound to
            the run's models here, as a cascade binds its stages).
        candidates: Candidate drafts per step (``N``, >= 1; 1 is a single draft, as without it).
        temperature: The candidates' sampling temperature (> 0 when ``candidates > 1``: greedy
            candidates are all the same); None: ``loop.temperature``.
        seed: The candidates' seed (None: ``loop.seed``); each request draws its own from it.
        generator: The run's target, handed to ``judge`` given as a partial.
        draft: The run's draft, handed on the same way.

    Attributes:
        draft_candidates: ``candidates``.
        draft_temperature: ``temperature``.
        draft_seed: ``seed``.

    Raises:
        ValueError: ``candidates`` not an int >= 1, a temperature not > 0 with ``candidates > 1``,
            a seed not an int, or no judge. One line each.

    >>> from reasoning.judges import ConstantJudge
    >>> j = BestOfNJudge(ConstantJudge(0.5), candidates=4, temperature=0.7)
    >>> j.draft_candidates, j.draft_temperature, j.score([None, None])
    (4, 0.7, [0.5, 0.5])
    """

    def __init__(self, judge: Any, candidates: int = 4, temperature: float | None = 0.7,
                 seed: int | None = None, generator: Generator | None = None,
                 draft: Generator | None = None) -> None:
        if isinstance(candidates, bool) or not isinstance(candidates, int) or candidates < 1:
            raise ValueError(f"judge.candidates must be an int >= 1 (candidate drafts per step), "
                             f"got {candidates!r}")
        number = isinstance(temperature, int | float) and not isinstance(temperature, bool)
        if temperature is not None and (not number or math.isnan(temperature) or temperature < 0):
            raise ValueError(f"judge.temperature must be a number >= 0 or null (loop.temperature), "
                             f"got {temperature!r}")
        if candidates > 1 and temperature is not None and not temperature > 0:
            raise ValueError(f"judge.temperature must be > 0 with judge.candidates={candidates}: greedy "
                             "candidates are all the same draft")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"judge.seed must be an int or null (loop.seed), got {seed!r}")
        if judge is None:
            raise ValueError("judge.judge is missing: best-of-n scores the candidates with the judge "
                             "it wraps")
        inner = bind_judge(judge, generator, draft)
        if not callable(getattr(inner, "score", None)):
            raise ValueError(f"judge.judge is not a judge (it has no score method): {inner!r}; in a config, "
                             "give best-of-n `_convert_: all`")
        super().__init__(inner)
        self.draft_candidates = candidates
        self.draft_temperature = None if temperature is None else float(temperature)
        self.draft_seed = seed

    def score(self, requests: Sequence[JudgeRequest]) -> list[float]:
        return list(self.inner.score(requests))

    def __repr__(self) -> str:
        return (f"BestOfNJudge({self.inner!r}, candidates={self.draft_candidates}, "
                f"temperature={self.draft_temperature}, seed={self.draft_seed})")
