"""Reference runs: the smoke preset's traces, field by field, as the code wrote them before the
step engine, the model group and the file splits of issue 15 (commit 6e679ab).

tests/reference/*.jsonl are those traces with every timing field left out (they vary from run to
run). A refactor must leave every recorded field as it was; a field added later is allowed, a
field changed or dropped is not. When a change is *meant* to alter what the smoke run writes,
regenerate the files (the run below, timing fields stripped) and say why in the commit.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
REF = ROOT / "tests" / "reference"
TIMING = ("seconds", "wall", "time", "_s")


def _strip(x):
    if isinstance(x, dict):
        return {k: _strip(v) for k, v in x.items() if not any(t in k for t in TIMING)}
    if isinstance(x, list):
        return [_strip(v) for v in x]
    return x


def _traces(path: Path) -> dict[str, dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {r["problem_id"]: r for r in rows}


def _same_where_recorded(ref, new, where: str) -> list[str]:
    """Where ``new`` differs from ``ref`` on a field ``ref`` has (new fields are allowed)."""
    if isinstance(ref, dict):
        if not isinstance(new, dict):
            return [f"{where}: {new!r} is not a mapping"]
        out = []
        for k, v in ref.items():
            if k not in new:
                out.append(f"{where}.{k}: dropped")
            else:
                out += _same_where_recorded(v, new[k], f"{where}.{k}")
        return out
    if isinstance(ref, list):
        if not isinstance(new, list) or len(new) != len(ref):
            return [f"{where}: {len(ref)} items before, {new!r:.80}"]
        return [d for i, (a, b) in enumerate(zip(ref, new))
                for d in _same_where_recorded(a, b, f"{where}[{i}]")]
    return [] if ref == new else [f"{where}: {ref!r:.60} before, {new!r:.60} now"]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke") / "run"
    p = subprocess.run([sys.executable, "-m", "recipes.evaluate", "recipe=smoke", f"hydra.run.dir={out}",
                        "progress=false"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    return out


@pytest.mark.parametrize("ref,run", [("smoke.jsonl", "traces.jsonl"),
                                     ("smoke-target-only.jsonl", "baseline-target-only/traces.jsonl")])
def test_the_smoke_run_writes_the_traces_it_wrote_before_the_refactor(smoke_run, ref, run):
    before, now = _traces(REF / ref), _traces(smoke_run / run)
    assert sorted(now) == sorted(before)
    diffs = [d for pid in before for d in _same_where_recorded(before[pid], _strip(now[pid]), pid)]
    assert not diffs, "\n".join(diffs[:20])


def test_the_comparison_catches_a_changed_step():
    before = {"steps": [{"text": "a", "kept": "draft"}], "correct": True}
    assert _same_where_recorded(before, {"steps": [{"text": "a", "kept": "draft", "rule": None}],
                                         "correct": True}, "p") == []
    assert _same_where_recorded(before, {"steps": [{"text": "b", "kept": "draft"}], "correct": True},
                                "p") == ["p.steps[0].text: 'a' before, 'b' now"]
    assert _same_where_recorded(before, {"steps": [], "correct": True}, "p")[0].startswith("p.steps: 1 items")
    assert _same_where_recorded(before, {"steps": before["steps"]}, "p") == ["p.correct: dropped"]
