"""Step policies: route a step to the draft or the target, and decide on a scored draft.

Every policy but :class:`AlwaysTarget` also takes the per-problem rules of
:class:`ProblemRules` as keyword fields (``target_first_steps``, ``target_final_step``,
``fallback_after``, ``fallback_rate``, ``fallback_window``, ``target_token_budget``); the engine
applies them before the policy's own ``route`` and ``decide``, and records each step a rule
settled (``StepRecord.rule``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, fields

from reasoning.protocols import StepContext
from reasoning.types import Decision, Phase, Route, Rule


@dataclass(frozen=True, slots=True, kw_only=True)
class _RuleFields:
    """The per-problem rules' settings, one definition for :class:`ProblemRules` and for the
    policies that take them as fields (keyword only, so that each policy's own fields keep their
    positions)."""

    target_first_steps: int = 0
    target_final_step: bool = False
    fallback_after: int = 0
    fallback_rate: float | None = None
    fallback_window: int = 8
    target_token_budget: int | None = None
    decide_once: bool = False


@dataclass(frozen=True, slots=True)
class ProblemRules(_RuleFields):
    """Per-problem rules that settle a step before the policy and its judge do.

    In the order they take precedence:

    1. **Target-token budget** (``target_token_budget = T``): once the target has written ``T``
       tokens of a problem's steps, the draft writes the remaining steps and each is kept
       without a judge call (``rule = target_budget``). The engine caps every target step's
       ``max_tokens`` at the budget left, so the target never writes more than ``T`` tokens of
       a problem (a step cut there ends with finish reason ``length``, and the draft continues
       it). Only the target's steps count, not a target-as-judge's calls. Beats every rule
       below: a spent budget is never exceeded, not even for the final step.
    2. **First steps** (``target_first_steps = N``): the target writes the first ``N`` steps of
       every problem, no draft written (``rule = target_first_steps``).
    3. **Adaptive fallback** (``fallback_after = k``, or ``fallback_rate = r`` over
       ``fallback_window = w``): once ``k`` of the problem's judged drafts in a row were
       rejected, or fewer than ``r`` of its last ``w`` judged drafts were kept (checked once
       ``w`` drafts were judged), drafting stops for the problem and the target writes the rest
       (``rule = fallback``; the trace's ``fallback_at`` and ``fallback_reason`` say from which
       step and why). A judged draft is one the policy decided on: rejected by the judge's
       score or stopped mid-step by the policy, or kept; steps a rule settled do not count.
    4. **Final step** (``target_final_step``): the step that gives the final answer is the
       target's. In the answer phase of a thinking segmenter (everything after ``</think>``)
       the target writes it, no draft written; otherwise the draft writes the step as usual and,
       when it turns out final (the segmenter sees the final answer in it, or the draft ended
       its answer there), it is thrown away unjudged and the target writes the step
       (``rule = target_final_step``). The target's step is kept whatever it is; if it is not
       final, the problem goes on.
