r"""Benchmarks: the step loop's own overhead, and methods side by side on the same loaded models.

    python -m recipes.bench recipe=overhead                    # the loop alone, 1000 x 20 steps
    python -m recipes.bench recipe=overhead bench.problems=50 bench.steps=10
    python -m recipes.bench                                    # recipe=cpu-pair: real models
    python -m recipes.bench bench.presets=[cpu-demo,specreason] dataset.sample=20
    python -m recipes.bench 'bench.presets=[specreason]' 'bench.sweep={policy.threshold:[0.9,0.7]}' \
        cache.path=runs/cache.sqlite

``bench.mode: overhead`` (``recipe=overhead``) runs the step loop over ``bench.problems``
synthetic problems of ``bench.steps`` steps each, with the scripted draft and target
(:class:`~reasoning.backends.scripted.ScriptedGenerator`) and a scripted judge that rejects
every ``bench.reject_every``-th drafted step. It measures the loop's own wall time per step
decision (the time spent inside the models' and the judge's calls is taken off) and its
memory (tracemalloc's peak) at a quarter, half and all of the problems, so that growth with
the number of problems can be read off. Nothing is graded or written but ``bench.json``.

``bench.mode: models`` (``recipe=cpu-pair``) loads the draft and the target once and runs,
one after another on the same problems with the same budget and grader, each of
``bench.baselines`` and ``bench.presets``: names of ``conf/recipe/`` presets, each giving its
judge and policy; the models, problems, segmenter, prompt and loop are the bench config's for
every run. Each run writes ``traces.jsonl``, ``config.yaml`` and ``summary.json`` into a
sub-folder named after it (``python -m recipes.compare RUN_FOLDER`` reads them as a sweep);
``bench.json`` gathers, per run, accuracy, wall seconds, speed-up over target-only, the share of
steps the target wrote, tokens per model, judge seconds and a judge call's cost as a share of a
target-only step (``judge_share_of_target_step``), and the bench's own wall seconds
(``wall_seconds_total``; the models' build time, ``load_seconds``, left out).

``bench.sweep`` (``{key: [values]}``, a ``judge.*`` or ``policy.*`` key) turns each preset into
one run per value, named ``<preset>-<last part of key>=<value>``, whose ``config.yaml`` records
the value; ``bench.json`` then gives under ``sweep`` the points' wall seconds in all and the most
expensive point's (the one with the most target tokens). With ``cache.path`` (as in
``recipes.evaluate``) every run goes through one step cache, so each point computes only the
steps no earlier run did; runs with cache hits do not measure standalone time.

``bench.concurrency`` (``{schedules: [lockstep, async], in_flight: [1, 8, 32]}``) turns each
preset into one run per schedule and number of problems in flight (``loop.schedule``,
``loop.max_in_flight``), named ``<preset>-<schedule>-<in flight>``; ``bench.json`` then gives
under ``concurrency`` each run's throughput (problems per minute) and per-problem latency
(admission to end: mean, p50, p90), and async's throughput over lockstep's at each number in
flight. It measures engine time, so it refuses the step cache.

The run folder is Hydra's (``hydra.run.dir``, default ``runs/bench/<recipe>/<time>``).
"""

from __future__ import annotations

import functools
import gc
import json
import logging
import os
import platform
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from reasoning.delegating import Delegating
from reasoning.errors import UserError
from reasoning.files import write_atomic
from reasoning.metrics import speedup
from recipes import _cli, _runs
from recipes._bench_plan import (  # noqa: F401 - the bench's names, kept importable from here
    SWEPT_SECTIONS,
    compose_preset,
    concurrency_of,
    plan_concurrency,
    plan_runs,
    point_name,
    sweep_of,
    sweep_point,
)
from recipes._bench_report import (  # noqa: F401
    SWEEP_NOTE,
    concurrency_report,
    footer,
    judge_share,
    overhead_table,
    run_entry,
    sweep_report,
)

log = logging.getLogger("recipes.bench")


CONFIG_NAME = "bench"


BENCH = "bench.json"


