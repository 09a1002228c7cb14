"""LlamaCppGenerator on a real GGUF model (SmolLM2-135M-Instruct, Q4_1) through llama.cpp: what is
llama.cpp's own (sequences per problem, its counters, its lock, the bench's cache resets, the loop
that reproduces greedy decoding). The Generator contract it shares with every backend is checked
in test_conformance.py.

Skipped cleanly when llama-cpp-python is not installed (it is an optional extra that builds
from source); CI installs it (scripts/install_llamacpp.sh), and there a skip is a failure.
"""

from __future__ import annotations

import time

import pytest

from reasoning.judges import ConfidenceJudge
from reasoning.loop import LoopConfig, StepLoop
from reasoning.policies import AlwaysTarget, ThresholdPolicy
from reasoning.protocols import JudgeRequest
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
from tests.engine.conftest import Recording, gsm8k_problems, require_llama_cpp

pytestmark = pytest.mark.engine

BUDGET = 96


def _req(messages, max_tokens: int, stop=("\n\n",), prefix=(), rid="r", pid="p") -> GenerationRequest:
    return GenerationRequest(rid, pid, tuple(messages), tuple(prefix),
                             GenerationParams(max_tokens=max_tokens, stop=stop))


@pytest.fixture(scope="module")
def llama():
    require_llama_cpp()
    from reasoning.backends.llamacpp import LlamaCppGenerator
    from reasoning.cpu_models import ensure_gguf

    path = ensure_gguf("smollm2-135m")
    gen = LlamaCppGenerator(str(path), name="llama", n_ctx=1024, max_sequences=4, n_threads=2)
    yield gen
    gen.close()


def test_a_repeated_prompt_is_read_whole_from_its_problems_cache(llama, chat):
    """llama.cpp keeps the logits where a prompt ended: the same prompt of the same problem again
    evaluates no id and gives the same tokens."""
    a = llama.generate([_req(chat, 24, pid="again")])[0]
    b = llama.generate([_req(chat, 24, pid="again")])[0]
    assert b.token_ids == a.token_ids and b.text == a.text
    assert b.cached_prompt_tokens == b.prompt_tokens  # nothing evaluated again

def test_more_requests_than_sequences(llama, chat, caplog):
    reqs = [_req(chat, 6, stop=(), pid=f"m{i}") for i in range(6)]  # 4 sequences
    with caplog.at_level("WARNING", logger="reasoning.backends.llamacpp"):
        out = llama.generate(reqs)
    assert len(out) == 6 and len({c.token_ids for c in out}) == 1
    assert "6 problems in one call, more than max_sequences=4" in caplog.text


def test_prefix_reuse_evaluates_only_the_new_tokens(llama, chat):
    """The second step of a problem costs its new tokens: read from llama.cpp's own counters."""
    first = llama.generate([_req(chat, 200, pid="reuse")])[0]
    seg = Segment(first.text, llama.name, first.token_ids)
    before = llama.perf()
    second = llama.generate([_req(chat, 200, prefix=(seg,), pid="reuse")])[0]
    after = llama.perf()
    evaluated = (after["prompt_eval_tokens"] - before["prompt_eval_tokens"]
                 + after["eval_tokens"] - before["eval_tokens"])
    decoded = second.num_tokens - (0 if second.finish_reason is FinishReason.EOS else 1)
    assert second.prompt_tokens == first.prompt_tokens + first.num_tokens
    assert second.cached_prompt_tokens == second.prompt_tokens - 1  # only the last step's last id is new
    assert evaluated == (second.prompt_tokens - second.cached_prompt_tokens) + decoded
    assert evaluated < second.prompt_tokens


def test_always_target_loop_reproduces_greedy_decoding(llama, chat):
    """The degenerate check: step by step through the loop = one plain greedy decode."""
    problem = Problem("apples", chat[-1].content, "8")
    ref = llama.generate([_req(chat, BUDGET, stop=(), pid="ref")])[0]
    target = Recording(llama)
    loop = StepLoop(draft=llama, target=target, judge=ConfidenceJudge(), policy=AlwaysTarget(),
                    segmenter=BlankLineSegmenter(max_step_tokens=BUDGET),
                    config=LoopConfig(stop_at_answer=False, max_repeats=0, token_budget=BUDGET,
                                      max_steps=1000))
    (trace,) = loop.run([problem])
    ids = tuple(t for c in target.completions for t in c.token_ids)
    assert len(trace.steps) >= 2, "the answer should span several steps"
    assert ids == ref.token_ids
    assert trace.text == ref.text
    assert all(s.route is Route.TARGET for s in trace.steps)
    want = {FinishReason.LENGTH: StopReason.TOKEN_BUDGET, FinishReason.EOS: StopReason.EOS}
    assert trace.stop_reason is want[ref.finish_reason]
    # later steps reused the earlier steps' KV: each prompt was cached but for its newest id
    assert all(c.cached_prompt_tokens == c.prompt_tokens - 1 for c in target.completions[1:])


def test_confidence_and_target_judges_run_on_llamacpp(llama):
    from rewards.target_judge import TargetJudge

    problems = gsm8k_problems(2)
    loop = StepLoop(draft=Recording(llama, "draft"), target=llama, judge=ConfidenceJudge(),
                    policy=ThresholdPolicy(threshold=0.6), segmenter=BlankLineSegmenter(max_step_tokens=48),
                    config=LoopConfig(token_budget=64, max_steps=6))
    traces = loop.run(problems)
    assert all(t.error is None and t.steps for t in traces)
    assert all(s.score is not None and 0 <= s.score <= 1 for t in traces for s in t.steps)

    judge = TargetJudge(llama)
    from reasoning.prompts import ChatPrompt

    reqs = []
    for p in problems:
        msgs = ChatPrompt().messages(p)
        step = llama.generate([_req(msgs, 40, pid=p.id)])[0]
        reqs.append(JudgeRequest(p, msgs, (), step, 0))
    t0 = time.perf_counter()
    scores = judge.score(reqs)
    assert len(scores) == 2 and all(0.0 <= s <= 1.0 for s in scores), scores
    assert time.perf_counter() - t0 < 60


