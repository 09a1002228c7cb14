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
    fn = getattr(gen, "reset_cache", None)
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


@fast_init
@dataclass(frozen=True, slots=True)
class StepContext:
    """What a policy or stop rule may look at for one problem before its next step.

    Attributes:
        step_index: Index of the step about to be written (= steps written so far).
        tokens_used: Tokens in the answer so far (as counted by the models that wrote them).
        token_budget: The problem's total token budget.
        target_steps: Steps of the answer written by the target so far.
    """

    step_index: int
    tokens_used: int
    token_budget: int
    target_steps: int


@runtime_checkable
class StepPolicy(Protocol):
    """Routes a step to the draft or the target and decides on a scored draft."""

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
