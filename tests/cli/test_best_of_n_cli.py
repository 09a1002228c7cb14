"""`python -m recipes.evaluate recipe=smoke judge=best-of-n` in a subprocess, on the scripted
models: the config builds the wrapper around the confidence judge, every drafted step records its
4 candidates, and the draft-only baseline beside it writes one greedy draft per step."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_best_of_n_records_every_candidate_and_the_draft_only_baseline_one_draft(tmp_path):
    out = tmp_path / "run"
    p = subprocess.run([sys.executable, "-m", "recipes.evaluate", "recipe=smoke", "judge=best-of-n",
                        "baseline=draft-only", "progress=false", f"hydra.run.dir={out}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stderr
    steps = [s for r in rows(out / "traces.jsonl") for s in r["steps"]]
    assert steps and all(len(s["candidates"]) == 4 for s in steps)
    # the scripted draft writes its script for a sampled request too: 4 equal candidates, the
    # first kept (the confidence judge gives each 1.0), and the step's draft tokens are all four's
    for s in steps:
        texts = {c["text"] for c in s["candidates"]}
        assert texts == {s["draft_text"]} and s["best_candidate"] == 0 and s["kept"] == "draft"
        assert s["draft_tokens"] == 4 * s["candidates"][0]["tokens"]
    summary = json.loads((out / "summary.json").read_text())
    kept = sum(s["candidates"][0]["tokens"] for s in steps)
    assert summary["cost"]["wasted_draft_tokens"] == 3 * kept and summary["kept_tokens"] == kept
    base = [s for r in rows(out / "baseline-draft-only" / "traces.jsonl") for s in r["steps"]]
    assert base and all(s["candidates"] is None for s in base)
    assert [s["draft_text"] for s in base] == [s["draft_text"] for s in steps]  # the same greedy draft
