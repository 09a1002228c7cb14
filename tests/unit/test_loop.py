"""The step loop on scripted generators: who wrote which step, token counts, every stop rule."""

from __future__ import annotations

import pytest

from reasoning import (
    AlwaysDraft,
    AlwaysTarget,
    BlankLineSegmenter,
    ConfidenceJudge,
    ConstantJudge,
    LoopConfig,
    Problem,
    ScriptedGenerator,
    ScriptedJudge,
    StepLoop,
    ThresholdPolicy,
)
from reasoning.judges import CallableJudge
from reasoning.types import Decision, FinishReason, Route, StopReason

DRAFT = {
    "a": "Add 2 and 2.\n\nThat is 5.\n\nThe answer is \\boxed{5}.",
    "b": "Half of 10 is 5.\n\nSo \\boxed{5}.",
}
TARGET = {
    "a": "Add 2 and 2.\n\nThat is 4.\n\nThe answer is \\boxed{4}.",
    "b": "Half of ten is five.\n\nThe answer is \\boxed{5}.",
}
PROBLEMS = [Problem("a", "What is 2+2?", "4"), Problem("b", "Half of 10?", "5")]


def make_loop(policy, judge=None, draft=None, target=None, seg=None, **cfg):
    d = draft or ScriptedGenerator("draft", DRAFT)
    t = target or ScriptedGenerator("target", TARGET)
    loop = StepLoop(d, t, judge or ConstantJudge(1.0), policy, seg or BlankLineSegmenter(),
                    config=LoopConfig(**cfg))
    return loop, d, t


def by_id(traces):
    return {t.problem_id: t for t in traces}


def test_threshold_policy_routes_exactly_the_low_scored_steps_to_the_target():
    judge = ScriptedJudge({"a": [0.9, 0.3, 0.8], "b": [0.2, 0.9]})
    loop, d, t = make_loop(ThresholdPolicy(0.5), judge)
    tr = by_id(loop.run(PROBLEMS))
    a, b = tr["a"], tr["b"]
    assert [s.kept for s in a.steps] == [Route.DRAFT, Route.TARGET, Route.DRAFT]
    assert [s.decision for s in a.steps] == [Decision.ACCEPT, Decision.REJECT, Decision.ACCEPT]
    assert [s.score for s in a.steps] == [0.9, 0.3, 0.8]
    # After the target's step 1, the draft continues with its own step 2.
    assert a.text == "Add 2 and 2.\n\nThat is 4.\n\nThe answer is \\boxed{5}."
    assert a.stop_reason is StopReason.ANSWER
    assert [s.kept for s in b.steps] == [Route.TARGET, Route.DRAFT]
    assert b.text == "Half of ten is five.\n\nSo \\boxed{5}."
    # Token counts: scripted tokens are runs of spaces or of non-spaces.
    s1 = a.steps[1]
    assert (s1.draft_text, s1.draft_tokens) == ("That is 5.\n\n", 6)
    assert (s1.target_text, s1.target_tokens) == ("That is 4.\n\n", 6)
    assert a.steps[0].draft_tokens == 8 and a.steps[0].target_tokens == 0 and a.steps[0].target_text is None
    assert a.draft_tokens == 8 + 6 + 7 and a.target_tokens == 6
    # Lockstep batching: one draft call per round (3 rounds), one target call per round
    # that had a rejection (round 0 for b, round 1 for a).
    assert d.calls == 3 and t.calls == 2
    assert len(d.requests) == 2 + 2 + 1


def test_always_target_never_calls_the_draft_or_judge():
    calls = []
    judge = CallableJudge(lambda r: calls.append(r) or 1.0)
    loop, d, t = make_loop(AlwaysTarget(), judge)
    tr = by_id(loop.run(PROBLEMS))
    assert d.calls == 0 and calls == []
    assert tr["a"].text == TARGET["a"] and tr["b"].text == TARGET["b"]
    assert all(s.route is Route.TARGET and s.decision is Decision.SKIP and s.score is None
               for t_ in tr.values() for s in t_.steps)


def test_always_draft_never_calls_the_target_or_judge():
    calls = []
    loop, d, t = make_loop(AlwaysDraft(), CallableJudge(lambda r: calls.append(r) or 1.0))
    tr = by_id(loop.run(PROBLEMS))
    assert t.calls == 0 and calls == []
    assert tr["a"].text == DRAFT["a"]
    assert all(s.kept is Route.DRAFT and s.decision is Decision.ACCEPT for s in tr["a"].steps)


