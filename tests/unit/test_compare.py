"""`python -m recipes.compare`: the table, plot and report agree with the runs' summaries."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from reasoning import AlwaysTarget, LoopConfig, Pipeline, Problem, ScriptedGenerator, ThresholdPolicy
from reasoning.judges import ScriptedJudge
from recipes.compare import Comparison, Run, figure, label_runs, main, pareto_front, sweeps

ROOT = Path(__file__).resolve().parents[2]
N = 4
# The draft gets p1 and p3 wrong from its second step on; the judge doubts those steps a little.
DRAFT = {f"p{i}": f"Draft one for {i}.\n\nSo it is {i + (i % 2)}.\n\nThe answer is \\boxed{{{i + (i % 2)}}}."
         for i in range(N)}
TARGET = {f"p{i}": f"Target one for {i}.\n\nSo it is {i}.\n\nThe answer is \\boxed{{{i}}}." for i in range(N)}
SCORES = {"p1": [0.9, 0.5, 0.5], "p3": [0.9, 0.6, 0.6]}
PROBLEMS = [Problem(f"p{i}", f"What is {i}?", str(i)) for i in range(N)]


def make_run(out: Path, threshold: float | None, budget: int = 256) -> dict:
    policy = AlwaysTarget() if threshold is None else ThresholdPolicy(threshold)
    pipe = Pipeline(draft=ScriptedGenerator("draft", DRAFT), target=ScriptedGenerator("target", TARGET),
                    judge=ScriptedJudge(SCORES, default=0.9), policy=policy,
                    loop=LoopConfig(token_budget=budget))
    cfg = {"policy": {"_target_": type(policy).__name__, "threshold": threshold},
           "loop": {"token_budget": budget}}
    return pipe.run(PROBLEMS, out_dir=out, config=cfg).summary


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A sweep folder of two runs (the second with its target-only baseline) and a run cut by its budget."""
    root = tmp_path_factory.mktemp("runs")
    dirs = {"low": root / "sweep" / "0", "high": root / "sweep" / "1",
            "base": root / "sweep" / "1" / "baseline-target-only", "short": root / "short"}
    summaries = {"low": make_run(dirs["low"], 0.3), "high": make_run(dirs["high"], 0.7),
                 "base": make_run(dirs["base"], None), "short": make_run(dirs["short"], 0.7, budget=6)}
    assert summaries["low"]["accuracy"] < summaries["high"]["accuracy"]  # the runs differ
    assert summaries["short"]["stop_reasons"].get("token_budget")
    return root, dirs, summaries


def compare(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "recipes.compare", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def parse_report(md: str) -> tuple[dict[str, dict[str, str]], dict[str, Path]]:
    """The report's table as {label: {column: cell}} and its run list as {label: folder}."""
    lines = md.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("| run |"))
    head = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = {}
    for ln in lines[start + 2:]:
        if not ln.startswith("|"):
            break
        cells = [c.strip() for c in ln.strip().strip("|").split("|")]
        rows[cells[0]] = dict(zip(head, cells))
    where = {m.group(1): Path(m.group(2)) for m in re.finditer(r"^- `([^`]+)`: `([^`]+)`", md, re.M)}
    return rows, where


def close(cell: str, value: float, digits: int) -> bool:
    return abs(float(cell) - value) <= 0.5 * 10 ** -digits + 1e-9


