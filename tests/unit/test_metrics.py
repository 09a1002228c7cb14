"""Every figure of summarize() on hand-built traces."""

from __future__ import annotations

import pytest

from reasoning.metrics import summarize, wilson_interval
from reasoning.types import Decision, FinishReason, Route, StepRecord, StopReason, Trace


def step(i, route, decision, kept, dt=0, tt=0, dp=0, tp=0, ds=0.0, js=0.0, ts=0.0):
    return StepRecord(index=i, route=route, decision=decision, kept=kept, text="x", draft_tokens=dt,
                      target_tokens=tt, draft_prompt_tokens=dp, target_prompt_tokens=tp,
                      draft_seconds=ds, judge_seconds=js, target_seconds=ts,
                      finish_reason=FinishReason.STOP)


D, T = Route.DRAFT, Route.TARGET
A, R, S = Decision.ACCEPT, Decision.REJECT, Decision.SKIP


def test_summary_figures():
    t1 = Trace("1", "q", "1", (
        step(0, T, S, T, tt=10, tp=50, ts=2.0),
        step(1, D, A, D, dt=5, dp=60, ds=0.5, js=0.1),
        step(2, D, R, T, dt=6, tt=7, dp=70, tp=71, ds=0.5, js=0.1, ts=1.0),
    ), StopReason.ANSWER, "x", predicted="1", correct=True, seconds=4.2)
    t2 = Trace("2", "q", "2", (step(0, D, A, D, dt=4, dp=40, ds=0.3),), StopReason.EOS, "x",
               predicted="3", correct=False, grade_note="wrong", seconds=0.3)
    t3 = Trace("3", "q", "2", (), StopReason.ERROR, "", seconds=0.0, error="boom")
    s = summarize([t1, t2, t3], wall_seconds=9.0)
    assert s["problems"] == 3 and s["graded"] == 2 and s["correct"] == 1 and s["accuracy"] == 0.5
    # Wilson, 1 of 2, z = 1.96, by hand: centre (0.5 + 1.96^2/4) / (1 + 1.96^2/2) = 0.5, half-width
    # 1.96 * sqrt(0.25/2 + 1.96^2/16) / (1 + 1.96^2/2) = 1.184301 / 2.9208 = 0.405472
    assert s["accuracy_ci95"] == pytest.approx([0.094528, 0.905472], abs=1e-6)
    assert s["steps"] == 4 and s["mean_steps"] == pytest.approx(4 / 3)
    assert s["target_steps"] == 2 and s["target_step_share"] == 0.5
    assert s["drafted_steps"] == 3 and s["accepted_steps"] == 2
    assert s["draft_acceptance"] == pytest.approx(2 / 3)
    assert s["tokens"] == {"draft": 15, "target": 17}
    assert s["prompt_tokens"] == {"draft": 170, "target": 121}
    assert s["kept_tokens"] == 10 + 5 + 7 + 4
    assert s["seconds"] == pytest.approx({"draft": 1.3, "judge": 0.2, "target": 3.0})
    assert s["seconds_per_problem"]["mean"] == pytest.approx(4.5 / 3)
    assert s["seconds_per_problem"]["p50"] == pytest.approx(0.3)
    assert s["seconds_per_problem"]["p90"] == pytest.approx(0.3 + 0.8 * 3.9)
    assert s["wall_seconds"] == 9.0
    assert s["stop_reasons"] == {"answer": 1, "eos": 1, "error": 1}
    assert s["grade_notes"] == {"wrong": 1}
    assert s["errors"] == 1


def test_empty_run():
    s = summarize([])
    assert s["problems"] == 0 and s["accuracy"] is None and s["draft_acceptance"] is None
    assert s["accuracy_ci95"] is None  # no interval of nothing, not [0, 0]


def test_no_interval_when_nothing_was_graded():
    t = Trace("1", "q", None, (), StopReason.ERROR, "", seconds=0.0, error="boom")
    s = summarize([t])
    assert s["graded"] == 0 and s["accuracy"] is None and s["accuracy_ci95"] is None
    assert wilson_interval(0, 0) is None


def test_wilson_interval_brackets_the_rate():
    for k, n in [(0, 5), (3, 5), (5, 5), (50, 100)]:
        lo, hi = wilson_interval(k, n)
        assert 0 <= lo <= k / n <= hi <= 1


@pytest.mark.parametrize("k,n,lo,hi", [
    (8, 10, 0.490157, 0.943319),  # by hand: centre 0.99208 / 1.38416 = 0.716738, half-width 0.226581
    (0, 5, 0.0, 0.434491),  # centre = half-width = 0.21725: the lower end is 0
    (5, 5, 0.565509, 1.0),
])
def test_wilson_interval_by_hand(k, n, lo, hi):
    assert wilson_interval(k, n) == pytest.approx((lo, hi), abs=1e-6)


@pytest.mark.parametrize("k,n", [(1, 2), (8, 10), (0, 5), (5, 5), (30, 50), (0, 1), (412, 500)])
def test_wilson_interval_equals_scipys(k, n):
    stats = pytest.importorskip("scipy.stats")
    ci = stats.binomtest(k, n).proportion_ci(0.95, method="wilson")
    # scipy's z is the exact 1.959964, ours 1.96: the ends differ by a few 1e-5 at most
    assert wilson_interval(k, n) == pytest.approx((ci.low, ci.high), abs=5e-5)


def test_budget_share_judge_calls_and_math_breakdowns():
    def tr(i, stop, correct, subject, level, score=None):
        st = StepRecord(index=0, route=D, decision=A, kept=D, text="x", score=score,
                        finish_reason=FinishReason.STOP)
        return Trace(str(i), "q", "1", (st,), stop, "x", correct=correct,
                     meta={"subject": subject, "level": level})

    ts = [tr(0, StopReason.ANSWER, True, "Algebra", 1, 0.9),
          tr(1, StopReason.TOKEN_BUDGET, False, "Algebra", 2),
          tr(2, StopReason.ANSWER, True, "Geometry", 2, 0.4),
          tr(3, StopReason.TOKEN_BUDGET, None, "Geometry", 2)]
    s = summarize(ts)
    assert s["token_budget_share"] == 0.5 and s["judge_calls"] == 2
    assert s["by_subject"] == {"Algebra": {"problems": 2, "correct": 1, "accuracy": 0.5},
                               "Geometry": {"problems": 2, "correct": 1, "accuracy": 1.0}}
    assert s["by_level"]["2"] == {"problems": 3, "correct": 1, "accuracy": 0.5}
    assert "by_subject" not in summarize([Trace("x", "q", "1", (), StopReason.EOS, "")])
