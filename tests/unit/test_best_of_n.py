"""Several drafts per step (judge=best-of-n, rewards.best_of_n.BestOfNJudge) on scripted models
whose outcomes are known by hand: N candidates asked in one draft call and scored in one judge
call, the best kept when it clears the threshold, the target writing otherwise, every candidate
in the record, the cost of the candidates thrown away, both schedules, and the judges it wraps."""

from __future__ import annotations

import functools
import math

import pytest

from reasoning.backends.scripted import ScriptedGenerator
from reasoning.cache import StepCache
from reasoning.cached import CachedGenerator
from reasoning.judges import ConfidenceJudge, ConstantJudge
from reasoning.loop import LoopConfig, StepLoop
from reasoning.metrics import cost_breakdown, summarize
from reasoning.policies import AlwaysDraft, GlimpsePolicy, ThresholdPolicy
from reasoning.protocols import option
from reasoning.segmenter import BlankLineSegmenter
from reasoning.types import Decision, Problem, Route, Rule, Trace
from rewards.best_of_n import BestOfNJudge
from rewards.cascade import CascadeJudge, CascadeStage
from rewards.target_judge import TargetJudge

# The draft's greedy script (what a greedy request writes) and, for sampled requests, the
# candidates of each step by index (request id "p/<step>/d0c<i>").
SCRIPT = "G one.\n\nG two.\n\nThe answer is \\boxed{2}."
TARGET = "T one.\n\nT two.\n\nThe answer is \\boxed{2}."
CANDIDATES = [["A0.\n\n", "B0 b.\n\n", "C0.\n\n"],
              ["A1.\n\n", "B1.\n\n", "C1.\n\n"],
              ["So \\boxed{2}.", "The answer is \\boxed{2}.", "The answer is \\boxed{3}."]]
# Step 0: the best are candidates 1 and 2 (0.9): the first of them, kept (>= 0.7).
# Step 1: the best is candidate 2 (0.6 < 0.7): rejected, the target writes "T two.".
# Step 2: the best is candidate 1 (0.95): kept, the final answer.
SCORES = {"A0.\n\n": 0.2, "B0 b.\n\n": 0.9, "C0.\n\n": 0.9,
          "A1.\n\n": 0.1, "B1.\n\n": 0.3, "C1.\n\n": 0.6,
          "So \\boxed{2}.": 0.8, "The answer is \\boxed{2}.": 0.95, "The answer is \\boxed{3}.": 0.1}


def candidate(request):
    _, step, tail = request.request_id.split("/")
    return CANDIDATES[int(step)][int(tail.rsplit("c", 1)[1])]


class Table:
    """A judge that scores a step by its text and records each call's step texts."""

    def __init__(self, table):
        self.table = table
        self.calls: list[list[str]] = []

    def score(self, requests):
        self.calls.append([r.step.text for r in requests])
        return [self.table[r.step.text] for r in requests]


def models(**draft_kw):
    draft = ScriptedGenerator("draft", {"p": SCRIPT}, sample_fn=candidate, **draft_kw)
    target = ScriptedGenerator("target", {"p": TARGET}, **draft_kw)
    return draft, target


def run(judge, policy=None, schedule="lockstep", draft=None, target=None, **loop_kw):
    if draft is None:
        draft, target = models()
    loop = StepLoop(draft, target, judge, policy or ThresholdPolicy(0.7), BlankLineSegmenter(),
                    config=LoopConfig(schedule=schedule, seed=0, **loop_kw))
    [tr] = loop.run([Problem("p", "What is 1 + 1?", "2")])
    return tr, draft, target


def test_n_candidates_in_one_draft_call_scored_in_one_judge_call():
    table = Table(SCORES)
    tr, draft, target = run(BestOfNJudge(table, candidates=3, temperature=0.7))
    assert draft.calls == 3 and draft.batch_sizes == [3, 3, 3]  # one call of 3 requests per step
    assert [r.request_id for r in draft.requests[:3]] == ["p/0/d0c0", "p/0/d0c1", "p/0/d0c2"]
    assert all(r.params.temperature == 0.7 for r in draft.requests)
    seeds = [r.params.seed for r in draft.requests]
    assert None not in seeds and len(set(seeds)) == 9  # each candidate its own seed
    assert table.calls == CANDIDATES  # one judge call per step, holding its 3 candidates
    assert target.batch_sizes == [1]  # the target wrote step 1 only
    assert target.requests[0].params.temperature == 0.0  # the target stays greedy


