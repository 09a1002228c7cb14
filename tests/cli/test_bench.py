"""`python -m recipes.bench` in a subprocess, as a user runs it: the overhead bench, the bench of
methods on the same loaded models (scripted doubles here), and user mistakes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# The models bench on the scripted doubles: the cpu-pair preset with its models swapped.
# Models of known cost (seconds per prompt id read / id written, with a per-problem KV cache): the
# target costs three times the draft, so engine seconds and the mixing line are exact.
PLAIN = ["model@draft=scripted-draft", "model@target=scripted-target", "dataset.sample=null",
         "dataset.limit=3", "progress=false"]
SCRIPTED = [*PLAIN, "draft.prefix_cache=true", "draft.prefill_cost=0.001", "draft.decode_cost=0.01",
            "target.prefix_cache=true", "target.prefill_cost=0.003", "target.decode_cost=0.03"]


def bench(*args, timeout=180):
    return subprocess.run([sys.executable, "-m", "recipes.bench", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def test_overhead_bench_writes_its_figures(tmp_path):
    out = tmp_path / "overhead"
    p = bench("recipe=overhead", "bench.problems=20", "bench.steps=5", f"hydra.run.dir={out}")
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads((out / "bench.json").read_text())
    assert r["mode"] == "overhead" and (r["problems"], r["steps"]) == (20, 5)
    assert r["total_steps"] == 100 and r["errors"] == 0  # every synthetic problem runs all its steps
    assert r["target_steps"] == 20  # every 4th step of 5 rejected: one per problem
    for key in ("per_step_us", "per_step_us_with_models", "wall_seconds", "loop_seconds", "model_seconds",
                "tracemalloc_peak_bytes", "bytes_per_problem", "peak_rss_bytes"):
        assert isinstance(r[key], int | float) and r[key] > 0, key
    assert r["loop_seconds"] + r["model_seconds"] == pytest.approx(r["wall_seconds"])
    mem = r["memory_by_problems"]
    assert list(mem) == ["5", "10", "20"] and mem["5"] < mem["20"]
    assert "per step" in p.stdout and "loop alone" in p.stdout and "KB per problem" in p.stdout


def test_models_bench_gathers_the_runs_summaries(tmp_path):
    out = tmp_path / "bench"
    p = bench(*SCRIPTED, "bench.presets=[cpu-demo,smoke]", f"hydra.run.dir={out}")
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads((out / "bench.json").read_text())
    assert r["mode"] == "models" and r["recipe"] == "cpu-pair" and r["problems"] == 3
    assert list(r["runs"]) == ["target-only", "draft-only", "cpu-demo", "smoke"]
    base = json.loads((out / "target-only" / "summary.json").read_text())
    for name, run in r["runs"].items():
        s = json.loads((out / name / "summary.json").read_text())
        assert (out / name / "traces.jsonl").is_file() and (out / name / "config.yaml").is_file()
        for key in ("problems", "accuracy", "correct", "graded", "accuracy_ci95", "wall_seconds",
                    "target_step_share", "tokens", "errors", "policy"):
            assert run[key] == s[key], (name, key)
        assert run["judge_seconds"] == s["seconds"]["judge"]
        # the headline speed-up is over engine seconds, measured here (no step cache: no estimate)
        engine, base_engine = sum(s["seconds"].values()), sum(base["seconds"].values())
        assert run["engine_seconds"] == pytest.approx(engine)
        # expected from outside the bench: each run's engine seconds from its traces' token counts
        # at the models' known costs (SCRIPTED: s per id read / written, draft 0.001 / 0.01, target
        # 0.003 / 0.03; the judges here cost microseconds, hence rel=1e-4)
        cost = {n: sum(0.001 * st.get("draft_prefill_tokens", 0) + 0.01 * st.get("draft_tokens", 0)
                       + 0.003 * st.get("target_prefill_tokens", 0) + 0.03 * st.get("target_tokens", 0)
                       for line in (out / n / "traces.jsonl").read_text().splitlines()
                       for st in json.loads(line)["steps"]) for n in (name, "target-only")}
        # (the models' seconds are modelled, so exact; the judge's are measured, so under load
        # they are left out of the check against the hand computation)
        assert s["seconds"]["draft"] + s["seconds"]["target"] == pytest.approx(cost[name], rel=1e-6)
        assert base["seconds"]["draft"] + base["seconds"]["target"] == pytest.approx(cost["target-only"],
                                                                                     rel=1e-6)
        assert run["speedup_vs_target_only"] == pytest.approx(base_engine / engine)
        assert run["speedup_is_estimate"] is False
        assert run["wall_speedup_vs_target_only"] == pytest.approx(base["wall_seconds"] / s["wall_seconds"])
        # the cost breakdown adds up to the engine seconds
        c = run["cost"]
        assert c["draft"]["seconds"] + c["target"]["seconds"] + c["judge_seconds"] == pytest.approx(engine)
        # every run starts from empty engine caches, in the recorded order
        assert run["order"] == list(r["runs"]).index(name) + 1
        assert set(run["engine_caches"]) == {"draft", "target"}
        assert set(run["engine_caches"].values()) <= {"reset", "not built"}
        # beside target-only: a paired difference over the shared problems, and the mixing line
        pr = run["paired_vs_target_only"]
        assert pr["shared"] == 3 and pr["difference"] == pytest.approx(s["accuracy"] - base["accuracy"])
        d = json.loads((out / "draft-only" / "summary.json").read_text())
        d_engine = sum(d["seconds"].values())
        f = min(1.0, max(0.0, (engine - d_engine) / (base_engine - d_engine)))
        if engine >= d_engine:
            mix = d["accuracy"] + f * (base["accuracy"] - d["accuracy"])
            assert run["mixing_accuracy"] == pytest.approx(mix)
        assert run["above_mixing_line"] == pytest.approx(s["accuracy"] - run["mixing_accuracy"])
        if run["judge_calls"]:  # judge seconds per call over target-only's seconds per step
            # from the traces: the judged steps' judge seconds, and target-only's steps at the
            # target's known costs (0.003 s per id read, 0.03 per id written)
            steps = {n: [st for line in (out / n / "traces.jsonl").read_text().splitlines()
                         for st in json.loads(line)["steps"]] for n in (name, "target-only")}
            judged = [st["judge_seconds"] for st in steps[name] if st.get("score") is not None]
            per_step = sum(0.003 * st["target_prefill_tokens"] + 0.03 * st["target_tokens"]
                           for st in steps["target-only"]) / len(steps["target-only"])
            assert len(judged) == run["judge_calls"]
            assert run["judge_share_of_target_step"] == pytest.approx(sum(judged) / len(judged) / per_step)
        else:
            assert run["judge_share_of_target_step"] is None
    runs = r["runs"]
    assert runs["target-only"]["target_step_share"] == 1.0 and runs["target-only"]["tokens"]["draft"] == 0
    assert runs["draft-only"]["target_step_share"] == 0.0 and runs["draft-only"]["tokens"]["target"] == 0
    # smoke's scripted judge doubts step 1 of gsm8k-test-1: the target writes that one step
    assert runs["smoke"]["target_step_share"] == pytest.approx(1 / 9)
    # each run keeps its preset's judge and policy, and the bench's models and loop
    smoke_cfg = (out / "smoke" / "config.yaml").read_text()
    assert "ScriptedJudge" in smoke_cfg and "threshold: 0.5" in smoke_cfg and "token_budget: 512" in smoke_cfg
    assert "bench" not in smoke_cfg
    for name in r["runs"]:
        assert name in p.stdout
    assert runs["smoke"]["judge_share_of_target_step"] is not None
    assert r["order"] == list(r["runs"])
    assert runs["target-only"]["paired_vs_target_only"]["difference"] == 0
    assert "speed-up" in p.stdout and "judge seconds" in p.stdout and "mixing line" in p.stdout
    assert "~" not in p.stdout
    assert "judge call over a target-only step" in p.stdout
    # the problem-level oracle: per problem the cheaper baseline that does not lose it, worked
    # out here from each baseline's traces at the models' known costs
    def per_problem(name, pre, dec):
        out_ = {}
        for line in (out / name / "traces.jsonl").read_text().splitlines():
            t = json.loads(line)
            out_[t["problem_id"]] = (t["correct"], sum(
                pre[0] * st.get("draft_prefill_tokens", 0) + dec[0] * st.get("draft_tokens", 0)
                + pre[1] * st.get("target_prefill_tokens", 0) + dec[1] * st.get("target_tokens", 0)
                for st in t["steps"]))
        return out_
    tgt = per_problem("target-only", (0.001, 0.003), (0.01, 0.03))
    dft = per_problem("draft-only", (0.001, 0.003), (0.01, 0.03))
    picks = {i: dft[i][0] or not tgt[i][0] for i in tgt}  # the draft loses nothing there
    o = r["problem_oracle"]
    assert o["shared"] == 3 and o["to_draft"] == sum(picks.values())
    assert o["correct"] == sum(dft[i][0] if picks[i] else tgt[i][0] for i in tgt)
    assert o["correct_target_only"] == sum(t[0] for t in tgt.values())
    assert o["seconds"] == pytest.approx(sum(dft[i][1] if picks[i] else tgt[i][1] for i in tgt), rel=1e-3)
    assert "ceiling, routing whole problems" in p.stdout


def test_gpu_preset_runs_its_plan_on_any_models(tmp_path):
    """recipe=gpu-pair with its vLLM workers swapped for scripted models (their spec dropped): its
    baselines and presets run with its budget, and config.yaml records the preset's loop."""
    out = tmp_path / "gpu"
    p = bench("recipe=gpu-pair", *SCRIPTED, "~draft.spec", "~target.spec", "bench.presets=[cpu-demo]",
              f"hydra.run.dir={out}")
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads((out / "bench.json").read_text())
    assert r["recipe"] == "gpu-pair" and list(r["runs"]) == ["target-only", "draft-only", "cpu-demo"]
    assert "token_budget: 1024" in (out / "cpu-demo" / "config.yaml").read_text()


