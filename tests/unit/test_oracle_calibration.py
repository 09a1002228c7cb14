"""The oracle router (routers.oracle) and threshold calibration (routers.calibration) on hand-built tables."""

from __future__ import annotations

import random

import pytest

from reasoning import (
    BlankLineSegmenter,
    LoopConfig,
    Problem,
    Route,
    ScriptedGenerator,
    ScriptedJudge,
    StepLoop,
    ThresholdPolicy,
)
from routers.calibration import Calibration, calibrate, target_share, threshold_for_share
from routers.oracle import StepScores, escalate, escalation_share, oracle_scores, table_from_rows

# problem, step, draft score, target score -> advantage. Dyadic values (multiples of 1/8), so
# every difference is exact in binary floating point and ties with tau are real ties.
TABLE = table_from_rows([
    {"problem_id": "a", "step_index": 0, "draft": 0.875, "target": 0.875},  # 0.0
    {"problem_id": "a", "step_index": 1, "draft": 0.25, "target": 0.875},   # 0.625
    {"problem_id": "a", "step_index": 2, "draft": 0.625, "target": 0.875},  # 0.25
    {"problem_id": "b", "step_index": 0, "draft": 0.625, "target": 0.375},  # -0.25
    {"problem_id": "b", "step_index": 1, "draft": 0.5, "target": 0.75},     # 0.25
])


# -- oracle ------------------------------------------------------------------------------------
def test_oracle_escalates_exactly_when_the_advantage_exceeds_tau():
    assert [r.advantage for r in TABLE] == [0.0, 0.625, 0.25, -0.25, 0.25]
    assert escalate(TABLE) == [False, True, True, False, True]  # advantage 0 stays with the draft
    assert escalate(TABLE, tau=0.25) == [False, True, False, False, False]  # 0.25 is not > 0.25
    assert escalate(TABLE, tau=0.125) == [False, True, True, False, True]
    assert escalate(TABLE, tau=-0.25) == [True, True, True, False, True]
    assert escalate(TABLE, tau=-0.375) == [True] * 5
    assert escalate(TABLE, tau=0.625) == [False] * 5


def test_escalation_share_follows_tau():
    assert [escalation_share(TABLE, t) for t in (-1, 0.0, 0.25, 0.625)] == [1.0, 0.6, 0.2, 0.0]
    assert escalation_share([], 0.0) == 0.0


def test_oracle_scores_drive_a_scripted_judge_to_the_oracle_decisions():
    scores = oracle_scores(TABLE, tau=0.3)
    assert scores == {"a": [1.0, 0.0, 1.0], "b": [1.0, 1.0]}
    draft = {"a": "One.\n\nTwo bad.\n\nThe answer is \\boxed{3}.", "b": "Uno.\n\nThe answer is \\boxed{2}."}
    target = {"a": "One.\n\nTwo.\n\nThe answer is \\boxed{3}.", "b": "Uno.\n\nThe answer is \\boxed{2}."}
    loop = StepLoop(ScriptedGenerator("draft", draft), ScriptedGenerator("target", target),
                    ScriptedJudge(scores), ThresholdPolicy(0.5), BlankLineSegmenter(), config=LoopConfig())
    traces = {t.problem_id: t for t in loop.run([Problem("a", "q", "3"), Problem("b", "q", "2")])}
    assert [s.kept for s in traces["a"].steps] == [Route.DRAFT, Route.TARGET, Route.DRAFT]
    assert [s.kept for s in traces["b"].steps] == [Route.DRAFT, Route.DRAFT]


def test_oracle_table_errors_name_the_row():
    with pytest.raises(ValueError, match="row 1 lacks target"):
        table_from_rows([{"problem_id": "a", "step_index": 0, "draft": 0.1, "target": 0.2},
                         {"problem_id": "a", "step_index": 1, "draft": 0.1}])
    with pytest.raises(ValueError, match="row 0: .*draft score must be a number"):
        table_from_rows([{"problem_id": "a", "step_index": 0, "draft": float("nan"), "target": 0.2}])
    with pytest.raises(ValueError, match="appears twice"):
        oracle_scores([StepScores("a", 0, 0.1, 0.2), StepScores("a", 0, 0.3, 0.2)])
    with pytest.raises(ValueError, match=r"has steps \[0, 2\]; expected 0..1"):
        oracle_scores([StepScores("a", 0, 0.1, 0.2), StepScores("a", 2, 0.3, 0.2)])
    with pytest.raises(ValueError, match="tau"):
        escalate(TABLE, float("nan"))


