"""A Hydra multirun sweep with the step cache, then `recipes.compare` on the sweep folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(module: str, *args, timeout=180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def test_a_cached_threshold_sweep_writes_a_folder_per_job_and_reuses_steps(tmp_path):
    sweep, cache = tmp_path / "sweep", tmp_path / "c.sqlite"
    p = run("recipes.evaluate", "-m", "recipe=smoke", "policy.threshold=0.3,0.9", f"cache.path={cache}",
            f"hydra.sweep.dir={sweep}", "progress=false", "baseline=null")
    assert p.returncode == 0, p.stderr
    jobs = sorted(d for d in sweep.iterdir() if d.is_dir())
    assert [d.name for d in jobs] == ["0", "1"]
    summaries = [json.loads((d / "summary.json").read_text()) for d in jobs]
    assert ["threshold: 0.3" in (d / "config.yaml").read_text() for d in jobs] == [True, False]
    assert "threshold: 0.9" in (jobs[1] / "config.yaml").read_text()
    # The cache's path changes no result: it stays out of the saved config (a rerun without it resumes).
    assert not any(ln.startswith("cache:") for ln in (jobs[0] / "config.yaml").read_text().splitlines())
    first, second = summaries
    assert first["cache_hits"] == 0 and first["cache_misses"] > 0
    assert set(first["cache"]) == {"draft", "target", "judge"}
    # Both thresholds decide every smoke step alike, so the second job computes nothing.
    assert second["cache_hits"] == first["cache_misses"] and second["cache_misses"] == 0
    assert second["cache"]["draft"]["hits"] == first["cache"]["draft"]["misses"]
    assert second["load_seconds"] == {}  # no model was built
    for key in ("accuracy", "steps", "target_steps", "tokens", "stop_reasons"):
        assert first[key] == second[key], key

    out = tmp_path / "report"
    c = run("recipes.compare", sweep, "--out", out)
    assert c.returncode == 0, c.stderr
    md = (out / "compare.md").read_text()
    assert "smoke policy.threshold=0.3" in md and "smoke policy.threshold=0.9" in md
    assert "came from the step cache" in md  # the second job's timing is flagged
    assert (out / "compare.png").is_file() and (out / "compare.svg").is_file()


def test_a_corrupted_cache_file_stops_the_run_with_one_line(tmp_path):
    bad = tmp_path / "c.sqlite"
    bad.write_bytes(b"definitely not sqlite\n" * 200)
    p = run("recipes.evaluate", "recipe=smoke", f"cache.path={bad}", f"hydra.run.dir={tmp_path / 'r'}",
            "progress=false", "baseline=null")
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and "Traceback" not in p.stderr
