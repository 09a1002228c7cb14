"""The cascade of judges (rewards.cascade) and the self-verifying draft (judge=self-verify) on
scripted judges and models whose outcomes are known by hand: which stage sees which steps, in
how many calls, which stage decided, the optional attributes it shows, and the bad configs it
refuses."""

from __future__ import annotations

import functools
import math

import pytest

from reasoning.backends.scripted import ScriptedGenerator
from reasoning.cache import StepCache
from reasoning.cached import CachedJudge
from reasoning.engine import judge_logprobs, timed_scores
from reasoning.judges import ConfidenceJudge, ConstantJudge
from reasoning.loop import LoopConfig, StepLoop
from reasoning.policies import ThresholdPolicy
from reasoning.protocols import JudgeRequest, option
from reasoning.schedule import takes_concurrent_calls
from reasoning.segmenter import BlankLineSegmenter
from reasoning.types import ChatMessage, Completion, FinishReason, Problem, Route
from rewards.cascade import CascadeJudge, CascadeStage, Verdict
from rewards.target_judge import TargetJudge

LOG = math.log


class Table:
    """A judge that scores a step by its text from a table and records each call's step texts."""

    def __init__(self, table: dict[str, float]) -> None:
        self.table = table
        self.calls: list[list[str]] = []

    def score(self, requests):
        self.calls.append([r.step.text for r in requests])
        return [self.table[r.step.text] for r in requests]


def req(text: str, pid: str = "p", index: int = 0) -> JudgeRequest:
    return JudgeRequest(Problem(pid, "q"), (), (), Completion(text, (1,), FinishReason.STOP), index)


# -- routing: the next judge sees only the steps inside the band ----------------------------------
def test_the_second_judge_scores_only_the_steps_inside_the_band_in_one_call():
    # band [0.3, 0.7): 0.3 is inside (low included), 0.7 outside (high excluded)
    first = Table({"a": 0.1, "b": 0.5, "c": 0.9, "d": 0.3, "e": 0.7, "f": 0.69})
    second = Table({"b": 0.8, "d": 0.2, "f": 1.0})
    judge = CascadeJudge([CascadeStage(first, 0.3, 0.7), CascadeStage(second)])
    scores = judge.score([req(t) for t in "abcdef"])
    assert scores == [0.1, 0.8, 0.9, 0.2, 0.7, 1.0]
    assert first.calls == [list("abcdef")]
    assert second.calls == [["b", "d", "f"]]  # one call, these steps, in order
    assert [v.decided_by for v in judge.last] == [0, 1, 0, 1, 0, 1]
    assert judge.last[1] == Verdict(0.8, 1, (0.5, 0.8))
    assert judge.last[0].as_dict() == {"decided_by": 0, "stage_scores": [0.1]}


def test_three_stages_each_batched_and_each_seeing_only_what_the_one_before_passed_on():
    first = Table({"a": 0.5, "b": 0.5, "c": 0.95, "d": 0.5})
    second = Table({"a": 0.45, "b": 0.9, "d": 0.5})
    third = Table({"a": 0.0, "d": 1.0})
    judge = CascadeJudge([{"judge": first, "low": 0.2, "high": 0.9},
                          {"judge": second, "low": 0.4, "high": 0.6},
                          {"judge": third}])
    assert judge.score([req(t) for t in "abcd"]) == [0.0, 0.9, 0.95, 1.0]
    assert (first.calls, second.calls, third.calls) == ([list("abcd")], [["a", "b", "d"]], [["a", "d"]])
    assert [v.stage_scores for v in judge.verdicts([req("a")])] == [(0.5, 0.45, 0.0)]
    assert judge.stage_counts() == {"calls": [2, 2, 2], "steps": [5, 4, 3], "decided": [1, 1, 3]}


