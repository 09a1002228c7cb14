"""The per-problem rules of a policy (reasoning.policies.ProblemRules) and the thinking-aware
segmenter, on scripted models, under both schedules.

Token counts are worked out by hand from the scripted tokenizer: tokens are runs of white space
or of other characters ("Target 0.\\n\\n" is "Target", " ", "0.", "\\n\\n": 4 tokens).
"""

from __future__ import annotations

import json
import warnings

import pytest

from reasoning.backends.scripted import ScriptedGenerator
from reasoning.judges import ConstantJudge, ScriptedJudge
from reasoning.loop import LoopConfig, StepLoop
from reasoning.metrics import summarize
from reasoning.policies import AbortPolicy, AlwaysDraft, GlimpsePolicy, HysteresisPolicy, ThresholdPolicy
from reasoning.prompts import ChatPrompt
from reasoning.segmenter import BlankLineSegmenter
from reasoning.types import Decision, FinishReason, Phase, Problem, Route, Rule, StopReason, Trace

PROMPT = ChatPrompt(system=None, user_template="{question}")
SCHEDULES = ["lockstep", "async"]
DRAFT = {"p": "".join(f"Draft {i}.\n\n" for i in range(8)) + "The answer is \\boxed{5}."}
TARGET = {"p": "".join(f"Target {i}.\n\n" for i in range(8)) + "The answer is \\boxed{4}."}
P = [Problem("p", "Q", "4")]


class _Judge:
    """Scores by step index from a list; keeps the step index of every request."""

    def __init__(self, scores):
        self.scores = scores
        self.seen = []

    def score(self, requests):
        self.seen.extend(r.step_index for r in requests)
        return [self.scores[r.step_index] for r in requests]


def run(policy, judge=None, schedule="lockstep", draft=None, target=None, seg=None, problems=P, **cfg):
    draft = draft or ScriptedGenerator("draft", DRAFT)
    target = target or ScriptedGenerator("target", TARGET)
    cfg = {"max_steps": 16, "token_budget": 512, **cfg}
    loop = StepLoop(draft, target, judge or ConstantJudge(1.0), policy, seg or BlankLineSegmenter(), PROMPT,
                    LoopConfig(schedule=schedule, **cfg))
    traces = loop.run(problems)
    return (traces[0] if len(problems) == 1 else traces), draft, target


def asked(gen, step):
    """Whether ``gen`` was asked to write step ``step`` of problem p."""
    return any(r.request_id.startswith(f"p/{step}/") for r in gen.requests)


# -- target_first_steps and its old name -------------------------------------------------------
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_the_target_writes_the_first_steps(schedule):
    tr, draft, _ = run(ThresholdPolicy(0.5, target_first_steps=2), schedule=schedule)
    assert [s.kept.value for s in tr.steps] == ["target"] * 2 + ["draft"] * 7
    assert [s.rule for s in tr.steps[:3]] == [Rule.TARGET_FIRST_STEPS, Rule.TARGET_FIRST_STEPS, None]
    assert [(s.route, s.decision) for s in tr.steps[:2]] == [(Route.TARGET, Decision.SKIP)] * 2
    assert not asked(draft, 0) and not asked(draft, 1) and asked(draft, 2)
    assert tr.text.startswith("Target 0.\n\nTarget 1.\n\nDraft 2.\n\n")


def test_warmup_steps_still_works_and_warns_with_the_new_name():
    with pytest.warns(FutureWarning, match="target_first_steps"):
        policy = HysteresisPolicy(threshold=0.5, hold=0, warmup_steps=2)
    assert policy.target_first_steps == 2
    tr, draft, _ = run(policy)
    assert [s.rule for s in tr.steps[:3]] == [Rule.TARGET_FIRST_STEPS, Rule.TARGET_FIRST_STEPS, None]
    assert not asked(draft, 1)


def test_no_warning_without_warmup_steps_and_disagreeing_names_are_refused():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ThresholdPolicy(0.5, target_first_steps=3)
        AbortPolicy()
        GlimpsePolicy()
    with pytest.warns(FutureWarning), pytest.raises(ValueError, match="disagree"):
        ThresholdPolicy(0.5, warmup_steps=1, target_first_steps=2)


