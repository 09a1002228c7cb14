"""Routers: features, labels and balancing on hand-built rows; the lightweight router learns a known
rule; saved routers reload as judges (RouterJudge) and refuse what they cannot read; the live
oracle (OracleJudge); a sequence-classification router trained a few steps on a tiny random model."""

from __future__ import annotations

import functools
import json
import math
import random
import subprocess
import sys
from pathlib import Path

import pytest

from reasoning import (
    BlankLineSegmenter,
    Completion,
    FinishReason,
    JudgeRequest,
    LoopConfig,
    Problem,
    Route,
    ScriptedGenerator,
    StepLoop,
    ThresholdPolicy,
)
from reasoning.errors import UserError
from reasoning.judges import CallableJudge
from reasoning.loop import judge_logprobs
from reasoning.protocols import Judge
from reasoning.types import ChatMessage, Segment
from routers.features import (
    FEATURES,
    LOGPROB_FLOOR,
    feature_vector,
    row_features,
    row_text,
    step_features,
    token_entropy,
)
from routers.labels import balance, class_counts, label, labels, row_advantage
from routers.train import (
    META,
    bootstrap_intervals,
    evaluate,
    heldout_report,
    read_meta,
    roc_auc,
    spearman,
    split_by_problem,
    train_lightweight,
)
from tests.unit.router_rows import synthetic_rows

ROOT = Path(__file__).resolve().parents[2]
LOG = math.log
sklearn = pytest.importorskip("sklearn")


# -- features -------------------------------------------------------------------------------------
def test_step_features_are_exact():
    tops = ({"a": LOG(0.5), "b": LOG(0.25), "c": LOG(0.25)}, {"x": 0.0})
    step = Completion("a x y", (1, 2, 3), FinishReason.STOP, logprobs=(LOG(0.5), 0.0, -math.inf),
                      top_logprobs=tops)
    f = step_features(step, step_index=4, problem_chars=123)
    assert list(f) == list(FEATURES)
    assert f["mean_logprob"] == pytest.approx((LOG(0.5) + 0.0 + LOGPROB_FLOOR) / 3)
    assert f["min_logprob"] == LOGPROB_FLOOR  # -inf floored: features stay finite
    assert f["first_token_entropy"] == pytest.approx(1.5 * LOG(2))  # H(1/2, 1/4, 1/4)
    assert (f["step_tokens"], f["step_index"], f["problem_chars"]) == (3.0, 4.0, 123.0)
    # Only the k best alternatives count, renormalised: k = 2 -> (2/3, 1/3).
    k2 = step_features(step, 4, 123, top_logprobs=2)["first_token_entropy"]
    assert k2 == pytest.approx(-(2 / 3) * LOG(2 / 3) - (1 / 3) * LOG(1 / 3))
    assert token_entropy({"only": -0.1}) == 0.0


def test_an_empty_step_and_missing_logprobs():
    empty = Completion("", (), FinishReason.EOS, logprobs=(), top_logprobs=())
    f = step_features(empty, 0, 5)
    assert (f["mean_logprob"], f["min_logprob"], f["first_token_entropy"], f["step_tokens"]) == (0, 0, 0, 0)
    with pytest.raises(ValueError, match="logprobs"):
        step_features(Completion("a", (1,), FinishReason.STOP), 0, 5)


def test_row_features_follow_the_named_order_and_refuse_gaps():
    row = {"features": {n: float(i) for i, n in enumerate(FEATURES)}}
    assert row_features(row) == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert row_features(row, ["step_index", "mean_logprob"]) == [4.0, 0.0]
    with pytest.raises(ValueError, match="'nope' is missing"):
        feature_vector(row["features"], ["nope"])
    with pytest.raises(ValueError, match="finite"):
        feature_vector({"a": math.nan}, ["a"])


def test_router_text_marks_who_wrote_each_step_and_ends_with_the_draft():
    row = {"question": " 2 + 2? ", "draft_step": "So 5.\n\n",
           "history": [{"source": "target", "text": "Add.\n\n"},
                       {"source": "draft", "text": "Two and two.\n\n"}]}
    assert row_text(row) == ("Problem: 2 + 2?\n\n[target] Add.\n\n[draft] Two and two.\n\n"
                             "[draft step to judge] So 5.")


# -- labels ---------------------------------------------------------------------------------------
ROWS = [  # dyadic scores: every difference is exact
    {"problem_id": "p", "step_index": 0, "draft_score": 0.25, "target_score": 0.75,
     "target_scores": [0.75, 0.25]},
    {"problem_id": "p", "step_index": 1, "draft_score": 0.5, "target_score": 0.5,
     "target_scores": [0.5, 1.0]},
    {"problem_id": "q", "step_index": 0, "draft_score": 0.75, "target_score": 0.5},
    {"problem_id": "q", "step_index": 1, "draft_score": 0.0, "target_score": 0.125},
]