def test_concurrency_bench_runs_each_schedule_and_count(tmp_path):
    """Lockstep and async at 1 and 3 in flight on the scripted models: same answers, throughput
    and latency in bench.json, async over lockstep per count."""
    out = tmp_path / "conc"
    p = bench(*SCRIPTED, "bench.baselines=[target-only]", "bench.presets=[smoke]",
              "bench.concurrency={schedules:[lockstep,async],in_flight:[1,3]}", f"hydra.run.dir={out}")
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads((out / "bench.json").read_text())
    names = ["smoke-lockstep-1", "smoke-async-1", "smoke-lockstep-3", "smoke-async-3"]
    assert list(r["runs"]) == ["target-only", *names]
    c = r["concurrency"]
    assert [x["name"] for x in c["runs"]] == names
    texts = {}
    for x in c["runs"]:
        s = json.loads((out / x["name"] / "summary.json").read_text())
        assert x["problems_per_minute"] == pytest.approx(3 / s["wall_seconds"] * 60)
        assert x["latency_seconds"] == s["latency_seconds"] and s["latency_seconds"]["p90"] > 0
        cfg = (out / x["name"] / "config.yaml").read_text()
        assert f"schedule: {x['schedule']}" in cfg and f"max_in_flight: {x['in_flight']}" in cfg
        rows = [json.loads(line) for line in (out / x["name"] / "traces.jsonl").read_text().splitlines()]
        texts[x["name"]] = {t["problem_id"]: t["text"] for t in rows}
    assert all(t == texts[names[0]] for t in texts.values())  # the schedule changes no answer
    assert set(c["async_over_lockstep"]["smoke"]) == {"1", "3"}
    assert "async over lockstep throughput" in p.stdout and "problems/min" in p.stdout


