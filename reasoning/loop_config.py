"""The loop's settings (:class:`LoopConfig`, ``loop.*`` in the configs) and the schedules that
drive the step engine. :mod:`reasoning.engine` and :mod:`reasoning.loop` re-export them."""

from __future__ import annotations

from dataclasses import dataclass

SCHEDULES = ("lockstep", "async")
"""The schedules that drive the engine: ``lockstep`` (:class:`reasoning.loop.StepLoop`) and
``async`` (:mod:`reasoning.schedule`)."""


@dataclass(frozen=True, slots=True)
class LoopConfig:
    """Knobs of the step loop.

    Attributes:
        max_steps: Most steps in one answer.
        token_budget: Most tokens in one answer (kept steps, counted by the model that wrote
            each); the last step is cut to fit.
        max_repeats: Stop after the same step text comes this many extra times in a row
            (0 = never).
        stop_at_answer: Stop after a step that gives the final answer. Off, a problem goes on
            until the end of sequence, the budget or ``max_steps`` (like plain decoding).
        max_merges: Most extra engine calls that extend a too-short step (see
            ``Segmenter.too_short``).
        max_in_flight: Problems in flight at once (0 = all of them): stepped together in one
            lockstep batch, or, with ``schedule: async``, each on its own.
        schedule: ``lockstep`` (every round waits for all problems in flight) or ``async``
            (each problem advances on its own; the requests waiting on a model are merged into
            one call, and the draft, judge and target calls run at the same time).
        temperature: Sampling temperature for both models (0 = greedy).
        top_p: Nucleus sampling mass for both models.
        seed: Sampling seed (None = engine's choice). Each sampled request gets its own seed
            derived from it and the request (problem, step, model, piece): see
            :func:`request_seed`; greedy requests carry it unchanged.
        draft_logprobs: Ask the draft for this many top logprobs per token (None = only what
            the judge's ``needs_logprobs`` asks for: ``True`` or 0 for the sampled token's
            logprob, an int ``k > 0`` for the top ``k``; the larger of the two when both are set).
        retries: Times a failing engine request is tried again on its own before its
            problem is given up with ``stop_reason = error``.
    """

    max_steps: int = 32
    token_budget: int = 1024
    max_repeats: int = 2
    stop_at_answer: bool = True
    max_merges: int = 4
    max_in_flight: int = 0
    schedule: str = "lockstep"
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    draft_logprobs: int | None = None
    retries: int = 0

    def __post_init__(self) -> None:
        for name in ("max_steps", "token_budget"):
            if getattr(self, name) < 1:
                raise ValueError(f"loop.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_repeats", "max_merges", "max_in_flight", "retries"):
            if getattr(self, name) < 0:
                raise ValueError(f"loop.{name} must be >= 0, got {getattr(self, name)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"loop.schedule must be {' or '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.temperature < 0:
            raise ValueError(f"loop.temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"loop.top_p must be in (0, 1], got {self.top_p}")
        if self.draft_logprobs is not None and self.draft_logprobs < 0:
            raise ValueError(f"loop.draft_logprobs must be >= 0 or null, got {self.draft_logprobs}")
