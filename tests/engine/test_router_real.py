"""The Arbitrage pipeline on a real engine: collect router rows with the shadow policy on two GSM8K
train problems (SmolLM2-135M as both draft and target, each a vLLM worker, the target also the
reward as judge), train the lightweight router on them, and let it judge a real step loop.

Draft and target are the same model; they sample (temperature 0.8, no per-request seed) from
engines seeded differently, so their steps differ and the advantages are not all zero.
"""

from __future__ import annotations

import math
import time

import pytest

from reasoning import BlankLineSegmenter, LoopConfig, StepLoop, ThresholdPolicy
from reasoning.data import load_dataset
from reasoning.prompts import ChatPrompt
from rewards.target_judge import TargetJudge
from routers.collect import STEPS, ShadowCollector, read_rows
from routers.features import FEATURES

pytestmark = [pytest.mark.engine, pytest.mark.slow]


def test_collect_train_and_judge_with_real_models(tmp_path, test_model, cpu_engine_env, engine_kwargs):
    pytest.importorskip("sklearn")
    from reasoning.backends.vllm import VLLMGenerator
    from routers.judge import RouterJudge
    from routers.train import train_lightweight

    t0 = time.perf_counter()
    kw = dict(engine_kwargs, max_model_len=768)
    draft = VLLMGenerator.spawn(test_model, name="draft", env=cpu_engine_env, seed=1, **kw)
    try:
        target = VLLMGenerator.spawn(test_model, name="target", env=cpu_engine_env, seed=2, **kw)
    except BaseException:
        draft.close()
        raise
    started = time.perf_counter() - t0
    try:
        problems = load_dataset("gsm8k", split="train", limit=2)
        seg = BlankLineSegmenter(max_step_tokens=24, min_step_chars=8)
        loop = LoopConfig(token_budget=64, max_steps=6, temperature=0.8, seed=None, max_merges=1)
        collector = ShadowCollector(draft, target, TargetJudge(target), seg, ChatPrompt(), loop,
                                    top_logprobs=5)
        t1 = time.perf_counter()
        result = collector.run(problems, out_dir=tmp_path / "data", config="test: 1\n")
        collect_s = time.perf_counter() - t1
        rows = read_rows(tmp_path / "data" / STEPS)
        assert result.summary["errors"] == 0, result.summary
        assert {r["problem_id"] for r in rows} == {"gsm8k-train-0", "gsm8k-train-1"}
        for r in rows:
            assert 0.0 <= r["draft_score"] <= 1.0 and 0.0 <= r["target_score"] <= 1.0
            assert r["advantage"] == r["target_score"] - r["draft_score"]
            f = r["features"]
            assert list(f) == list(FEATURES) and all(math.isfinite(v) for v in f.values())
            assert f["step_tokens"] == r["draft_tokens"] > 0 and f["mean_logprob"] <= 0.0
            assert f["first_token_entropy"] >= 0.0 and r["top_logprobs"] == 5
            assert {h["source"] for h in r["history"]} <= {"target"}
        # The answer goes on with the target's step: each row's history ends with the row before's.
        by = {(r["problem_id"], r["step_index"]): r for r in rows}
        for (pid, i), r in by.items():
            if (pid, i + 1) in by:
                assert by[(pid, i + 1)]["history"][-1]["text"] == r["target_step"]
        advantages = sorted(r["advantage"] for r in rows)
        assert advantages[0] < advantages[-1], "draft and target steps scored alike everywhere"

        # Train on every row (two problems are too few to hold some out); the margin splits them.
        margin = advantages[(len(advantages) - 1) // 2]
        router = train_lightweight(rows, margin=margin, test_fraction=0.0, seed=0)
        assert router.meta["cost_ms"]["single_ms"] < 1.0
        folder = router.save(tmp_path / "router")
        judge = RouterJudge(str(folder))
        assert judge.needs_logprobs == 5

        # The router judges a real step loop: the draft returns its top 5 logprobs, every score is
        # 1 - P(target better), and the threshold policy routes by it.
        t2 = time.perf_counter()
        greedy = LoopConfig(token_budget=48, max_steps=4, temperature=0.0, seed=0, max_merges=1)
        live = StepLoop(draft, target, judge, ThresholdPolicy(0.5), seg, config=greedy)
        traces = live.run(problems[:1])
        judge_s = time.perf_counter() - t2
        steps = [s for t in traces for s in t.steps]
        assert traces[0].error is None and steps
        assert all(s.score is not None and 0.0 <= s.score <= 1.0 for s in steps)
        assert all((s.decision.value == "accept") == (s.score >= 0.5) for s in steps)
        print(f"\nengines {started:.1f} s, collect {collect_s:.1f} s ({len(rows)} rows), judged loop "
              f"{judge_s:.1f} s, router {router.meta['model']} {router.meta['cost_ms']}")
    finally:
        draft.close()
        target.close()
