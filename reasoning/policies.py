"""Step policies: route a step to the draft or the target, and decide on a scored draft."""

from __future__ import annotations

import math
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


def _check_common(threshold: float, warmup_steps: int, hold: int = 0, confident: float | None = None) -> None:
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"policy.threshold must be in [0, 1], got {threshold}")
    if warmup_steps < 0:
        raise ValueError(f"policy.warmup_steps must be >= 0, got {warmup_steps}")
    if hold < 0:
        raise ValueError(f"policy.hold must be >= 0, got {hold}")
    if confident is not None and not 0.0 <= confident <= 1.0:
        raise ValueError(f"policy.confident must be in [0, 1] or null, got {confident}")


def _held(ctx: StepContext, hold: int) -> bool:
    """Whether the step comes within ``hold`` steps after the target took over."""
    return 0 < ctx.target_run <= hold


@dataclass(frozen=True, slots=True)
class HysteresisPolicy:
    """Hand-off-aware: once the target has written a step, it keeps the next ``hold`` steps too.

    Every hand-off costs a catch-up read: the target must read the draft's steps before it
    writes again, and the draft the target's. A rejected step is a sign the draft is out of its
    depth at that point of the answer, so instead of handing back at once (and paying both reads
    again at the next rejection), the next ``hold`` steps go straight to the target, with no
    draft written. With ``confident`` set, a held step is drafted all the same and kept only if
    the judge scores it at least ``confident`` (the judge's word outweighs the hold). Outside a
    hold, a draft is kept at ``threshold``, as :class:`ThresholdPolicy` does.

    Attributes:
        threshold: Lowest judge score at which a draft step is kept.
        hold: Steps the target keeps after it wrote one (0: none; the policy is then
            :class:`ThresholdPolicy`).
        confident: Within a hold, draft anyway and keep the step at this score (None: held
            steps skip the draft).
        warmup_steps: The first this many steps of every problem go to the target.

    >>> p = HysteresisPolicy(threshold=0.5, hold=2)
    >>> [p.route(StepContext(i, 0, 100, 0, run)).value for i, run in [(1, 0), (2, 1), (3, 2), (4, 3)]]
    ['draft', 'target', 'target', 'draft']
    >>> q = HysteresisPolicy(threshold=0.5, hold=2, confident=0.9)
    >>> q.route(StepContext(2, 0, 100, 1, 1)).value, q.decide(0.8, StepContext(2, 0, 100, 1, 1)).value
    ('draft', 'reject')
    """

    threshold: float = 0.7
    hold: int = 2
    confident: float | None = None
    warmup_steps: int = 0

    def __post_init__(self) -> None:
        _check_common(self.threshold, self.warmup_steps, self.hold, self.confident)

    @property
    def needs_judge(self) -> bool:
        return True

    def route(self, ctx: StepContext) -> Route:
        if ctx.step_index < self.warmup_steps:
            return Route.TARGET
        return Route.TARGET if _held(ctx, self.hold) and self.confident is None else Route.DRAFT

    def decide(self, score: float | None, ctx: StepContext) -> Decision:
        if score is None:
            raise ValueError(f"{type(self).__name__} needs a judge score, got None")
        bar = self.confident if _held(ctx, self.hold) and self.confident is not None else self.threshold
        return Decision.ACCEPT if score >= bar else Decision.REJECT


@dataclass(frozen=True, slots=True)
class GlimpsePolicy(HysteresisPolicy):
    """Decide before drafting (after GlimpRouter): judge the first tokens of a step, not the step.

    The draft writes only the first ``glimpse_tokens`` tokens of the step; the judge scores
    that glimpse (e.g. ``judge=confidence judge.statistic=entropy``: how sure the draft is of
    how to start the step); at ``threshold`` or more the draft writes the rest of the step and
    it is kept with no further judge call, under it the target writes the step and only the
    glimpse was drafted in vain (against a whole rejected draft with a judge after drafting).
    ``hold`` and ``confident`` are :class:`HysteresisPolicy`'s (whose routing and deciding it
    shares): after the target wrote a step, it keeps the next ``hold`` steps, or, with
    ``confident``, the glimpse must score that.

    Attributes:
        threshold: Lowest glimpse score at which the draft writes the step.
        hold: Steps the target keeps after it wrote one (0: none).
        confident: Within a hold, the glimpse score needed instead (None: held steps skip the draft).
        warmup_steps: The first this many steps of every problem go to the target.
        glimpse_tokens: Tokens the draft writes before the judge decides (>= 1).

    >>> p = GlimpsePolicy(threshold=0.6, glimpse_tokens=2)
    >>> ctx = StepContext(1, 0, 100, 0)
    >>> p.glimpse_tokens, p.decide(0.6, ctx).value, p.decide(0.5, ctx).value
    (2, 'accept', 'reject')
    """

    threshold: float = 0.5
    hold: int = 0
    glimpse_tokens: int = 1

    def __post_init__(self) -> None:
        HysteresisPolicy.__post_init__(self)
        if self.glimpse_tokens < 1:
            raise ValueError(f"policy.glimpse_tokens must be >= 1, got {self.glimpse_tokens}")