def check_row(row: dict[str, str], s: dict, base: dict) -> None:
    assert int(row["problems"]) == s["problems"]
    pct, correct, graded = re.fullmatch(r"([\d.]+)% \((\d+)/(\d+)\)", row["accuracy"]).groups()
    assert close(pct, 100 * s["accuracy"], 1) and (int(correct), int(graded)) == (s["correct"], s["graded"])
    lo, hi = re.fullmatch(r"([\d.]+)-([\d.]+)%", row["95% CI"]).groups()
    assert close(lo, 100 * s["accuracy_ci95"][0], 1) and close(hi, 100 * s["accuracy_ci95"][1], 1)
    assert close(row["steps/problem"], s["mean_steps"], 1)
    assert close(row["target steps"].rstrip("%"), 100 * s["target_step_share"], 1)
    tok = s["tokens"]
    assert (int(row["draft tok"]), int(row["target tok"])) == (tok["draft"], tok["target"])
    assert close(row["target tok share"].rstrip("%"), 100 * tok["target"] / (tok["draft"] + tok["target"]), 1)
    wall = s["wall_seconds"]
    assert close(row["wall s"], wall, 1 if wall >= 1 else 2)
    # speed-ups are over engine seconds: draft + judge + target, added up here by hand
    engine = s["seconds"]["draft"] + s["seconds"]["judge"] + s["seconds"]["target"]
    base_engine = base["seconds"]["draft"] + base["seconds"]["judge"] + base["seconds"]["target"]
    assert close(row["engine s"], engine, 1 if engine >= 1 else 2)
    assert close(row["speed-up"].rstrip("x"), base_engine / engine, 2)
    assert close(row["s/problem"], s["seconds_per_problem"]["mean"], 2)


def test_compare_writes_a_plot_and_a_report_whose_numbers_are_the_summaries(runs, tmp_path):
    root, dirs, summaries = runs
    out = tmp_path / "report"
    p = compare(root / "sweep", dirs["short"], "--out", out)
    assert p.returncode == 0, p.stderr
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "compare.png").stat().st_size > 10_000
    assert "<svg" in (out / "compare.svg").read_text()[:2000]
    md = (out / "compare.md").read_text()
    assert "![" in md and "(compare.png)" in md
    rows, where = parse_report(md)
    assert set(rows) == set(where) and len(rows) == 4
    by_dir = {d.resolve(): k for k, d in dirs.items()}
    labels = {by_dir[d.resolve()]: label for label, d in where.items()}
    assert set(labels) == set(dirs)
    # Numbers: each row is its run's summary; speed-ups against the target-only baseline.
    for key, label in labels.items():
        on_disk = json.loads((dirs[key] / "summary.json").read_text())
        assert on_disk["wall_seconds"] == summaries[key]["wall_seconds"]
        check_row(rows[label], on_disk, summaries["base"])
    assert rows[labels["base"]]["speed-up"] == "1.00x"
    # Labels: the knob that differs, the baseline by its kind.
    assert "policy.threshold=0.3" in labels["low"] and "policy.threshold=0.7" in labels["high"]
    assert labels["base"].startswith("target-only") and "policy.threshold" not in labels["base"]
    # The run cut by its token budget is warned about, and only it.
    warnings = [ln for ln in md.splitlines() if ln.startswith("- **Warning**")]
    budget = [w for w in warnings if "token budget" in w]
    assert len(budget) == 1 and labels["short"] in budget[0]
    # The terminal shows the same table.
    assert all(label in p.stdout for label in labels.values()) and "token budget" in p.stdout


def test_baseline_option_sets_what_speed_ups_are_against(runs, tmp_path):
    root, dirs, summaries = runs
    out = tmp_path / "r"
    p = compare(dirs["low"], dirs["high"], "--baseline", dirs["low"], "--out", out)
    assert p.returncode == 0, p.stderr
    rows, where = parse_report((out / "compare.md").read_text())
    assert len(rows) == 3  # low, high and high's baseline subfolder
    for label, d in where.items():
        key = {v.resolve(): k for k, v in dirs.items()}[d.resolve()]
        check_row(rows[label], summaries[key], summaries["low"])