def test_warmup_steps_go_to_the_target_without_a_draft():
    loop, d, t = make_loop(ThresholdPolicy(0.0, warmup_steps=2), ConstantJudge(1.0))
    a = by_id(loop.run(PROBLEMS[:1]))["a"]
    assert [s.route for s in a.steps] == [Route.TARGET, Route.TARGET, Route.DRAFT]
    assert [s.draft_text for s in a.steps[:2]] == [None, None]
    assert a.text == "Add 2 and 2.\n\nThat is 4.\n\nThe answer is \\boxed{5}."


def test_stop_on_end_of_sequence_without_final_answer():
    loop, *_ = make_loop(AlwaysDraft(), draft=ScriptedGenerator("draft", {"a": "One.\n\nTwo."}))
    a = loop.run(PROBLEMS[:1])[0]
    assert a.stop_reason is StopReason.EOS
    assert [s.finish_reason for s in a.steps] == [FinishReason.STOP, FinishReason.EOS]


def test_stop_at_max_steps():
    script = "".join(f"Step {i}.\n\n" for i in range(20))
    loop, *_ = make_loop(AlwaysDraft(), draft=ScriptedGenerator("draft", {"a": script}), max_steps=4)
    a = loop.run(PROBLEMS[:1])[0]
    assert a.stop_reason is StopReason.MAX_STEPS and len(a.steps) == 4


def test_token_budget_cuts_the_last_step_and_stops():
    script = "".join(f"Step number {i}.\n\n" for i in range(20))  # 6 tokens a step
    loop, *_ = make_loop(AlwaysDraft(), draft=ScriptedGenerator("draft", {"a": script}), token_budget=15)
    a = loop.run(PROBLEMS[:1])[0]
    assert a.stop_reason is StopReason.TOKEN_BUDGET
    assert [s.draft_tokens for s in a.steps] == [6, 6, 3]
    assert a.steps[-1].finish_reason is FinishReason.LENGTH
    assert not a.steps[-1].truncated  # cut by the budget, not the step limit


def test_runaway_step_is_cut_at_the_step_limit_and_marked_truncated():
    script = "word " * 100 + "\n\nThe answer is \\boxed{1}."
    loop, *_ = make_loop(AlwaysDraft(), draft=ScriptedGenerator("draft", {"a": script}),
                         seg=BlankLineSegmenter(max_step_tokens=10), max_steps=2)
    a = loop.run(PROBLEMS[:1])[0]
    assert a.steps[0].truncated and a.steps[0].draft_tokens == 10
    assert a.steps[0].finish_reason is FinishReason.LENGTH
    assert a.stop_reason is StopReason.MAX_STEPS


def test_repeated_steps_stop_the_problem():
    loop, *_ = make_loop(AlwaysDraft(), draft=ScriptedGenerator("draft", {"a": "Hmm.\n\n" * 30}),
                         max_repeats=2)
    a = loop.run(PROBLEMS[:1])[0]
    assert a.stop_reason is StopReason.REPEATED and len(a.steps) == 3


@pytest.mark.parametrize("script", ["", "   \n\n", "\n\n\n\n"])
def test_whitespace_or_immediate_end_is_an_empty_answer(script):
    loop, *_ = make_loop(AlwaysDraft(), draft=ScriptedGenerator("draft", {"a": script * 5}))
    a = loop.run(PROBLEMS[:1])[0]
    assert a.stop_reason is StopReason.EMPTY
    assert len(a.steps) <= 2


def test_short_steps_merge_into_the_next():
    script = "Ok.\n\nSo 2 + 2 = 4.\n\nThe answer is \\boxed{4}."
    loop, d, _ = make_loop(AlwaysDraft(), draft=ScriptedGenerator("draft", {"a": script}),
                           seg=BlankLineSegmenter(min_step_chars=5))
    a = loop.run(PROBLEMS[:1])[0]
    assert [s.text for s in a.steps] == ["Ok.\n\nSo 2 + 2 = 4.\n\n", "The answer is \\boxed{4}."]
    assert a.steps[0].draft_tokens == 2 + 12
    # The continuation call reused the draft's own token ids for the short piece.
    merged_req = d.requests[1]
    assert merged_req.prefix[-1].text == "Ok.\n\n" and merged_req.prefix[-1].token_ids is not None


def test_a_think_tag_the_model_wrote_is_kept_with_its_token_ids_by_default():
    script = "Let me think.</think>\n\nThe answer is \\boxed{4}."
    loop, d, _ = make_loop(AlwaysDraft(), draft=ScriptedGenerator("draft", {"a": script}))
    a = loop.run(PROBLEMS[:1])[0]
    assert a.steps[0].text == "Let me think.</think>\n\n" and a.text == script
    prefix = d.requests[1].prefix[0]
    assert prefix.text == "Let me think.</think>\n\n" and prefix.token_ids is not None  # what it wrote


