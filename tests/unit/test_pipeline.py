"""The Pipeline facade: grading, files, resume."""

from __future__ import annotations

import json

from reasoning import AlwaysTarget, ConstantJudge, Pipeline, Problem, ScriptedGenerator, ThresholdPolicy
from reasoning.traces import read_traces

SOL = {f"p{i}": f"{i} + {i} = {2 * i}.\n\nThe answer is \\boxed{{{2 * i}}}." for i in range(6)}
PROBLEMS = [Problem(f"p{i}", f"What is {i} + {i}?", str(2 * i)) for i in range(6)]


def pipe(draft_sol=SOL, target_sol=SOL, **kw):
    return Pipeline(draft=ScriptedGenerator("draft", draft_sol),
                    target=ScriptedGenerator("target", target_sol),
                    judge=ConstantJudge(0.9), policy=ThresholdPolicy(0.5), **kw)


def test_run_writes_traces_summary_and_config(tmp_path):
    res = pipe().run(PROBLEMS, out_dir=tmp_path, config={"a": 1})
    assert res.summary["accuracy"] == 1.0 and res.summary["problems"] == 6
    assert {p.name for p in tmp_path.iterdir()} >= {"traces.jsonl", "summary.json", "config.yaml"}
    assert json.loads((tmp_path / "summary.json").read_text())["correct"] == 6
    assert (tmp_path / "config.yaml").read_text().strip() == "a: 1"


def test_wrong_answers_are_graded_wrong():
    bad = {k: v.replace("boxed{", "boxed{1") for k, v in SOL.items()}
    res = pipe(draft_sol=bad).run(PROBLEMS)
    assert res.summary["correct"] == 0
    assert all(t.grade_note == "wrong" for t in res.traces)


def test_resume_skips_finished_problems_and_recomputes_the_summary(tmp_path):
    first = pipe().run(PROBLEMS[:4], out_dir=tmp_path)
    assert first.summary["problems"] == 4
    p = pipe()
    second = p.run(PROBLEMS, out_dir=tmp_path)
    assert p.draft.calls > 0
    asked = {r.problem_id for r in p.draft.requests}
    assert asked == {"p4", "p5"}
    assert second.summary["problems"] == 6
    assert [t.problem_id for t in read_traces(tmp_path / "traces.jsonl")] == [f"p{i}" for i in range(6)]


def test_target_only_baseline_shares_the_models():
    p = pipe()
    base = p.target_only()
    assert base.draft is p.draft and base.target is p.target and isinstance(base.policy, AlwaysTarget)
    res = base.run(PROBLEMS[:2])
    assert res.summary["target_step_share"] == 1.0 and p.draft.calls == 0


def test_resume_runs_errored_problems_again_and_counts_each_problem_once(tmp_path):
    missing = {k: v for k, v in SOL.items() if k != "p1"}  # no script for p1: its trace is an error
    first = pipe(draft_sol=missing, target_sol=missing).run(PROBLEMS[:3], out_dir=tmp_path)
    assert first.summary["errors"] == 1 and first.summary["correct"] == 2
    p = pipe()
    second = p.run(PROBLEMS[:3], out_dir=tmp_path)
    assert {r.problem_id for r in p.draft.requests} == {"p1"}  # the error is retried, nothing else
    # three problems, each once, by its latest trace: p1's new one supersedes its error line
    s = second.summary
    assert (s["problems"], s["errors"], s["correct"], s["graded"]) == (3, 0, 3, 3)
    assert sorted(t.problem_id for t in second.traces) == ["p0", "p1", "p2"]
    assert json.loads((tmp_path / "summary.json").read_text())["problems"] == 3
    lines = read_traces(tmp_path / "traces.jsonl")
    # the first call's three lines stay as they were (p1's an error), the rerun's is appended
    assert sorted((t.problem_id, t.error is None) for t in lines[:3]) == [
        ("p0", True), ("p1", False), ("p2", True)]
    assert len(lines) == 4 and (lines[3].problem_id, lines[3].error) == ("p1", None)
    assert s["wall_seconds"] is not None  # both calls recorded: 3 lines, then 1
    p3 = pipe()
    third = p3.run(PROBLEMS[:3], out_dir=tmp_path)
    assert p3.draft.requests == [] and third.summary["problems"] == 3 and third.summary["errors"] == 0


def test_an_error_of_a_problem_not_asked_for_again_still_counts(tmp_path):
    missing = {k: v for k, v in SOL.items() if k != "p1"}
    pipe(draft_sol=missing, target_sol=missing).run(PROBLEMS[:2], out_dir=tmp_path)
    s = pipe().run(PROBLEMS[:1], out_dir=tmp_path).summary  # p1 not among this call's problems
    assert (s["problems"], s["errors"]) == (2, 1)