def test_compare_reads_a_models_bench_folder(tmp_path):
    from recipes.compare import build

    out = tmp_path / "bench"
    p = bench(*SCRIPTED, "bench.presets=[smoke]", "bench.baselines=[target-only]", f"hydra.run.dir={out}")
    assert p.returncode == 0, p.stderr[-3000:]
    comp = build([out])
    assert sorted(r.label for r in comp.runs) == ["smoke", "target-only"]
    assert comp.baseline is not None and comp.baseline.label == "target-only"


def requests_of(run_dir: Path) -> dict[str, set]:
    """The distinct engine requests and judge scores a run needed, rebuilt from its traces: a
    model's request is the problem and the steps before it (text and who wrote them); a score
    adds the drafted step."""
    need: dict[str, set] = {"draft": set(), "target": set(), "judge": set()}
    for line in (run_dir / "traces.jsonl").read_text().splitlines():
        t = json.loads(line)
        prefix: tuple = ()
        for st in t["steps"]:
            if st["route"] == "draft":
                need["draft"].add((t["problem_id"], prefix))
            if st["score"] is not None:
                need["judge"].add((t["problem_id"], prefix, st["draft_text"]))
            if st["target_text"] is not None:
                need["target"].add((t["problem_id"], prefix))
            prefix += ((st["text"], st["kept"]),)
    return need