def test_no_later_call_when_the_first_judge_is_sure_of_every_step():
    first, second = Table({"a": 0.0, "b": 1.0}), Table({})
    judge = CascadeJudge([CascadeStage(first, 0.25, 0.75), CascadeStage(second)])
    assert judge.score([req("a"), req("b")]) == [0.0, 1.0]
    assert second.calls == []
    assert judge.score([]) == [] and first.calls == [["a", "b"]]  # an empty batch calls no stage
    # an empty band: the first stage decides everything
    first = Table({"a": 0.5})
    judge = CascadeJudge([CascadeStage(first, 0.5, 0.5), CascadeStage(second)])
    assert judge.score([req("a")]) == [0.5] and second.calls == []


def test_a_one_stage_cascade_is_its_judge():
    judge = CascadeJudge([{"judge": ConstantJudge(0.4)}])
    assert judge.score([req("a"), req("b")]) == [0.4, 0.4]
    assert [v.decided_by for v in judge.last] == [0, 0]


def test_a_stage_score_outside_0_1_is_an_error_naming_the_stage():
    judge = CascadeJudge([CascadeStage(Table({"a": 0.5}), 0.0, 1.0),
                          CascadeStage(Table({"a": float("nan")}))])
    with pytest.raises(ValueError, match=r"cascade stage 1 \(Table\) returned score nan for 'p' step 0"):
        judge.score([req("a")])


# -- the optional attributes (reasoning.protocols.OPTIONS) ----------------------------------------
class Timed(Table):
    """Knows its cost per step (as the step cache's judge does)."""

    def __init__(self, table, seconds):
        super().__init__(table)
        self.seconds = seconds

    def score_timed(self, requests):
        return self.score(requests), self.seconds


def test_each_step_is_charged_its_share_of_every_stage():
    first = Timed({"a": 0.5, "b": 0.5, "c": 0.0, "d": 1.0}, 0.5)
    second = Timed({"a": 0.9, "b": 0.1}, 2.0)
    judge = CascadeJudge([CascadeStage(first, 0.25, 0.75), CascadeStage(second)])
    scores, per_step = timed_scores(judge, [req(t) for t in "abcd"])
    # 4 steps at 0.5 s in stage 0, 2 of them at 2.0 s in stage 1: (2.0 + 4.0) / 4
    assert scores == [0.9, 0.1, 0.0, 1.0] and per_step == pytest.approx(1.5)
    scores, per_step, info = judge.score_info([req(t) for t in "abcd"])
    assert scores == [0.9, 0.1, 0.0, 1.0] and per_step == pytest.approx(1.5)
    assert info == [{"decided_by": 1, "stage_scores": [0.5, 0.9]},
                    {"decided_by": 1, "stage_scores": [0.5, 0.1]},
                    {"decided_by": 0, "stage_scores": [0.0]},
                    {"decided_by": 0, "stage_scores": [1.0]}]


def test_needs_logprobs_is_the_most_any_stage_asks():
    mean, entropy, none = ConfidenceJudge(), ConfidenceJudge("entropy", top_logprobs=5), ConstantJudge(0.5)
    assert CascadeJudge([CascadeStage(none, 0, 1), CascadeStage(none)]).needs_logprobs is False
    assert judge_logprobs(CascadeJudge([CascadeStage(none, 0, 1), CascadeStage(none)])) is None
    assert judge_logprobs(CascadeJudge([CascadeStage(none, 0, 1), CascadeStage(mean)])) == 0
    assert judge_logprobs(CascadeJudge([CascadeStage(mean, 0, 1), CascadeStage(entropy)])) == 5


class Server:
    """A generator that takes concurrent calls (as ServerGenerator does)."""

    name = "server"
    concurrent_calls = True


def test_concurrent_calls_only_when_every_stage_takes_them():
    engine = ScriptedGenerator("target", {"p": "7"})  # an in-process engine: no concurrent_calls
    free = ConstantJudge(0.5)
    assert CascadeJudge([CascadeStage(free, 0, 1), CascadeStage(free)]).concurrent_calls is True
    on_engine = CascadeJudge([CascadeStage(free, 0, 1), CascadeStage(TargetJudge(engine))])
    assert on_engine.concurrent_calls is False and not takes_concurrent_calls(on_engine)
    on_server = CascadeJudge([CascadeStage(free, 0, 1), CascadeStage(TargetJudge(Server()))])
    assert on_server.concurrent_calls is True
    # the draft's self-verification follows the draft, not the target it was also given
    self_check = TargetJudge(Server(), draft=engine, judge_with="draft")
    assert self_check.model is engine and takes_concurrent_calls(self_check) is False
    assert takes_concurrent_calls(TargetJudge(engine, draft=Server(), judge_with="draft")) is True