def test_labels_are_advantage_above_the_margin():
    assert [row_advantage(r) for r in ROWS] == [0.5, 0.0, -0.25, 0.125]
    assert labels(ROWS) == [1, 0, 0, 1]
    assert labels(ROWS, margin=0.125) == [1, 0, 0, 0]  # equal to the margin: not above it
    assert labels(ROWS, margin=-0.25) == [1, 1, 0, 1]
    # Averaging the target samples: (0.75 + 0.25) / 2 - 0.25 = 0.25; (0.5 + 1.0) / 2 - 0.5 = 0.25.
    assert [row_advantage(r, average_samples=True) for r in ROWS] == [0.25, 0.25, -0.25, 0.125]
    assert labels(ROWS, margin=0.2, average_samples=True) == [1, 1, 0, 0]
    assert label(0.0) == 0 and label(1e-12) == 1
    with pytest.raises(ValueError, match="lacks 'target_score'"):
        row_advantage({"draft_score": 0.5})


def test_balance_down_samples_the_majority_with_a_seed():
    ys = [0, 1, 0, 0, 0, 1, 0, 0]
    kept = balance(ys, seed=3)
    assert kept == [1, 2, 5, 6]  # both positives, two negatives drawn with random.Random(3)
    assert class_counts([ys[i] for i in kept]) == (2, 2)
    assert kept == balance(ys, seed=3)
    seeds = {tuple(balance(ys, seed=s)) for s in range(20)}
    assert len(seeds) > 1  # the seed picks which majority rows stay
    assert balance([1, 1, 0, 0]) == [0, 1, 2, 3] and balance([1, 1]) == [0, 1]
    assert balance([1, 0, 1, 1], seed=0) == [1, 2]  # the one negative and a positive drawn by the seed


def test_split_is_by_problem():
    rows = [{"problem_id": f"p{i % 7}"} for i in range(40)]
    train, test = split_by_problem(rows, 0.3, seed=2)
    assert sorted(train + test) == list(range(40))
    assert not {rows[i]["problem_id"] for i in train} & {rows[i]["problem_id"] for i in test}
    assert len({rows[i]["problem_id"] for i in test}) == 2  # round(0.3 * 7)
    assert (train, test) == split_by_problem(rows, 0.3, seed=2)


def test_metrics_against_hand_values_and_scipy():
    assert roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9]) == 0.875  # one tie counts half
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(0.9486832980505138)
    scipy_stats = pytest.importorskip("scipy.stats")
    from sklearn.metrics import roc_auc_score

    rng = random.Random(0)
    x = [rng.choice([0.1, 0.2, 0.3, rng.random()]) for _ in range(50)]
    y = [a + rng.gauss(0, 0.2) for a in x]
    ys = [int(b > 0.3) for b in y]
    assert spearman(x, y) == pytest.approx(scipy_stats.spearmanr(x, y).statistic, abs=1e-9)
    assert roc_auc(ys, x) == pytest.approx(roc_auc_score(ys, x), abs=1e-9)
    assert evaluate([], [], []) == {"rows": 0, "positives": 0, "roc_auc": None, "accuracy": None,
                                    "spearman": None}


# -- the lightweight router -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained():
    return train_lightweight(synthetic_rows(), seed=0)


def test_the_lightweight_router_beats_a_constant_on_held_out_problems(trained):
    m = trained.meta
    held = m["heldout"]
    majority = max(held["positives"], held["rows"] - held["positives"]) / held["rows"]
    assert held["roc_auc"] > 0.95  # a constant scores 0.5
    assert held["accuracy"] > majority + 0.2
    assert held["spearman"] > 0.8
    assert m["model"] in ("logistic", "gboost") and set(m["candidates"]) == {"logistic", "gboost"}
    assert m["candidates"][m["model"]]["roc_auc"] == max(c["roc_auc"] for c in m["candidates"].values())
    assert m["train"]["positives"] * 2 == m["train"]["rows"]  # balanced
    assert m["feature_names"] == list(FEATURES) and m["top_logprobs"] == 5
    assert m["cost_ms"]["single_ms"] < 1.0 and m["cost_ms"]["batch64_ms"] < 1.0
    # The router learned the rule's direction: an unsure draft is sent to the target.
    sure, unsure = ([m_, -0.5, 0.5, 10, 1, 40] for m_ in (-0.1, -2.9))
    p_sure, p_unsure = trained.predict([sure, unsure])
    assert p_sure < 0.2 < 0.8 < p_unsure