def test_a_cached_sweep_runs_each_point_and_computes_each_request_once(tmp_path):
    out, cache = tmp_path / "bench", tmp_path / "c.sqlite"
    points = ["smoke-threshold=0.5", "smoke-threshold=0.1"]
    p = bench(*SCRIPTED, "bench.presets=[smoke]", "bench.baselines=[target-only]",
              "bench.sweep={policy.threshold:[0.5,0.1]}", f"cache.path={cache}", f"hydra.run.dir={out}")
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads((out / "bench.json").read_text())
    assert list(r["runs"]) == ["target-only", *points]  # baselines first, then the points in list order
    summaries = {n: json.loads((out / n / "summary.json").read_text()) for n in r["runs"]}
    for name, run in r["runs"].items():
        s = summaries[name]
        for key in ("accuracy", "wall_seconds", "target_step_share", "tokens", "errors", "policy",
                    "cache_hits", "cache_misses", "cache"):
            assert run[key] == s[key], (name, key)
    for point, value in zip(points, (0.5, 0.1)):
        entry = r["runs"][point]
        assert entry["preset"] == "smoke" and entry["point"] == {"policy.threshold": value}
        cfg = (out / point / "config.yaml").read_text()
        assert f"threshold: {value}" in cfg and "ScriptedJudge" in cfg
        assert not any(ln.startswith(("cache:", "bench:")) for ln in cfg.splitlines())
    # 0.5 has the target rewrite step 1 of gsm8k-test-1, 0.1 keeps the draft's: the second point
    # re-uses the steps before that and computes the rest
    first, second = (summaries[n] for n in points)
    assert first["target_step_share"] > 0 and second["target_step_share"] == 0
    assert second["cache_hits"] > 0 and second["cache_misses"] > 0
    # every request any run needed was computed once, by the first run that needed it
    need = [requests_of(out / n) for n in r["runs"]]
    for model in ("draft", "target", "judge"):
        union = set().union(*(n[model] for n in need))
        assert sum(summaries[n]["cache"][model]["misses"] for n in r["runs"]) == len(union), model
        for n, own in zip(r["runs"], need):
            c = summaries[n]["cache"][model]
            assert c["hits"] + c["misses"] == len(own[model]), (n, model)
    # the bench's wall time, and the sweep's against its most expensive point (most target tokens)
    walls = [s["wall_seconds"] for s in summaries.values()]
    assert r["wall_seconds_total"] >= sum(walls) > 0
    sw = r["sweep"]
    assert (sw["key"], sw["values"], sw["points"]) == ("policy.threshold", [0.5, 0.1], points)
    assert sw["wall_seconds_total_points"] == pytest.approx(first["wall_seconds"] + second["wall_seconds"])
    top = sw["most_expensive_point"]
    assert (top["name"], top["wall_seconds"]) == (points[0], first["wall_seconds"])
    assert top["target_tokens"] == first["tokens"]["target"] > 0 and "standalone time" in sw["note"]
    assert "sweep of policy.threshold, 2 points" in p.stdout and f"{points[0]}, " in p.stdout
    assert "step cache hits (smoke-threshold=0.1)" in p.stdout
    # with cache hits, the speed-ups are over engine seconds and said to be estimates; no
    # wall-clock speed-up is given for a run with hits
    for name, run in r["runs"].items():
        engine = sum(summaries[name]["seconds"].values())
        assert run["engine_seconds"] == pytest.approx(engine)
        base = sum(summaries["target-only"]["seconds"].values())
        assert run["speedup_vs_target_only"] == pytest.approx(base / engine)
        hits = summaries[name]["cache_hits"] > 0 or summaries["target-only"]["cache_hits"] > 0
        assert run["speedup_is_estimate"] is hits
        assert (run["wall_speedup_vs_target_only"] is None) is hits
    assert r["runs"][points[1]]["speedup_is_estimate"] is True
    assert "~ marks an estimate" in p.stdout


