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