def test_warmup_steps_from_the_command_line():
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from recipes._cli import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        old = compose(config_name="evaluate", overrides=["recipe=smoke", "policy.warmup_steps=2"])
        new = compose(config_name="evaluate", overrides=["recipe=smoke", "policy.target_first_steps=2"])
    with pytest.warns(FutureWarning):
        assert instantiate(old.policy).target_first_steps == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert instantiate(new.policy).target_first_steps == 2


@pytest.mark.parametrize("kw,match", [({"fallback_rate": 0.0}, "fallback_rate"),
                                      ({"fallback_after": -1}, "fallback_after"),
                                      ({"fallback_window": 0}, "fallback_window"),
                                      ({"target_token_budget": 0}, "target_token_budget"),
                                      ({"target_first_steps": -1}, "target_first_steps")])
def test_rule_fields_are_checked(kw, match):
    with pytest.raises(ValueError, match=match):
        ThresholdPolicy(0.5, **kw)


def test_fallback_needs_a_policy_with_a_judge():
    with pytest.raises(ValueError, match="need a policy with a judge"):
        AlwaysDraft(fallback_after=2)
    assert AlwaysDraft().rules is None and ThresholdPolicy(0.5).rules is None


# -- the final step is the target's ----------------------------------------------------------
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_a_draft_that_turns_out_final_is_thrown_away_and_the_target_writes_it(schedule):
    judge = _Judge([1.0] * 9)
    tr, _, target = run(ThresholdPolicy(0.5, target_final_step=True), judge, schedule=schedule)
    last = tr.steps[-1]
    assert len(tr.steps) == 9 and tr.stop_reason is StopReason.ANSWER
    assert [s.kept.value for s in tr.steps] == ["draft"] * 8 + ["target"]
    assert (last.rule, last.decision, last.score) == (Rule.TARGET_FINAL_STEP, Decision.REJECT, None)
    assert last.draft_text == "The answer is \\boxed{5}." and last.text == "The answer is \\boxed{4}."
    assert judge.seen == list(range(8))  # the final draft was never judged
    assert target.calls == 1 and tr.text.endswith("Draft 7.\n\nThe answer is \\boxed{4}.")


def test_a_draft_that_ends_the_answer_is_final_too():
    draft = ScriptedGenerator("draft", {"p": "Draft 0.\n\nDraft 1.\n\nSo it is five."})
    target = ScriptedGenerator("target", {"p": "Target 0.\n\nTarget 1.\n\nSo it is four."})
    tr, _, _ = run(AlwaysDraft(target_final_step=True), draft=draft, target=target)
    assert tr.text == "Draft 0.\n\nDraft 1.\n\nSo it is four." and tr.stop_reason is StopReason.EOS
    assert tr.steps[-1].draft_text == "So it is five." and tr.steps[-1].rule is Rule.TARGET_FINAL_STEP
    assert [s.kept.value for s in tr.steps] == ["draft", "draft", "target"]


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_the_target_plans_and_the_draft_finishes_unjudged(schedule):
    # recipe=target-plans: always-draft with target_first_steps; a judge must never be called
    class Refuses:
        needs_logprobs = False

        def score(self, requests):
            raise AssertionError("always-draft called the judge")

    tr, draft, target = run(AlwaysDraft(target_first_steps=2), judge=Refuses(), schedule=schedule)
    assert [s.kept.value for s in tr.steps] == ["target"] * 2 + ["draft"] * 7
    assert [s.rule for s in tr.steps[:3]] == [Rule.TARGET_FIRST_STEPS, Rule.TARGET_FIRST_STEPS, None]
    # the target was asked for steps 0 and 1 only, the draft never for them
    assert asked(target, 0) and asked(target, 1) and not any(asked(target, i) for i in range(2, 9))
    assert not asked(draft, 0) and not asked(draft, 1) and all(asked(draft, i) for i in range(2, 9))
    # one hand-off: the draft's first request reads the target's two steps as its prefix
    first = next(r for r in draft.requests if r.request_id.startswith("p/2/"))
    assert first.prefix_text == "Target 0.\n\nTarget 1.\n\n"
    assert tr.text.startswith("Target 0.\n\nTarget 1.\n\nDraft 2.\n\n")


SOLUTIONS = {f"p{i}": "".join(f"Step {j} of p{i}.\n\n" for j in range(1 + i % 4))
             + f"The answer is \\boxed{{{i}}}." for i in range(6)}