@pytest.mark.parametrize("name", ["logistic", "gboost"])
def test_predict_matches_scikit_learn(name):
    import numpy as np

    rows = synthetic_rows(problems=20)
    router = train_lightweight(rows, candidates=(name,), test_fraction=0.0)
    X = [row_features(r) for r in rows]
    want = router.model.predict_proba(np.asarray(X))[:, 1]
    assert router.predict(X) == pytest.approx(list(want), abs=1e-12)


def test_training_refuses_test_rows_and_a_single_class():
    rows = synthetic_rows(problems=4)
    rows[0] = dict(rows[0], problem_id="gsm8k-test-0")
    with pytest.raises(UserError, match="train splits only"):
        train_lightweight(rows)
    # MATH-500 ids name no split: the split the rows carry (from the collection config) decides
    rows = [dict(r, split="train") for r in synthetic_rows(problems=4)]
    rows[0] = dict(rows[0], problem_id="math500-3", split="test")
    with pytest.raises(UserError, match="train splits only"):
        train_lightweight(rows)
    same = [dict(r, draft_score=0.5, target_score=0.5) for r in synthetic_rows(problems=4)]
    with pytest.raises(UserError, match="one class only"):
        train_lightweight(same)


class _Column:
    """A stand-in model: P = sigmoid(one feature column); fitting changes nothing."""

    def __init__(self, col: int):
        import numpy as np

        self.col, self.classes_ = col, np.array([0, 1])

    def fit(self, X, y):
        return self

    def predict_proba(self, X):
        import numpy as np

        p = 1 / (1 + np.exp(-np.asarray(X, dtype=float)[:, self.col]))
        return np.c_[1 - p, p]


def trap_rows(problems=40, steps=6, seed=0):
    """Rows where feature 0 predicts the label on the held-out problems only (and the reverse on
    the training ones) and feature 2 the other way round: a held-out winner that loses in CV."""
    rng = random.Random(seed)
    ids = [f"gsm8k-train-{p}" for p in range(problems)]
    _, test = split_by_problem([{"problem_id": pid} for pid in ids], 0.25, seed)
    held = {ids[i] for i in test}
    rows = []
    for pid in ids:
        for i in range(steps):
            y = (i + int(pid.rsplit("-", 1)[1])) % 2
            s = (2 * y - 1) * (1 if pid in held else -1)  # +: predicts y, -: predicts the reverse
            rows.append({"problem_id": pid, "step_index": i, "draft_score": 0.5 - (y - 0.5) / 2,
                         "target_score": 0.5 + (y - 0.5) / 2,
                         "features": {"mean_logprob": s + rng.gauss(0, 0.3), "min_logprob": 0.0,
                                      "first_token_entropy": -s + rng.gauss(0, 0.3), "step_tokens": 5,
                                      "step_index": i, "problem_chars": 10},
                         "top_logprobs": 5})
    return rows, held


def test_the_model_is_chosen_by_grouped_cv_on_train_not_by_the_held_out_split(monkeypatch):
    import routers.train as rt

    monkeypatch.setattr(rt, "_candidate", lambda name, seed: _Column({"logistic": 0, "gboost": 2}[name]))
    seen = []
    real_cv = rt.cross_validate

    def spy(X, ys, groups, *a, **kw):
        seen.append((len(X), {str(g) for g in groups}))
        return real_cv(X, ys, groups, *a, **kw)

    monkeypatch.setattr(rt, "cross_validate", spy)
    rows, held = trap_rows()
    router = train_lightweight(rows, seed=0, test_fraction=0.25, cv_folds=4, bootstrap_resamples=200)
    m = router.meta
    # "logistic" (column 0) would win on the held-out problems: ROC-AUC 1 there against 0.
    # Selection by CV on train picks "gboost" (column 2) and reports its (poor) held-out AUC.
    assert m["model"] == "gboost"
    assert m["candidates"]["gboost"]["roc_auc"] > 0.9 > 0.1 > m["candidates"]["logistic"]["roc_auc"]
    assert m["cv_score"] == m["candidates"]["gboost"]["roc_auc"]
    assert m["heldout"]["roc_auc"] < 0.1
    assert m["selection"]["method"] == "grouped CV, 4 folds on train" and m["selection"]["folds"] == 4
    assert len(m["candidates"]["gboost"]["folds"]) == 4
    # The selection saw every training row, and no held-out problem's.
    train_ids = {r["problem_id"] for r in rows} - held
    assert seen == [(len(rows) - 6 * len(held), train_ids)]
    assert set(m["heldout_problems"]) == held


