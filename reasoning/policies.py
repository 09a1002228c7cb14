"""Step policies: route a step to the draft or the target, and decide on a scored draft."""

from __future__ import annotations

from dataclasses import dataclass

from reasoning.protocols import StepContext
from reasoning.types import Decision, Route


@dataclass(frozen=True, slots=True)
class AlwaysDraft:
    """Baseline: the draft writes every step and every draft is kept (no judge call).

    >>> AlwaysDraft().decide(None, StepContext(0, 0, 100, 0))
    <Decision.ACCEPT: 'accept'>
    """

    @property
    def needs_judge(self) -> bool:
        return False

    def route(self, ctx: StepContext) -> Route:
        return Route.DRAFT

    def decide(self, score: float | None, ctx: StepContext) -> Decision:
        return Decision.ACCEPT


@dataclass(frozen=True, slots=True)
class AlwaysTarget:
    """Baseline: the target writes every step; the draft and the judge are never called.

    >>> AlwaysTarget().route(StepContext(3, 10, 100, 3))
    <Route.TARGET: 'target'>
    """

    @property
    def needs_judge(self) -> bool:
        return False

    def route(self, ctx: StepContext) -> Route:
        return Route.TARGET

    def decide(self, score: float | None, ctx: StepContext) -> Decision:
        return Decision.SKIP


@dataclass(frozen=True, slots=True)
class ThresholdPolicy:
    """Keep a drafted step when the judge's score is at least ``threshold``.

    Attributes:
        threshold: Lowest score in [0, 1] at which a draft step is kept.
        warmup_steps: The first this many steps of every problem go straight to the target.

    >>> p = ThresholdPolicy(threshold=0.7, warmup_steps=1)
    >>> p.route(StepContext(0, 0, 100, 0)), p.route(StepContext(1, 20, 100, 1))
    (<Route.TARGET: 'target'>, <Route.DRAFT: 'draft'>)
    >>> p.decide(0.7, StepContext(1, 20, 100, 1)), p.decide(0.69, StepContext(1, 20, 100, 1))
    (<Decision.ACCEPT: 'accept'>, <Decision.REJECT: 'reject'>)
    """

    threshold: float = 0.7
    warmup_steps: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"policy.threshold must be in [0, 1], got {self.threshold}")
        if self.warmup_steps < 0:
            raise ValueError(f"policy.warmup_steps must be >= 0, got {self.warmup_steps}")

    @property
    def needs_judge(self) -> bool:
        return True

    def route(self, ctx: StepContext) -> Route:
        return Route.TARGET if ctx.step_index < self.warmup_steps else Route.DRAFT

    def decide(self, score: float | None, ctx: StepContext) -> Decision:
        if score is None:
            raise ValueError("ThresholdPolicy needs a judge score, got None")
        return Decision.ACCEPT if score >= self.threshold else Decision.REJECT
