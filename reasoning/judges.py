"""Judges that need no model of their own: a constant, any user callable, draft confidence.

Model-based judges (process reward models, the target as judge) live in :mod:`rewards`;
trained routers in :mod:`routers`. All of them satisfy :class:`reasoning.protocols.Judge`.
:func:`bind_judge` finishes one given as a partial with the run's models.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from reasoning.protocols import Generator, JudgeRequest


def bind_judge(judge: Any, target: Generator | None, draft: Generator | None = None) -> Any:
    """Finish a judge given as a partial (a ``_partial_: true`` config) with the run's models.

    The judge's constructor names what it needs: a ``generator`` parameter gets the target (the
    model that judges in SpecReason), a ``draft`` parameter the draft; a keyword the partial
    already holds is kept. Anything that is not a partial comes back as is.

    Raises:
        ValueError, TypeError: what the judge's constructor raises.

    >>> bind_judge(functools.partial(ConstantJudge, value=0.5), None)
    ConstantJudge(value=0.5)
    >>> bind_judge(functools.partial(lambda generator, draft: (generator, draft)), "T", "D")
    ('T', 'D')
    """
    if not isinstance(judge, functools.partial):
        return judge
    params = inspect.signature(judge.func).parameters
    kw = {}
    if "generator" in params and "generator" not in judge.keywords:
        kw["generator"] = target
    if "draft" in params and "draft" not in judge.keywords:
        kw["draft"] = draft
    return judge(**kw)


@dataclass(frozen=True, slots=True)
class ConstantJudge:
    """Gives every step the same score.

    >>> ConstantJudge(0.25).score([None, None])
    [0.25, 0.25]
    """

    value: float = 1.0
    concurrent_calls = True  # no engine: the async schedule need not queue it behind one

    def __post_init__(self) -> None:
        if not 0.0 <= self.value <= 1.0:
            raise ValueError(f"judge.value must be in [0, 1], got {self.value}")

    def score(self, requests: Sequence[JudgeRequest]) -> list[float]:
        return [self.value] * len(requests)


class CallableJudge:
    """Wraps any function ``fn(request) -> float`` (one step) as a batch judge.

    Scores outside [0, 1] are an error, not silently clipped.

    >>> j = CallableJudge(lambda r: 0.5)
    >>> j.score([None])
    [0.5]
    """

    def __init__(self, fn: Callable[[JudgeRequest], float]) -> None:
        self.fn = fn

    def score(self, requests: Sequence[JudgeRequest]) -> list[float]:
        out = []
        for r in requests:
            s = float(self.fn(r))
            if not 0.0 <= s <= 1.0 or math.isnan(s):
                raise ValueError(f"judge function returned {s} for a step; scores must be in [0, 1]")
            out.append(s)
        return out


class ScriptedJudge:
    """Scores looked up by (problem id, step index); a deterministic judge for tests and demos.

    Args:
        scores: ``{problem_id: [score of step 0, score of step 1, ...]}``.
        default: Score for a (problem, step) not in the table.

    >>> from reasoning.types import Problem, Completion, FinishReason
    >>> req = JudgeRequest(Problem("p", "q"), (), (), Completion("x", (1,), FinishReason.STOP), 1)
    >>> ScriptedJudge({"p": [0.9, 0.1]}).score([req])
    [0.1]
    """

    concurrent_calls = True  # no engine: the async schedule need not queue it behind one

    def __init__(self, scores: Mapping[str, Sequence[float]], default: float = 1.0) -> None:
        self.scores = {str(k): [float(x) for x in v] for k, v in scores.items()}
        self.default = float(default)

    def score(self, requests: Sequence[JudgeRequest]) -> list[float]:
        out = []
        for r in requests:
            row = self.scores.get(r.problem.id, [])
            out.append(row[r.step_index] if r.step_index < len(row) else self.default)
        return out


@dataclass(frozen=True, slots=True)
class ConfidenceJudge:
    """Scores a step by the draft's own confidence in its tokens.

    ``statistic="mean"`` gives ``exp(mean logprob)``, the geometric-mean token probability;
    ``"min"`` gives ``exp(min logprob)``, the probability of the least likely token;
    ``"entropy"`` gives ``1 - mean(H / log k)``, where ``H`` is the entropy of a token's top-``k``
    distribution (its ``k = top_logprobs`` best probabilities, renormalised to sum to 1) and
    ``log k`` the largest that entropy can be: 1 when every token was certain, 0 when every
    top-``k`` was flat. A position with no alternatives counts as flat.

    Only the first ``first_tokens`` tokens of the step count (None: all of them); an empty
    step scores 0. The judge needs the draft's logprobs: ``needs_logprobs`` tells the loop
    how many (0: the sampled token's only; ``k`` for ``"entropy"``).

    Args:
        statistic: ``mean``, ``min`` or ``entropy``.
        top_logprobs: ``k`` of ``"entropy"``: top logprobs asked of the draft per token (>= 2;
            vLLM allows at most 20 unless its ``max_logprobs`` is raised). Unused otherwise.
        first_tokens: Count only this many tokens from the step's start (None: all).

    >>> from reasoning.types import Problem, Completion, FinishReason
    >>> c = Completion("a b", (1, 2), FinishReason.STOP, logprobs=(math.log(0.5), math.log(0.5)))
    >>> ConfidenceJudge().score([JudgeRequest(Problem("p", "q"), (), (), c, 0)])
    [0.5]
    >>> flat, sure = {"a": math.log(0.5), "b": math.log(0.5)}, {"a": 0.0}
    >>> c = Completion("a a", (1, 1), FinishReason.STOP, logprobs=(0.0, 0.0), top_logprobs=(flat, sure))
    >>> j = ConfidenceJudge("entropy", top_logprobs=2)
    >>> j.needs_logprobs, j.score([JudgeRequest(Problem("p", "q"), (), (), c, 0)])
    (2, [0.5])
    >>> ConfidenceJudge("entropy", top_logprobs=2, first_tokens=1).score(
    ...     [JudgeRequest(Problem("p", "q"), (), (), c, 0)])
    [0.0]
    """

    statistic: str = "mean"
    top_logprobs: int = 20
    first_tokens: int | None = None
    concurrent_calls = True  # reads the draft's logprobs, no engine: not queued behind one

    def __post_init__(self) -> None:
        if self.statistic not in ("mean", "min", "entropy"):
            raise ValueError(f"judge.statistic must be 'mean', 'min' or 'entropy', got {self.statistic!r}")
        if self.statistic == "entropy" and self.top_logprobs < 2:
            raise ValueError(f"judge.top_logprobs must be >= 2 for statistic 'entropy' (the entropy of "
                             f"one alternative is always 0), got {self.top_logprobs}")
        if self.first_tokens is not None and self.first_tokens < 1:
            raise ValueError(f"judge.first_tokens must be >= 1 or null (all tokens), got {self.first_tokens}")

    @property
    def needs_logprobs(self) -> int:
        """Top logprobs per token the draft must return: 0 (the sampled token's only) or ``k``."""
        return self.top_logprobs if self.statistic == "entropy" else 0

    def score(self, requests: Sequence[JudgeRequest]) -> list[float]:
        return [self._one(r) for r in requests]

    def _one(self, r: JudgeRequest) -> float:
        n = self.first_tokens
        if self.statistic == "entropy":
            tops = r.step.top_logprobs
            if tops is None:
                raise ValueError(f"ConfidenceJudge('entropy') needs the draft's top {self.top_logprobs} "
                                 "logprobs per token; its backend returned none")
            tops = tops[:n] if n is not None else tops
            if not tops:
                return 0.0
            norm = math.log(self.top_logprobs)
            h = sum(min(1.0, _entropy(t) / norm) for t in tops) / len(tops)
            return round(min(1.0, max(0.0, 1.0 - h)), 12)
        lps = r.step.logprobs
        if lps is None:
            raise ValueError("ConfidenceJudge needs logprobs from the draft; its backend returned none")
        lps = lps[:n] if n is not None else lps
        if not lps:
            return 0.0
        v = sum(lps) / len(lps) if self.statistic == "mean" else min(lps)
        return round(math.exp(v), 12)


def _entropy(top: Mapping[str, float]) -> float:
    """Entropy (nats) of the renormalised distribution over ``top``'s ``{token: logprob}``; inf if empty.

    >>> round(_entropy({"a": math.log(0.25), "b": math.log(0.25)}), 6) == round(math.log(2), 6)
    True
    """
    ps = [math.exp(x) for x in top.values() if x > -math.inf]
    total = sum(ps)
    if total <= 0:
        return math.inf
    return -sum(p / total * math.log(p / total) for p in ps if p > 0)