TARGETS = {k: v.replace("Step", "Target step") for k, v in SOLUTIONS.items()}
SCORES = {"p0": [0.0] * 9, "p1": [0.9, 0.1, 0.9], "p3": [0.1, 0.9, 0.9, 0.9, 0.9]}


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("policy", [
    ThresholdPolicy(0.5, target_final_step=True),
    HysteresisPolicy(0.5, hold=1, target_final_step=True),
    GlimpsePolicy(0.5, glimpse_tokens=1, target_final_step=True),
    AbortPolicy(threshold=0.5, bound=0.5, chunk_tokens=2, min_tokens=1, target_final_step=True),
    AlwaysDraft(target_final_step=True),
], ids=["threshold", "hysteresis", "glimpse", "abort", "always-draft"])
def test_the_final_step_is_always_the_targets(policy, schedule):
    problems = [Problem(k, "Q", str(i)) for i, k in enumerate(SOLUTIONS)]
    traces, _, _ = run(policy, ScriptedJudge(SCORES, default=0.9), schedule, problems=problems,
                       draft=ScriptedGenerator("draft", SOLUTIONS),
                       target=ScriptedGenerator("target", TARGETS))
    seg = BlankLineSegmenter()
    for tr in traces:
        i = int(tr.problem_id[1:])
        assert tr.stop_reason is StopReason.ANSWER
        assert tr.steps[-1].kept is Route.TARGET and tr.text.endswith(f"\\boxed{{{i}}}.")
        assert tr.steps[-1].text == f"The answer is \\boxed{{{i}}}."
        # no kept draft step gives the answer or ends it; every draft that did went to the target
        assert not any(s.kept is Route.DRAFT and (seg.is_final(s.text) or s.finish_reason is FinishReason.EOS)
                       for s in tr.steps)
    # p2, p4 and p5 score 0.9 throughout: their final drafts were kept by the judge, so the rule
    # threw them away (the others' may have been rejected, or held, anyway)
    by_id = {tr.problem_id: tr for tr in traces}
    for pid in ("p2", "p4", "p5"):
        last = by_id[pid].steps[-1]
        assert (last.route, last.rule, last.draft_text) == (
            Route.DRAFT, Rule.TARGET_FINAL_STEP, f"The answer is \\boxed{{{pid[1]}}}.")


# -- the thinking segmenter -------------------------------------------------------------------
THINK = "<think>step one\n\nstep two\n\n</think>\n\nThe answer is 4."


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_thinking_segmenter_reproduces_the_models_text_when_the_draft_writes_everything(schedule):
    draft = ScriptedGenerator("draft", {"p": THINK})
    seg = BlankLineSegmenter(thinking=True, answer_max_tokens=100)
    tr, _, _ = run(AlwaysDraft(), draft=draft, seg=seg, schedule=schedule)
    assert tr.text == THINK
    assert [s.text for s in tr.steps] == [
        "<think>step one\n\n", "step two\n\n", "</think>", "\n\nThe answer is 4."]
    assert [s.phase for s in tr.steps] == [Phase.THINK] * 3 + [Phase.ANSWER]
    assert tr.stop_reason is StopReason.ANSWER
    assert Trace.from_dict(json.loads(json.dumps(tr.to_dict()))).steps == tr.steps
    # the thinking steps stop at a blank line or </think>; the answer has no stop string
    assert [(r.params.stop, r.params.max_tokens) for r in draft.requests] == [
        (("\n\n", "</think>"), 256)] * 3 + [((), 100)]


@pytest.mark.parametrize("text,steps,plain", [
    # "the answer is" inside the thinking does not end the problem (the default segmenter stops there)
    ("<think>So the answer is 3?\n\nNo: 2+2 is 4.\n\n</think>\n\nThe answer is 4.",
     ["<think>So the answer is 3?\n\n", "No: 2+2 is 4.\n\n", "</think>", "\n\nThe answer is 4."],
     "<think>So the answer is 3?\n\n"),
    # </think> right after a step's text closes that step, kept as written; the answer is one
    # segment, blank line and all (the default segmenter stops at its first blank line)
    ("<think>step one\n\nstep two</think>\nThe answer is 4.\n\nThat is all.",
     ["<think>step one\n\n", "step two</think>", "\nThe answer is 4.\n\nThat is all."],
     "<think>step one\n\nstep two</think>\nThe answer is 4.\n\n"),
])
def test_thinking_steps_end_at_think_end_and_the_answer_is_one_segment(text, steps, plain):
    tr, _, _ = run(AlwaysDraft(), draft=ScriptedGenerator("draft", {"p": text}),
                   seg=BlankLineSegmenter(thinking=True))
    assert [s.text for s in tr.steps] == steps and tr.text == text
    assert tr.stop_reason is StopReason.ANSWER
    default, _, _ = run(AlwaysDraft(), draft=ScriptedGenerator("draft", {"p": text}))
    assert default.text == plain and default.stop_reason is StopReason.ANSWER