# -- calibration ---------------------------------------------------------------------------------
SCORES = [0.9, 0.1, 0.5, 0.5, 0.5, 0.3, 0.8, 0.7, 0.2, 1.0]  # sorted: .1 .2 .3 .5 .5 .5 .7 .8 .9 1


@pytest.mark.parametrize("share,threshold,achieved", [
    (0.0, 0.0, 0.0),
    (0.05, 0.0, 0.0),   # half a step: none
    (0.1, 0.2, 0.1),    # .1 to the target
    (0.3, 0.5, 0.3),    # .1 .2 .3; the three 0.5s are kept (score == threshold goes to the draft)
    (0.4, 0.5, 0.3),    # 4 of 10 would split the tie at 0.5: the tie stays with the draft
    (0.5, 0.5, 0.3),
    (0.6, 0.7, 0.6),    # the whole tie goes to the target
    (0.9, 1.0, 0.9),    # everything below the 1.0
    (1.0, 1.0, 0.9),    # a score of 1.0 is kept by every threshold in [0, 1]
])
def test_calibration_on_a_hand_built_table(share, threshold, achieved):
    c = calibrate(SCORES, share)
    assert c == Calibration(threshold, pytest.approx(achieved), share, 10)
    assert target_share(SCORES, c.threshold) == pytest.approx(achieved)
    assert threshold_for_share(SCORES, share) == threshold


def test_calibration_threshold_agrees_with_the_threshold_policy():
    policy = ThresholdPolicy(calibrate(SCORES, 0.6).threshold)
    from reasoning.protocols import StepContext
    from reasoning.types import Decision

    ctx = StepContext(0, 0, 100, 0)
    rejected = sum(policy.decide(s, ctx) is Decision.REJECT for s in SCORES)
    assert rejected == 6


def test_share_one_reaches_every_step_when_no_score_is_one():
    assert calibrate([0.2, 0.9, 0.9], 1.0) == Calibration(1.0, 1.0, 1.0, 3)
    assert calibrate([0.4, 0.4, 0.4], 0.9) == Calibration(0.0, 0.0, 0.9, 3)  # one tie: all or nothing


def test_float_fuzz_in_share_times_steps_does_not_lose_a_step():
    scores = [i / 100 for i in range(100)]
    assert 0.29 * 100 < 29  # 28.999999999999996
    assert calibrate(scores, 0.29).share == pytest.approx(0.29)


def test_calibration_never_exceeds_the_requested_share_and_is_the_largest_achievable():
    rng = random.Random(0)
    for _ in range(200):
        n = rng.randint(1, 30)
        scores = [rng.choice([0.0, 0.25, 0.5, 0.75, 1.0, rng.random()]) for _ in range(n)]
        share = rng.random()
        c = calibrate(scores, share)
        assert c.share == pytest.approx(target_share(scores, c.threshold))
        assert c.share <= share + 1e-12
        achievable = {target_share(scores, t) for t in sorted(set(scores)) + [0.0, 1.0]}
        assert c.share == max(a for a in achievable if a <= share + 1e-12)


@pytest.mark.parametrize("scores,share,match", [
    ([], 0.3, "scores is empty"),
    ([0.2, 1.5], 0.3, r"scores\[1\] = 1.5"),
    ([0.2, float("nan")], 0.3, r"scores\[1\] = nan"),
    ([0.2], 1.2, "share must be in"),
    ([0.2], -0.1, "share must be in"),
])
def test_calibration_errors_name_the_input(scores, share, match):
    with pytest.raises(ValueError, match=match):
        calibrate(scores, share)
