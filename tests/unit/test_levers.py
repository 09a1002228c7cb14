"""The levers against measured waste, on scripted models: deciding before drafting (a glimpse),
aborting a draft mid-step, and holding the target after a hand-off (hysteresis).

Token counts are worked out by hand from the scripted tokenizer: tokens are runs of white space
or of other characters ("One two.\\n\\n" is "One", " ", "two.", "\\n\\n").
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from reasoning.backends.scripted import ScriptedGenerator
from reasoning.judges import CallableJudge, ScriptedJudge
from reasoning.loop import LoopConfig, StepLoop
from reasoning.metrics import summarize
from reasoning.policies import AbortPolicy, GlimpsePolicy, HysteresisPolicy
from reasoning.prompts import ChatPrompt
from reasoning.segmenter import BlankLineSegmenter
from reasoning.types import Decision, Problem, Route

PROMPT = ChatPrompt(system=None, user_template="{question}")
DRAFT = {"p": "Alpha beta gamma.\n\nDelta epsilon zeta.\n\nEta theta iota.\n\nThe answer is \\boxed{1}."}
TARGET = {"p": "Target one.\n\nTarget two.\n\nTarget three.\n\nThe answer is \\boxed{1}."}


def _loop(policy, judge, draft=None, target=None, **cfg):
    draft = draft or ScriptedGenerator("draft", DRAFT)
    target = target or ScriptedGenerator("target", TARGET)
    loop = StepLoop(draft, target, judge, policy, BlankLineSegmenter(), PROMPT,
                    LoopConfig(max_steps=8, token_budget=256, **cfg))
    return loop, draft, target


class _CountingJudge:
    """Scores by step index from a table; keeps every request it was asked to score."""

    def __init__(self, scores):
        self.scores = scores
        self.seen = []

    def score(self, requests):
        self.seen.extend(requests)
        return [self.scores[r.step_index] for r in requests]


# -- decide before drafting ------------------------------------------------------------------
def test_a_glimpse_judged_weak_never_becomes_a_drafted_step():
    judge = _CountingJudge({0: 0.9, 1: 0.1, 2: 0.9, 3: 0.9})
    loop, draft, target = _loop(GlimpsePolicy(threshold=0.5, glimpse_tokens=1), judge)
    (trace,) = loop.run([Problem("p", "Q", "1")])
    steps = trace.steps
    assert [s.kept.value for s in steps] == ["draft", "target", "draft", "draft"]
    # the judge saw one token of each step (the glimpse), and was asked once per step
    assert [len(r.step.token_ids) for r in judge.seen] == [1, 1, 1, 1]
    assert [r.step.text for r in judge.seen] == ["Alpha", "Delta", "Eta", "The"]
    # step 1: only its first token was drafted, then the target wrote the step
    assert (steps[1].decision, steps[1].draft_tokens, steps[1].draft_stopped_at) == (Decision.REJECT, 1, 1)
    assert steps[1].draft_text == "Delta" and steps[1].target_text == "Target two.\n\n"
    # accepted steps: the draft wrote the rest after the glimpse, and the step is whole
    assert steps[0].text == "Alpha beta gamma.\n\n" and steps[0].draft_tokens == 6
    assert steps[0].draft_stopped_at is None and steps[0].score == 0.9
    # every draft call after a glimpse continued it: the glimpse's call asked for 1 token
    first_calls = [r for r in draft.requests if r.request_id.endswith("/d0")]
    assert [r.params.max_tokens for r in first_calls] == [1, 1, 1, 1]
    assert trace.text == "".join(s.text for s in steps)


def test_a_glimpse_router_wastes_less_draft_than_judging_whole_drafts():
    from reasoning.policies import ThresholdPolicy

    def run(policy):
        judge = _CountingJudge({0: 0.9, 1: 0.1, 2: 0.1, 3: 0.9})
        loop, _, _ = _loop(policy, judge)
        return summarize(loop.run([Problem("p", "Q", "1")]))["cost"]["wasted_draft_tokens"]

    # whole drafts: steps 1 and 2 ("Target two.\n\n" prefix makes the draft write its own step 1
    # "Delta epsilon zeta.\n\n", 6 tokens, then "Eta theta iota.\n\n", 6) thrown away: 12 tokens;
    # glimpses: one token each
    assert run(ThresholdPolicy(threshold=0.5)) == 12
    assert run(GlimpsePolicy(threshold=0.5, glimpse_tokens=1)) == 2


# -- abort mid-step --------------------------------------------------------------------------
class _DoubtfulDraft(ScriptedGenerator):
    """A scripted draft sure of every token but those containing "epsilon" (probability 0.05)."""

    def generate(self, requests):
        out = super().generate(requests)
        res = []
        for c in out:
            if c.logprobs is None:
                res.append(c)
                continue
            lps = tuple(math.log(0.05) if "epsilon" in self.decode([t]) else math.log(0.95)
                        for t in c.token_ids)
            res.append(replace(c, logprobs=lps))
        return res


@pytest.mark.parametrize("chunk,stopped", [(1, 3), (2, 4), (4, 4)])
def test_a_draft_is_stopped_at_the_first_piece_where_its_confidence_falls(chunk, stopped):
    # step 1 of the draft is "Delta", " ", "epsilon", " ", "zeta.", "\n\n": "epsilon" is token 3.
    # Pieces of 1 stop right after it (3 tokens); of 2, after tokens 3-4 (4); of 4, after 1-4 (4).
    policy = AbortPolicy(threshold=0.0, statistic="min", bound=0.5, chunk_tokens=chunk, min_tokens=1)
    loop, draft, _ = _loop(policy, ScriptedJudge({}, default=1.0), draft=_DoubtfulDraft("draft", DRAFT))
    (trace,) = loop.run([Problem("p", "Q", "1")])
    s1 = trace.steps[1]
    assert (s1.decision, s1.kept, s1.draft_stopped_at, s1.draft_tokens) == (
        Decision.REJECT, Route.TARGET, stopped, stopped)
    assert s1.text == "Target two.\n\n" and not s1.draft_prefix_kept
    # the other steps ran to their end and were judged (threshold 0: kept)
    assert [s.kept.value for s in trace.steps] == ["draft", "target", "draft", "draft"]
    assert all(s.draft_stopped_at is None for i, s in enumerate(trace.steps) if i != 1)
    assert all(r.params.max_tokens <= chunk for r in draft.requests)


def test_a_stopped_draft_can_be_kept_as_the_targets_prefix():
    policy = AbortPolicy(threshold=0.0, statistic="min", bound=0.5, chunk_tokens=1, min_tokens=1,
                         keep_aborted="prefix")
    # the target continues whatever prefix it is given with its own script after that many steps
    target = ScriptedGenerator("target", lambda pid, prefix: " carried on.\n\n" if prefix.endswith("epsilon")
                               else TARGET["p"][len(prefix):] if TARGET["p"].startswith(prefix) else "Done.")
    loop, _, tgt = _loop(policy, ScriptedJudge({}, default=1.0), draft=_DoubtfulDraft("draft", DRAFT),
                         target=target)
    (trace,) = loop.run([Problem("p", "Q", "1")])
    s1 = trace.steps[1]
    assert s1.draft_prefix_kept and s1.draft_text == "Delta epsilon"
    assert s1.text == "Delta epsilon carried on.\n\n" and s1.kept is Route.TARGET
    # the target was asked to continue after the stopped draft's text
    (req,) = [r for r in tgt.requests if r.request_id.startswith("p/1/")]
    assert req.prefix_text.endswith("Alpha beta gamma.\n\nDelta epsilon")
    assert trace.text.startswith("Alpha beta gamma.\n\nDelta epsilon carried on.\n\n")
    # its tokens count in the kept step and are not wasted
    assert s1.kept_tokens == 3 + 5 and summarize([trace])["cost"]["wasted_draft_tokens"] == 0


# -- hand-off-aware policy -------------------------------------------------------------------
def test_after_a_handoff_the_target_keeps_the_next_steps():
    judge = ScriptedJudge({"p": [0.9, 0.1, 0.9, 0.9, 0.9]})
    loop, draft, _ = _loop(HysteresisPolicy(threshold=0.5, hold=2), judge)
    (trace,) = loop.run([Problem("p", "Q", "1")])
    routes = [(s.route.value, s.decision.value, s.kept.value) for s in trace.steps]
    # step 1 rejected: steps 2 and 3 go straight to the target, no draft written for them
    assert routes == [("draft", "accept", "draft"), ("draft", "reject", "target"),
                      ("target", "skip", "target"), ("target", "skip", "target")]
    assert not any(r.request_id.startswith(("p/2/", "p/3/")) for r in draft.requests)


def test_within_a_hold_a_confident_judge_still_keeps_the_draft():
    judge = ScriptedJudge({"p": [0.9, 0.1, 0.95, 0.6, 0.6]})
    loop, _, _ = _loop(HysteresisPolicy(threshold=0.5, hold=2, confident=0.9), judge)
    (trace,) = loop.run([Problem("p", "Q", "1")])
    # step 2 (held) scores 0.95 >= 0.9: kept; step 3 follows a draft step, so 0.6 >= 0.5 suffices
    assert [s.kept.value for s in trace.steps] == ["draft", "target", "draft", "draft"]


def test_a_held_step_under_the_confident_bar_goes_to_the_target():
    judge = CallableJudge(lambda r: 0.8)  # over threshold, under confident
    loop, _, _ = _loop(HysteresisPolicy(threshold=0.5, hold=1, confident=0.9, warmup_steps=1), judge)
    (trace,) = loop.run([Problem("p", "Q", "1")])
    # step 0 warm-up (target), step 1 held: 0.8 < 0.9 rejected; step 2 held again after that
    # rejection's target step? No: hold=1 counts the steps in a row the target kept: after
    # steps 0 and 1 the run is 2 > 1, so step 2 is judged at threshold and kept.
    assert [s.kept.value for s in trace.steps][:3] == ["target", "target", "draft"]
    assert trace.steps[1].decision is Decision.REJECT and trace.steps[1].score == 0.8