def test_cache_identity_lists_the_stages_and_the_step_cache_shows_the_cascades(tmp_path):
    class Router(ConstantJudge):
        cache_identity = {"files": "abc"}

    plain = CascadeJudge([CascadeStage(ConstantJudge(0.5), 0, 1), CascadeStage(ConstantJudge(0.5))])
    assert option(plain, "cache_identity") is None
    judge = CascadeJudge([CascadeStage(ConfidenceJudge("entropy", top_logprobs=3), 0, 1),
                          CascadeStage(Router(0.5))])
    assert judge.cache_identity == [None, {"files": "abc"}]
    store = StepCache(tmp_path / "c.sqlite")
    try:
        cached = CachedJudge(judge, store, "j")
        assert option(cached, "cache_identity") == [None, {"files": "abc"}]
        assert option(cached, "needs_logprobs") == 3 and option(cached, "concurrent_calls") is True
    finally:
        store.close()


# -- bad configurations: one clear line each ------------------------------------------------------
J = ConstantJudge(0.5)


@pytest.mark.parametrize("stages,needle", [
    ([], "judge.stages must list at least one stage"),
    (None, "judge.stages must list at least one stage"),
    ({"judge": J}, "judge.stages must list at least one stage"),
    ([{"judge": J, "low": -0.1, "high": 0.5}, {"judge": J}],
     "judge.stages.0.low must be a number in [0, 1], got -0.1"),
    ([{"judge": J, "low": 0.2, "high": 1.5}, {"judge": J}],
     "judge.stages.0.high must be a number in [0, 1], got 1.5"),
    ([{"judge": J, "low": float("nan"), "high": 0.5}, {"judge": J}], "judge.stages.0.low must be a number"),
    ([{"judge": J, "low": "0.2", "high": 0.5}, {"judge": J}], "judge.stages.0.low must be a number"),
    ([{"judge": J, "low": True, "high": 0.5}, {"judge": J}], "judge.stages.0.low must be a number"),
    ([{"judge": J, "low": 0.8, "high": 0.2}, {"judge": J}],
     "judge.stages.0: low (0.8) must be <= high (0.2)"),
    ([{"judge": J, "low": 0.2}, {"judge": J}], "judge.stages.0.high is missing"),
    ([{"judge": J}, {"judge": J}], "judge.stages.0.low is missing"),
    ([{"judge": J, "low": 0.2, "high": 0.8}, {"judge": J, "low": 0.1, "high": 0.9}],
     "judge.stages.1 is the last stage, which decides every step it sees: it takes no low/high"),
    ([{"judge": J, "low": 0.2, "high": 0.8, "hihg": 0.9}, {"judge": J}],
     "judge.stages.0 has unknown key(s) hihg: a stage takes judge, low, high"),
    ([{"low": 0.2, "high": 0.8}, {"judge": J}], "judge.stages.0 has no judge"),
    ([J], "judge.stages.0 must be a mapping"),
    ([{"judge": {"statistic": "mean"}}], "judge.stages.0.judge is not a judge"),
])
def test_bad_stages_are_refused_in_one_line(stages, needle):
    with pytest.raises(ValueError) as e:
        CascadeJudge(stages)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_a_stage_given_as_a_partial_is_bound_to_the_runs_models():
    target, draft = ScriptedGenerator("target", {"p": "9"}), ScriptedGenerator("draft", {"p": "9"})
    judge = CascadeJudge([{"judge": functools.partial(TargetJudge, judge_with="draft"),
                           "low": 0.3, "high": 0.7},
                          {"judge": functools.partial(TargetJudge)}], generator=target, draft=draft)
    assert judge.stages[0].judge.model is draft and judge.stages[1].judge.model is target
    with pytest.raises(ValueError, match="judge_with must be one of target, draft, got 'both'"):
        TargetJudge(target, judge_with="both")
    with pytest.raises(ValueError, match="has no draft: pass draft="):
        TargetJudge(target, judge_with="draft").score([req("x")])