@pytest.mark.parametrize("make,needle", [
    (lambda t: t / "missing", "no such folder"),
    (lambda t: t, "no summary.json here and no run folders inside"),
    (lambda t: (t / "summary.json").write_text("{not json") and t, "not a readable summary"),
    (lambda t: (t / "summary.json").write_text('{"a": 1}') and t, "not a stepspec run summary"),
])
def test_bad_folders_exit_2_with_one_line(tmp_path, capsys, make, needle):
    path = make(tmp_path)
    with pytest.raises(SystemExit) as e:
        main([str(path), "--out", str(tmp_path / "out")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0] and str(path) in err[0]


def test_missing_out_is_one_line_too(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        main([str(tmp_path)])
    assert e.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_pareto_front_keeps_the_points_nothing_beats():
    pts = [(10.0, 60.0), (5.0, 60.0), (20.0, 80.0), (15.0, 70.0), (30.0, 75.0)]
    assert pareto_front(pts) == [1, 3, 2]


def sweep_comparison() -> tuple[Comparison, list[float]]:
    """Nine runs of a threshold sweep (given out of order) within 2.4 s and 1.6 accuracy points of
    each other, a second recipe's run in their midst, two runs on the very same point, and a baseline."""
    def summary(acc: float, wall: float, target: int, policy: str = "ThresholdPolicy") -> dict:
        return {"problems": 500, "accuracy": acc, "accuracy_ci95": [acc - 0.04, acc + 0.04],
                "wall_seconds": wall, "tokens": {"draft": 1000, "target": target}, "policy": policy,
                "seconds": {"draft": 0.0, "judge": 0.0, "target": wall}}  # engine seconds = wall here

    thresholds = [0.5, 0.1, 0.9, 0.3, 0.7, 0.2, 0.8, 0.4, 0.6]
    runs = [Run(Path(f"/sweep/{i}"), summary(0.6 + 0.02 * t, 100 + 3 * abs(t - 0.45), 200 + int(50 * t)),
                {"policy": {"threshold": t}}, "smoke") for i, t in enumerate(thresholds)]
    runs.append(Run(Path("/other"), runs[0].summary, {"policy": {"threshold": 0.5}}, "specreason"))
    base = Run(Path("/sweep/0/baseline-target-only"), summary(0.62, 140, 1000, "AlwaysTarget"),
               {"policy": {"_target_": "AlwaysTarget"}}, "smoke", baseline_of=Path("/sweep/0"))
    runs.append(base)
    label_runs(runs)
    return Comparison(runs, base, [None] * len(runs)), thresholds


def test_sweeps_are_the_runs_of_one_recipe_that_differ_in_one_number_in_its_order():
    comp, thresholds = sweep_comparison()
    [(key, rs)] = sweeps(comp.runs)
    assert key == "policy.threshold"
    assert [r.config["policy"]["threshold"] for r in rs] == sorted(thresholds)


@pytest.mark.parametrize("dpi", [100, 150])
def test_labels_of_near_coincident_points_do_not_overlap(dpi):
    from matplotlib.text import Text

    comp, thresholds = sweep_comparison()
    fig = figure(comp)
    fig.set_dpi(dpi)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        labels = [t for t in ax.texts if t.get_text()]
        # Every run is numbered once; the two runs on one point share a label.
        numbers = sorted(int(n) for t in labels for n in t.get_text().split(", "))
        assert numbers == list(range(1, len(comp.runs) + 1))
        assert "1, 10" in [t.get_text() for t in labels]
        boxes = [Text.get_window_extent(t, renderer) for t in labels]
        clashes = [(a.get_text(), b.get_text()) for (a, ba), (b, bb) in
                   itertools.combinations(zip(labels, boxes), 2) if ba.overlaps(bb)]
        assert not clashes
        # The sweep is one line through its nine points in order of the threshold, not of x.
        [line] = [ln for ln in ax.lines if len(ln.get_xdata()) == len(thresholds)]
        order = sorted(range(len(thresholds)), key=lambda i: thresholds[i])
        xs = [comp.runs[i].summary["wall_seconds"] for i in order]
        if ax is fig.axes[0]:
            assert list(line.get_xdata()) == pytest.approx(xs) and xs != sorted(xs)