def test_thinking_with_target_final_step_the_target_writes_everything_after_think_end():
    draft = ScriptedGenerator("draft", {"p": THINK})
    target = ScriptedGenerator("target", {"p": "<think>t one\n\nt two\n\n</think>\n\nThe answer is 5."})
    judge = _Judge([1.0] * 4)
    tr, _, target = run(ThresholdPolicy(0.5, target_final_step=True), judge, draft=draft, target=target,
                        seg=BlankLineSegmenter(thinking=True))
    assert tr.text == "<think>step one\n\nstep two\n\n</think>\n\nThe answer is 5."
    assert [(s.kept.value, s.rule) for s in tr.steps] == [("draft", None)] * 3 + [
        ("target", Rule.TARGET_FINAL_STEP)]
    assert tr.steps[-1].route is Route.TARGET and tr.steps[-1].draft_text is None
    # the draft was never asked for the answer phase, the judge never saw it
    assert not any("</think>" in r.prefix_text for r in draft.requests) and judge.seen == [0, 1, 2]
    assert [r.params.stop for r in target.requests] == [()]


def test_thinking_refuses_strip_think():
    with pytest.raises(ValueError, match="strip_think"):
        BlankLineSegmenter(thinking=True, strip_think=True)


# -- adaptive fallback ------------------------------------------------------------------------
FALLBACK_SCORES = [0.9, 0.1, 0.1, 0.9, 0.1, 0.1, 0.1, 0.9, 0.9]


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("k,at", [(2, 3), (3, 7), (4, None)])
def test_fallback_after_exactly_k_rejections_in_a_row(k, at, schedule):
    judge = _Judge(FALLBACK_SCORES)
    tr, draft, _ = run(ThresholdPolicy(0.5, fallback_after=k), judge, schedule=schedule)
    assert tr.fallback_at == at and len(tr.steps) == 9
    if at is None:
        assert tr.fallback_reason is None and not any(s.rule for s in tr.steps)
        assert judge.seen == list(range(9))
        return
    assert tr.fallback_reason == f"{k} rejections in a row"
    assert judge.seen == list(range(at))
    assert all(s.rule is None for s in tr.steps[:at])
    assert all((s.route, s.decision, s.kept, s.rule) ==
               (Route.TARGET, Decision.SKIP, Route.TARGET, Rule.FALLBACK) for s in tr.steps[at:])
    assert asked(draft, at - 1) and not any(asked(draft, i) for i in range(at, 9))
    assert summarize([tr])["rule_steps"] == {"fallback": 9 - at}
    assert summarize([tr])["fallback_problems"] == 1
    assert Trace.from_dict(json.loads(json.dumps(tr.to_dict()))) == tr  # what a trace file keeps


def test_fallback_on_the_acceptance_rate_over_a_window():
    # kept, rejected, rejected, kept: 2/4 is not under 0.5; then rejected: 1/4 of the last 4 is
    judge = _Judge(FALLBACK_SCORES)
    tr, _, _ = run(ThresholdPolicy(0.5, fallback_rate=0.5, fallback_window=4), judge)
    assert tr.fallback_at == 5 and judge.seen == [0, 1, 2, 3, 4]
    assert tr.fallback_reason == "acceptance 1/4 = 0.25 < 0.5 over the last 4 judged drafts"


def test_fallback_counts_drafts_a_policy_stopped_mid_step_and_not_the_steps_rules_settled():
    # every draft is stopped after its first 2 tokens (probability 0.5 < bound 0.9); the first
    # step is the target's by rule and does not count: drafts of steps 1 and 2 fail, then fallback
    draft = ScriptedGenerator("draft", DRAFT, token_prob=0.5)
    policy = AbortPolicy(bound=0.9, chunk_tokens=2, min_tokens=1, fallback_after=2, target_first_steps=1)
    tr, draft, _ = run(policy, ConstantJudge(1.0), draft=draft)
    assert [s.draft_stopped_at for s in tr.steps[:3]] == [None, 2, 2]
    assert tr.fallback_at == 3 and [s.rule for s in tr.steps[:4]] == [
        Rule.TARGET_FIRST_STEPS, None, None, Rule.FALLBACK]
    assert tr.text == TARGET["p"] and len(draft.requests) == 2


