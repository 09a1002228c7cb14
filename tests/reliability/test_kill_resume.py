"""SIGKILL a run at random points, resume it, and get exactly the uninterrupted run's traces.

No problem lost, none duplicated, no torn line parsed. Also: SIGTERM and Ctrl-C stop a run
cleanly with a one-line message, and a generator that fails on some problems fails only
those, with the exit status saying so.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reasoning.traces import read_traces

ROOT = Path(__file__).resolve().parents[2]
# 40 GSM8K test problems; the scripted draft writes the same 3 steps for the ones it has no
# script for, slowly (2 ms a token), so a run lasts a few seconds and can be killed mid-way.
SLOW = ["recipe=smoke", "dataset.limit=40", "baseline=null", "progress=false",
        "draft.seconds_per_token=0.004", "target.seconds_per_token=0.004",
        "loop.max_in_flight=4"]
TIMING = {"seconds", "latency_seconds", "draft_seconds", "judge_seconds", "target_seconds"}


def cmd(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "recipes.evaluate", *SLOW, *extra, f"hydra.run.dir={out}"]


def comparable(path: Path) -> list[dict]:
    """Trace dicts without timings, in problem order."""
    rows = []
    for t in read_traces(path):
        d = t.to_dict()
        for k in TIMING:
            d.pop(k, None)
        for s in d["steps"]:
            for k in TIMING:
                s.pop(k, None)
        rows.append(d)
    return sorted(rows, key=lambda d: int(d["problem_id"].rsplit("-", 1)[1]))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("ref") / "run"
    p = subprocess.run(cmd(out), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    rows = comparable(out / "traces.jsonl")
    assert len(rows) == 40
    return rows


def whole_lines(path: Path) -> bytes:
    """The file's bytes up to its last newline: its whole trace lines, a torn tail left out."""
    data = path.read_bytes() if path.exists() else b""
    return data[:data.rfind(b"\n") + 1]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_sigkill_then_resume_equals_an_uninterrupted_run(seed, reference, tmp_path):
    rng = random.Random(seed)
    out = tmp_path / "run"
    traces = out / "traces.jsonl"
    kills = 0
    for _attempt in range(3):
        # kill once the run has written a few more whole lines than it started with (waiting for
        # lines, not for a time: a loaded machine may start the run late)
        want = whole_lines(traces).count(b"\n") + rng.randint(1, 6)
        proc = subprocess.Popen(cmd(out), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while (proc.poll() is None and time.monotonic() < deadline
               and whole_lines(traces).count(b"\n") < want):
            time.sleep(0.02)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(timeout=60)
        # Simulate a crash in the middle of a write as well: a torn last line.
        if traces.exists() and rng.random() < 0.5:
            with open(traces, "a") as f:
                f.write('{"problem_id": "gsm8k-test-39", "question": "torn')
    assert kills >= 1, "the run finished before it could be killed: make it slower"
    # the killed runs left a partial file, which the resumed run must complete, not redo
    before = whole_lines(traces)
    written = before.count(b"\n")
    assert 0 < written < 40, f"{written} whole lines: not a partial run"
    p = subprocess.run(cmd(out), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    after = traces.read_bytes()
    assert after.startswith(before), "the resumed run changed the lines the killed runs had written"
    assert after.count(b"\n") == 40 and after.endswith(b"\n")  # all 40, the torn tail cut off
    got = comparable(out / "traces.jsonl")
    ids = [d["problem_id"] for d in got]
    assert len(ids) == len(set(ids)) == 40
    assert got == reference
    summary = json.loads((out / "summary.json").read_text())
    assert summary["problems"] == 40


@pytest.mark.parametrize("sig,code,word", [(signal.SIGTERM, 143, "terminated"),
                                           (signal.SIGINT, 130, "interrupted")])
def test_sigterm_and_ctrl_c_stop_cleanly_and_say_how_to_resume(sig, code, word, tmp_path):
    out = tmp_path / "run"
    # 5x slower tokens than the other tests: on a loaded machine this process may see the second
    # trace line late, and the run must still be mid-way when the signal lands (at 4 ms a token
    # a run once finished in between, and exited 0).
    slower = ["draft.seconds_per_token=0.02", "target.seconds_per_token=0.02"]
    proc = subprocess.Popen(cmd(out, *slower), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    traces = out / "traces.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (traces.exists() and traces.read_text().count("\n") >= 2):
        time.sleep(0.1)  # wait until the run is under way (a loaded machine starts slowly)
    assert proc.poll() is None
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert word in last and "resume" in last and str(out) in last
    assert "Traceback" not in err
    done = read_traces(out / "traces.jsonl")
    assert 0 < len(done) < 40
    assert (out / "traces.jsonl").read_text().endswith("\n")


def test_a_generator_failing_on_some_problems_fails_only_those(tmp_path):
    out = tmp_path / "run"
    # The scripted draft has scripts for 3 problems and, without a default, raises on the rest.
    p = subprocess.run([sys.executable, "-m", "recipes.evaluate", "recipe=smoke", "dataset.limit=5",
                        "baseline=null", "progress=false", "draft.default=null", f"hydra.run.dir={out}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 3, p.stderr[-2000:]
    assert "2 problem(s) failed" in p.stderr
    rows = {t.problem_id: t for t in read_traces(out / "traces.jsonl")}
    assert len(rows) == 5
    failed = {k for k, t in rows.items() if t.stop_reason.value == "error"}
    assert failed == {"gsm8k-test-3", "gsm8k-test-4"}
    assert all("no script for problem" in rows[k].error for k in failed)
    assert json.loads((out / "summary.json").read_text())["errors"] == 2


def test_a_different_config_in_the_same_folder_is_refused(tmp_path):
    out = tmp_path / "run"
    base = [sys.executable, "-m", "recipes.evaluate", "recipe=smoke", "baseline=null", "progress=false",
            f"hydra.run.dir={out}"]
    assert subprocess.run(base, cwd=ROOT, capture_output=True, timeout=120).returncode == 0
    p = subprocess.run(base + ["policy.threshold=0.9"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "policy.threshold" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    p = subprocess.run(base + ["policy.threshold=0.9", "new_folder=true"], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert (tmp_path / "run-2" / "traces.jsonl").is_file()
    assert os.path.getsize(out / "traces.jsonl") > 0


def test_malformed_rows_can_be_skipped_and_are_reported(tmp_path):
    data = tmp_path / "d.jsonl"
    good = json.dumps({"question": "What is 2 + 2?", "answer": "#### 4"})
    data.write_text(good + "\n{broken\n" + json.dumps({"answer": "#### 1"}) + "\n" + good + "\n")
    out = tmp_path / "run"
    base = [sys.executable, "-m", "recipes.evaluate", "recipe=smoke", "baseline=null", "progress=false",
            f"dataset.path={data}", f"hydra.run.dir={out}"]
    p = subprocess.run(base, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "line 2" in p.stderr
    p = subprocess.run(base + ["dataset.skip_malformed=true"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "skipped 2 malformed dataset row(s)" in p.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["problems"] == 2 and summary["dataset_rows_skipped"] == 2