def test_the_best_is_kept_when_it_clears_the_threshold_else_the_target_writes():
    tr, _, _ = run(BestOfNJudge(Table(SCORES), candidates=3, temperature=0.7))
    assert [s.kept for s in tr.steps] == [Route.DRAFT, Route.TARGET, Route.DRAFT]
    assert [s.decision for s in tr.steps] == [Decision.ACCEPT, Decision.REJECT, Decision.ACCEPT]
    assert [s.best_candidate for s in tr.steps] == [1, 2, 1]  # of two at 0.9, the first
    assert [s.score for s in tr.steps] == [0.9, 0.6, 0.95]
    assert [s.draft_text for s in tr.steps] == ["B0 b.\n\n", "C1.\n\n", "The answer is \\boxed{2}."]
    assert tr.text == "B0 b.\n\nT two.\n\nThe answer is \\boxed{2}."
    assert tr.stop_reason.value == "answer"


def test_the_record_keeps_every_candidate_with_its_score_and_tokens():
    tr, _, _ = run(BestOfNJudge(Table(SCORES), candidates=3, temperature=0.7))
    got = [[(c["text"], c["score"], c["tokens"]) for c in s.candidates] for s in tr.steps]
    # tokens: runs of space or of non-space characters ("B0 b.\n\n": B0, " ", b., \n\n)
    assert got == [[("A0.\n\n", 0.2, 2), ("B0 b.\n\n", 0.9, 4), ("C0.\n\n", 0.9, 2)],
                   [("A1.\n\n", 0.1, 2), ("B1.\n\n", 0.3, 2), ("C1.\n\n", 0.6, 2)],
                   [("So \\boxed{2}.", 0.8, 3), ("The answer is \\boxed{2}.", 0.95, 7),
                    ("The answer is \\boxed{3}.", 0.1, 7)]]
    assert [c["finish_reason"] for c in tr.steps[2].candidates] == ["eos"] * 3
    # the draft's tokens of a step are all its candidates'; the kept text's, the kept one's
    assert [s.draft_tokens for s in tr.steps] == [8, 6, 17]
    assert [s.kept_tokens for s in tr.steps] == [4, 4, 7]  # "T two.\n\n": T, " ", two., \n\n
    assert summarize([tr])["kept_tokens"] == 15 and summarize([tr])["tokens"]["draft"] == 31
    # through JSON and back, as traces.jsonl holds it
    assert Trace.from_dict(tr.to_dict()) == tr


def test_thrown_away_candidates_decode_counts_as_wasted_draft_seconds():
    # modelled cost: 0.5 s per prompt id read, 1 s per id generated; a candidate's prefill (its
    # read of the steps before it) is not wasted, its decode is when it is not kept
    draft, target = models(prefill_cost=0.5, decode_cost=1.0)
    tr, _, _ = run(BestOfNJudge(Table(SCORES), candidates=3, temperature=0.7), draft=draft, target=target)
    cost = cost_breakdown(tr.steps)
    # step 0: candidates 0 and 2 (2 + 2 ids); step 1: all three (6, rejected); step 2: 0 and 2 (3 + 7)
    assert cost["wasted_draft_tokens"] == 20
    assert cost["wasted_draft_seconds"] == pytest.approx(20.0)
    assert cost["draft"]["decode_tokens"] == 31 and cost["draft"]["decode_seconds"] == pytest.approx(31.0)
    assert cost["kept_draft_seconds"] == pytest.approx(cost["draft"]["seconds"] - 20.0)
    assert cost["engine_seconds"] == pytest.approx(sum(s.draft_seconds + s.target_seconds + s.judge_seconds
                                                       for s in tr.steps))
    # a step's draft seconds are its candidates' seconds, the prefill part where measured
    for s in tr.steps:
        assert s.draft_seconds == pytest.approx(sum(c["seconds"] for c in s.candidates))
        assert s.draft_prefill_seconds == pytest.approx(sum(c["prefill_seconds"] for c in s.candidates))