def test_held_out_problems_are_disjoint_from_train_and_counted(trained):
    m = trained.meta
    rows = synthetic_rows()
    train, test = split_by_problem(rows, 0.25, seed=0)
    train_ids = {rows[i]["problem_id"] for i in train}
    assert set(m["heldout_problems"]) == {rows[i]["problem_id"] for i in test}
    assert not train_ids & set(m["heldout_problems"])
    assert m["split"]["train"] == {"rows": len(train), "problems": len(train_ids)}
    assert m["split"]["heldout"] == {"rows": len(test), "problems": 15} == {
        "rows": m["heldout"]["rows"], "problems": m["heldout"]["problems"]}
    assert m["split"]["train"]["rows"] + m["split"]["heldout"]["rows"] == len(rows)
    assert m["split"]["train_fitted"]["rows"] == m["train"]["rows"] <= len(train)
    assert m["selection"]["method"] == "grouped CV, 5 folds on train" and m["selection"]["data"] == \
        "training split only"
    h = m["heldout"]
    for name in ("roc_auc", "spearman"):
        lo, hi = h[f"{name}_ci"]
        assert lo <= h[name] <= hi
    assert h["bootstrap"]["unit"] == "problem" and h["bootstrap"]["resamples"] == 1000


def test_the_bootstrap_resamples_problems_a_hand_case():
    # Problem a ranks perfectly, problem b backwards. Resampling problems gives {a, a} (AUC 1,
    # Spearman 1), {b, b} (0, -1), or {a, b} (3 of 4 pairs: 0.75; Spearman 2 / sqrt(20)), each
    # {a, a} and {b, b} a quarter of the time: the 95% interval spans [0, 1] and [-1, 1].
    ys, ps, adv = [1, 0, 1, 0], [0.9, 0.1, 0.2, 0.8], [0.5, -0.5, 0.5, -0.5]
    groups = ["a", "a", "b", "b"]
    out = bootstrap_intervals(ys, ps, adv, groups, resamples=2000, seed=0)
    assert out["roc_auc_ci"] == [0.0, 1.0] and out["spearman_ci"] == [-1.0, 1.0]
    from sklearn.metrics import roc_auc_score

    report = heldout_report(ys, ps, adv, groups, resamples=2000, seed=0)
    assert report["roc_auc"] == roc_auc_score(ys, ps) == 0.75
    assert report["spearman"] == pytest.approx(2 / math.sqrt(20))
    assert report["problems"] == 2
    # One problem: nothing to resample.
    one = bootstrap_intervals(ys, ps, adv, ["a"] * 4)
    assert one["roc_auc_ci"] is None and one["spearman_ci"] is None


def test_the_bootstrap_interval_holds_the_point_estimate_and_is_seeded():
    scipy_stats = pytest.importorskip("scipy.stats")
    from sklearn.metrics import roc_auc_score

    rng = random.Random(3)
    ys, ps, adv, groups = [], [], [], []
    for p in range(30):
        for _ in range(rng.randint(1, 8)):
            a = rng.gauss(0, 1)
            ys.append(int(a > 0))
            ps.append(1 / (1 + math.exp(-(a + rng.gauss(0, 1)))))
            adv.append(a)
            groups.append(f"p{p}")
    report = heldout_report(ys, ps, adv, groups, resamples=500, seed=7)
    assert report["roc_auc"] == pytest.approx(roc_auc_score(ys, ps), abs=1e-12)
    assert report["spearman"] == pytest.approx(scipy_stats.spearmanr(ps, adv).statistic, abs=1e-12)
    for name in ("roc_auc", "spearman"):
        lo, hi = report[f"{name}_ci"]
        assert lo < report[name] < hi
    assert report == heldout_report(ys, ps, adv, groups, resamples=500, seed=7)
    assert report["roc_auc_ci"] != heldout_report(ys, ps, adv, groups, resamples=500, seed=8)["roc_auc_ci"]


def jreq(logprob: float, index: int = 1, question: str = "q" * 40, top=None) -> JudgeRequest:
    n = 10
    step = Completion("step", tuple(range(n)), FinishReason.STOP, logprobs=(logprob,) * n,
                      top_logprobs=top if top is not None else ({"a": logprob},) * n)
    return JudgeRequest(Problem("p", question), (), (), step, index)


