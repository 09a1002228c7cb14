"""The asynchronous schedule: same traces as lockstep, merged calls, overlap, errors, stopping."""

from __future__ import annotations

import threading
import time

import pytest

import reasoning.schedule as schedule
from reasoning.backends.scripted import ScriptedGenerator
from reasoning.judges import ConfidenceJudge, ScriptedJudge
from reasoning.loop import LoopConfig, StepLoop
from reasoning.policies import AlwaysTarget, ThresholdPolicy
from reasoning.segmenter import BlankLineSegmenter
from reasoning.types import Problem

SOLUTIONS = {f"p{i}": "".join(f"Step {j} of p{i}.\n\n" for j in range(2 + i % 4))
             + f"The answer is \\boxed{{{i}}}." for i in range(7)}
TARGET = {k: v.replace("Step", "Target step") for k, v in SOLUTIONS.items()}
# p0 and p3 have every step rejected, p1 its second, the rest none
SCORES = {"p0": [0.0] * 9, "p1": [0.9, 0.1], "p3": [0.0] * 9}
PROBLEMS = [Problem(k, f"question {k}", str(i)) for i, k in enumerate(SOLUTIONS)]


def _loop(schedule_name: str, in_flight: int = 0, draft=None, target=None, judge=None, policy=None):
    draft = draft or ScriptedGenerator("draft", SOLUTIONS)
    target = target or ScriptedGenerator("target", TARGET)
    return StepLoop(draft, target, judge or ScriptedJudge(SCORES, default=0.9),
                    policy or ThresholdPolicy(0.5), BlankLineSegmenter(max_step_tokens=64),
                    config=LoopConfig(max_steps=12, token_budget=256, max_in_flight=in_flight,
                                      schedule=schedule_name))


def _comparable(trace):
    d = trace.to_dict()
    d.pop("latency_seconds")
    d.pop("seconds")
    for s in d["steps"]:
        for k in ("draft_seconds", "judge_seconds", "target_seconds"):
            s.pop(k)
    return d


@pytest.mark.parametrize("in_flight", [0, 1, 3])
def test_async_gives_the_lockstep_traces(in_flight):
    lock = _loop("lockstep", in_flight).run(PROBLEMS)
    asy = _loop("async", in_flight).run(PROBLEMS)
    assert sorted(t.problem_id for t in asy) == sorted(p.id for p in PROBLEMS)
    by_id = {t.problem_id: _comparable(t) for t in lock}
    for t in asy:
        assert _comparable(t) == by_id[t.problem_id]
        assert t.latency_seconds > 0
    # the routes were mixed: some steps kept from the draft, some written by the target
    kept = {s.kept.value for t in asy for s in t.steps}
    assert kept == {"draft", "target"}


def test_confidence_judge_and_always_target_match_too():
    for judge, policy in ((ConfidenceJudge(), ThresholdPolicy(0.5)), (ConfidenceJudge(), AlwaysTarget())):
        runs = [{t.problem_id: _comparable(t) for t in _loop(name, judge=judge, policy=policy).run(PROBLEMS)}
                for name in ("lockstep", "async")]
        assert runs[0] == runs[1]


def test_waiting_requests_are_merged_into_one_call(monkeypatch):
    # With no time limit a gatherer fires only when every problem thread waits, so the first
    # draft call holds all seven problems' first steps.
    monkeypatch.setattr(schedule, "GATHER_MAX_WAIT_S", 30.0)
    draft = ScriptedGenerator("draft", SOLUTIONS)
    _loop("async", draft=draft).run(PROBLEMS)
    assert draft.batch_sizes[0] == len(PROBLEMS)
    assert draft.calls < sum(draft.batch_sizes)  # merged throughout, not one call per request


class _Timed(ScriptedGenerator):
    """Records (start, end) and the calling thread of each engine call; an in-process engine
    unless ``concurrent``, which makes it stand in for a server."""

    def __init__(self, *a, concurrent=False, **kw):
        super().__init__(*a, **kw)
        if concurrent:
            self.concurrent_calls = True
        self.spans: list[tuple[float, float]] = []
        self.threads: set[str] = set()

    def generate(self, requests):
        t0 = time.perf_counter()
        self.threads.add(threading.current_thread().name)
        out = super().generate(requests)
        self.spans.append((t0, time.perf_counter()))
        return out