def test_judge_seconds_charge_each_step_every_candidate_judged():
    class Timed(Table):
        def score_timed(self, requests):
            return self.score(requests), 0.25  # seconds per step scored

    tr, _, _ = run(BestOfNJudge(Timed(SCORES), candidates=3, temperature=0.7))
    assert [s.judge_seconds for s in tr.steps] == [0.75, 0.75, 0.75]


def _comparable(trace):
    d = trace.to_dict()
    for k in ("latency_seconds", "seconds"):
        d.pop(k)
    for s in d["steps"]:
        for k in ("draft_seconds", "judge_seconds", "target_seconds"):
            s.pop(k)
        for c in s["candidates"] or ():
            c.pop("seconds")
    return d


def test_the_async_schedule_gives_the_lockstep_record_and_calls():
    lock, ld, _ = run(BestOfNJudge(Table(SCORES), candidates=3, temperature=0.7))
    table = Table(SCORES)
    asy, ad, _ = run(BestOfNJudge(table, candidates=3, temperature=0.7), schedule="async")
    assert _comparable(asy) == _comparable(lock)
    assert ad.batch_sizes == ld.batch_sizes == [3, 3, 3] and table.calls == CANDIDATES


def test_several_problems_put_every_candidate_of_a_round_in_one_call():
    def two(problem_id, prefix):  # greedy script for both problems
        return SCRIPT
    draft = ScriptedGenerator("draft", two, sample_fn=candidate)
    target = ScriptedGenerator("target", {"p": TARGET, "q": TARGET})
    table = Table(SCORES)
    loop = StepLoop(draft, target, BestOfNJudge(table, candidates=3, temperature=0.7), ThresholdPolicy(0.7),
                    BlankLineSegmenter(), config=LoopConfig(seed=0))
    traces = loop.run([Problem("p", "1 + 1?", "2"), Problem("q", "1 + 1?", "2")])
    assert draft.batch_sizes == [6, 6, 6] and [len(c) for c in table.calls] == [6, 6, 6]
    assert all(t.text == "B0 b.\n\nT two.\n\nThe answer is \\boxed{2}." for t in traces)
    # the two problems' candidates draw different seeds
    seeds = [r.params.seed for r in draft.requests[:6]]
    assert len(set(seeds)) == 6


def two_problems(q_step1, fail=None):
    """Problems p (CANDIDATES) and q (its step 1 candidates ``q_step1``); ``fail``: a request id
    the draft raises on."""
    def pick(request):
        if request.request_id == fail:
            raise RuntimeError("engine failed")
        pid, step, tail = request.request_id.split("/")
        cands = CANDIDATES if pid == "p" else [CANDIDATES[0], q_step1, CANDIDATES[2]]
        return cands[int(step)][int(tail.rsplit("c", 1)[1])]
    draft = ScriptedGenerator("draft", {"p": SCRIPT, "q": SCRIPT}, sample_fn=pick)
    target = ScriptedGenerator("target", {"p": TARGET, "q": TARGET})
    return draft, target, [Problem("p", "1 + 1?", "2"), Problem("q", "1 + 1?", "2")]


