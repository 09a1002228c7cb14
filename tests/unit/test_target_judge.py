"""The target as judge (rewards.target_judge) on the scripted generator, and the cheap judges that
read the draft's top logprobs (ConfidenceJudge "entropy") through the step loop."""

from __future__ import annotations

import functools
import logging
import math

import pytest

from reasoning import (
    BlankLineSegmenter,
    ChatMessage,
    Completion,
    ConfidenceJudge,
    FinishReason,
    JudgeRequest,
    LoopConfig,
    Problem,
    Route,
    ScriptedGenerator,
    Segment,
    StepLoop,
    ThresholdPolicy,
)
from reasoning.loop import judge_logprobs
from rewards.target_judge import DEFAULT_PREFILL, DEFAULT_QUESTION, TargetJudge, digit_probs, digit_score

CHAT = (ChatMessage("system", "Solve step by step."), ChatMessage("user", "What is 2+2?"))
LOG = math.log


def jreq(step_text: str, prefix: tuple[Segment, ...] = (), pid: str = "a", index: int = 0) -> JudgeRequest:
    step = Completion(step_text, (1,), FinishReason.STOP)
    return JudgeRequest(Problem(pid, "What is 2+2?"), CHAT, prefix, step, index)


def scripted_target(tops, name: str = "target") -> ScriptedGenerator:
    """A target whose judge calls report ``tops[draft step text]`` (or ``tops`` itself)."""
    def fn(req):
        if isinstance(tops, dict) and all(isinstance(v, dict) for v in tops.values()):
            answer = req.messages[-2].content
            return next(v for k, v in tops.items() if answer.endswith(k))
        return tops

    return ScriptedGenerator(name, lambda pid, prefix: "7", top_logprobs_fn=fn)


# -- the score from the top logprobs ---------------------------------------------------------------
def test_expectation_over_the_digits():
    top = {"9": LOG(0.5), "7": LOG(0.25), " 5": LOG(0.25)}
    [s] = TargetJudge(scripted_target(top)).score([jreq("x\n\n")])
    assert s == pytest.approx((9 * 0.5 + 7 * 0.25 + 5 * 0.25) / 9)


def test_digit_probabilities_are_renormalised_over_the_digits_only():
    with_words = {"8": LOG(0.25), "4": LOG(0.25), "The": LOG(0.4), "I": LOG(0.1)}
    digits_only = {"8": LOG(0.5), "4": LOG(0.5)}
    a = TargetJudge(scripted_target(with_words)).score([jreq("x")])
    b = TargetJudge(scripted_target(digits_only)).score([jreq("x")])
    assert a == pytest.approx(b) and a == pytest.approx([6 / 9])


def test_token_texts_for_one_digit_add_up_and_other_texts_do_not_count():
    top = {" 7": LOG(0.3), "7": LOG(0.2), "7\n": LOG(0.1), "0": LOG(0.2), "10": LOG(0.1), "7.": LOG(0.1)}
    assert digit_probs(top) == pytest.approx({7: 0.6, 0: 0.2})
    assert digit_score(top) == pytest.approx(7 * 0.6 / 0.8 / 9)
    assert digit_score(top, "greedy") == pytest.approx(7 / 9)


def test_greedy_mode_takes_the_likeliest_digit():
    top = {"3": LOG(0.4), "9": LOG(0.35), " 9": LOG(0.1), "x": LOG(0.15)}  # 9 wins once its tokens add up
    [s] = TargetJudge(scripted_target(top), mode="greedy").score([jreq("x")])
    assert s == pytest.approx(1.0)
    [s] = TargetJudge(scripted_target({"3": LOG(0.5), "9": LOG(0.3)}), mode="greedy").score([jreq("x")])
    assert s == pytest.approx(3 / 9)
    assert digit_score({"2": LOG(0.5), "6": LOG(0.5)}, "greedy") == pytest.approx(2 / 9)  # tie: smaller


def test_no_digit_in_the_top_k_scores_zero_and_warns(caplog):
    judge = TargetJudge(scripted_target({"The": LOG(0.9), "I": LOG(0.1)}))
    with caplog.at_level(logging.WARNING, logger="rewards.target_judge"):
        assert judge.score([jreq("x", pid="q", index=3)]) == [0.0]
    assert "no digit" in caplog.text and "q/3/judge" in caplog.text and "'The'" in caplog.text


def test_only_the_top_k_alternatives_are_read():
    # The digit 9 is the 11th best alternative: with top_logprobs=10 the engine does not report it.
    top = {f"w{i}": LOG(0.05) for i in range(10)} | {"9": LOG(0.04), "0": LOG(0.01)}
    top["w0"] = LOG(0.06)
    assert TargetJudge(scripted_target(top), top_logprobs=10).score([jreq("x")]) == [0.0]
    assert TargetJudge(scripted_target(top), top_logprobs=12).score([jreq("x")]) == [pytest.approx(0.8)]