def test_save_reload_and_score_round_trip(trained, tmp_path):
    from routers.judge import RouterJudge

    folder = trained.save(tmp_path / "router")
    meta = json.loads((folder / META).read_text())
    assert (meta["format"], meta["version"], meta["kind"]) == ("stepspec-router", 1, "lightweight")
    if "linear" in meta:  # a logistic regression: its coefficients, no pickle
        assert "model_file" not in meta and not (folder / "model.joblib").exists()
    else:
        assert (folder / meta["model_file"]).is_file()
    judge = RouterJudge(str(folder))
    assert isinstance(judge, Judge) and judge.needs_logprobs == 5 and judge_logprobs(judge) == 5
    reqs = [jreq(-0.1), jreq(-2.9), jreq(-1.5, index=0)]
    ps = judge.probabilities(reqs)
    want = trained.predict([[step_features(r.step, r.step_index, 40, 5)[n] for n in FEATURES] for r in reqs])
    assert ps == pytest.approx(want, abs=1e-12)
    assert judge.score(reqs) == pytest.approx([1 - p for p in ps], abs=1e-12)
    assert judge.score([]) == []
    # The router.json file names the router as well as its folder.
    assert RouterJudge(str(folder / META)).probabilities(reqs) == ps
    # score = 1 - P: ThresholdPolicy(threshold=1 - tau) escalates exactly when P > tau.
    tau = 0.5
    policy = ThresholdPolicy(threshold=1 - tau)
    from reasoning.protocols import StepContext

    ctx = StepContext(1, 0, 100, 0)
    decisions = [policy.decide(s, ctx).value for s in judge.score(reqs)]
    assert decisions == ["reject" if p > tau else "accept" for p in ps] and "reject" in decisions
    with pytest.raises(ValueError, match="top 5 logprobs"):
        judge.score([JudgeRequest(Problem("p", "q"), (), (),
                                  Completion("a", (1,), FinishReason.STOP, logprobs=(0.0,)), 0)])


def test_a_router_judge_in_the_loop_sends_unsure_drafts_to_the_target(trained, tmp_path):
    from routers.judge import RouterJudge

    judge = RouterJudge(str(trained.save(tmp_path / "r")))
    script = "One step here.\n\nAnother step.\n\nThe answer is \\boxed{1}."
    draft = ScriptedGenerator("draft", {"sure": script, "unsure": script},
                              token_prob={"sure": 0.95, "unsure": 0.05})
    target = ScriptedGenerator("target", {"sure": script, "unsure": script})
    loop = StepLoop(draft, target, judge, ThresholdPolicy(0.5), BlankLineSegmenter(), config=LoopConfig())
    traces = {t.problem_id: t for t in loop.run([Problem("sure", "q" * 40), Problem("unsure", "q" * 40)])}
    assert {s.kept for s in traces["sure"].steps} == {Route.DRAFT}
    assert {s.kept for s in traces["unsure"].steps} == {Route.TARGET}
    assert {r.params.logprobs for r in draft.requests} == {5}  # the k the router was trained with


def test_router_judge_errors_are_one_line(tmp_path):
    from routers.judge import RouterJudge

    # gradient boosting: a router kept as a pickle
    folder = train_lightweight(synthetic_rows(problems=20), candidates=("gboost",)).save(tmp_path / "r")
    meta = json.loads((folder / META).read_text())

    def broken(**change):
        d = tmp_path / f"b{len(list(tmp_path.iterdir()))}"
        d.mkdir()
        (d / "model.joblib").write_bytes((folder / "model.joblib").read_bytes())
        (d / META).write_text(json.dumps({**meta, **change}))
        return str(d)

    cases = [
        (str(tmp_path / "missing"), "no such folder"),
        (str(tmp_path), "no router.json in it"),
        (broken(kind="forest"), "kind 'forest'; expected one of lightweight, seq-classification"),
        (broken(version=2), "format version 2; this stepspec reads version 1"),
        (broken(format="other"), "not a stepspec router"),
        (broken(feature_names=["mean_logprob", "secret"]), "names features"),
        (broken(model_file="gone.joblib"), "model file gone.joblib is missing"),
    ]
    for path, message in cases:
        with pytest.raises(UserError, match=message) as e:
            RouterJudge(path)
        assert "\n" not in str(e.value)
    (Path(broken()) / "model.joblib").write_bytes(b"not a pickle")
    with pytest.raises(UserError, match="does not load"):
        RouterJudge(str(tmp_path / f"b{len(list(tmp_path.iterdir())) - 1}"))
    assert read_meta(folder)[1]["kind"] == "lightweight"


def test_a_logistic_router_is_read_from_its_coefficients_without_the_pickle(tmp_path):
    import numpy as np

    from routers.judge import RouterJudge

    rows = synthetic_rows(problems=20)
    router = train_lightweight(rows, candidates=("logistic",), seed=0)
    folder = router.save(tmp_path / "r")
    meta = json.loads((folder / META).read_text())
    assert set(meta["linear"]) == {"weights", "bias"} and len(meta["linear"]["weights"]) == len(FEATURES)
    assert not (folder / "model.joblib").exists() and "model_file" not in meta  # router.json alone
    judge = RouterJudge(str(folder))
    reqs = [jreq(-0.1), jreq(-2.9), jreq(-1.5, index=0)]
    X = [[step_features(r.step, r.step_index, 40, 5)[n] for n in FEATURES] for r in reqs]
    want = router.model.predict_proba(np.asarray(X))[:, 1]  # scikit-learn, the reference
    assert judge.probabilities(reqs) == pytest.approx(list(want), abs=1e-12)
    for bad in ({"weights": [1.0], "bias": 0.0}, {"weights": [1.0] * len(FEATURES), "bias": "x"},
                {"weights": [float("nan")] * len(FEATURES), "bias": 0.0}, "coefficients"):
        (folder / META).write_text(json.dumps({**meta, "linear": bad}))
        with pytest.raises(UserError, match="linear must hold one finite weight per feature") as e:
            RouterJudge(str(folder))
        assert "\n" not in str(e.value)
    # gradient boosting has no coefficients: it stays a pickle; retrained as a logistic
    # regression into the same folder, the pickle goes
    g = train_lightweight(rows, candidates=("gboost",), seed=0).save(tmp_path / "g")
    assert "linear" not in json.loads((g / META).read_text()) and (g / "model.joblib").is_file()
    router.save(g)
    assert not (g / "model.joblib").exists() and RouterJudge(str(g)).probabilities(reqs) == pytest.approx(
        list(want), abs=1e-12)


