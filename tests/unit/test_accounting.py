"""Cost accounting: the breakdown adds up on models of known cost, resumed runs' wall seconds,
async judge seconds per merged item, and step-cache keys that see who wrote each step.

Expected values are worked out by hand in the comments, from the scripted tokenizer (tokens are
runs of white space or of other characters) and the costs given to the scripted models.
"""

from __future__ import annotations

import json
import threading
import time

import pytest

from reasoning.backends.scripted import ScriptedGenerator
from reasoning.cache import StepCache, judge_key
from reasoning.cached import CachedJudge
from reasoning.judges import ScriptedJudge
from reasoning.loop import LoopConfig, StepLoop
from reasoning.metrics import summarize
from reasoning.pipeline import Pipeline
from reasoning.policies import AlwaysTarget, ThresholdPolicy
from reasoning.prompts import ChatPrompt
from reasoning.protocols import JudgeRequest
from reasoning.segmenter import BlankLineSegmenter
from reasoning.traces import CALLS, TRACES, read_calls
from reasoning.types import Completion, FinishReason, Problem, Segment

PROMPT = ChatPrompt(system=None, user_template="{question}")  # the chat is one token: "Q"


def _models():
    # draft: 0.01 s per prompt id read, 0.1 s per id written; target: 0.02 and 0.3
    draft = ScriptedGenerator("draft", {"p": "A.\n\nB.\n\nC."}, prefix_cache=True,
                              prefill_cost=0.01, decode_cost=0.1)
    target = ScriptedGenerator("target", {"p": "A.\n\nb.\n\nC."}, prefix_cache=True,
                               prefill_cost=0.02, decode_cost=0.3)
    return draft, target


def test_breakdown_adds_up_on_models_of_known_cost():
    draft, target = _models()
    judge = ScriptedJudge({"p": [1.0, 0.0, 1.0]})  # keep step 0, reject step 1, keep step 2
    loop = StepLoop(draft, target, judge, ThresholdPolicy(0.5), BlankLineSegmenter(), PROMPT,
                    LoopConfig(max_steps=8, token_budget=64))
    (trace,) = loop.run([Problem("p", "Q", "C")])
    assert [s.kept.value for s in trace.steps] == ["draft", "target", "draft"]
    c = summarize([trace])["cost"]
    # Step 0, draft: reads [Q] (1 id), writes "A." "\n\n" (2): 0.01 + 0.2 = 0.21 s, kept.
    # Step 1, draft: its cache holds [Q A. \n\n], the prompt is that: reads 0, writes "B." "\n\n":
    #   0.2 s, rejected (wasted). Target: nothing cached, reads [Q A. \n\n] (3): 0.06 s, writes
    #   "b." "\n\n" (2): 0.6 s; 0.66 s.
    # Step 2, draft: prompt [Q A. \n\n b. \n\n], cache [Q A. \n\n B. \n\n]: 3 ids cached, reads the
    #   target's 2 (its catch-up read): 0.02 s, writes "C." (1): 0.1 s; 0.12 s, kept.
    d, t = c["draft"], c["target"]
    assert d["seconds"] == pytest.approx(0.21 + 0.2 + 0.12)
    assert d["prefill_seconds"] == pytest.approx(0.01 + 0.02)
    assert d["decode_seconds"] == pytest.approx(0.5)
    assert (d["prefill_tokens"], d["cached_prompt_tokens"], d["decode_tokens"]) == (3, 6, 5)
    assert d["unsplit_seconds"] == 0
    assert t["seconds"] == pytest.approx(0.66) and t["prefill_seconds"] == pytest.approx(0.06)
    assert t["decode_seconds"] == pytest.approx(0.6)
    assert (t["prefill_tokens"], t["cached_prompt_tokens"], t["decode_tokens"]) == (3, 0, 2)
    assert c["wasted_draft_seconds"] == pytest.approx(0.2) and c["wasted_draft_tokens"] == 2
    assert c["kept_draft_seconds"] == pytest.approx(0.33)
    assert c["judge_seconds"] < 0.01  # a table lookup, timed
    assert c["engine_seconds"] == pytest.approx(0.53 + 0.66 + c["judge_seconds"])
    assert c["engine_seconds"] == pytest.approx(sum(summarize([trace])["seconds"].values()))


def test_an_engine_that_does_not_time_prefill_is_reported_unsplit():
    draft = ScriptedGenerator("draft", {"p": "A.\n\nB."})  # wall time, no split
    target = ScriptedGenerator("target", {"p": "A.\n\nB."})
    loop = StepLoop(draft, target, ScriptedJudge({}), AlwaysTarget(), BlankLineSegmenter(), PROMPT)
    c = summarize(loop.run([Problem("p", "Q", "B")]))["cost"]
    assert c["target"]["unsplit_seconds"] == pytest.approx(c["target"]["seconds"])
    assert c["target"]["prefill_seconds"] == 0 and c["target"]["decode_seconds"] == pytest.approx(0)


def test_reset_cache_makes_the_next_run_read_its_prompts_again():
    draft, target = _models()
    pipe = Pipeline(draft, target, ScriptedJudge({}), AlwaysTarget(), BlankLineSegmenter(), PROMPT,
                    grader=None)
    first = pipe.run([Problem("p", "Q", "C")]).summary["cost"]["target"]
    again = pipe.run([Problem("p", "Q", "C")]).summary["cost"]["target"]
    assert again["prefill_tokens"] < first["prefill_tokens"]  # inherited the first run's cache
    assert target.reset_cache() is True
    fresh = pipe.run([Problem("p", "Q", "C")]).summary["cost"]["target"]
    assert fresh["prefill_tokens"] == first["prefill_tokens"] and fresh["cached_prompt_tokens"] == \
        first["cached_prompt_tokens"]