def test_two_requests_of_one_problem_both_reuse_its_cache(llama, chat):
    first = llama.generate([_req(chat, 20, pid="twin")])[0]
    seg = Segment(first.text, llama.name, first.token_ids)
    a, b = llama.generate([_req(chat, 4, stop=(), prefix=(seg,), pid="twin"),
                           _req(chat, 4, stop=(), pid="twin")])
    # one after the other in the problem's own sequence: neither reads the chat again
    assert a.cached_prompt_tokens >= first.prompt_tokens
    assert b.cached_prompt_tokens == b.prompt_tokens
    alone = llama.generate([_req(chat, 4, stop=(), pid="other-twin")])[0]
    assert b.token_ids == alone.token_ids


def test_async_schedule_drives_one_engine_from_three_gatherers(llama):
    """Draft (the same engine under another name), target and target-as-judge all on one
    llama.cpp context, called from the draft's, the target's and the judge's gatherer threads:
    the engine's own lock keeps them apart, every problem finishes, and one problem in flight
    gives exactly the lockstep traces."""
    from rewards.target_judge import TargetJudge

    problems = gsm8k_problems(3)

    def run(schedule, in_flight):
        loop = StepLoop(draft=Recording(llama, "draft"), target=llama, judge=TargetJudge(llama),
                        policy=ThresholdPolicy(threshold=0.7),
                        segmenter=BlankLineSegmenter(max_step_tokens=24),
                        config=LoopConfig(token_budget=48, max_steps=3, max_in_flight=in_flight,
                                          schedule=schedule))
        fresh = [Problem(f"{schedule}{in_flight}-{p.id}", p.question, p.answer) for p in problems]
        return {t.problem_id: t for t in loop.run(fresh)}

    many = run("async", 3)
    assert len(many) == 3 and all(t.error is None and t.steps for t in many.values())
    assert all(t.text == "".join(s.text for s in t.steps) and t.latency_seconds > 0
               for t in many.values())
    assert any(s.score is not None for t in many.values() for s in t.steps)
    one_async, one_lock = run("async", 1), run("lockstep", 1)
    assert ([t.text for t in one_async.values()] == [t.text for t in one_lock.values()]
            and [[s.kept for s in t.steps] for t in one_async.values()]
            == [[s.kept for s in t.steps] for t in one_lock.values()])


def test_engine_counters_split_each_call_into_prefill_and_decode(llama, chat):
    a, b = llama.generate([_req(chat, 12, stop=(), pid="split-a"),
                           _req(chat[-1:], 6, stop=(), pid="split-b")])
    for c in (a, b):
        assert c.prefill_seconds is not None and 0 < c.prefill_seconds < c.seconds
        assert c.prefill_tokens == c.prompt_tokens  # new problems: nothing cached
    # each request's share of the decode steps it was in: the 12-token one was in twice as many
    assert a.seconds - a.prefill_seconds > b.seconds - b.prefill_seconds


def test_bench_runs_do_not_inherit_each_others_engine_caches(tmp_path):
    """Two runs of the same method, one after another in one bench, on a real engine: the second
    reads every prompt itself, exactly as the first did (before each run the bench empties the
    llama.cpp sequences; without that, the second found the first's prefixes cached)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    require_llama_cpp()
    from reasoning.cpu_models import ensure_gguf

    gguf = str(ensure_gguf("smollm2-135m"))
    out = tmp_path / "bench"
    root = Path(__file__).resolve().parents[2]
    args = ["recipe=cpu-pair-fast", "model@draft=llamacpp", "model@target=llamacpp", f"draft.model={gguf}",
            f"target.model={gguf}", "draft.name=draft", "draft.max_sequences=4", "target.max_sequences=4",
            "draft.n_ctx=1024", "target.n_ctx=1024", "dataset.sample=null", "dataset.limit=2",
            "loop.token_budget=48", "loop.max_steps=3", "bench.baselines=[target-only]",
            "bench.presets=[cpu-demo]", "bench.sweep={policy.threshold:[1.0]}", "progress=false",
            f"hydra.run.dir={out}"]
    # cpu-demo at threshold 1.0 rejects (nearly) every draft: the target writes what target-only did
    p = subprocess.run([sys.executable, "-m", "recipes.bench", *args], cwd=root, capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads((out / "bench.json").read_text())
    first, second = (r["runs"][n] for n in r["order"])
    assert [first["order"], second["order"]] == [1, 2]
    assert second["engine_caches"] == {"draft": "reset", "target": "reset"}

    def first_reads(run):  # the target's first call of each problem: its whole prompt read
        traces = [json.loads(x) for x in (out / run["dir"] / "traces.jsonl").read_text().splitlines()]
        return {t["problem_id"]: next(s for s in t["steps"] if s["target_prompt_tokens"])
                for t in traces}

    for pid, step in first_reads(second).items():
        assert step["target_prefill_tokens"] == step["target_prompt_tokens"] > 0, pid
    assert first_reads(first).keys() == first_reads(second).keys()
    for run in (first, second):
        c = run["cost"]
        assert c["target"]["prefill_seconds"] > 0 and c["target"]["decode_seconds"] > 0
        assert c["draft"]["seconds"] + c["target"]["seconds"] + c["judge_seconds"] == \
            pytest.approx(run["engine_seconds"])