def test_compare_draws_a_bench_sweep_as_a_line_through_its_points(tmp_path):
    from recipes.compare import build, figure, sweeps

    out = tmp_path / "bench"
    p = bench(*SCRIPTED, "bench.presets=[smoke]", "bench.baselines=[target-only]",
              "bench.sweep={policy.threshold:[0.5,0.1]}", f"hydra.run.dir={out}")
    assert p.returncode == 0, p.stderr[-3000:]
    comp = build([out])
    assert [r.label for r in comp.runs] == ["target-only", "smoke policy.threshold=0.5",
                                            "smoke policy.threshold=0.1"]
    (key, line), = sweeps(comp.runs)
    assert key == "policy.threshold" and [r.dir.name for r in line] == ["smoke-threshold=0.1",
                                                                        "smoke-threshold=0.5"]
    shares = [100 * s["tokens"]["target"] / (s["tokens"]["target"] + s["tokens"]["draft"])
              for s in (r.summary for r in line)]
    drawn = [ln for ln in figure(comp).axes[1].lines  # the sweep's line: solid, through both points
             if len(ln.get_xdata()) == 2 and ln.get_linestyle() == "-"]
    assert [list(ln.get_xdata()) for ln in drawn] == [pytest.approx(shares)]


def test_rerun_into_the_same_folder_resumes_each_run(tmp_path):
    out = tmp_path / "bench"
    args = [*SCRIPTED, "bench.presets=[smoke]", "bench.baselines=[]", f"hydra.run.dir={out}"]
    assert bench(*args).returncode == 0
    lines = (out / "smoke" / "traces.jsonl").read_text().splitlines()
    p = bench(*args)
    assert p.returncode == 0, p.stderr[-3000:]
    assert (out / "smoke" / "traces.jsonl").read_text().splitlines() == lines