# -- resumed runs' wall seconds --------------------------------------------------------------
def _slow_pipe():
    # 0.05 s per generated token, slept: each problem's answer "x." "\n\n" "y." is 3 tokens, 0.15 s
    gen = ScriptedGenerator("target", lambda pid, prefix: "x.\n\ny."[len(prefix):], seconds_per_token=0.05)
    return Pipeline(gen, gen, ScriptedJudge({}), AlwaysTarget(), BlankLineSegmenter(), PROMPT,
                    LoopConfig(max_steps=4, max_in_flight=1), grader=None)


def test_a_resumed_runs_wall_seconds_cover_every_call(tmp_path):
    problems = [Problem(f"p{i}", "Q") for i in range(4)]
    pipe = _slow_pipe()
    one = pipe.run(problems[:2], out_dir=tmp_path).summary["wall_seconds"]
    both = pipe.run(problems, out_dir=tmp_path).summary  # resumes: p0, p1 done, p2, p3 new
    calls = read_calls(tmp_path / CALLS)
    assert [c["problems"] for c in calls] == [2, 2]
    assert both["problems"] == 4 and both["calls"] == 2
    # two problems of 0.15 s each per call: the whole run is >= 0.6 s, not the last call's 0.3 s
    assert one >= 0.3 and both["wall_seconds"] >= 0.6
    assert both["wall_seconds"] == pytest.approx(calls[0]["wall_seconds"] + calls[1]["wall_seconds"])
    nothing_new = pipe.run(problems, out_dir=tmp_path).summary
    assert nothing_new["wall_seconds"] == pytest.approx(both["wall_seconds"], abs=0.05)


def test_traces_of_a_call_that_left_no_record_make_wall_seconds_unknown(tmp_path):
    problems = [Problem(f"p{i}", "Q") for i in range(3)]
    pipe = _slow_pipe()
    pipe.run(problems[:2], out_dir=tmp_path)
    (tmp_path / CALLS).unlink()  # as if that call had been killed before it could write its record
    s = pipe.run(problems, out_dir=tmp_path).summary
    assert s["wall_seconds"] is None and s["wall_seconds_known"] >= 0.15
    assert "2 of 3 problems" in s["wall_seconds_note"]
    assert json.loads((tmp_path / "summary.json").read_text())["wall_seconds"] is None
    assert len((tmp_path / TRACES).read_text().splitlines()) == 3


# -- async judge seconds ---------------------------------------------------------------------
class _SlowJudge:
    """0.2 s per call whatever its size; keeps its own busy time."""

    concurrent_calls = True

    def __init__(self) -> None:
        self.busy = 0.0
        self.calls = 0
        self._lock = threading.Lock()

    def score(self, requests):
        t0 = time.perf_counter()
        time.sleep(0.2)
        with self._lock:
            self.busy += time.perf_counter() - t0
            self.calls += 1
        return [0.9] * len(requests)


def test_async_judge_seconds_are_the_merged_calls_cost_per_item():
    sol = {f"p{i}": "One.\n\nTwo.\n\nThe answer is \\boxed{1}." for i in range(4)}
    judge = _SlowJudge()
    loop = StepLoop(ScriptedGenerator("draft", sol), ScriptedGenerator("target", sol), judge,
                    ThresholdPolicy(0.5), BlankLineSegmenter(), PROMPT,
                    LoopConfig(max_steps=6, schedule="async", max_in_flight=4))
    traces = loop.run([Problem(k, "Q", "1") for k in sol])
    charged = sum(s.judge_seconds for t in traces for s in t.steps)
    scored = sum(1 for t in traces for s in t.steps if s.score is not None)
    assert scored == 12 and judge.calls < scored  # calls were merged
    # Charged once, over the items of each merged call: the sum is the judge's busy time. Charging
    # each item its call's whole time (and its wait) would come to about 12 x 0.2 s.
    assert charged == pytest.approx(judge.busy, rel=0.05)


# -- step-cache keys -------------------------------------------------------------------------
def _judge_request(source: str) -> JudgeRequest:
    step = Completion("Two.\n\n", (1, 2), FinishReason.STOP, logprobs=(-0.1, -0.2))
    return JudgeRequest(Problem("p", "Q"), (), (Segment("One.\n\n", source, (5, 6)),), step, 1)


def test_a_judge_key_sees_which_model_wrote_each_prefix_step():
    # a router reads Segment.source: the same texts written by the other model must not hit
    assert judge_key("j", _judge_request("draft")) != judge_key("j", _judge_request("target"))
    assert judge_key("j", _judge_request("draft")) == judge_key("j", _judge_request("draft"))


def test_a_cached_judge_hit_costs_what_its_score_took(tmp_path):
    class Timed:
        def score(self, requests):
            time.sleep(0.1)
            return [0.7] * len(requests)

    with StepCache(tmp_path / "c.sqlite") as store:
        judge = CachedJudge(Timed(), store, "j")
        scores, miss_s = judge.score_timed([_judge_request("draft")])
        hit_scores, hit_s = judge.score_timed([_judge_request("draft")])
    assert scores == hit_scores == [0.7] and judge.hits == 1 and judge.misses == 1
    assert miss_s >= 0.1 and hit_s == pytest.approx(miss_s)