# -- self-verify: the draft rates its own step, the target the uncertain ones ---------------------
DRAFT = {"a": "Add 2 and 2.\n\nThat is 5.\n\nSo 2 + 2 = 5 and the answer is \\boxed{5}."}
TARGET = {"a": "Add 2 and 2.\n\nThat is 4.\n\nThe answer is \\boxed{4}."}
# The draft rates its steps 9, 5 (uncertain: 5/9 is inside [0.334, 0.777)) and 1; the target,
# asked about the second only, rates it 8. Expected: steps 0 and 1 kept from the draft (scores
# 9/9 and 8/9), step 2 written by the target (1/9, decided by the draft).
DRAFT_RATES = {"Add 2 and 2.\n\n": "9", "That is 5.\n\n": "5", "So 2 + 2 = 5": "1"}
TARGET_RATES = {"That is 5.\n\n": "8"}


def rater(rates):
    def top(request):
        answer = request.messages[-2].content  # the answer with the rated step, as TargetJudge asks
        digit = next(d for end, d in rates.items() if answer.endswith(end) or end in answer.split("\n\n")[-1])
        return {digit: 0.0, "x": LOG(0.01)}
    return top


def self_verify_models():
    draft = ScriptedGenerator("draft", DRAFT, top_logprobs_fn=rater(DRAFT_RATES))
    target = ScriptedGenerator("target", TARGET, top_logprobs_fn=rater(TARGET_RATES))
    return draft, target


def compose_judge(name, overrides=()):
    from hydra import compose, initialize_config_dir

    from recipes._cli import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="evaluate", overrides=["recipe=smoke", f"judge={name}", *overrides])


def built(name, draft, target, overrides=()):
    from recipes._cli import bind_judge, instantiate

    cfg = compose_judge(name, overrides)
    partial = instantiate(cfg.judge, "judge")
    assert isinstance(partial, functools.partial)  # _partial_: true, bound by the program
    return bind_judge(partial, target, draft), cfg


def judge_requests(gen):
    return [r for r in gen.requests if r.request_id.endswith("/judge")]


def test_self_verify_config_asks_the_draft_first_and_the_target_only_when_unsure():
    draft, target = self_verify_models()
    judge, cfg = built("self-verify", draft, target)
    assert [(s.low, s.high) for s in judge.stages] == [(0.334, 0.777), (None, None)]
    assert 3 / 9 < 0.334 and 0.777 < 7 / 9  # a rating of 3 and one of 7 decide
    assert judge.stages[0].judge.model is draft and judge.stages[1].judge.model is target
    assert cfg.policy.threshold == 0.5  # smoke's; inside the band
    loop = StepLoop(draft, target, judge, ThresholdPolicy(0.777), BlankLineSegmenter(), config=LoopConfig())
    [tr] = loop.run([Problem("a", "What is 2+2?", "4")])
    assert [s.kept for s in tr.steps] == [Route.DRAFT, Route.DRAFT, Route.TARGET]
    assert [s.score for s in tr.steps] == pytest.approx([1.0, 8 / 9, 1 / 9])
    assert tr.text.endswith("The answer is \\boxed{4}.")
    # the draft rated every drafted step, the target only the uncertain one, each call one token
    assert [r.request_id for r in judge_requests(draft)] == ["a/0/judge", "a/1/judge", "a/2/judge"]
    [asked] = judge_requests(target)
    assert asked.request_id == "a/1/judge" and asked.messages[-2].content.endswith("That is 5.\n\n")
    assert all(r.params.max_tokens == 1 and r.params.logprobs == 20 for r in judge_requests(draft) + [asked])
    assert judge.stage_counts() == {"calls": [3, 1], "steps": [3, 1], "decided": [2, 1]}