MODES = ("overhead", "models")


_NOT_RESULT_KEYS = ("bench", "progress", "baseline", "new_folder", "cache")
"""Top-level keys left out of each run's saved config (they do not change its result)."""


# -- overhead ---------------------------------------------------------------------------------


def synthetic_answer(steps: int) -> str:
    r"""An answer of ``steps`` different steps (so no stop rule fires early), the last one final.

    >>> synthetic_answer(2)
    'Step 1: 1 + 1 = 2.\n\nThe answer is \\boxed{2}.'
    """
    body = "".join(f"Step {k}: {k} + 1 = {k + 1}.\n\n" for k in range(1, steps))
    return body + f"The answer is \\boxed{{{steps}}}."


def reject_pattern(steps: int, every: int) -> list[float]:
    """Judge scores for one synthetic problem: 0 for every ``every``-th step (0: none), else 1.

    >>> reject_pattern(5, 2)
    [1.0, 0.0, 1.0, 0.0, 1.0]
    """
    return [0.0 if every and (k + 1) % every == 0 else 1.0 for k in range(steps)]


class _Clocked(Delegating):
    """A generator or judge whose calls are timed, so that they can be taken off the loop's time.

    Anything else (``name``, ``needs_logprobs``, ...) is the wrapped object's.
    """

    def __init__(self, inner: Any, clock: list[float]) -> None:
        super().__init__(inner)
        self._clock = clock
        for call in ("score_timed", "score_info"):  # the engine calls these instead of score
            if callable(getattr(inner, call, None)):
                setattr(self, call, functools.partial(self._timed, getattr(inner, call)))

    def _timed(self, call: Callable[[Any], Any], requests: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return call(requests)
        finally:
            self._clock[0] += time.perf_counter() - t0

    def generate(self, requests):
        return self._timed(self.inner.generate, requests)

    def score(self, requests):
        return self._timed(self.inner.score, requests)


def time_loop(make_loop: Callable[[list[float]], Any], problems: Sequence) -> dict[str, Any]:
    """Run the loop ``make_loop(clock)`` builds over ``problems`` and time it.

    ``clock[0]`` collects the seconds spent inside the models' and the judge's calls.
    """
    clock = [0.0]
    loop = make_loop(clock)
    gc.collect()
    t0, c0 = time.perf_counter(), time.process_time()
    traces = loop.run(problems)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    steps = sum(len(t.steps) for t in traces)
    own = max(0.0, wall - clock[0])
    return {"total_steps": steps, "target_steps": sum(t.target_steps for t in traces),
            "per_step_us": 1e6 * own / steps if steps else None,
            "per_step_us_with_models": 1e6 * wall / steps if steps else None,
            "wall_seconds": wall, "loop_seconds": own, "model_seconds": clock[0], "cpu_seconds": cpu,
            "errors": sum(1 for t in traces if t.error)}


def peak_memory(make_loop: Callable[[list[float]], Any], problems: Sequence) -> int:
    """tracemalloc's peak, in bytes, while the loop runs over ``problems`` (its traces kept)."""
    gc.collect()
    tracemalloc.start()
    try:
        traces = make_loop([0.0]).run(problems)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    del traces
    return peak


def memory_counts(problems: int) -> list[int]:
    """The problem counts memory is measured at: a quarter, half and all.

    >>> memory_counts(1000), memory_counts(2)
    ([250, 500, 1000], [1, 2])
    """
    return sorted({max(1, problems // 4), max(1, problems // 2), problems})


def peak_rss_bytes() -> int | None:
    """The process's peak resident set size so far (None where it cannot be read)."""
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)  # bytes on macOS, KiB on Linux


def _overhead_loop_factory(cfg, n: int) -> Callable[[list[float]], Any]:
    """``make_loop(clock)`` for the overhead bench: fresh scripted models and judge each time."""
    from dataclasses import replace

    from reasoning.loop import StepLoop

    b = cfg.bench
    for what in ("draft", "target"):
        if not str(cfg[what].get("_target_", "")).endswith("ScriptedGenerator"):
            raise UserError(f"bench.mode=overhead measures the loop alone: {what} must be scripted "
                            f"({what}=scripted), got {cfg[what].get('_target_')}")
    scripted_judge = str(cfg.judge.get("_target_", "")).endswith("ScriptedJudge")
    if b.reject_every and not scripted_judge:
        raise UserError("bench.reject_every needs judge=scripted (it sets the judge's scores); "
                        "set bench.reject_every=0 for another judge")
    policy = _cli.instantiate(cfg.policy, "policy")
    segmenter = _cli.instantiate(cfg.segmenter, "segmenter")
    prompt = _cli.instantiate(cfg.prompt, "prompt")
    loop_cfg = replace(_cli.instantiate(cfg.loop, "loop"), max_steps=int(b.steps))
    answer = synthetic_answer(int(b.steps))
    scores = {f"bench-{i}": reject_pattern(int(b.steps), int(b.reject_every)) for i in range(n)}
    # Built as partials and finished here: keyword arguments given to instantiate become config
    # nodes, slow for a thousand problems' scores.
    new_draft = _cli.instantiate(cfg.draft, "draft", _partial_=True)
    new_target = _cli.instantiate(cfg.target, "target", _partial_=True)
    new_judge = _cli.instantiate(cfg.judge, "judge", _partial_=True) if scripted_judge else None

    def make_loop(clock: list[float]) -> Any:
        draft = new_draft(default=answer, keep_requests=False)
        target = new_target(default=answer, keep_requests=False)
        judge = (new_judge(scores=scores) if new_judge is not None
                 else _runs.build_judge(cfg.judge, {"draft": draft, "target": target})[0])
        return StepLoop(_Clocked(draft, clock), _Clocked(target, clock), _Clocked(judge, clock), policy,
                        segmenter, prompt, loop_cfg)

    return make_loop


def run_overhead(cfg, out: Path) -> int:
    """The overhead bench: time and memory of the loop alone; writes ``bench.json``."""
    from reasoning.types import Problem

    b = cfg.bench
    n, steps = int(b.problems), int(b.steps)
    if n < 1 or steps < 1:
        raise UserError(f"bench.problems and bench.steps must be >= 1, got {n} and {steps}")
    if b.reject_every < 0:
        raise UserError(f"bench.reject_every must be >= 0 (0 = no rejects), got {b.reject_every}")
    make_loop = _overhead_loop_factory(cfg, n)
    problems = [Problem(f"bench-{i}", f"What is {steps} + 0?", str(steps)) for i in range(n)]
    log.info("overhead bench: %d problems x %d steps", n, steps)
    result: dict[str, Any] = {"mode": "overhead", "problems": n, "steps": steps,
                              "reject_every": int(b.reject_every),
                              "max_in_flight": int(cfg.loop.max_in_flight)}
    result.update(time_loop(make_loop, problems))
    mem = {k: peak_memory(make_loop, problems[:k]) for k in memory_counts(n)}
    lo, hi = min(mem), max(mem)
    result["memory_by_problems"] = {str(k): v for k, v in mem.items()}
    result["tracemalloc_peak_bytes"] = mem[hi]
    result["bytes_per_problem"] = (mem[hi] - mem[lo]) / (hi - lo) if hi > lo else mem[hi] / hi
    result["peak_rss_bytes"] = peak_rss_bytes()
    result["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count(),
                         "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}
    path = _write_bench(out, result)
    print(overhead_table(result))
    print(f"bench.json: {path}")
    return _runs.exit_code(result["errors"], where="the loop (overhead bench)")


def _loaded_seconds(lazies: dict[str, Any]) -> float:
    return sum(g.load_seconds for g in lazies.values())


def run_models(cfg, out: Path, recipe: str | None) -> int:
    """The models bench: every run on the same loaded models; writes the runs and ``bench.json``.

    With ``cache.path`` every run's draft, target and judge go through one step cache, and a
    model is built at its first miss (its build time is taken off that run's wall time).
    """
    from dataclasses import replace

    from reasoning.metrics import format_table
    from reasoning.pipeline import Pipeline, close_all

    sweep = sweep_of(cfg.bench.get("sweep"))
    conc = concurrency_of(cfg.bench.get("concurrency"))
    if conc is not None and sweep is not None:
        raise UserError("bench.concurrency and bench.sweep cannot be combined: run them as two benches")
    if conc is not None and cfg.cache.path:
        raise UserError("bench.concurrency measures engine time, which step-cache hits would hide: "
                        "leave cache.path unset")
    plan = plan_runs(cfg.bench.baselines, cfg.bench.presets, sweep)
    # Cheap parts first, every run's included, so a bad value fails before any model loads.
    segmenter = _cli.instantiate(cfg.segmenter, "segmenter")
    loop = _cli.instantiate(cfg.loop, "loop")
    conc_points: dict[str, tuple[str, int]] = {}
    if conc is not None:
        plan, conc_points = plan_concurrency(plan, cfg.bench.presets, conc)
    prompt = _cli.instantiate(cfg.prompt, "prompt")
    presets = {p: compose_preset(p) for _, p, _ in plan}
    methods = {n: sweep_point(presets[p], p, point) for n, p, point in plan}
    problems, _report = _runs.load_problems(cfg)
    lazies = _runs.lazy_models(cfg)
    pipes, configs, wrapped = {}, {}, {}
    store = None
    rows: list[tuple[str, dict[str, Any]]] = []
    try:
        for n, m in methods.items():
            policy = _cli.instantiate(m.policy, f"{n}: policy")
            judge, bound = _runs.build_judge(m.judge, lazies)
            store, draft, target, judge, wrapped[n] = _runs.wrap_with_cache(
                cfg, lazies["draft"], lazies["target"], judge, bound, judge_cfg=m.judge, store=store)
            run_loop, extra = loop, {}
            if n in conc_points:  # this run's schedule and count, in its loop and its config.yaml
                sch, k = conc_points[n]
                run_loop = replace(loop, schedule=sch, max_in_flight=k)
                extra["loop"] = {**_plain(cfg.loop), "schedule": sch, "max_in_flight": k}
            pipes[n] = Pipeline(draft=draft, target=target, judge=judge, policy=policy, segmenter=segmenter,
                                prompt=prompt, loop=run_loop)
            configs[n] = _runs.resolved_config(cfg, _NOT_RESULT_KEYS, judge=m.judge, policy=m.policy, **extra)
        # Models load before any clock starts; with the step cache, at their first miss instead
        # (a model no run misses on is never built), and that time is taken off.
        if store is None:
            _cli.load_models(_runs.models_needed(p.policy for p in pipes.values()), lazies)
        loaded0, t0 = _loaded_seconds(lazies), time.perf_counter()
        inherited: dict[str, dict[str, str]] = {}
        for i, (n, _, _) in enumerate(plan, 1):
            log.info("bench run %s (%d of %d)", n, i, len(plan))
            # Each run starts from empty engine caches: no free prefill from the run before.
            inherited[n] = _runs.reset_engine_caches(lazies)
            rows.append((n, _runs.run_into(pipes[n], problems, out / n, configs[n], progress=cfg.progress,
                                           lazies=lazies, wrapped=wrapped[n],
                                           extra={"bench_order": i, "engine_caches": inherited[n]})))
        total_s = time.perf_counter() - t0 - (_loaded_seconds(lazies) - loaded0)
        load_s = {k: round(g.load_seconds, 2) for k, g in lazies.items() if g.loaded}
    finally:
        close_all(list(lazies.values()))
        if store is not None:
            store.close()
    base_name = next((n for n, s in rows if s.get("policy") == "AlwaysTarget"), None)
    draft_name = next((n for n, s in rows if s.get("policy") == "AlwaysDraft"), None)
    summaries = dict(rows)
    base = summaries.get(base_name)
    heads = _runs.beside_baselines(rows, {n: out / n for n, _ in rows}, base_name, draft_name)
    speedups = [heads[n].pop("speedup_vs_target_only") for n, _ in rows]
    estimates = [heads[n]["speedup_is_estimate"] for n, _ in rows]
    result = {"mode": "models", "recipe": recipe, "problems": len(problems),
              "dataset": _plain(cfg.dataset),
              "load_seconds": load_s, "wall_seconds_total": total_s,
              "order": [n for n, _ in rows],
              "speedup_basis": "target-only's engine seconds over the run's, measured in this bench; "
                               "an estimate where either had step-cache hits",
              "runs": {n: run_entry(n, s, sp, preset, point)
                       for (n, s), sp, (_, preset, point) in zip(rows, speedups, plan)}}
    for (n, s), est in zip(rows, estimates):
        e = result["runs"][n]
        e["order"] = s.get("bench_order")
        e["engine_caches"] = s.get("engine_caches")
        bw = base.get("wall_seconds") if base is not None else None
        # Wall clock only where both runs computed every step themselves.
        e["wall_speedup_vs_target_only"] = None if est else speedup(bw, s.get("wall_seconds"))
        e.update(heads[n])
    if sweep is not None:
        result["sweep"] = sweep_report(*sweep, [r for r, (_, _, point) in zip(rows, plan) if point])
    if conc_points:
        result["concurrency"] = concurrency_report(
            [(n, p, *conc_points[n], s) for (n, s), (_, p, _) in zip(rows, plan) if n in conc_points])
    for (n, s) in rows:
        result["runs"][n]["judge_share_of_target_step"] = judge_share(s, base)
    if base_name is not None and draft_name is not None:
        result["problem_oracle"] = _runs.problem_ceiling(out / base_name, out / draft_name)
    path = _write_bench(out, result)
    print(format_table(rows, speedups=speedups if base is not None else None, estimates=estimates))
    if any(estimates):
        print(_runs.ESTIMATE_NOTE)
    for line in _runs.baseline_lines(result):
        print(line)
    print("judge seconds: " + ", ".join(f"{n} {s['seconds']['judge']:.2f}" for n, s in rows))
    shares = [(n, e["judge_share_of_target_step"]) for n, e in result["runs"].items()
              if e["judge_share_of_target_step"] is not None]
    if shares:
        print("judge call over a target-only step (seconds per call / per step): "
              + ", ".join(f"{n} {x:.1%}" for n, x in shares))
    if store is not None:
        _runs.print_cache_hits(rows)
    if base is None:
        print("no target-only run (bench.baselines), so no speed-ups")
    if (oracle := _runs.oracle_line(result.get("problem_oracle"))) is not None:
        print(oracle)
    print(footer(result))
    _runs.warn_token_budget(rows)
    print(f"bench.json: {path}")
    return _runs.exit_code(sum(s["errors"] for _, s in rows), where="each run's traces.jsonl")


def _plain(node: Any) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(node, resolve=True)


def _write_bench(out: Path, result: dict[str, Any]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    return write_atomic(out / BENCH, json.dumps(result, indent=2) + "\n")


def run(cfg) -> int:
    """Run the composed config ``cfg``; returns the exit code."""
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    out = Path(hc.runtime.output_dir)
    mode = cfg.bench.mode
    if mode not in MODES:
        raise UserError(f"bench.mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "overhead":
        return run_overhead(cfg, out)
    return run_models(cfg, out, hc.runtime.choices.get("recipe"))


def _saved(cfg) -> str:
    from hydra.core.hydra_config import HydraConfig

    out = Path(HydraConfig.get().runtime.output_dir)
    if cfg.bench.mode == "overhead":
        return "the overhead bench keeps nothing until it ends"
    done = sum(_cli.count_done(d) for d in out.iterdir() if d.is_dir()) if out.is_dir() else 0
    return f"{done} finished problem(s) are saved in the runs under {out}"


def main(argv: list[str] | None = None) -> None:
    """Console entry point (``python -m recipes.bench``)."""
    _cli.hydra_main(CONFIG_NAME, run, _saved, argv)


if __name__ == "__main__":
    main()