@dataclass(frozen=True, slots=True)
class AbortPolicy:
    """Abort a draft mid-step: stop drafting as soon as the draft's confidence falls.

    The draft writes the step ``chunk_tokens`` tokens at a time. After each piece, once the
    step has at least ``min_tokens`` tokens, the running statistic of its token probabilities
    (``mean``: the geometric mean, ``min``: the least likely token's) is checked against
    ``bound``: under it, the draft stops there and the target writes the step, the drafted
    tokens thrown away (``keep_aborted="discard"``) or kept as the start of the step for the
    target to continue (``"prefix"``). A draft that runs to its end is judged and kept at
    ``threshold``, as :class:`ThresholdPolicy` does. Smaller pieces stop sooner, at the price
    of one engine call per piece.

    Attributes:
        threshold: Lowest judge score at which a finished draft step is kept.
        statistic: ``mean`` or ``min`` of the step's token probabilities so far.
        bound: The draft stops when the statistic falls under this.
        chunk_tokens: Tokens per drafting piece (>= 1).
        min_tokens: No stop before the step has this many tokens.
        keep_aborted: ``discard`` or ``prefix``.
        warmup_steps: The first this many steps of every problem go to the target.

    >>> import math
    >>> p = AbortPolicy(bound=0.5, statistic="mean", min_tokens=2)
    >>> ctx = StepContext(1, 0, 100, 0)
    >>> p.keep_drafting([math.log(0.9)], ctx), p.keep_drafting([math.log(0.9), math.log(0.2)], ctx)
    (True, False)
    """

    threshold: float = 0.7
    statistic: str = "mean"
    bound: float = 0.5
    chunk_tokens: int = 8
    min_tokens: int = 8
    keep_aborted: str = "discard"
    warmup_steps: int = 0

    def __post_init__(self) -> None:
        _check_common(self.threshold, self.warmup_steps)
        if self.statistic not in ("mean", "min"):
            raise ValueError(f"policy.statistic must be 'mean' or 'min', got {self.statistic!r}")
        if not 0.0 <= self.bound <= 1.0:
            raise ValueError(f"policy.bound must be in [0, 1], got {self.bound}")
        if self.chunk_tokens < 1:
            raise ValueError(f"policy.chunk_tokens must be >= 1, got {self.chunk_tokens}")
        if self.min_tokens < 0:
            raise ValueError(f"policy.min_tokens must be >= 0, got {self.min_tokens}")
        if self.keep_aborted not in ("discard", "prefix"):
            raise ValueError(f"policy.keep_aborted must be 'discard' or 'prefix', got {self.keep_aborted!r}")

    @property
    def needs_judge(self) -> bool:
        return True

    @property
    def needs_logprobs(self) -> bool:
        return True

    def route(self, ctx: StepContext) -> Route:
        return Route.TARGET if ctx.step_index < self.warmup_steps else Route.DRAFT

    def keep_drafting(self, logprobs, ctx: StepContext) -> bool:
        """False to stop the draft: its step's token logprobs so far give a statistic under ``bound``."""
        if len(logprobs) < max(1, self.min_tokens):
            return True
        v = sum(logprobs) / len(logprobs) if self.statistic == "mean" else min(logprobs)
        return math.exp(v) >= self.bound

    def decide(self, score: float | None, ctx: StepContext) -> Decision:
        if score is None:
            raise ValueError("AbortPolicy needs a judge score, got None")
        return Decision.ACCEPT if score >= self.threshold else Decision.REJECT