def test_self_verify_stages_are_batched_across_problems():
    script = {f"p{i}": DRAFT["a"] for i in range(3)}
    draft = ScriptedGenerator("draft", script, top_logprobs_fn=rater(DRAFT_RATES))
    target = ScriptedGenerator("target", {k: TARGET["a"] for k in script},
                               top_logprobs_fn=rater(TARGET_RATES))
    judge, _ = built("self-verify", draft, target)
    loop = StepLoop(draft, target, judge, ThresholdPolicy(0.777), BlankLineSegmenter(), config=LoopConfig())
    traces = loop.run([Problem(k, "What is 2+2?", "4") for k in script])
    assert all([s.kept for s in t.steps] == [Route.DRAFT, Route.DRAFT, Route.TARGET] for t in traces)
    # one call per round to the draft as judge (3 steps each); the target as judge only in round 1
    assert judge.stage_counts() == {"calls": [3, 1], "steps": [9, 3], "decided": [6, 3]}
    asked = judge_requests(target)
    assert sorted(r.request_id for r in asked) == ["p0/1/judge", "p1/1/judge", "p2/1/judge"]


def test_the_async_schedule_gives_the_lockstep_traces_with_a_cascade():
    def run(schedule):
        draft, target = self_verify_models()
        judge, _ = built("self-verify", draft, target)
        loop = StepLoop(draft, target, judge, ThresholdPolicy(0.777), BlankLineSegmenter(),
                        config=LoopConfig(schedule=schedule))
        [tr] = loop.run([Problem("a", "What is 2+2?", "4")])
        return [(s.kept, s.score, s.text) for s in tr.steps], judge.stage_counts()

    assert run("async") == run("lockstep")


def test_cascade_config_the_draft_confidence_first_then_the_target():
    draft = ScriptedGenerator("draft", DRAFT, token_prob=0.8)  # every token 0.8: inside [0.5, 0.9)
    target = ScriptedGenerator("target", TARGET, top_logprobs_fn=lambda r: {"2": 0.0})
    judge, _ = built("cascade", draft, target)
    assert isinstance(judge.stages[0].judge, ConfidenceJudge) and judge.stages[1].judge.model is target
    assert judge_logprobs(judge) == 0  # the draft's logprobs, for its confidence
    loop = StepLoop(draft, target, judge, ThresholdPolicy(0.777), BlankLineSegmenter(), config=LoopConfig())
    [tr] = loop.run([Problem("a", "What is 2+2?", "4")])
    assert all(s.score == pytest.approx(2 / 9) and s.kept is Route.TARGET for s in tr.steps)
    assert len(judge_requests(target)) == len(tr.steps) and judge_requests(draft) == []
    # a band moved from the command line: 0.8 now decides, and the target is never asked
    draft = ScriptedGenerator("draft", DRAFT, token_prob=0.8)
    target = ScriptedGenerator("target", TARGET, top_logprobs_fn=lambda r: {"2": 0.0})
    judge, _ = built("cascade", draft, target, ["judge.stages.0.high=0.75"])
    loop = StepLoop(draft, target, judge, ThresholdPolicy(0.777), BlankLineSegmenter(), config=LoopConfig())
    [tr] = loop.run([Problem("a", "What is 2+2?", "4")])
    assert [s.score for s in tr.steps] == pytest.approx([0.8] * 3) and judge_requests(target) == []


def test_chat_messages_of_the_draft_self_check_are_the_target_judges():
    # the same prompt whichever model is asked
    draft, target = self_verify_models()
    r = JudgeRequest(Problem("a", "q"), (ChatMessage("user", "q"),), (), Completion("Add.\n\n", (1,),
                                                                                    FinishReason.STOP), 0)
    mine = TargetJudge(target, draft=draft, judge_with="draft")
    assert mine.request(r) == TargetJudge(target).request(r)