def test_a_draft_kept_by_a_rule_goes_in_the_candidates_call_as_one_greedy_draft():
    # p's step 1 is rejected and the target writes it ("T two.\n\n", 4 tokens): p's budget of 4
    # target tokens is spent, so its step 2 is one greedy draft kept unjudged; q's step 1 is kept
    # (Q1 at 0.8), so its step 2 is drafted as 3 candidates: one call of 4 requests
    draft, target, problems = two_problems(["A1.\n\n", "B1.\n\n", "Q1.\n\n"])
    table = Table({**SCORES, "Q1.\n\n": 0.8})
    loop = StepLoop(draft, target, BestOfNJudge(table, candidates=3, temperature=0.7),
                    ThresholdPolicy(0.7, target_token_budget=4), BlankLineSegmenter(),
                    config=LoopConfig(seed=0))
    tr = {t.problem_id: t for t in loop.run(problems)}
    assert draft.batch_sizes == [6, 6, 4]
    last = [r for r in draft.requests if r.request_id.startswith("p/2/")]
    assert [(r.request_id, r.params.temperature) for r in last] == [("p/2/d0", 0.0)]
    p2 = tr["p"].steps[2]
    assert p2.rule is Rule.TARGET_BUDGET and p2.candidates is None and p2.score is None
    assert p2.text == "The answer is \\boxed{2}." and p2.kept is Route.DRAFT  # the greedy script's
    assert tr["q"].steps[2].best_candidate == 1
    assert tr["q"].text == "B0 b.\n\nQ1.\n\nThe answer is \\boxed{2}."
    assert table.calls[2] == CANDIDATES[2]  # only q's candidates judged in round 2


def test_a_failing_candidate_request_fails_its_problem_only():
    draft, target, problems = two_problems(CANDIDATES[1], fail="q/1/d0c1")
    loop = StepLoop(draft, target, BestOfNJudge(Table(SCORES), candidates=3, temperature=0.7),
                    ThresholdPolicy(0.7), BlankLineSegmenter(), config=LoopConfig(seed=0))
    tr = {t.problem_id: t for t in loop.run(problems)}
    assert tr["q"].stop_reason.value == "error" and "engine failed" in tr["q"].error
    assert len(tr["q"].steps) == 1  # its step 0, before the failing round
    assert tr["p"].error is None and tr["p"].text == "B0 b.\n\nT two.\n\nThe answer is \\boxed{2}."


def test_a_policy_without_a_judge_gets_one_greedy_draft():
    draft, target = models()
    tr, _, _ = run(BestOfNJudge(Table(SCORES), candidates=3, temperature=0.7), AlwaysDraft(),
                   draft=draft, target=target)
    assert draft.batch_sizes == [1, 1, 1] and all(r.params.temperature == 0.0 for r in draft.requests)
    assert tr.text == SCRIPT and all(s.candidates is None for s in tr.steps)


def test_one_candidate_is_a_plain_draft():
    tr, draft, _ = run(BestOfNJudge(Table({**SCORES, "G one.\n\n": 0.9, "G two.\n\n": 0.9,
                                           "The answer is \\boxed{2}.": 0.9}), candidates=1))
    assert draft.batch_sizes == [1, 1, 1] and [r.request_id for r in draft.requests] == ["p/0/d0", "p/1/d0",
                                                                                          "p/2/d0"]
    assert tr.text == SCRIPT and all(s.candidates is None and s.best_candidate is None for s in tr.steps)


def test_final_candidates_go_unjudged_under_target_final_step():
    # step 2: every candidate gives the answer: none judged, the target writes the step
    table = Table(SCORES)
    tr, _, target = run(BestOfNJudge(table, candidates=3, temperature=0.7),
                        ThresholdPolicy(0.7, target_final_step=True))
    assert table.calls == CANDIDATES[:2]
    last = tr.steps[2]
    assert last.rule is Rule.TARGET_FINAL_STEP and last.kept is Route.TARGET
    assert [c["score"] for c in last.candidates] == [None, None, None] and last.score is None
    assert last.best_candidate is None and last.draft_text == CANDIDATES[2][0]
    assert tr.text.endswith("T two.\n\nThe answer is \\boxed{2}.")

    # a step with a final candidate among others: that one unjudged, the best of the rest kept
    mixed = [["A0.\n\n", "So \\boxed{2}.", "B0 b.\n\n"]]

    def pick(request):
        _, step, tail = request.request_id.split("/")
        return (mixed + CANDIDATES[1:])[int(step)][int(tail.rsplit("c", 1)[1])]

    draft = ScriptedGenerator("draft", {"p": SCRIPT}, sample_fn=pick)
    table = Table(SCORES)
    tr, _, _ = run(BestOfNJudge(table, candidates=3, temperature=0.7),
                   ThresholdPolicy(0.7, target_final_step=True), draft=draft,
                   target=ScriptedGenerator("target", {"p": TARGET}))
    assert table.calls[0] == ["A0.\n\n", "B0 b.\n\n"]
    first = tr.steps[0]
    assert [c["score"] for c in first.candidates] == [0.2, None, 0.9] and first.best_candidate == 2
    assert first.kept is Route.DRAFT and first.rule is None