# -- target-token budget ----------------------------------------------------------------------
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_once_the_target_budget_is_spent_the_drafts_are_kept(schedule):
    # every draft rejected: the target writes 4 + 4 tokens, then only 2 of step 2 ("Target "),
    # its max_tokens capped at the budget left; from step 3 the drafts are kept, unjudged
    judge = _Judge([0.0] * 16)
    tr, _, target = run(ThresholdPolicy(0.5, target_token_budget=10), judge, schedule=schedule)
    assert [r.params.max_tokens for r in target.requests] == [10, 6, 2]
    assert [s.target_tokens for s in tr.steps] == [4, 4, 2] + [0] * (len(tr.steps) - 3)
    assert tr.steps[2].text == "Target " and tr.steps[2].finish_reason is FinishReason.LENGTH
    assert tr.target_budget_spent_at == 3 and judge.seen == [0, 1, 2]
    assert all((s.route, s.decision, s.kept, s.rule, s.score) ==
               (Route.DRAFT, Decision.ACCEPT, Route.DRAFT, Rule.TARGET_BUDGET, None) for s in tr.steps[3:])
    assert tr.steps[3].text == "Draft 2.\n\n" and tr.stop_reason is StopReason.ANSWER
    assert summarize([tr])["target_budget_spent_problems"] == 1


@pytest.mark.parametrize("budget", range(1, 42, 3))
def test_the_target_budget_is_never_exceeded(budget):
    # the target alone would write 8 * 4 + 7 = 39 tokens
    for policy in (ThresholdPolicy(0.5, target_token_budget=budget, target_final_step=True),
                   HysteresisPolicy(0.5, hold=2, target_token_budget=budget, target_first_steps=3)):
        tr, _, _ = run(policy, _Judge([0.9, 0.1] * 8))
        assert tr.target_tokens <= budget
        spent = tr.target_budget_spent_at
        assert (spent is not None) == (tr.target_tokens == budget)
        if spent is not None:
            assert all(s.rule is Rule.TARGET_BUDGET and s.kept is Route.DRAFT for s in tr.steps[spent:])


def test_the_budget_beats_the_first_steps_and_a_glimpse_policy_drafts_kept_steps_whole():
    # target_first_steps=5, but 6 target tokens: step 0 (4 tokens), step 1 cut at 2, then drafts
    policy = GlimpsePolicy(0.5, glimpse_tokens=1, target_first_steps=5, target_token_budget=6)
    tr, _, _ = run(policy, ConstantJudge(0.0))
    assert [s.target_tokens for s in tr.steps[:3]] == [4, 2, 0] and tr.target_tokens == 6
    assert [s.rule for s in tr.steps[:3]] == [
        Rule.TARGET_FIRST_STEPS, Rule.TARGET_FIRST_STEPS, Rule.TARGET_BUDGET]
    kept = tr.steps[2:]
    assert all(s.draft_stopped_at is None and s.kept is Route.DRAFT for s in kept)
    assert [s.draft_tokens for s in kept[:-1]] == [4] * (len(kept) - 1)  # whole steps, not glimpses


def test_the_budget_counts_every_piece_of_a_merged_target_step():
    # "Hi.\n\n" (2 tokens) is too short for min_step_chars=8, so the target's step goes on in a
    # second call, which may take only the 2 tokens the budget of 4 has left
    target = ScriptedGenerator("target", {"p": "Hi.\n\nTarget 1.\n\nThe answer is \\boxed{4}."})
    tr, _, target = run(ThresholdPolicy(0.5, target_token_budget=4), ConstantJudge(0.0), target=target,
                        seg=BlankLineSegmenter(min_step_chars=8))
    assert [r.params.max_tokens for r in target.requests] == [4, 2]
    assert tr.steps[0].text == "Hi.\n\nTarget " and tr.target_tokens == 4
    assert tr.target_budget_spent_at == 1