5. **Decide once** (``decide_once``): the problem's first judged draft decides the whole
   problem, so the two models never hand a problem to each other. Kept: the draft writes every
   later step and each is kept unjudged (``rule = decided_once``). Rejected: the target writes
   that step (the draft's thrown away, so the target reads only the chat, as target-only does)
   and every later one (``rule = fallback``, reason ``decide_once``). A problem costs one
   model's answer plus, when it goes to the target, the one draft step it threw away: no
   catch-up reads. On hardware where prefill is not much cheaper than decode (a CPU) those
   reads are what sinks step-level speculation; a problem-level decision cannot do worse than
   sending problems to one model or the other at random (the mixing line) unless its signal is
   worse than none. The judge sees the first step only, so the signal is how the draft begins
   (e.g. ``judge=confidence judge.statistic=min``).

    Attributes:
        target_first_steps: Steps at the start of every problem the target writes (0: none).
        target_final_step: The target writes the final step.
        fallback_after: Rejected judged drafts in a row after which the target finishes the
            problem (0: off).
        fallback_rate: Acceptance (kept over judged) under which, over the last
            ``fallback_window`` judged drafts, the target finishes the problem (None: off).
        fallback_window: Judged drafts the acceptance is taken over.
        target_token_budget: Target tokens per problem (None: no budget).
        decide_once: The first judged draft decides which model writes the whole problem.

    >>> rules = ProblemRules(target_first_steps=1, fallback_after=2, target_token_budget=50)
    >>> rules.route(StepContext(0, 0, 512, 0)), rules.route(StepContext(1, 9, 512, 1, 1, 9))
    ((<Route.TARGET: 'target'>, <Rule.TARGET_FIRST_STEPS: 'target_first_steps'>), None)
    >>> rules.route(StepContext(4, 80, 512, 3, 0, 50))  # the budget spent: drafted and kept
    (<Route.DRAFT: 'draft'>, <Rule.TARGET_BUDGET: 'target_budget'>)
    >>> rules.fallback_reason([True, False]), rules.fallback_reason([True, False, False])
    (None, '2 rejections in a row')
    >>> ProblemRules(fallback_rate=0.5, fallback_window=4).fallback_reason([True, True, False, False, False])
    'acceptance 1/4 = 0.25 < 0.5 over the last 4 judged drafts'
    >>> once = ProblemRules(decide_once=True)
    >>> once.route(StepContext(0, 0, 512, 0)), once.route(StepContext(1, 30, 512, 0, judged_drafts=1))
    (None, (<Route.DRAFT: 'draft'>, <Rule.DECIDED_ONCE: 'decided_once'>))
    >>> once.fallback_reason([True]), once.fallback_reason([False])
    (None, 'decide_once: the first judged draft was rejected')
    """

    def __post_init__(self) -> None:
        if self.target_first_steps < 0:
            raise ValueError(f"policy.target_first_steps must be >= 0, got {self.target_first_steps}")
        if self.fallback_after < 0:
            raise ValueError(f"policy.fallback_after must be >= 0 (0: off), got {self.fallback_after}")
        if self.fallback_rate is not None and not 0.0 < self.fallback_rate <= 1.0:
            raise ValueError(f"policy.fallback_rate must be in (0, 1] or null (off), "
                             f"got {self.fallback_rate}")
        if self.fallback_window < 1:
            raise ValueError(f"policy.fallback_window must be >= 1, got {self.fallback_window}")
        if self.target_token_budget is not None and self.target_token_budget < 1:
            raise ValueError(f"policy.target_token_budget must be >= 1 or null (no budget), "
                             f"got {self.target_token_budget}")

    @property
    def active(self) -> bool:
        """Whether any rule is on."""
        return bool(self.target_first_steps or self.target_final_step or self.falls_back
                    or self.target_token_budget is not None)

    @property
    def falls_back(self) -> bool:
        """Whether a rule may hand the rest of a problem to the target (a fallback rule, or
        ``decide_once``): the engine then counts the problem's judged drafts."""
        return bool(self.fallback_after) or self.fallback_rate is not None or self.decide_once

    def route(self, ctx: StepContext) -> tuple[Route, Rule] | None:
        """The rule that settles the next step before the policy, and its route: ``target``
        (the target writes it, no draft) or ``draft`` (the draft writes it and it is kept, no
        judge); None: no rule, the policy routes the step."""
        if self.target_token_budget is not None and ctx.target_tokens >= self.target_token_budget:
            return Route.DRAFT, Rule.TARGET_BUDGET
        if ctx.step_index < self.target_first_steps:
            return Route.TARGET, Rule.TARGET_FIRST_STEPS
        if ctx.fallback:
            return Route.TARGET, Rule.FALLBACK
        if self.target_final_step and ctx.phase is Phase.ANSWER:
            return Route.TARGET, Rule.TARGET_FINAL_STEP
        if self.decide_once and ctx.judged_drafts:
            return Route.DRAFT, Rule.DECIDED_ONCE
        return None

    def target_tokens_left(self, ctx: StepContext) -> int | None:
        """Most tokens the target may write for the next step under the budget (None: no budget)."""
        if self.target_token_budget is None:
            return None
        return max(self.target_token_budget - ctx.target_tokens, 0)

    def fallback_reason(self, outcomes: Sequence[bool]) -> str | None:
        """Why drafting stops for a problem whose judged drafts went ``outcomes`` (True: kept),
        oldest first; None: it goes on."""
        if self.decide_once and outcomes and not outcomes[0]:
            return "decide_once: the first judged draft was rejected"
        k = self.fallback_after
        if k and len(outcomes) >= k and not any(outcomes[-k:]):
            return f"{k} rejections in a row"
        r, w = self.fallback_rate, self.fallback_window
        if r is not None and len(outcomes) >= w:
            kept = sum(outcomes[-w:])
            if kept / w < r:
                return f"acceptance {kept}/{w} = {kept / w:.2f} < {r} over the last {w} judged drafts"
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class _PerProblem(_RuleFields):
    """The fields of :class:`ProblemRules`, for the policies that take them; ``warmup_steps``,
    where a policy declares it, is the deprecated name of ``target_first_steps``."""

    def _check_rules(self) -> None:
        warmup = getattr(self, "warmup_steps", None)
        if warmup is not None:
            warnings.warn("policy.warmup_steps is deprecated: it is policy.target_first_steps "
                          "(the first steps the target writes)", FutureWarning, stacklevel=4)
            if warmup < 0:
                raise ValueError(f"policy.warmup_steps must be >= 0, got {warmup}")
            if self.target_first_steps not in (0, warmup):
                raise ValueError(f"policy.warmup_steps={warmup} and policy.target_first_steps="
                                 f"{self.target_first_steps} disagree: set only target_first_steps")
            object.__setattr__(self, "target_first_steps", warmup)
        rules = self.rules  # checks the fields
        if rules is not None and rules.falls_back and not self.needs_judge:
            raise ValueError(f"{type(self).__name__} calls no judge, so no draft is rejected: "
                             "policy.fallback_after, policy.fallback_rate and policy.decide_once "
                             "need a policy with a judge")

    @property
    def rules(self) -> ProblemRules | None:
        """The per-problem rules the engine applies (None: none is on)."""
        r = ProblemRules(**{f.name: getattr(self, f.name) for f in fields(_RuleFields)})
        return r if r.active else None


@dataclass(frozen=True, slots=True)
class AlwaysDraft(_PerProblem):
    """Baseline: the draft writes every step and every draft is kept (no judge call).

    With ``target_first_steps``, ``target_final_step`` or ``target_token_budget``
    (:class:`ProblemRules`) the target writes those steps; the fallback rules need a judge.

    >>> AlwaysDraft().decide(None, StepContext(0, 0, 100, 0))
    <Decision.ACCEPT: 'accept'>
    """

    def __post_init__(self) -> None:
        _PerProblem._check_rules(self)

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
class ThresholdPolicy(_PerProblem):
    """Keep a drafted step when the judge's score is at least ``threshold``.

    Attributes:
        threshold: Lowest score in [0, 1] at which a draft step is kept.
        warmup_steps: Deprecated name of ``target_first_steps`` (warns; None: not given).
        target_first_steps, target_final_step, fallback_after, fallback_rate,
            fallback_window, target_token_budget, decide_once: the per-problem rules (keyword only; see
            :class:`ProblemRules`).

    >>> p = ThresholdPolicy(threshold=0.7, target_first_steps=1)
    >>> p.route(StepContext(0, 0, 100, 0)), p.route(StepContext(1, 20, 100, 1))
    (<Route.TARGET: 'target'>, <Route.DRAFT: 'draft'>)
    >>> p.decide(0.7, StepContext(1, 20, 100, 1)), p.decide(0.69, StepContext(1, 20, 100, 1))
    (<Decision.ACCEPT: 'accept'>, <Decision.REJECT: 'reject'>)
    """

    threshold: float = 0.7
    warmup_steps: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"policy.threshold must be in [0, 1], got {self.threshold}")
        _PerProblem._check_rules(self)

    @property
    def needs_judge(self) -> bool:
        return True

    def route(self, ctx: StepContext) -> Route:
        return Route.TARGET if ctx.step_index < self.target_first_steps else Route.DRAFT

    def decide(self, score: float | None, ctx: StepContext) -> Decision:
        if score is None:
            raise ValueError("ThresholdPolicy needs a judge score, got None")
        return Decision.ACCEPT if score >= self.threshold else Decision.REJECT


