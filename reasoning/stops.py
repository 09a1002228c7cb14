"""Stop rules: after each step, decide whether a problem's solution is finished, and why."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from reasoning.protocols import Segmenter, StepContext
from reasoning.types import FinishReason, StepRecord, StopReason


@dataclass(frozen=True, slots=True)
class EmptyAnswer:
    """Stop when the answer is still only white space and the model ended or repeated that."""

    def check(self, steps: Sequence[StepRecord], ctx: StepContext) -> StopReason | None:
        # The last step first: once an answer has text, every later check ends here.
        if not steps or steps[-1].text.strip() or any(s.text.strip() for s in steps):
            return None
        last = steps[-1]
        if last.finish_reason is not FinishReason.STOP or len(steps) >= 2:
            return StopReason.EMPTY
        return None


@dataclass(frozen=True, slots=True)
class FinalAnswer:
    """Stop after a step that gives the final answer (as the segmenter recognises it; a step
    written in a phase, by a segmenter that knows phases, as its ``is_final_step`` does: a
    thinking step never)."""

    segmenter: Segmenter

    def check(self, steps: Sequence[StepRecord], ctx: StepContext) -> StopReason | None:
        if not steps:
            return None
        last = steps[-1]
        if last.phase is not None:
            final = self.segmenter.is_final_step(last.text, last.phase)  # type: ignore[attr-defined]
        else:
            final = self.segmenter.is_final(last.text)
        return StopReason.ANSWER if final else None


@dataclass(frozen=True, slots=True)
class EndOfSequence:
    """Stop when the model that wrote the last step ended its answer."""

    def check(self, steps: Sequence[StepRecord], ctx: StepContext) -> StopReason | None:
        return StopReason.EOS if steps and steps[-1].finish_reason is FinishReason.EOS else None


@dataclass(frozen=True, slots=True)
class RepeatedStep:
    """Stop when the last ``max_repeats + 1`` steps are the same text (white space folded)."""

    max_repeats: int = 2

    def check(self, steps: Sequence[StepRecord], ctx: StepContext) -> StopReason | None:
        n = self.max_repeats + 1
        if self.max_repeats < 1 or len(steps) < n:
            return None
        # White space folded: equal word lists (words hold no white space, so this is the same
        # as comparing the texts with each run of white space made one space). Newest first:
        # the first step that differs settles it.
        last = steps[-1].text.split()
        for i in range(2, n + 1):
            if steps[-i].text.split() != last:
                return None
        return StopReason.REPEATED


@dataclass(frozen=True, slots=True)
class TokenBudget:
    """Stop when the answer has used its whole token budget."""

    def check(self, steps: Sequence[StepRecord], ctx: StepContext) -> StopReason | None:
        return StopReason.TOKEN_BUDGET if ctx.tokens_used >= ctx.token_budget else None


@dataclass(frozen=True, slots=True)
class MaxSteps:
    """Stop after ``max_steps`` steps."""

    max_steps: int

    def check(self, steps: Sequence[StepRecord], ctx: StepContext) -> StopReason | None:
        return StopReason.MAX_STEPS if len(steps) >= self.max_steps else None


def default_stop_rules(segmenter: Segmenter, max_steps: int, max_repeats: int = 2,
                       stop_at_answer: bool = True) -> tuple:
    """The standard rules, in the order their reasons take precedence."""
    rules: list = [EmptyAnswer()]
    if stop_at_answer:
        rules.append(FinalAnswer(segmenter))
    rules += [EndOfSequence(), RepeatedStep(max_repeats), TokenBudget(), MaxSteps(max_steps)]
    return tuple(rules)