# -- what the judge asks the target --------------------------------------------------------------
def test_the_judge_call_is_the_loop_chat_then_answer_with_step_then_question_then_prefill():
    target = scripted_target({"9": 0.0})
    prefix = (Segment("Add 2 and 2.\n\n", "draft", (1, 2)), Segment("That is 4.\n\n", "target", None))
    TargetJudge(target).score([jreq("The answer is \\boxed{4}.", prefix, pid="a", index=2)])
    [r] = target.requests
    assert r.messages == (
        ChatMessage("system", "Solve step by step."),
        ChatMessage("user", "What is 2+2?"),
        ChatMessage("assistant", "Add 2 and 2.\n\nThat is 4.\n\nThe answer is \\boxed{4}."),
        ChatMessage("user", DEFAULT_QUESTION),
    )
    assert r.messages[:2] == CHAT  # identical to the loop's: the engine's prefix cache serves them
    assert r.prefix == (Segment("Score: ", "judge", None),) and DEFAULT_PREFILL == "Score: "
    assert r.params.max_tokens == 1 and r.params.temperature == 0.0 and r.params.logprobs == 20
    assert r.params.stop == () and r.request_id == "a/2/judge" and r.problem_id == "a"


def test_question_and_prefill_can_be_changed():
    target = scripted_target({"9": 0.0})
    TargetJudge(target, question="Grade it.", prefill="").score([jreq("s")])
    [r] = target.requests
    assert r.messages[-1] == ChatMessage("user", "Grade it.") and r.prefix == ()


def test_many_drafts_go_to_the_target_in_one_generate_call_and_scores_keep_their_order():
    tops = {"one.": {"9": 0.0}, "two.": {"0": 0.0}, "three.": {"3": LOG(0.5), "6": LOG(0.5)}}
    target = scripted_target(tops)
    reqs = [jreq("one.", pid="a"), jreq("two.", pid="b"), jreq("three.", pid="c")]
    assert TargetJudge(target).score(reqs) == pytest.approx([1.0, 0.0, 0.5])
    assert target.calls == 1 and target.batch_sizes == [3]
    assert [r.problem_id for r in target.requests] == ["a", "b", "c"]


def test_an_empty_batch_calls_nothing():
    target = scripted_target({"9": 0.0})
    assert TargetJudge(target).score([]) == [] and target.calls == 0


@pytest.mark.parametrize("kw,match", [
    ({"mode": "mean"}, "judge.mode"),
    ({"top_logprobs": 5}, "judge.top_logprobs must be >= 10"),
    ({"question": "  "}, "judge.question"),
])
def test_bad_settings_are_refused_with_their_name(kw, match):
    with pytest.raises(ValueError, match=match):
        TargetJudge(**kw)


def test_no_generator_and_no_top_logprobs_are_clear_errors():
    with pytest.raises(ValueError, match="no generator"):
        TargetJudge().score([jreq("x")])
    plain = ScriptedGenerator("target", lambda pid, prefix: "7")

    class NoTop:
        name = "target"

        def generate(self, requests):
            return [Completion("7", (1,), FinishReason.LENGTH, logprobs=(0.0,)) for _ in requests]

    with pytest.raises(ValueError, match="returned no top logprobs"):
        TargetJudge(NoTop()).score([jreq("x")])
    # Without a top_logprobs_fn the scripted double reports the sampled token alone.
    assert TargetJudge(plain).score([jreq("x")]) == [pytest.approx(7 / 9)]


# -- in the loop and from the config -----------------------------------------------------------------
DRAFT = {"a": "Add 2 and 2.\n\nThat is 5.\n\nThe answer is \\boxed{5}."}
TARGET = {"a": "Add 2 and 2.\n\nThat is 4.\n\nThe answer is \\boxed{4}."}


def test_target_judge_in_the_loop_rejects_the_step_it_rates_low():
    def top(req):
        step = req.messages[-2].content.split("\n\n")[-1] or req.messages[-2].content.split("\n\n")[-2]
        return {"2": 0.0} if "5." in step and "boxed" not in step else {"8": 0.0}

    target = ScriptedGenerator("target", TARGET, top_logprobs_fn=top)
    loop = StepLoop(ScriptedGenerator("draft", DRAFT), target, TargetJudge(target), ThresholdPolicy(7 / 9),
                    BlankLineSegmenter(), config=LoopConfig())
    [tr] = loop.run([Problem("a", "What is 2+2?", "4")])
    assert [s.kept for s in tr.steps] == [Route.DRAFT, Route.TARGET, Route.DRAFT]
    assert [s.score for s in tr.steps] == pytest.approx([8 / 9, 2 / 9, 8 / 9])
    judge_calls = [r for r in target.requests if r.request_id.endswith("/judge")]
    assert len(judge_calls) == 3 and all(r.params.max_tokens == 1 for r in judge_calls)


def test_the_specreason_config_binds_the_run_target_as_generator():
    from hydra import compose, initialize_config_dir

    from recipes._cli import CONF_DIR, bind_judge, instantiate

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="evaluate", overrides=["recipe=specreason"])
    assert cfg.policy.threshold <= 7 / 9 < cfg.policy.threshold + 0.001
    partial = instantiate(cfg.judge, "judge")
    assert isinstance(partial, functools.partial)
    target = scripted_target({"9": 0.0})
    judge = bind_judge(partial, target, object())
    assert isinstance(judge, TargetJudge) and judge.generator is target
    assert judge.question == DEFAULT_QUESTION and judge.prefill == DEFAULT_PREFILL
    assert (judge.mode, judge.top_logprobs) == ("expectation", 20)