# -- the judges it wraps: they all score judge requests, one per candidate -------------------------
def test_the_target_as_judge_rates_each_candidate_and_picks_the_best():
    # the target rates a step 0-9 by its text (SpecReason); rated 8 is kept at 0.777
    rates = {"A0.\n\n": "2", "B0 b.\n\n": "5", "C0.\n\n": "8", "A1.\n\n": "1", "B1.\n\n": "1", "C1.\n\n": "1",
             "So \\boxed{2}.": "9", "The answer is \\boxed{2}.": "3", "The answer is \\boxed{3}.": "0"}

    def top(request):
        answer = request.messages[-2].content  # the answer with the rated step, as TargetJudge asks
        step = next(t for t in rates if answer.endswith(t))
        return {rates[step]: 0.0, "x": math.log(0.01)}

    draft = ScriptedGenerator("draft", {"p": SCRIPT}, sample_fn=candidate)
    target = ScriptedGenerator("target", {"p": TARGET}, top_logprobs_fn=top)
    judge = BestOfNJudge(functools.partial(TargetJudge), candidates=3, temperature=0.7, generator=target,
                         draft=draft)
    assert isinstance(judge.inner, TargetJudge) and judge.inner.model is target
    tr, _, _ = run(judge, ThresholdPolicy(0.777), draft=draft, target=target)
    assert [s.best_candidate for s in tr.steps] == [2, 0, 0]
    assert [s.kept for s in tr.steps] == [Route.DRAFT, Route.TARGET, Route.DRAFT]
    assert tr.text == "C0.\n\nT two.\n\nSo \\boxed{2}."
    judged = [r for r in target.requests if r.request_id.endswith("/judge")]
    assert [b for b in target.batch_sizes] == [3, 3, 1, 3]  # 3 ratings a step, one target step
    assert len(judged) == 9


def test_the_confidence_judge_gets_each_candidates_logprobs():
    draft, target = models(token_prob=0.8)
    judge = BestOfNJudge(ConfidenceJudge(), candidates=3, temperature=0.7)
    assert option(judge, "needs_logprobs") == ConfidenceJudge().needs_logprobs
    tr, _, _ = run(judge, ThresholdPolicy(0.7), draft=draft, target=target)
    assert all(r.params.logprobs is not None for r in draft.requests)
    # every candidate at 0.8: equal scores, the first kept each time
    assert all(s.best_candidate == 0 and s.score == pytest.approx(0.8) for s in tr.steps)
    assert tr.text == "A0.\n\nA1.\n\nSo \\boxed{2}."


def test_a_cascade_judges_the_candidates_and_each_records_its_verdict():
    first = Table(SCORES)
    second = Table({k: 1.0 for k in SCORES})
    judge = BestOfNJudge(CascadeJudge([CascadeStage(first, 0.5, 0.7), CascadeStage(second)]), candidates=3,
                         temperature=0.7)
    tr, _, _ = run(judge)
    # step 1: C1 (0.6) is inside [0.5, 0.7): the second judge gives it 1.0, the best, kept
    s = tr.steps[1]
    assert [c["judge_info"] for c in s.candidates] == [{"decided_by": 0, "stage_scores": [0.1]},
                                                       {"decided_by": 0, "stage_scores": [0.3]},
                                                       {"decided_by": 1, "stage_scores": [0.6, 1.0]}]
    assert s.best_candidate == 2 and s.judge_info == {"decided_by": 1, "stage_scores": [0.6, 1.0]}
    assert s.kept is Route.DRAFT and second.calls == [["C1.\n\n"]]


