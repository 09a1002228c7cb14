"""`python -m recipes.evaluate` in a subprocess, as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "recipes.evaluate", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def test_smoke_writes_traces_config_and_summary(tmp_path):
    out = tmp_path / "run"
    p = run("recipe=smoke", f"hydra.run.dir={out}", "progress=false")
    assert p.returncode == 0, p.stderr
    for name in ("traces.jsonl", "config.yaml", "summary.json"):
        assert (out / name).is_file(), name
        assert (out / "baseline-target-only" / name).is_file(), name
    rows = [json.loads(x) for x in (out / "traces.jsonl").read_text().splitlines()]
    assert [r["problem_id"] for r in rows] == ["gsm8k-test-0", "gsm8k-test-1", "gsm8k-test-2"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["problems"] == 3 and summary["correct"] == sum(r["correct"] for r in rows)
    assert list(summary["baselines"]) == ["target-only"]
    base = json.loads((out / "baseline-target-only" / "summary.json").read_text())
    assert summary["baselines"]["target-only"]["accuracy"] == base["accuracy"]
    # the headline: target-only's engine seconds over the run's, and the paired difference
    engine = sum(summary["seconds"].values())
    assert summary["speedup_vs_target_only"] == pytest.approx(sum(base["seconds"].values()) / engine)
    assert summary["paired_vs_target_only"]["shared"] == 3
    assert "threshold: 0.5" in (out / "config.yaml").read_text()
    assert "smoke" in p.stdout and "target-only" in p.stdout and "speed-up" in p.stdout


def test_both_baselines_give_the_mixing_line_and_a_picture(tmp_path):
    out = tmp_path / "run"
    p = run("recipe=smoke", f"hydra.run.dir={out}", "progress=false", "baseline=[target-only,draft-only]")
    assert p.returncode == 0, p.stderr
    assert (out / "baseline-draft-only" / "summary.json").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mixing_accuracy"] is not None or summary["above_mixing_line"] is None
    assert "mixing line" in p.stdout and "vs target-only" in p.stdout and "engine" in p.stdout
    assert (out / "compare.png").read_bytes()[:4] == b"\x89PNG"
    # the ceiling of routing whole problems, from the baselines' traces: each problem's cheaper
    # baseline that does not lose it
    def per_problem(b):
        return {t["problem_id"]: (t["correct"], sum(st.get("draft_seconds", 0) + st.get("target_seconds", 0)
                                                     for st in t["steps"]))
                for t in map(json.loads, (out / f"baseline-{b}" / "traces.jsonl").read_text().splitlines())}
    t, d = per_problem("target-only"), per_problem("draft-only")
    safe = [i for i in t if d[i][0] or not t[i][0]]  # the draft loses nothing there
    to_draft = [i for i in safe if d[i][1] <= t[i][1] or (d[i][0] and not t[i][0])]
    o = summary["problem_oracle"]
    assert (o["shared"], o["to_draft"]) == (3, len(to_draft))
    assert o["correct_target_only"] == sum(x[0] for x in t.values())
    assert o["seconds"] == pytest.approx(sum(d[i][1] if i in to_draft else t[i][1] for i in t))
    assert "ceiling, routing whole problems" in p.stdout
    for b in ("target-only", "draft-only"):
        assert json.loads((out / f"baseline-{b}" / "summary.json").read_text())["engine_caches"]


def test_smoke_rerun_into_the_same_folder_resumes(tmp_path):
    out = tmp_path / "run"
    assert run("recipe=smoke", f"hydra.run.dir={out}", "progress=false", "baseline=null").returncode == 0
    lines = (out / "traces.jsonl").read_text().splitlines()
    p = run("recipe=smoke", f"hydra.run.dir={out}", "progress=false", "baseline=null")
    assert p.returncode == 0, p.stderr
    assert (out / "traces.jsonl").read_text().splitlines() == lines


@pytest.mark.parametrize("args,needle", [
    (["recipe=smok"], "unknown recipe 'smok'"),
    (["recipe=smoke", "judge=prmm"], "unknown judge 'prmm'"),
    (["recipe=smoke", "policy.threshold=1.5"], "policy.threshold must be in [0, 1]"),
    (["recipe=smoke", "policy.thresold=0.5"], "policy.thresold"),
    (["recipe=smoke", "dataset.path=/no/such/file.jsonl"], "/no/such/file.jsonl"),
])
def test_user_mistakes_exit_nonzero_with_one_line(args, needle, tmp_path):
    p = run(*args, f"hydra.run.dir={tmp_path / 'r'}", "progress=false", timeout=60)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert needle in lines[0] and "Traceback" not in p.stderr


def test_unknown_preset_lists_the_ones_that_exist(tmp_path):
    p = run("recipe=nope", f"hydra.run.dir={tmp_path}")
    assert p.returncode == 2
    for name in ("cpu-demo", "smoke", "target-only", "draft-only"):
        assert name in p.stderr
