"""The seams of stepspec, as ``typing.Protocol``s.

Anything with the right methods is a generator, judge, segmenter, policy or stop rule: no
base class to inherit. Backends live in :mod:`reasoning.backends`, judges in
:mod:`reasoning.judges` and :mod:`rewards`, policies in :mod:`reasoning.policies`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from reasoning.types import (
    ChatMessage,
    Completion,
    Decision,
    GenerationRequest,
    Phase,
    Problem,
    Route,
    Segment,
    StepRecord,
    StopReason,
    fast_init,
)


@runtime_checkable
class Generator(Protocol):
    """A model that continues chat answers.

    ``generate`` takes a batch and returns one completion per request, in order. Each
    generator renders ``request.messages`` with its own chat template, opens the assistant
    turn, appends ``request.prefix`` and continues from there; it must stop right after the
    first of ``request.params.stop`` and keep that stop string in the text.
    """

    name: str
    """Short name recorded in segments and traces (e.g. ``"draft"``)."""

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Completion]: ...

    def close(self) -> None:
        """Release the engine (and its process, for workers). Idempotent."""
        ...


OPTIONS = {
    "needs_logprobs": False,
    "concurrent_calls": None,
    "cache_identity": None,
    "score_timed": None,
    "score_info": None,
    "reset_cache": None,
    "glimpse_tokens": 0,
    "chunk_tokens": 0,
    "keep_aborted": "discard",
    "rules": None,
    "phases": (),
    "draft_candidates": 1,
    "draft_temperature": None,
    "draft_seed": None,
}
"""The optional attributes of generators, judges and policies that the engine, the schedules
and the step cache read, and what an object without one means (one place for the defaults;
the policies' are described under :class:`StepPolicy`):

- ``needs_logprobs`` (judge or policy; bool or int): what it needs of the draft's logprobs
  (:func:`reasoning.judge_calls.judge_logprobs`).
- ``concurrent_calls`` (generator or judge; bool): it may be called from several threads at
  once and gains by it (servers, judges with no engine); None: not said (a judge then follows
  its ``generator``; see :func:`reasoning.schedule.takes_concurrent_calls`).
- ``cache_identity`` (judge; JSON-ready): what, beyond its config, changes its scores (a
  router's files), part of its step-cache key.
- ``score_timed(requests) -> (scores, seconds per item)`` (judge): it knows its own cost per
  item (see :func:`reasoning.judge_calls.timed_scores`).
- ``score_info(requests) -> (scores, seconds per item, infos)`` (judge): ``score_timed`` and,
  per item, a JSON-ready mapping (or None) saying more about its score, which the engine keeps in
  the step's record (``StepRecord.judge_info``): a cascade's ``{decided_by, stage_scores}``
  (:meth:`rewards.cascade.CascadeJudge.score_info`). The engine calls it instead of
  ``score_timed`` where a judge has it (see :func:`reasoning.judge_calls.timed_score_info`); the
  step cache stores the infos with the scores, the async schedule splits them per item.
- ``reset_cache() -> bool`` (generator): empty its engine caches (see :func:`reset_cache`).
- ``rules`` (policy): its per-problem rules (first steps, final step, fallback, target-token
  budget), which the engine applies before the policy's own ``route`` and ``decide``; None:
  none (see :class:`StepPolicy`).
- ``phases`` (segmenter): the phases of an answer, in order (a thinking model's ``think`` and
  ``answer``); (): one phase (see :class:`Segmenter`).
- ``draft_candidates`` (judge; int): candidate drafts it chooses from per step (1: one draft).
  With ``N > 1`` the draft writes ``N`` candidates of each drafted step in one call (``N``
  requests, each with its own seed), the judge scores all of them in one call, and the best is
  the step's draft, which the policy decides on (see
  :class:`rewards.best_of_n.BestOfNJudge`, ``judge=best-of-n``). A policy with no judge gets one
  draft. ``draft_temperature`` and ``draft_seed`` (judge): what the candidates are sampled at
  (None: ``loop.temperature``, ``loop.seed``); see :func:`reasoning.judge_calls.draft_candidates`.

A wrapper (the step cache's, the async schedule's, the CLI's lazy one) must show each of these
as its inner object has it: ``tests/unit/test_protocols.py`` checks every wrapper.
"""


def option(obj: object, name: str):
    """``obj``'s optional attribute ``name`` (see :data:`OPTIONS`), or its default.

    >>> class Server: concurrent_calls = True
    >>> option(Server(), "concurrent_calls"), option(object(), "needs_logprobs")
    (True, False)
    """
    return getattr(obj, name, OPTIONS[name])


def reset_cache(gen: object) -> bool | None:
    """Empty a generator's engine caches (llama.cpp's sequences, vLLM's prefix cache) through
    its optional ``reset_cache()``, so that its next call reads every prompt anew.

    A benchmark calls it before each run, so that no run gets free prefill from the one before.
    Returns what ``reset_cache()`` returned (True: emptied), or None where the generator has no
    such method (its caches, if any, were not reset: the bench says so for the run).

    >>> class Engine:
    ...     def reset_cache(self): return True
    >>> reset_cache(Engine()), reset_cache(object())
    (True, None)
    """
    fn = option(gen, "reset_cache")
    return None if fn is None else bool(fn())


@fast_init
@dataclass(frozen=True, slots=True)
class JudgeRequest:
    """Score ``step``, written after ``prefix`` in the answer to ``problem``.

    Attributes:
        problem: The problem being solved.
        messages: The chat that the answer answers.
        prefix: The answer before the step.
        step: The drafted step (with its logprobs when the draft was asked for them).
        step_index: 0-based index of the step.
    """

    problem: Problem
    messages: tuple[ChatMessage, ...]
    prefix: tuple[Segment, ...]
    step: Completion
    step_index: int


@runtime_checkable
class Judge(Protocol):
    """Scores a batch of drafted steps; each score is in [0, 1], higher is better."""

    def score(self, requests: Sequence[JudgeRequest]) -> list[float]: ...


@runtime_checkable
class Segmenter(Protocol):
    """Says where a step ends, how to clean it, and whether it ends the solution."""

    @property
    def stop(self) -> tuple[str, ...]:
        """Stop strings that end a step (handed to the engine)."""
        ...

    @property
    def max_step_tokens(self) -> int:
        """Most tokens one step may take before it is cut."""
        ...

    def normalize(self, text: str) -> str:
        """Clean a generated step (e.g. drop a stray ``</think>``)."""
        ...

    def too_short(self, text: str) -> bool:
        """True if ``text`` is too small to stand as a step and should merge into the next."""
        ...

    def is_final(self, text: str) -> bool:
        """True if ``text`` gives the final answer."""
        ...

    # A segmenter that knows phases (its optional ``phases``, see :data:`OPTIONS`, not empty:
    # a thinking model's ``think`` and ``answer``) also has, each taking the phase a step is
    # written in (the problem starts in ``phases[0]``):
    #   phase_after(phase, text) -> Phase: the phase after a step ``text``;
    #   stop_in(phase) -> tuple[str, ...] and max_tokens_in(phase) -> int: a step's stop
    #     strings and token limit (instead of ``stop`` and ``max_step_tokens``);
    #   is_final_step(text, phase) -> bool: instead of ``is_final``.


@fast_init
@dataclass(frozen=True, slots=True)
class StepContext:
    """What a policy or stop rule may look at for one problem before its next step.

    Attributes:
        step_index: Index of the step about to be written (= steps written so far).
        tokens_used: Tokens in the answer so far (as counted by the models that wrote them).
        token_budget: The problem's total token budget.
        target_steps: Steps of the answer written by the target so far.
        target_run: How many of the latest steps in a row the target wrote (0: the last step
            was the draft's, or there is none): what a hand-off-aware policy looks at.
        target_tokens: Tokens the target has generated for the problem's steps so far (what
            ``policy.target_token_budget`` counts).
        phase: The phase the next step is written in, for a segmenter that knows phases
            (``think``, ``answer``), else None.
        fallback: Drafting is switched off for the problem (``policy.fallback_after``,
            ``policy.fallback_rate`` or a rejection under ``policy.decide_once``): the target
            writes the rest.
        judged_drafts: Drafts of the problem the policy has decided on so far (counted while a
            fallback rule or ``decide_once`` is on, else 0).
    """

    step_index: int
    tokens_used: int
    token_budget: int
    target_steps: int
    target_run: int = 0
    target_tokens: int = 0
    phase: Phase | None = None
    fallback: bool = False
    judged_drafts: int = 0


@runtime_checkable
class StepPolicy(Protocol):
    """Routes a step to the draft or the target and decides on a scored draft.

    A policy may also steer the drafting itself, through optional attributes the engine reads
    with :func:`option` (defaults in :data:`OPTIONS`):

    - ``glimpse_tokens`` (int): decide before drafting. The draft writes only this many tokens
      of the step; the judge scores that glimpse and ``decide`` rules on it: ``accept`` lets the
      draft write the rest of the step, which is then kept without another judge call;
      ``reject`` sends the step to the target, only the glimpse drafted.
    - ``chunk_tokens`` (int) and ``keep_drafting(logprobs, ctx) -> bool``: abort a draft
      mid-step. The draft writes the step this many tokens at a time; after each piece
      ``keep_drafting`` sees the step's token logprobs so far, and False stops the draft there:
      the step goes to the target (the record says where the draft stopped). A draft that runs
      to its end is judged as usual.
    - ``keep_aborted`` (``"discard"`` or ``"prefix"``): what becomes of a stopped draft's
      tokens: thrown away, or kept as the start of the step, which the target continues.
    - ``needs_logprobs`` (bool or int, as a judge's): what ``keep_drafting`` needs of the draft.
    - ``rules``: per-problem rules (:class:`reasoning.policies.ProblemRules`, or any object with
      its ``route(ctx)``, ``target_final_step``, ``target_token_budget``,
      ``target_tokens_left(ctx)``, ``falls_back`` and ``fallback_reason(outcomes)``), applied by
      the engine before ``route`` and ``decide``: the target writes the first steps, the final
      step, or the rest of a problem whose drafts keep being rejected; the draft writes the rest
      once the target's token budget is spent. Each step a rule settled says so in its record
      (``StepRecord.rule``).
    """

    @property
    def needs_judge(self) -> bool:
        """False if ``decide`` ignores the score (the judge is then never called)."""
        ...

    def route(self, ctx: StepContext) -> Route:
        """``draft`` to draft the step first, ``target`` to skip the draft."""
        ...

    def decide(self, score: float | None, ctx: StepContext) -> Decision:
        """``accept`` to keep the drafted step, ``reject`` to have the target rewrite it."""
        ...


@runtime_checkable
class StopRule(Protocol):
    """Looks at a problem's steps after each step and says whether (and why) to stop."""

    def check(self, steps: Sequence[StepRecord], ctx: StepContext) -> StopReason | None: ...