def test_the_operating_point_sends_the_asked_share_of_training_steps():
    from routers.train import operating_point

    # scores 1 - P: 0.1, 0.4, 0.8, 0.9 (P = 0.9, 0.6, 0.2, 0.1). Half of them below 0.8: the
    # lowest score kept by the draft is 0.8; a third of 4 steps is 1 step (threshold 0.4); held
    # out, P 0.7 and 0.1 score 0.3 and 0.9: one of the two below 0.8.
    assert operating_point([0.9, 0.6, 0.2, 0.1], 0.5, [0.7, 0.1]) == {
        "threshold": 0.8, "share": 0.5, "requested": 0.5, "steps": 4, "heldout_share": 0.5}
    assert operating_point([0.9, 0.6, 0.2, 0.1], 1 / 3)["threshold"] == 0.4
    assert operating_point([0.9, 0.6, 0.2, 0.1], 0.0)["threshold"] == 0.0
    with pytest.raises(UserError, match="no training step"):
        operating_point([None, None], 0.5)


def test_the_trained_router_records_an_operating_point_from_out_of_fold_scores(tmp_path):
    from routers.judge import RouterJudge

    rows = synthetic_rows(problems=40)
    router = train_lightweight(rows, seed=0)
    op = router.meta["operating_point"]
    held = set(router.meta["heldout_problems"])
    train_rows = [r for r in rows if r["problem_id"] not in held]
    oracle = sum(r["advantage"] > 0 for r in train_rows) / len(train_rows)  # the label's share, by hand
    assert op["requested"] == pytest.approx(oracle) and op["asked"] == "the oracle's share of training steps"
    assert op["from"].startswith("out-of-fold") and op["steps"] == len(train_rows)
    assert op["share"] <= op["requested"] and op["share"] > op["requested"] - 0.05
    # held out: the share of held-out steps the judge (reloaded from disk) sends to the target
    judge = RouterJudge(str(router.save(tmp_path / "r")))
    held_rows = [r for r in rows if r["problem_id"] in held]
    X = [[r["features"][n] for n in FEATURES] for r in held_rows]
    scores = [min(1.0, max(0.0, 1.0 - p)) for p in judge._router.predict(X)]
    assert op["heldout_share"] == pytest.approx(sum(s < op["threshold"] for s in scores) / len(scores))
    assert train_lightweight(rows, seed=0, target_share=None).meta.get("operating_point") is None
    assert train_lightweight(rows, seed=0, target_share=0.2).meta["operating_point"]["requested"] == 0.2
    for bad, what in ((1.5, "target_share"), ("most", "target_share"), (("tree",), "candidates")):
        kw = {"candidates": bad} if what == "candidates" else {"target_share": bad}
        with pytest.raises(UserError, match=what):
            train_lightweight(rows, **kw)


def test_a_relative_router_path_is_found_from_any_directory(trained, tmp_path, monkeypatch):
    import routers.saved as saved
    from routers.judge import RouterJudge

    root = tmp_path / "project"
    trained.save(root / "routers" / "trained" / "r")
    monkeypatch.setattr(saved, "PROJECT_ROOT", root)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert RouterJudge("routers/trained/r").path == str(root / "routers" / "trained" / "r")
    # a folder of that name in the working directory comes first
    trained.save(elsewhere / "routers" / "trained" / "r")
    assert RouterJudge("routers/trained/r").path == "routers/trained/r"
    with pytest.raises(UserError, match="'routers/trained/none': no such folder"):
        RouterJudge("routers/trained/none")


