"""`python -m recipes.evaluate recipe=smoke judge=cascade|self-verify` in a subprocess, on the
scripted models, with outcomes known by hand; bad bands refused in one line."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "recipes.evaluate", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def steps(out: Path) -> dict[str, list[tuple[float, str]]]:
    rows = [json.loads(x) for x in (out / "traces.jsonl").read_text().splitlines()]
    return {r["problem_id"]: [(s["score"], s["kept"]) for s in r["steps"]] for r in rows}


def no_digit_warnings(out: Path) -> list[tuple[str, str]]:
    """(model asked, request id) of each judge call whose top tokens held no digit (the scripted
    models answer a judge call with their script's first word: the judge scores it 0)."""
    log = (out / "evaluate.log").read_text()
    return re.findall(r"no digit among (\w+)'s top 20 tokens for (\S+) ", log)


def test_cascade_confidence_decides_when_sure_and_the_target_judges_the_rest(tmp_path):
    # The draft's confidence is its token probability: 0.95 on problem 0 (>= 0.9: kept, decided by
    # the draft), 0.8 on problem 1 (inside [0.5, 0.9): the target rates it, and the scripted target
    # gives no digit: 0, rejected), 0.3 on problem 2 (< 0.5: decided, rejected at smoke's 0.5).
    out = tmp_path / "run"
    p = run("recipe=smoke", "judge=cascade", "baseline=null", "progress=false", f"hydra.run.dir={out}",
            "draft.token_prob={gsm8k-test-0:0.95,gsm8k-test-1:0.8,gsm8k-test-2:0.3}")
    assert p.returncode == 0, p.stderr
    got = steps(out)
    assert got["gsm8k-test-0"] == [(0.95, "draft")] * 3
    assert got["gsm8k-test-1"] == [(0.0, "target")] * 3
    assert got["gsm8k-test-2"] == [(0.3, "target")] * 3
    # the target was asked as judge about problem 1's three steps and nothing else
    assert no_digit_warnings(out) == [("target", f"gsm8k-test-1/{i}/judge") for i in range(3)]
    # each step's record says which stage decided it, and the summary counts them
    rows = {r["problem_id"]: r for r in map(json.loads, (out / "traces.jsonl").read_text().splitlines())}
    assert [[s["judge_info"] for s in rows[f"gsm8k-test-{i}"]["steps"]] for i in range(3)] == [
        [{"decided_by": 0, "stage_scores": [0.95]}] * 3,
        [{"decided_by": 1, "stage_scores": [0.8, 0.0]}] * 3,
        [{"decided_by": 0, "stage_scores": [0.3]}] * 3]
    assert json.loads((out / "summary.json").read_text())["judge_decided_by"] == {"0": 6, "1": 3}


def test_self_verify_asks_the_draft_and_its_confident_verdicts_decide(tmp_path):
    # The scripted draft rates every step 0 (no digit: its script's first word): a confident
    # "wrong" (< 0.334), so the target rewrites every step and is never asked as judge.
    out = tmp_path / "run"
    p = run("recipe=smoke", "judge=self-verify", "baseline=null", "progress=false", f"hydra.run.dir={out}")
    assert p.returncode == 0, p.stderr
    got = steps(out)
    assert got == {f"gsm8k-test-{i}": [(0.0, "target")] * 3 for i in range(3)}
    asked = no_digit_warnings(out)
    assert sorted(asked) == sorted(("draft", f"gsm8k-test-{i}/{j}/judge") for i in range(3) for j in range(3))
    # with the draft's band widened to everything, every step goes on to the target as judge
    out = tmp_path / "wide"
    p = run("recipe=smoke", "judge=self-verify", "judge.stages.0.low=0", "judge.stages.0.high=1",
            "baseline=null", "progress=false", f"hydra.run.dir={out}")
    assert p.returncode == 0, p.stderr
    asked = no_digit_warnings(out)
    assert sorted(m for m, _ in asked) == ["draft"] * 9 + ["target"] * 9
    assert "low: 0" in (out / "config.yaml").read_text()


@pytest.mark.parametrize("args,needle", [
    (["judge=cascade", "judge.stages.0.low=1.5"], "judge.stages.0.low must be a number in [0, 1], got 1.5"),
    (["judge=self-verify", "judge.stages.0.high=0.2"], "judge.stages.0: low (0.334) must be <= high (0.2)"),
    (["judge=cascade", "judge.stages=[]"], "judge.stages must list at least one stage"),
    (["judge=self-verify", "judge.stages.0.judge.judge_with=both"],
     "judge_with must be one of target, draft"),
])
def test_bad_bands_exit_2_with_one_line(args, needle, tmp_path):
    p = run("recipe=smoke", *args, "progress=false", f"hydra.run.dir={tmp_path / 'r'}", timeout=60)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert needle in lines[0] and "Traceback" not in p.stderr