@pytest.mark.parametrize("args,needle", [
    (["bench.presets=[cpu-dem]"], "unknown recipe 'cpu-dem'"),
    (["bench.presets=[cpu-dem]"], "did you mean 'cpu-demo'"),
    (["bench.presets=[smoke,smoke]"], "smoke listed twice"),
    (["bench.presets=[overhead]"], "'overhead' is a bench preset"),
    (["bench.baselines=[]", "bench.presets=[]"], "nothing to run"),
    (["bench.mode=fast"], "bench.mode must be one of overhead, models"),
    (["recipe=overhead", "bench.problems=0"], "bench.problems and bench.steps must be >= 1"),
    (["recipe=overhead", "model@draft=qwen2.5-coder-0.5b"], "draft must be scripted"),
    (["recipe=overhead", "judge=constant"], "bench.reject_every needs judge=scripted"),
    (["recipe=overheat"], "did you mean 'overhead'"),
    (["bench.sweep={policy.thresold:[0.5]}"], "preset 'cpu-demo' has no key policy.thresold"),
    (["bench.sweep={loop.token_budget:[8]}"], "loop.token_budget is not a key of the method"),
    (["bench.sweep={policy.threshold:[]}"], "policy.threshold needs a non-empty list"),
    (["bench.sweep={policy.threshold:[0.5,0.5]}"], "lists 0.5 more than once"),
    (["bench.presets=[]", "bench.sweep={policy.threshold:[0.5]}"], "bench.presets, which is empty"),
    (["bench.sweep={policy.threshold:[1.5]}"], "policy.threshold must be in [0, 1]"),
    (["bench.concurrency={schedules:[lockstep],in_flight:[0]}"], "in_flight must be a non-empty"),
    (["bench.concurrency={schedules:[eager],in_flight:[1]}"], "schedules must be a non-empty list"),
    (["bench.concurrency={schedules:[async],in_flight:[2]}", "cache.path=x.sqlite"],
     "leave cache.path unset"),
    (["bench.concurrency={schedules:[async],in_flight:[2]}", "bench.sweep={policy.threshold:[0.5]}"],
     "cannot be combined"),
    (["loop.schedule=eager"], "loop.schedule must be lockstep or async"),
])
def test_user_mistakes_exit_2_with_one_line(args, needle, tmp_path):
    p = bench(*PLAIN, *args, f"hydra.run.dir={tmp_path / 'r'}", timeout=60)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2, p.stderr[-2000:]
    assert len(lines) == 1, p.stderr[-2000:]
    assert lines[0].startswith("error: ") and needle in lines[0] and "Traceback" not in p.stderr
    assert not (tmp_path / "r" / "bench.json").exists()


def test_evaluate_refuses_a_bench_preset(tmp_path):
    p = subprocess.run([sys.executable, "-m", "recipes.evaluate", "recipe=overhead",
                        f"hydra.run.dir={tmp_path / 'r'}", "progress=false"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [
        "error: recipe 'overhead' is a preset of recipes.bench (it sets bench.*): "
        "run python -m recipes.bench recipe=overhead"]


def test_compare_draws_the_mixing_line_and_pairs_each_run_with_target_only(tmp_path):
    from recipes.compare import build, figure, markdown

    out = tmp_path / "bench"
    p = bench(*SCRIPTED, "bench.presets=[smoke]", f"hydra.run.dir={out}")
    assert p.returncode == 0, p.stderr[-3000:]
    comp = build([out])
    s = {r.dir.name: r.summary for r in comp.runs}

    def engine(x):
        return x["seconds"]["draft"] + x["seconds"]["judge"] + x["seconds"]["target"]

    d, t = s["draft-only"], s["target-only"]
    # the dotted line: through draft-only's and target-only's (engine seconds, accuracy)
    (line,) = [ln for ln in figure(comp).axes[0].lines if ln.get_linestyle() == ":"]
    pts = list(zip(line.get_xdata(), line.get_ydata()))
    assert pts[1] == pytest.approx((engine(d), 100 * d["accuracy"]))
    assert pts[2] == pytest.approx((engine(t), 100 * t["accuracy"]))
    md = markdown(comp)
    assert "## Against `target-only`" in md and "| smoke | 3 |" in md
    r = json.loads((out / "bench.json").read_text())["runs"]["smoke"]
    margin = f"{100 * r['above_mixing_line']:+.1f}"
    assert f"| {margin} |" in md