def test_train_router_cli_writes_a_router(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    rows = synthetic_rows(problems=30)
    (data / "steps.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "router"
    p = subprocess.run([sys.executable, "-m", "recipes.train_router", str(data), "--out", str(out)], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "held-out ROC-AUC" in p.stdout and "ms per decision" in p.stdout and "CV ROC-AUC" in p.stdout
    kept = sum(r["target_score"] <= r["draft_score"] for r in rows) / len(rows)  # the oracle's keep share
    assert f"keeps the draft's step at {kept:.1%} of {len(rows)} rows" in p.stdout
    meta = read_meta(out)[1]
    assert meta["data"] == [str(data)] and meta["selection"]["method"] == "grouped CV, 5 folds on train"
    assert len(meta["heldout"]["roc_auc_ci"]) == 2 and meta["split"]["heldout"]["problems"] == 8
    op = meta["operating_point"]
    assert f"operating point: policy.threshold={op['threshold']:.6g} sends {op['share']:.1%}" in p.stdout
    assert f"judge.path={out} policy.threshold={op['threshold']:.6g}" in p.stdout
    p = subprocess.run([sys.executable, "-m", "recipes.train_router", str(data), "--out", str(out),
                        "--target-share", "lots"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "--target-share must be a number in [0, 1]" in p.stderr
    p = subprocess.run([sys.executable, "-m", "recipes.train_router", str(tmp_path / "nothing"), "--out",
                        str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and "no router data" in p.stderr


# -- the live oracle ------------------------------------------------------------------------------
CHAT = (ChatMessage("user", "2 + 2?"),)


def oreq(text: str, index: int = 0, pid: str = "p") -> JudgeRequest:
    return JudgeRequest(Problem(pid, "2 + 2?"), CHAT, (Segment("Add.\n\n", "draft"),),
                        Completion(text, (1,), FinishReason.STOP, logprobs=(0.0,)), index)


def test_the_oracle_keeps_the_draft_unless_the_target_is_better_by_more_than_tau():
    from routers.judge import OracleJudge

    target = ScriptedGenerator("target", {"p": "Add.\n\n2 + 2 = 4.\n\n", "r": "Add.\n\n2 + 2 = 4.\n\n"})
    table = {"2 + 2 = 4.\n\n": 1.0, "2 + 2 = 5.\n\n": 0.0, "Four-ish.\n\n": 0.75}
    calls = []
    reward = CallableJudge(lambda r: calls.append(r.step.text) or table[r.step.text])
    judge = OracleJudge(target, reward, tau=0.25, stop=["\n\n"], max_step_tokens=16)
    reqs = [oreq("2 + 2 = 5.\n\n"), oreq("Four-ish.\n\n", pid="r"), oreq("2 + 2 = 4.\n\n", 1)]
    assert judge.score(reqs) == [0.0, 1.0, 1.0]  # advantages 1.0, 0.25 (not > 0.25), 0.0
    assert judge.last == [(0.0, 1.0), (0.75, 1.0), (1.0, 1.0)]
    # One target call for the batch, from each step's own prefix, with the step's stop and limit.
    assert target.batch_sizes == [3]
    assert {(r.prefix_text, r.params.max_tokens, r.params.stop, r.params.temperature)
            for r in target.requests} == {("Add.\n\n", 16, ("\n\n",), 0.0)}
    # The third draft is the target's own step: not scored, kept.
    assert calls == ["2 + 2 = 5.\n\n", "Four-ish.\n\n"] + ["2 + 2 = 4.\n\n"] * 2
    assert OracleJudge(target, reward, tau=0.0).score(reqs[1:2]) == [0.0]


def test_the_oracle_config_hands_the_target_to_its_nested_reward():
    from hydra import compose, initialize_config_dir

    from recipes._cli import CONF_DIR, bind_judge, instantiate
    from rewards.target_judge import TargetJudge
    from routers.judge import OracleJudge

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="evaluate", overrides=["recipe=oracle"])
    partial = instantiate(cfg.judge, "judge")
    assert isinstance(partial, functools.partial)
    target, draft = ScriptedGenerator("target", {}), ScriptedGenerator("draft", {})
    judge = bind_judge(partial, target, draft)
    assert isinstance(judge, OracleJudge) and judge.generator is target and judge.draft is draft
    assert isinstance(judge.reward, TargetJudge) and judge.reward.generator is target
    assert (judge.stop, judge.max_step_tokens, judge.tau) == (("\n\n",), 192, 0.0)
    assert judge.needs_logprobs is None  # the target as judge reads text only


def test_the_arbitrage_preset_runs_the_router_that_ships_at_its_operating_point(tmp_path, monkeypatch):
    from hydra import compose, initialize_config_dir

    from recipes._cli import CONF_DIR
    from routers.judge import RouterJudge

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="evaluate", overrides=["recipe=arbitrage"])
    assert cfg.judge._target_ == "routers.judge.RouterJudge"
    assert cfg.judge.path == "routers/trained/gsm8k-outcome-qwen-llamacpp"
    assert cfg.draft.model == "qwen2.5-coder-0.5b" and cfg.target.model == "qwen2.5-coder-1.5b"
    assert "llamacpp" in cfg.draft._target_.lower() and cfg.dataset.split == "test"
    # the committed router, from another directory: no pickle, trained on train problems only
    monkeypatch.chdir(tmp_path)
    judge = RouterJudge(cfg.judge.path)
    meta = judge.meta
    assert "linear" in meta or (Path(judge.path) / meta["model_file"]).is_file()
    assert all(str(d).startswith("routers/data/gsm8k-train-") for d in meta["data"])
    assert all(p.startswith("gsm8k-train-") for p in meta["heldout_problems"])
    # the preset's threshold is the router's operating point, to the digits the yaml keeps
    op = meta["operating_point"]
    assert cfg.policy.threshold == pytest.approx(op["threshold"], abs=5e-7)
    assert op["asked"] == "the oracle's share of training steps" and op["from"].startswith("out-of-fold")
    sure, unsure = jreq(-0.05), jreq(-2.5)
    assert 0.0 <= judge.probabilities([sure])[0] <= 1.0 and judge.needs_logprobs == meta["top_logprobs"]
    assert len(judge.score([sure, unsure])) == 2


# -- the sequence-classification router -----------------------------------------------------------
def tiny_model(folder: Path, texts: list[str]) -> Path:
    """A randomly initialised one-layer Llama and a word-level tokenizer, saved like a hub model."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=["[UNK]", "[PAD]"]))
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]")
    cfg = LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=16, intermediate_size=32,
                      num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                      max_position_embeddings=256, pad_token_id=hf_tok.pad_token_id)
    LlamaForCausalLM(cfg).save_pretrained(folder)
    hf_tok.save_pretrained(folder)
    return folder


def test_a_seq_classification_router_trains_and_reloads(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("tokenizers")
    from routers.judge import RouterJudge
    from routers.train import train_seq_router

    rows = synthetic_rows(problems=8, steps=4)
    for r in rows:  # the text carries the rule: unsure drafts say "maybe"
        r["draft_step"] = "maybe 5" if r["advantage"] > 0 else "surely 4"
        r["history"] = [{"source": "target", "text": "Add them."}]
    base = tiny_model(tmp_path / "base", [row_text(r) for r in rows])
    meta = train_seq_router(rows, str(base), tmp_path / "router", max_steps=3, batch_size=4, max_length=64,
                            lr=1e-3, test_fraction=0.25, seed=0)
    assert (meta["kind"], meta["version"], meta["steps"]) == ("seq-classification", 1, 3)
    assert math.isfinite(meta["last_loss"]) and meta["heldout"]["rows"] == 8
    assert meta["heldout"]["roc_auc"] is not None
    judge = RouterJudge(str(tmp_path / "router"))
    assert judge.kind == "seq-classification" and judge.needs_logprobs is False
    prefix = (Segment("Add them.", "target"),)
    reqs = [JudgeRequest(Problem("p", "q"), (), prefix, Completion(t, (1,), FinishReason.STOP), 1)
            for t in ("maybe 5", "surely 4")]
    scores = judge.score(reqs)
    assert all(0.0 <= s <= 1.0 for s in scores) and scores[0] != scores[1]
    assert RouterJudge(str(tmp_path / "router")).score(reqs) == scores  # reloads the same weights


def test_a_router_retrained_into_the_same_folder_has_a_new_cache_identity(trained, tmp_path):
    """The step cache keys a judge by its config, whose path stays the same when a router is
    retrained into its folder: the router's files must enter the key, or the old router's
    scores come back (this happened: an arbitrage run got 179 scores of the replaced router)."""
    from omegaconf import OmegaConf

    from reasoning.cache import StepCache
    from recipes._runs import wrap_with_cache
    from routers.judge import RouterJudge

    folder = trained.save(tmp_path / "router")
    first = RouterJudge(str(folder)).cache_identity
    assert RouterJudge(str(folder)).cache_identity == first  # the same files, the same identity
    train_lightweight(synthetic_rows(seed=1), seed=1).save(folder)
    assert RouterJudge(str(folder)).cache_identity != first
    # and the cache's judge id takes it in
    cfg = OmegaConf.create({"cache": {"path": str(tmp_path / "c.sqlite")}, "draft": {"model": "d"},
                            "target": {"model": "t"},
                            "judge": {"_target_": "routers.judge.RouterJudge", "path": str(folder)}})
    store = StepCache(tmp_path / "c.sqlite")
    d, t = ScriptedGenerator("draft", {}), ScriptedGenerator("target", {})
    ids = [wrap_with_cache(cfg, d, t, RouterJudge(str(folder)), False, store=store)[3].judge_id]
    train_lightweight(synthetic_rows(seed=2), seed=2).save(folder)
    ids.append(wrap_with_cache(cfg, d, t, RouterJudge(str(folder)), False, store=store)[3].judge_id)
    store.close()
    assert ids[0] != ids[1]
