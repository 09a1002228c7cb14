"""Router labels grounded in the gold answer: the outcome reward on scripted models, and the
collection -> training pipeline with it (issue 13, lever 4)."""

from __future__ import annotations

import pytest

from reasoning.backends.scripted import ScriptedGenerator
from reasoning.segmenter import BlankLineSegmenter
from reasoning.types import Problem
from rewards.outcome import OutcomeJudge
from routers.collect import ShadowCollector

RIGHT = "Two plus two.\n\nIs four.\n\nThe answer is \\boxed{4}."
WRONG = "Two plus two.\n\nIs five.\n\nThe answer is \\boxed{5}."


def _target(pid: str, prefix: str) -> str:
    """A target that writes RIGHT, and, continuing someone else's text, follows its lead: after
    a step that says five it concludes 5, after a final step it stops."""
    if RIGHT.startswith(prefix):
        return RIGHT[len(prefix):]
    if "boxed" in prefix:
        return ""
    return "The answer is \\boxed{5}." if "five" in prefix else "The answer is \\boxed{4}."


def test_rows_are_labelled_by_which_step_reaches_the_gold_answer():
    draft = ScriptedGenerator("draft", {"p": WRONG})
    target = ScriptedGenerator("target", _target)
    reward = OutcomeJudge(target, max_tokens=64)
    rows = ShadowCollector(draft, target, reward, BlankLineSegmenter(), grader=None).run(
        [Problem("p", "2 + 2?", "4")]).rows
    got = [(r["step_index"], r["draft_step"], r["draft_score"], r["target_score"], r["advantage"])
           for r in rows]
    # step 0: the same text, advantage exactly 0; step 1: the draft's "five" leads to 5 (wrong),
    # the target's "four" to 4; step 2: the draft's final answer is 5, the target's 4
    assert got == [(0, "Two plus two.\n\n", 1.0, 1.0, 0.0), (1, "Is five.\n\n", 0.0, 1.0, 1.0),
                   (2, "The answer is \\boxed{5}.", 0.0, 1.0, 1.0)]
    # each scored side cost one continuation; the same-text step was scored once
    assert reward.continuations == 5


def test_every_kth_step_is_scored_and_only_those_are_rows():
    draft = ScriptedGenerator("draft", {"p": WRONG})
    target = ScriptedGenerator("target", _target)
    reward = OutcomeJudge(target, max_tokens=64, every=2)
    rows = ShadowCollector(draft, target, reward, BlankLineSegmenter(), grader=None).run(
        [Problem("p", "2 + 2?", "4")]).rows
    assert [r["step_index"] for r in rows] == [0, 2] and all(r["problem_steps"] == 2 for r in rows)


def test_the_outcome_reward_needs_a_gold_answer_and_sane_settings():
    target = ScriptedGenerator("target", _target)
    from reasoning.protocols import JudgeRequest
    from reasoning.types import Completion, FinishReason

    step = Completion("Is four.\n\n", (), FinishReason.STOP)
    with pytest.raises(ValueError, match="gold answer"):
        OutcomeJudge(target).score([JudgeRequest(Problem("p", "q"), (), (), step, 1)])
    with pytest.raises(ValueError, match="temperature"):
        OutcomeJudge(target, samples=2)
    with pytest.raises(ValueError, match="continue with"):
        OutcomeJudge(None)


def test_sampled_continuations_give_a_share():
    # a continuer right on every other sample: seeds 0 and 1 differ only by the seed it is given
    class Alternating(ScriptedGenerator):
        def generate(self, requests):
            out = super().generate(requests)
            from dataclasses import replace

            return [replace(c, text=" The answer is \\boxed{4}." if r.params.seed % 2 == 0
                            else " The answer is \\boxed{3}.") for r, c in zip(requests, out)]

    from reasoning.protocols import JudgeRequest
    from reasoning.types import Completion, FinishReason

    judge = OutcomeJudge(Alternating("target", _target), samples=4, temperature=0.7, seed=0)
    step = Completion("Is four.\n\n", (), FinishReason.STOP)
    assert judge.score([JudgeRequest(Problem("p", "q", "4"), (), (), step, 1)]) == [0.5]