def _check_common(threshold: float, hold: int = 0, confident: float | None = None) -> None:
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"policy.threshold must be in [0, 1], got {threshold}")
    if hold < 0:
        raise ValueError(f"policy.hold must be >= 0, got {hold}")
    if confident is not None and not 0.0 <= confident <= 1.0:
        raise ValueError(f"policy.confident must be in [0, 1] or null, got {confident}")


def _held(ctx: StepContext, hold: int) -> bool:
    """Whether the step comes within ``hold`` steps after the target took over."""
    return 0 < ctx.target_run <= hold


@dataclass(frozen=True, slots=True)
class HysteresisPolicy(_PerProblem):
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
        warmup_steps: Deprecated name of ``target_first_steps`` (warns; None: not given).
        target_first_steps, target_final_step, fallback_after, fallback_rate,
            fallback_window, target_token_budget, decide_once: the per-problem rules (keyword only; see
            :class:`ProblemRules`).

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
    warmup_steps: int | None = None

    def __post_init__(self) -> None:
        _check_common(self.threshold, self.hold, self.confident)
        _PerProblem._check_rules(self)

    @property
    def needs_judge(self) -> bool:
        return True

    def route(self, ctx: StepContext) -> Route:
        if ctx.step_index < self.target_first_steps:
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
        warmup_steps: Deprecated name of ``target_first_steps`` (warns; None: not given).
        glimpse_tokens: Tokens the draft writes before the judge decides (>= 1).
        target_first_steps, target_final_step, fallback_after, fallback_rate,
            fallback_window, target_token_budget, decide_once: the per-problem rules (keyword only; see
            :class:`ProblemRules`; with ``target_final_step`` a step whose glimpse was accepted
            and that turns out final is thrown away once written, and the target writes it).

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
class AbortPolicy(_PerProblem):
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
        warmup_steps: Deprecated name of ``target_first_steps`` (warns; None: not given).
        target_first_steps, target_final_step, fallback_after, fallback_rate,
            fallback_window, target_token_budget, decide_once: the per-problem rules (keyword only; see
            :class:`ProblemRules`; a draft stopped mid-step counts as a rejection for the
            fallback).

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
    warmup_steps: int | None = None

    def __post_init__(self) -> None:
        _check_common(self.threshold)
        _PerProblem._check_rules(self)
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
        return Route.TARGET if ctx.step_index < self.target_first_steps else Route.DRAFT

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
