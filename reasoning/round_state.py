"""The records of a round, kept per problem while the step engine works on it: a problem's state
(:class:`_State`), one model's step being written (:class:`_Step`), a step's candidate drafts
(:class:`_Candidates`). Private to the engine and its schedules (:mod:`reasoning.engine`,
:mod:`reasoning.loop`, :mod:`reasoning.schedule`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from reasoning.protocols import StepContext
from reasoning.types import (
    ChatMessage,
    Completion,
    FinishReason,
    Phase,
    Problem,
    Segment,
    StepRecord,
    StopReason,
)


@dataclass(slots=True)
class _State:
    problem: Problem
    messages: tuple[ChatMessage, ...]
    segments: list[Segment] = field(default_factory=list)
    steps: list[StepRecord] = field(default_factory=list)
    tokens_used: int = 0
    target_steps: int = 0
    target_run: int = 0  # latest steps in a row kept from the target
    stop: StopReason | None = None
    error: str | None = None
    last_ctx: StepContext | None = None
    t0: float = 0.0  # perf_counter at admission, for the trace's latency
    phase: Phase | None = None  # the phase the next step is written in (a phased segmenter)
    target_tokens: int = 0  # tokens the target generated for the steps so far
    judged: list[bool] = field(default_factory=list)  # the judged drafts, kept (True) or not
    fallback_at: int | None = None  # the step from which the target writes the rest
    fallback_reason: str | None = None
    budget_spent_at: int | None = None  # the step from which the draft writes the rest

    def ctx(self, budget: int) -> StepContext:
        # The context the stop rules saw after a step is the next round's: build it once.
        # (What it holds changes only when a step is added, or with the budget.)
        c = self.last_ctx
        if (c is None or c.step_index != len(self.steps) or c.tokens_used != self.tokens_used
                or c.target_steps != self.target_steps or c.token_budget != budget):
            c = self.last_ctx = StepContext(len(self.steps), self.tokens_used, budget, self.target_steps,
                                            self.target_run, self.target_tokens, self.phase,
                                            self.fallback_at is not None, len(self.judged))
        return c


@dataclass(slots=True)
class _Step:
    """One model's step for one problem, possibly merged from several engine calls."""

    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] | None = None
    top_logprobs: list[Mapping[str, float]] | None = None
    prompt_tokens: int = 0
    prefill_tokens: int = 0
    seconds: float = 0.0
    prefill_seconds: float | None = 0.0  # None once a piece's engine did not measure it
    finish: FinishReason = FinishReason.STOP
    truncated: bool = False
    calls: int = 0
    capped: bool = False  # the last call stopped at the piece size asked for, not at the step's end
    stopped_at: int | None = None  # tokens written when the policy stopped the draft

    def completion(self) -> Completion:
        return Completion(self.text, tuple(self.token_ids), self.finish, self.prompt_tokens,
                          logprobs=None if self.logprobs is None else tuple(self.logprobs),
                          top_logprobs=None if self.top_logprobs is None else tuple(self.top_logprobs),
                          seconds=self.seconds)


@dataclass(slots=True)
class _Candidates:
    """The candidate drafts of one step (the judge's ``draft_candidates > 1``), their scores and
    infos (None: not judged, thrown away as final), and the index of the best, the step's draft
    (None: none was judged)."""

    steps: list[_Step]
    scores: list[float | None]
    infos: list[Any]
    best: int | None = None

    def record(self) -> tuple[dict[str, Any], ...]:
        """What the step record keeps of each candidate (``StepRecord.candidates``)."""
        out = []
        for st, sc, info in zip(self.steps, self.scores, self.infos):
            d = {"text": st.text, "score": sc, "tokens": len(st.token_ids), "seconds": st.seconds,
                 "prefill_seconds": st.prefill_seconds, "finish_reason": st.finish.value}
            if info is not None:
                d["judge_info"] = info
            out.append(d)
        return tuple(out)


def _draft_totals(dstep: _Step | None,
                  cands: _Candidates | None) -> tuple[int, int, float, int, float | None]:
    """The draft's tokens, prompt tokens, seconds, prefill tokens and prefill seconds of a step:
    its draft's, or the sums over all its candidates (prefill seconds None if one's is unknown)."""
    if cands is None:
        if dstep is None:
            return 0, 0, 0.0, 0, None
        return (len(dstep.token_ids), dstep.prompt_tokens, dstep.seconds, dstep.prefill_tokens,
                dstep.prefill_seconds)
    steps = cands.steps
    pre = [x.prefill_seconds for x in steps]
    return (sum(len(x.token_ids) for x in steps), sum(x.prompt_tokens for x in steps),
            sum(x.seconds for x in steps), sum(x.prefill_tokens for x in steps),
            None if None in pre else sum(pre))