def _draft(pid: str, prefix: str) -> str:
    """A draft that writes WRONG and, continuing someone else's text, follows its lead (after
    "four" it concludes 4), as a greedy model continues its prefix."""
    if WRONG.startswith(prefix):
        return WRONG[len(prefix):]
    if "boxed" in prefix:
        return ""
    return "The answer is \\boxed{5}." if "five" in prefix else "The answer is \\boxed{4}."


@pytest.mark.parametrize("chain", [False, True])
def test_chained_outcomes_give_the_same_labels_for_fewer_continuations(chain):
    draft = ScriptedGenerator("draft", _draft)
    target = ScriptedGenerator("target", _target)
    reward = OutcomeJudge(draft=draft, continue_with="draft", max_tokens=64, chain=chain)
    rows = ShadowCollector(draft, target, reward, BlankLineSegmenter(), grader=None).run(
        [Problem("p", "2 + 2?", "4")]).rows
    got = [(r["step_index"], r["draft_score"], r["target_score"], r["target_chained"]) for r in rows]
    assert [r["draft_chained"] for r in rows] == [chain, False, False]
    # By hand. Step 0: both write "Two plus two."; from it the draft goes on with its own
    # "Is five." and ends at 5 (one continuation, the same text scored once). Step 1: the
    # draft's "Is five." ends at 5; from the target's "Is four." the draft concludes 4, which is
    # also what its next step drafted from there ("The answer is \boxed{4}.") says, row 2's draft
    # score. Step 2: both write "The answer is \boxed{4}." (scored once).
    assert got == [(0, 0.0, 0.0, False), (1, 0.0, 1.0, chain), (2, 1.0, 1.0, False)]
    # unchained: steps 0 and 2 once each, step 1 twice = 4. Chained: step 1's target side is row
    # 2's draft side; and step 0's draft is the target's "Two plus two.", the prefix row 1's
    # draft was written from, so the draft's continuation from it is row 1's: 2 in all.
    assert reward.continuations == (2 if chain else 4)


def test_a_run_of_steps_where_the_draft_writes_the_targets_text_takes_the_next_scored_draft():
    # both models write RIGHT's first two steps; the draft then writes "The answer is 5".
    draft = ScriptedGenerator("draft", lambda pid, prefix: (
        "Two plus two.\n\n" if prefix == "" else "Is four.\n\n" if prefix == "Two plus two.\n\n"
        else "" if "boxed" in prefix else "The answer is \\boxed{5}."))
    target = ScriptedGenerator("target", _target)
    rows = {}
    for chain in (False, True):
        reward = OutcomeJudge(draft=draft, continue_with="draft", max_tokens=64, chain=chain)
        got = ShadowCollector(draft, target, reward, BlankLineSegmenter(), grader=None).run(
            [Problem("p", "2 + 2?", "4")]).rows
        rows[chain] = ([(r["draft_score"], r["target_score"]) for r in got], reward.continuations,
                       [r["draft_chained"] for r in got])
    # By hand: from "Two plus two." and from "Two plus two. Is four." the draft goes on to
    # "The answer is 5": 0 at steps 0 and 1; step 2: the draft's 5 against the target's 4.
    assert rows[False] == ([(0.0, 0.0), (0.0, 0.0), (0.0, 1.0)], 4, [False, False, False])
    # chained: steps 0 and 1 take step 2's draft score (a run of two); step 2's target side is
    # the problem's last, continued on its own: 2 continuations
    assert rows[True] == ([(0.0, 0.0), (0.0, 0.0), (0.0, 1.0)], 2, [True, True, False])


def test_chain_is_refused_where_the_next_draft_is_not_the_same_continuation():
    draft = ScriptedGenerator("draft", _draft)
    target = ScriptedGenerator("target", _target)
    with pytest.raises(ValueError, match="chain needs continue_with=draft"):
        OutcomeJudge(target, chain=True)
    with pytest.raises(ValueError, match="every=1"):
        OutcomeJudge(draft=draft, continue_with="draft", every=2, chain=True)
    from reasoning.loop import LoopConfig

    reward = OutcomeJudge(draft=draft, continue_with="draft", chain=True)
    with pytest.raises(ValueError, match="greedy draft steps"):
        ShadowCollector(draft, target, reward, BlankLineSegmenter(), loop=LoopConfig(temperature=0.7))
    other = ScriptedGenerator("draft", _draft)
    with pytest.raises(ValueError, match="collector's draft"):
        ShadowCollector(other, target, reward, BlankLineSegmenter())