# -- decide once: the first judged draft routes the whole problem -----------------------------
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_decide_once_kept_the_draft_writes_the_whole_problem_unjudged(schedule):
    judge = _Judge([0.9] + [0.0] * 15)  # every later draft would be rejected, were it judged
    tr, draft, target = run(ThresholdPolicy(0.5, decide_once=True), judge, schedule=schedule)
    assert judge.seen == [0] and target.requests == []
    assert tr.text == DRAFT["p"] and len(tr.steps) == 9
    assert (tr.steps[0].rule, tr.steps[0].decision, tr.steps[0].score) == (None, Decision.ACCEPT, 0.9)
    assert all((s.route, s.decision, s.kept, s.rule, s.score) ==
               (Route.DRAFT, Decision.ACCEPT, Route.DRAFT, Rule.DECIDED_ONCE, None) for s in tr.steps[1:])
    assert tr.fallback_at is None
    assert summarize([tr])["rule_steps"] == {"decided_once": 8}
    assert Trace.from_dict(json.loads(json.dumps(tr.to_dict()))) == tr


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_decide_once_rejected_the_target_writes_it_all_from_the_chat_alone(schedule):
    judge = _Judge([0.1] + [1.0] * 15)  # every later draft would be kept, were it judged
    tr, draft, target = run(ThresholdPolicy(0.5, decide_once=True), judge, schedule=schedule)
    assert judge.seen == [0] and len(draft.requests) == 1  # the one draft thrown away
    assert tr.text == TARGET["p"] and len(tr.steps) == 9
    assert target.requests[0].prefix == ()  # no draft text to read: no catch-up
    assert (tr.steps[0].decision, tr.steps[0].kept, tr.steps[0].rule) == (Decision.REJECT, Route.TARGET, None)
    assert all((s.route, s.kept, s.rule) == (Route.TARGET, Route.TARGET, Rule.FALLBACK) for s in tr.steps[1:])
    assert (tr.fallback_at, tr.fallback_reason) == (1, "decide_once: the first judged draft was rejected")
    assert summarize([tr])["fallback_problems"] == 1


def test_decide_once_with_the_real_confidence_judge_routes_each_problem_of_a_batch():
    # statistic min: exp(min token logprob) = the scripted token probability of the problem
    from reasoning.judges import ConfidenceJudge

    probs = {"sure": 0.9, "unsure": 0.3}
    problems = [Problem(pid, "Q", "4") for pid in probs]
    draft = ScriptedGenerator("draft", {p: DRAFT["p"] for p in probs}, token_prob=probs)
    target = ScriptedGenerator("target", {p: TARGET["p"] for p in probs})
    (sure, unsure), _, _ = run(ThresholdPolicy(0.5, decide_once=True), ConfidenceJudge("min"),
                               draft=draft, target=target, problems=problems)
    assert [s.kept.value for s in sure.steps] == ["draft"] * 9 and sure.steps[0].score == pytest.approx(0.9)
    assert [s.kept.value for s in unsure.steps] == ["target"] * 9
    assert unsure.steps[0].score == pytest.approx(0.3)
    assert sum(1 for r in draft.requests if r.problem_id == "unsure") == 1
    assert {r.problem_id for r in target.requests} == {"unsure"}


def test_decide_once_judges_the_first_step_after_the_targets_first_steps_and_works_with_a_glimpse():
    judge = _Judge([0.0, 0.9] + [0.0] * 14)
    tr, _, _ = run(ThresholdPolicy(0.5, decide_once=True, target_first_steps=1), judge)
    assert judge.seen == [1]
    assert [s.rule for s in tr.steps[:3]] == [Rule.TARGET_FIRST_STEPS, None, Rule.DECIDED_ONCE]
    assert tr.text.startswith("Target 0.\n\nDraft 1.\n\nDraft 2.\n\n")
    # a glimpse: the judge rules on the first step's first token; kept, every step is drafted whole
    judge = _Judge([0.9] + [0.0] * 15)
    tr, draft, target = run(GlimpsePolicy(threshold=0.5, glimpse_tokens=1, decide_once=True), judge)
    assert judge.seen == [0] and target.requests == [] and tr.text == DRAFT["p"]
    assert draft.requests[0].params.max_tokens == 1  # the glimpse
    assert all(r.params.max_tokens > 1 for r in draft.requests[1:])  # the rest, then whole steps


def test_decide_once_needs_a_judge_and_is_off_by_default():
    with pytest.raises(ValueError, match="decide_once need a policy with a judge"):
        AlwaysDraft(decide_once=True)
    assert ThresholdPolicy(0.5).rules is None and ThresholdPolicy(0.5, decide_once=True).rules.decide_once