# -- the records: which stage decided each step, in traces.jsonl and summary.json -----------------
# The draft's three steps score 0.95 (stage 0 sure: kept), 0.5 (inside [0.3, 0.7): stage 1 gives
# 0.9, kept) and 0.1 (stage 0 sure: rejected at 0.7, the target writes the last step).
RECORD_FIRST = {"Add 2 and 2.\n\n": 0.95, "That is 5.\n\n": 0.5,
                "So 2 + 2 = 5 and the answer is \\boxed{5}.": 0.1}
RECORD_SECOND = {"That is 5.\n\n": 0.9}
RECORD_INFOS = [{"decided_by": 0, "stage_scores": [0.95]},
                {"decided_by": 1, "stage_scores": [0.5, 0.9]},
                {"decided_by": 0, "stage_scores": [0.1]}]


def record_run(out, schedule="lockstep", cache=None):
    import json

    from reasoning.cached import CachedJudge
    from reasoning.pipeline import Pipeline

    first, second = Table(RECORD_FIRST), Table(RECORD_SECOND)
    judge = CascadeJudge([CascadeStage(first, 0.3, 0.7), CascadeStage(second)])
    if cache is not None:
        judge = CachedJudge(judge, cache, "cascade")
    pipe = Pipeline(ScriptedGenerator("draft", DRAFT), ScriptedGenerator("target", TARGET), judge,
                    ThresholdPolicy(0.7), BlankLineSegmenter(), loop=LoopConfig(schedule=schedule),
                    grader=None)
    result = pipe.run([Problem("a", "What is 2+2?", "4")], out_dir=out)
    [row] = [json.loads(x) for x in (out / "traces.jsonl").read_text().splitlines()]
    summary = json.loads((out / "summary.json").read_text())
    return result, row, summary, (first.calls, second.calls)


@pytest.mark.parametrize("schedule", ["lockstep", "async"])
def test_each_step_record_says_which_stage_decided_it(tmp_path, schedule):
    result, row, summary, calls = record_run(tmp_path / "run", schedule)
    assert [s["judge_info"] for s in row["steps"]] == RECORD_INFOS
    assert [(s["score"], s["kept"]) for s in row["steps"]] == [(0.95, "draft"), (0.9, "draft"),
                                                               (0.1, "target")]
    assert row["text"].endswith("The answer is \\boxed{4}.")
    assert summary["judge_decided_by"] == {"0": 2, "1": 1}
    assert [s.judge_info for s in result.traces[0].steps] == RECORD_INFOS  # the record, read back
    assert calls == ([[t] for t in RECORD_FIRST], [["That is 5.\n\n"]])  # one step per round


def test_the_step_cache_gives_each_verdict_back_with_its_score(tmp_path):
    store = StepCache(tmp_path / "c.sqlite")
    try:
        _, row, _, calls = record_run(tmp_path / "one", cache=store)
        _, again, summary, calls_again = record_run(tmp_path / "two", cache=store)
    finally:
        store.close()
    assert calls_again == ([], [])  # every score a hit: no stage asked
    assert [s["judge_info"] for s in row["steps"]] == RECORD_INFOS
    assert [s["judge_info"] for s in again["steps"]] == RECORD_INFOS
    assert summary["judge_decided_by"] == {"0": 2, "1": 1}


def test_a_judge_without_infos_records_none_and_old_traces_load():
    from reasoning.metrics import summarize
    from reasoning.types import Trace

    loop = StepLoop(ScriptedGenerator("draft", DRAFT), ScriptedGenerator("target", TARGET),
                    ConstantJudge(0.9), ThresholdPolicy(0.7), BlankLineSegmenter(), config=LoopConfig())
    [tr] = loop.run([Problem("a", "What is 2+2?", "4")])
    assert [s.judge_info for s in tr.steps] == [None, None, None]
    assert summarize([tr])["judge_decided_by"] == {}
    d = tr.to_dict()
    for s in d["steps"]:
        del s["judge_info"]  # a trace written before the field existed
    assert Trace.from_dict(d) == tr