def test_think_tag_is_stripped_when_asked_and_token_ids_dropped_for_the_changed_text():
    script = "Let me think.</think>\n\nThe answer is \\boxed{4}."
    loop, d, _ = make_loop(AlwaysDraft(), draft=ScriptedGenerator("draft", {"a": script}),
                           seg=BlankLineSegmenter(strip_think=True))
    a = loop.run(PROBLEMS[:1])[0]
    assert a.steps[0].text == "Let me think.\n\n"
    assert d.requests[1].prefix[0].token_ids is None  # re-tokenised from the cleaned text


def test_answer_stop_can_be_turned_off_to_match_plain_decoding():
    loop, *_ = make_loop(AlwaysTarget(), stop_at_answer=False)
    a = loop.run(PROBLEMS[:1])[0]
    assert a.stop_reason is StopReason.EOS and a.text == TARGET["a"]


def test_confidence_judge_uses_draft_logprobs():
    draft = ScriptedGenerator("draft", DRAFT, token_prob={"a": 0.9, "b": 0.3})
    loop, d, _ = make_loop(ThresholdPolicy(0.5), ConfidenceJudge(), draft=draft)
    tr = by_id(loop.run(PROBLEMS))
    assert all(s.kept is Route.DRAFT for s in tr["a"].steps)
    assert all(s.kept is Route.TARGET for s in tr["b"].steps)
    assert tr["a"].steps[0].score == pytest.approx(0.9)
    assert all(r.params.logprobs == 0 for r in d.requests)


def test_rolling_window_limits_problems_in_flight():
    problems = [Problem(f"p{i}", "q", "1") for i in range(5)]
    script = {f"p{i}": "".join(f"Step {k}.\n\n" for k in range(i)) + "The answer is \\boxed{1}."
              for i in range(5)}
    loop, d, _ = make_loop(AlwaysDraft(), draft=ScriptedGenerator("draft", script), max_in_flight=2)
    traces = loop.run(problems)
    assert sorted(t.problem_id for t in traces) == [f"p{i}" for i in range(5)]
    assert max(d.batch_sizes) == 2
    # A finished problem's place is taken at the next round: 5 problems of 1..5 steps.
    assert sum(d.batch_sizes) == sum(i + 1 for i in range(5))
    assert d.batch_sizes == [2, 2, 2, 2, 2, 2, 1, 1, 1]


def test_a_failing_request_fails_only_its_problem():
    def fn(pid, prefix):
        if pid == "b" and prefix:
            raise RuntimeError("engine fell over")
        return DRAFT[pid][len(prefix):]

    loop, *_ = make_loop(AlwaysDraft(), draft=ScriptedGenerator("draft", fn))
    tr = by_id(loop.run(PROBLEMS))
    assert tr["a"].stop_reason is StopReason.ANSWER and tr["a"].error is None
    assert tr["b"].stop_reason is StopReason.ERROR
    assert "engine fell over" in tr["b"].error and len(tr["b"].steps) == 1


def test_a_judge_score_out_of_range_fails_the_problem():
    loop, *_ = make_loop(ThresholdPolicy(0.5), CallableJudge(lambda r: 0.5))
    loop.judge = type("J", (), {"score": lambda self, reqs: [1.5] * len(reqs)})()
    tr = loop.run(PROBLEMS[:1])[0]
    assert tr.stop_reason is StopReason.ERROR and "outside [0, 1]" in tr.error


def test_traces_come_out_as_problems_finish():
    loop, *_ = make_loop(AlwaysTarget())
    order = [t.problem_id for t in loop.iter_traces(PROBLEMS)]
    assert order == ["b", "a"]  # b needs 2 steps, a needs 3


def test_sampled_requests_each_draw_their_own_seed():
    """At temperature > 0 with loop.seed set, problems, steps and models draw different random
    streams (one shared seed made every step of every problem repeat the same draws), and a rerun
    draws the same ones; greedy requests keep the loop's seed unchanged."""
    def seeds(**cfg):
        loop, d, t = make_loop(ThresholdPolicy(0.5), judge=ScriptedJudge({"a": [1.0, 0.0, 1.0]}), **cfg)
        loop.run(PROBLEMS)
        return [(r.request_id, r.params.seed) for g in (d, t) for r in g.requests]

    sampled = seeds(temperature=0.7, seed=1)
    values = [s for _, s in sampled]
    assert len(sampled) >= 6 and len(set(values)) == len(values)  # every request its own stream
    assert seeds(temperature=0.7, seed=1) == sampled  # reproducible
    assert [s for _, s in seeds(temperature=0.7, seed=2)] != values
    assert {s for _, s in seeds(temperature=0.0, seed=1)} == {1}