# -- the draft's entropy (ConfidenceJudge "entropy") -------------------------------------------------
def test_entropy_judge_asks_the_loop_for_k_top_logprobs_and_scores_them():
    k = 4
    flat = {t: LOG(1 / k) for t in "abcd"}
    draft = ScriptedGenerator("draft", DRAFT, top_logprobs_fn=lambda req: flat if req.prefix else {"x": 0.0})
    judge = ConfidenceJudge("entropy", top_logprobs=k)
    assert judge_logprobs(judge) == k
    loop = StepLoop(draft, ScriptedGenerator("target", TARGET), judge, ThresholdPolicy(0.5),
                    BlankLineSegmenter(), config=LoopConfig())
    [tr] = loop.run([Problem("a", "What is 2+2?", "4")])
    assert all(r.params.logprobs == k for r in draft.requests)
    # Step 0 (no prefix): every token certain -> 1; later steps: every top-k flat -> 0.
    assert [s.score for s in tr.steps] == pytest.approx([1.0, 0.0, 0.0])
    assert [s.kept for s in tr.steps] == [Route.DRAFT, Route.TARGET, Route.TARGET]


def test_top_logprobs_survive_merged_pieces_of_a_short_step():
    # "Add" is too short (min_step_chars=8): the loop asks again and merges the pieces; the
    # judge must see one top-k per token of the whole step.
    script = {"a": "Add\n\n2 and 2 is 4.\n\nThe answer is \\boxed{4}."}
    seen = []

    class Spy(ConfidenceJudge):
        def score(self, requests):
            seen.extend(r.step for r in requests)
            return ConfidenceJudge.score(self, requests)

    draft = ScriptedGenerator("draft", script, top_logprobs_fn=lambda req: {"x": LOG(0.5), "y": LOG(0.5)})
    loop = StepLoop(draft, ScriptedGenerator("target", TARGET), Spy("entropy", top_logprobs=2),
                    ThresholdPolicy(0.5), BlankLineSegmenter(min_step_chars=8), config=LoopConfig())
    loop.run([Problem("a", "q", "4")])
    first = seen[0]
    assert first.text == "Add\n\n2 and 2 is 4.\n\n" and draft.batch_sizes[:2] == [1, 1]
    assert first.top_logprobs is not None and len(first.top_logprobs) == first.num_tokens


def test_entropy_first_tokens_and_errors():
    sure, flat = {"a": 0.0, "b": -math.inf}, {"a": LOG(0.5), "b": LOG(0.5)}
    step = Completion("a b c", (1, 2, 3), FinishReason.STOP, logprobs=(0.0,) * 3,
                      top_logprobs=(sure, flat, flat))
    r = JudgeRequest(Problem("p", "q"), (), (), step, 0)
    assert ConfidenceJudge("entropy", top_logprobs=2).score([r]) == pytest.approx([1 / 3])
    assert ConfidenceJudge("entropy", top_logprobs=2, first_tokens=1).score([r]) == [1.0]
    # Normalised by log k with k the number asked for: 2 flat alternatives of k=4 are half as uncertain.
    assert ConfidenceJudge("entropy", top_logprobs=4, first_tokens=2).score([r]) == pytest.approx([0.75])
    assert ConfidenceJudge("mean", first_tokens=1).needs_logprobs == 0
    with pytest.raises(ValueError, match="top 20 logprobs"):
        ConfidenceJudge("entropy").score([JudgeRequest(Problem("p", "q"), (), (),
                                                       Completion("a", (1,), FinishReason.STOP), 0)])
    with pytest.raises(ValueError, match="top_logprobs must be >= 2"):
        ConfidenceJudge("entropy", top_logprobs=1)
    with pytest.raises(ValueError, match="first_tokens"):
        ConfidenceJudge(first_tokens=0)


def test_judge_logprobs_reads_bools_and_ints_and_refuses_the_rest():
    class J:
        def __init__(self, v):
            self.needs_logprobs = v

    assert [judge_logprobs(J(v)) for v in (False, None, True, 0, 3)] == [None, None, 0, 0, 3]
    with pytest.raises(ValueError, match="needs_logprobs"):
        judge_logprobs(J(-1))
    loop = StepLoop(ScriptedGenerator("d", DRAFT), ScriptedGenerator("t", TARGET), J(3), ThresholdPolicy(0.5),
                    BlankLineSegmenter(), config=LoopConfig(draft_logprobs=5))
    assert loop._draft_logprobs == 5
    loop = StepLoop(ScriptedGenerator("d", DRAFT), ScriptedGenerator("t", TARGET), J(3), ThresholdPolicy(0.5),
                    BlankLineSegmenter(), config=LoopConfig(draft_logprobs=0))
    assert loop._draft_logprobs == 3