def _overlaps(name, concurrent):
    draft = _Timed("draft", SOLUTIONS, seconds_per_token=0.002, concurrent=concurrent)
    target = _Timed("target", TARGET, seconds_per_token=0.002, concurrent=concurrent)
    _loop(name, draft=draft, target=target).run([PROBLEMS[0], PROBLEMS[2]])
    n = sum(1 for a in draft.spans for b in target.spans if a[0] < b[1] and b[0] < a[1])
    return n, draft.threads | target.threads


def test_draft_calls_overlap_target_calls_on_servers():
    """p0's steps all go to the target while p2's drafts go on: the two models' calls overlap
    in time, which the lockstep schedule never does."""
    assert _overlaps("lockstep", concurrent=True)[0] == 0
    n, threads = _overlaps("async", concurrent=True)
    assert n > 0 and threads == {"stepspec-gather-draft", "stepspec-gather-target"}


def test_in_process_engines_run_one_call_at_a_time_on_one_thread():
    """In-process engines share the machine's cores and a CPU engine's thread team is per
    calling thread, so async calls them all from one engine thread, never at once."""
    n, threads = _overlaps("async", concurrent=False)
    assert n == 0 and threads == {"stepspec-engine"}


def test_which_calls_go_to_the_engine_thread():
    # a judge follows the model it calls; a judge with no engine never waits behind one
    assert schedule.takes_concurrent_calls(type("J", (), {"generator": _Timed("t", {}, concurrent=True)})())
    assert not schedule.takes_concurrent_calls(type("J", (), {"generator": _Timed("t", {})})())
    assert schedule.takes_concurrent_calls(ScriptedJudge({}))
    assert schedule.takes_concurrent_calls(ConfidenceJudge())
    assert not schedule.takes_concurrent_calls(ScriptedGenerator("d", {}))


class _ThreadJudge(ScriptedJudge):
    def __init__(self, *a, engine_free=True, **kw):
        super().__init__(*a, **kw)
        self.concurrent_calls = engine_free
        self.threads: set[str] = set()

    def score(self, requests):
        self.threads.add(threading.current_thread().name)
        return super().score(requests)


def test_an_engine_free_judge_is_not_queued_behind_engine_calls():
    free, bound = _ThreadJudge(SCORES, default=0.9), _ThreadJudge(SCORES, default=0.9, engine_free=False)
    _loop("async", judge=free).run(PROBLEMS[:3])
    _loop("async", judge=bound).run(PROBLEMS[:3])
    assert free.threads == {"stepspec-gather-_ThreadJudge"} and bound.threads == {"stepspec-engine"}


class _FailsFor(ScriptedGenerator):
    def generate(self, requests):
        if any(r.problem_id == "p2" for r in requests):
            raise RuntimeError("engine refused p2")
        return super().generate(requests)


def test_a_failing_request_fails_its_problem_only():
    traces = {t.problem_id: t for t in _loop("async", draft=_FailsFor("draft", SOLUTIONS)).run(PROBLEMS)}
    assert traces["p2"].stop_reason.value == "error" and "engine refused p2" in traces["p2"].error
    assert all(t.error is None for k, t in traces.items() if k != "p2")
    assert len(traces) == len(PROBLEMS)


class _BrokenPolicy(ThresholdPolicy):
    def decide(self, score, ctx):
        raise ValueError("policy bug")


def test_an_exception_in_the_step_code_reaches_the_caller():
    with pytest.raises(ValueError, match="policy bug"):
        _loop("async", policy=_BrokenPolicy(0.5)).run(PROBLEMS)


def test_stopping_early_cancels_the_waiting_problems():
    before = threading.active_count()
    slow = ScriptedGenerator("draft", SOLUTIONS, seconds_per_token=0.001)
    it = _loop("async", 2, draft=slow).iter_traces(PROBLEMS)
    first = next(it)
    assert first.problem_id in SOLUTIONS
    it.close()
    deadline = time.time() + 10
    while threading.active_count() > before and time.time() < deadline:
        time.sleep(0.05)
    assert threading.active_count() <= before


def test_schedule_is_checked():
    with pytest.raises(ValueError, match="loop.schedule must be lockstep or async"):
        LoopConfig(schedule="parallel")