def test_seeded_candidates_come_from_the_step_cache_on_a_rerun(tmp_path):
    store = StepCache(tmp_path / "c.sqlite")
    try:
        first, target = models()
        tr, _, _ = run(BestOfNJudge(Table(SCORES), candidates=3, temperature=0.7),
                       draft=CachedGenerator(first, store, "d"), target=CachedGenerator(target, store, "t"))
        again_draft, again_target = models()
        cached = CachedGenerator(again_draft, store, "d")
        tr2, _, _ = run(BestOfNJudge(Table(SCORES), candidates=3, temperature=0.7), draft=cached,
                        target=CachedGenerator(again_target, store, "t"))
    finally:
        store.close()
    assert again_draft.calls == 0 and cached.stats() == {"hits": 9, "misses": 0, "uncacheable": 0}
    assert [[c["text"] for c in s.candidates] for s in tr2.steps] == CANDIDATES
    assert tr2.text == tr.text


# -- what is refused, in one line --------------------------------------------------------------------
@pytest.mark.parametrize("kw,needle", [
    ({"candidates": 0}, "judge.candidates must be an int >= 1"),
    ({"candidates": 2.5}, "judge.candidates must be an int >= 1"),
    ({"candidates": 3, "temperature": 0.0}, "judge.temperature must be > 0 with judge.candidates=3"),
    ({"temperature": -1.0}, "judge.temperature must be a number >= 0"),
    ({"seed": "x"}, "judge.seed must be an int or null"),
])
def test_bad_settings_are_refused(kw, needle):
    with pytest.raises(ValueError) as e:
        BestOfNJudge(ConstantJudge(0.5), **kw)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_greedy_candidates_and_piecewise_policies_are_refused_by_the_engine():
    draft, target = models()
    # the loop's temperature, 0, for candidates that take it: all the same draft
    with pytest.raises(ValueError, match="greedy candidates are all the same draft"):
        StepLoop(draft, target, BestOfNJudge(ConstantJudge(0.5), candidates=2, temperature=None),
                 ThresholdPolicy(0.5), BlankLineSegmenter(), config=LoopConfig())
    # ... which a sampling loop gives
    loop = StepLoop(draft, target, BestOfNJudge(ConstantJudge(0.5), candidates=2, temperature=None),
                    ThresholdPolicy(0.5), BlankLineSegmenter(), config=LoopConfig(temperature=0.5, seed=1))
    loop.run([Problem("p", "1 + 1?", "2")])
    assert draft.batch_sizes[0] == 2 and all(r.params.temperature == 0.5 for r in draft.requests)
    with pytest.raises(ValueError, match="cannot combine with"):
        StepLoop(draft, target, BestOfNJudge(ConstantJudge(0.5), candidates=2), GlimpsePolicy(0.5),
                 BlankLineSegmenter(), config=LoopConfig())


# -- the config: judge=best-of-n, any judge of the group inside ---------------------------------------
def compose(overrides):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from recipes._cli import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name="evaluate", overrides=overrides)


def built(overrides, draft, target):
    from recipes._cli import bind_judge, instantiate

    cfg = compose(overrides)
    partial = instantiate(cfg.judge, "judge")
    assert isinstance(partial, functools.partial)  # _partial_: true, bound by the program
    return bind_judge(partial, target, draft), cfg


def test_the_best_of_n_config_wraps_the_confidence_judge_and_takes_any_other():
    draft, target = models()
    judge, cfg = built(["recipe=best-of-n"], draft, target)
    assert isinstance(judge, BestOfNJudge) and isinstance(judge.inner, ConfidenceJudge)
    assert (judge.draft_candidates, judge.draft_temperature, judge.draft_seed) == (4, 0.7, None)
    assert cfg.policy.threshold == 0.85 and cfg.loop.seed == 0
    judge, _ = built(["recipe=best-of-n", "judge@judge.judge=specreason", "judge.candidates=2"],
                     draft, target)
    assert isinstance(judge.inner, TargetJudge) and judge.inner.model is target
    assert judge.draft_candidates == 2
    judge, _ = built(["recipe=smoke", "judge=best-of-n", "judge@judge.judge=self-verify"], draft, target)
    assert isinstance(judge.inner, CascadeJudge) and judge.inner.stages[0].judge.model is draft
