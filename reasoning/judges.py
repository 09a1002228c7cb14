"""Judges that need no model of their own: a constant, any user callable, draft confidence.

Model-based judges (process reward models, the target as judge) live in :mod:`rewards`;
trained routers in :mod:`routers`. All of them satisfy :class:`reasoning.protocols.Judge`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from reasoning.protocols import JudgeRequest


@dataclass(frozen=True, slots=True)
class ConstantJudge:
    """Gives every step the same score.

    >>> ConstantJudge(0.25).score([None, None])
    [0.25, 0.25]
    """

    value: float = 1.0

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
    """Scores a step by the draft's own confidence: the geometric-mean token probability.

    ``statistic="mean"`` gives ``exp(mean logprob)``; ``"min"`` gives ``exp(min logprob)``,
    the probability of the least likely token. Needs the draft to return logprobs
    (``logprobs >= 0`` in its generation params: the loop asks for them when the judge
    says ``needs_logprobs``).

    >>> from reasoning.types import Problem, Completion, FinishReason
    >>> c = Completion("a b", (1, 2), FinishReason.STOP, logprobs=(math.log(0.5), math.log(0.5)))
    >>> ConfidenceJudge().score([JudgeRequest(Problem("p", "q"), (), (), c, 0)])
    [0.5]
    """

    statistic: str = "mean"

    def __post_init__(self) -> None:
        if self.statistic not in ("mean", "min"):
            raise ValueError(f"judge.statistic must be 'mean' or 'min', got {self.statistic!r}")

    @property
    def needs_logprobs(self) -> bool:
        return True

    def score(self, requests: Sequence[JudgeRequest]) -> list[float]:
        out = []
        for r in requests:
            lps = r.step.logprobs
            if lps is None:
                raise ValueError("ConfidenceJudge needs logprobs from the draft; its backend returned none")
            if not lps:
                out.append(0.0)
                continue
            v = sum(lps) / len(lps) if self.statistic == "mean" else min(lps)
            out.append(round(math.exp(v), 12))
        return out
