"""Benchmarks: the step loop's own overhead, and methods side by side on the same loaded models.

    python -m recipes.bench recipe=overhead                    # the loop alone, 1000 x 20 steps
    python -m recipes.bench recipe=overhead bench.problems=50 bench.steps=10
    python -m recipes.bench                                    # recipe=cpu-pair: real models
    python -m recipes.bench bench.presets=[cpu-demo,specreason] dataset.sample=20

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
steps the target wrote, tokens per model and judge seconds.

The run folder is Hydra's (``hydra.run.dir``, default ``runs/bench/<recipe>/<time>``).
"""

from __future__ import annotations

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

from reasoning.errors import UserError
from recipes import _cli, _runs

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


class _Clocked:
    """A generator or judge whose calls are timed, so that they can be taken off the loop's time.

    Anything else (``name``, ``needs_logprobs``, ...) is the wrapped object's.
    """

    def __init__(self, inner: Any, clock: list[float]) -> None:
        self._inner = inner
        self._clock = clock

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def _timed(self, call: Callable[[Any], Any], requests: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return call(requests)
        finally:
            self._clock[0] += time.perf_counter() - t0

    def generate(self, requests):
        return self._timed(self._inner.generate, requests)

    def score(self, requests):
        return self._timed(self._inner.score, requests)


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


def _mb(x: float | None) -> str:
    return "-" if x is None else f"{x / 1e6:.1f} MB"


def overhead_table(r: dict[str, Any]) -> str:
    """The overhead bench's result as a few lines of text.

    >>> r = {"problems": 4, "steps": 2, "total_steps": 8, "max_in_flight": 0, "loop_seconds": 0.0004,
    ...      "per_step_us": 50.0, "model_seconds": 0.0008, "wall_seconds": 0.0012,
    ...      "per_step_us_with_models": 150.0, "memory_by_problems": {"1": 1000, "4": 4000},
    ...      "bytes_per_problem": 1000.0, "peak_rss_bytes": 2e8}
    >>> print(overhead_table(r))
    step loop overhead: 4 problems x 2 steps = 8 steps (max_in_flight 0)
                              seconds  per step
    loop alone                 0.0004   50.0 us
    scripted models, judge     0.0008  100.0 us
    total                      0.0012  150.0 us
    memory (tracemalloc peak): 1 problems 0.0 MB, 4 problems 0.0 MB (1.0 KB per problem)
    peak RSS: 200.0 MB
    """
    steps = r["total_steps"] or 1
    lines = [f"step loop overhead: {r['problems']} problems x {r['steps']} steps = {r['total_steps']} "
             f"steps (max_in_flight {r['max_in_flight']})",
             f"{'':25s} {'seconds':>8s}  per step"]
    for name, sec in (("loop alone", r["loop_seconds"]), ("scripted models, judge", r["model_seconds"]),
                      ("total", r["wall_seconds"])):
        lines.append(f"{name:25s} {sec:8.4f}  {1e6 * sec / steps:5.1f} us")
    mem = ", ".join(f"{k} problems {_mb(v)}" for k, v in r["memory_by_problems"].items())
    lines.append(f"memory (tracemalloc peak): {mem} ({r['bytes_per_problem'] / 1e3:.1f} KB per problem)")
    lines.append(f"peak RSS: {_mb(r['peak_rss_bytes'])}")
    return "\n".join(lines)


# -- models -----------------------------------------------------------------------------------
def compose_preset(name: str) -> Any:
    """The composed ``evaluate`` config of the preset ``conf/recipe/<name>.yaml``.

    Raises:
        UserError: no such preset (naming the ones that exist), one that does not compose, or
            a preset of the bench itself.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    if name not in _cli.group_options("recipe"):
        raise UserError(f"bench: {_cli.unknown_option_message('recipe', str(name))}")
    overrides = [f"recipe={name}"]
    try:
        if GlobalHydra.instance().is_initialized():  # inside the running recipe
            cfg = compose(config_name="evaluate", overrides=overrides)
        else:
            with initialize_config_dir(config_dir=str(_cli.CONF_DIR), version_base="1.3"):
                cfg = compose(config_name="evaluate", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as e:
        raise UserError(f"bench: recipe {name!r} does not compose: {_cli.one_line(e)}") from None
    if "bench" in cfg:
        raise UserError(f"bench: recipe {name!r} is a bench preset, not a method to run; name presets "
                        "of recipes.evaluate in bench.baselines and bench.presets")
    return cfg


def run_names(baselines: Sequence[str], presets: Sequence[str]) -> list[str]:
    """The runs in order, baselines first; a name listed twice is refused.

    >>> run_names(["target-only"], ["cpu-demo"])
    ['target-only', 'cpu-demo']
    """
    names = [str(x) for x in [*baselines, *presets]]
    if not names:
        raise UserError("bench: nothing to run: bench.baselines and bench.presets are both empty")
    twice = sorted({x for x in names if names.count(x) > 1})
    if twice:
        raise UserError(f"bench: {', '.join(twice)} listed twice in bench.baselines and bench.presets")
    return names


def run_entry(name: str, summary: dict[str, Any], speedup: float | None) -> dict[str, Any]:
    """What ``bench.json`` keeps of one run's summary."""
    return {"dir": name, "policy": summary.get("policy"), "problems": summary["problems"],
            "accuracy": summary["accuracy"], "correct": summary["correct"], "graded": summary["graded"],
            "accuracy_ci95": summary["accuracy_ci95"], "wall_seconds": summary["wall_seconds"],
            "speedup_vs_target_only": speedup, "target_step_share": summary["target_step_share"],
            "tokens": summary["tokens"], "judge_seconds": summary["seconds"]["judge"],
            "judge_calls": summary["judge_calls"], "draft_acceptance": summary["draft_acceptance"],
            "token_budget_share": summary["token_budget_share"], "errors": summary["errors"]}


def run_models(cfg, out: Path, recipe: str | None) -> int:
    """The models bench: every run on the same loaded models; writes the runs and ``bench.json``."""
    from reasoning.metrics import format_table
    from reasoning.pipeline import Pipeline, close_all
    from recipes.compare import speedup

    names = run_names(cfg.bench.baselines, cfg.bench.presets)
    # Cheap parts first, every run's included, so a bad value fails before any model loads.
    segmenter = _cli.instantiate(cfg.segmenter, "segmenter")
    loop = _cli.instantiate(cfg.loop, "loop")
    prompt = _cli.instantiate(cfg.prompt, "prompt")
    methods = {n: compose_preset(n) for n in names}
    problems, _report = _runs.load_problems(cfg)
    lazies = _runs.lazy_models(cfg)
    pipes, configs = {}, {}
    for n, m in methods.items():
        policy = _cli.instantiate(m.policy, f"{n}: policy")
        judge, _bound = _runs.build_judge(m.judge, lazies)
        pipes[n] = Pipeline(draft=lazies["draft"], target=lazies["target"], judge=judge, policy=policy,
                            segmenter=segmenter, prompt=prompt, loop=loop)
        configs[n] = _runs.resolved_config(cfg, _NOT_RESULT_KEYS, judge=m.judge, policy=m.policy)
    rows: list[tuple[str, dict[str, Any]]] = []
    try:
        load_s = _cli.load_models(_runs.models_needed(p.policy for p in pipes.values()), lazies)
        for n in names:
            log.info("bench run %s (%d of %d)", n, len(rows) + 1, len(names))
            rows.append((n, _runs.run_into(pipes[n], problems, out / n, configs[n], progress=cfg.progress,
                                           lazies=lazies)))
    finally:
        close_all(list(lazies.values()))
    base = next((s for _, s in rows if s.get("policy") == "AlwaysTarget"), None)
    bw = base.get("wall_seconds") if base is not None else None
    speedups = [speedup(bw, s.get("wall_seconds")) for _, s in rows]
    result = {"mode": "models", "recipe": recipe, "problems": len(problems),
              "dataset": _plain(cfg.dataset),
              "load_seconds": load_s,
              "runs": {n: run_entry(n, s, sp) for (n, s), sp in zip(rows, speedups)}}
    path = _write_bench(out, result)
    print(format_table(rows, speedups=speedups if base is not None else None))
    print("judge seconds: " + ", ".join(f"{n} {s['seconds']['judge']:.2f}" for n, s in rows))
    if base is None:
        print("no target-only run (bench.baselines), so no speed-ups")
    _runs.warn_token_budget(rows)
    print(f"bench.json: {path}")
    return _runs.exit_code(sum(s["errors"] for _, s in rows), where="each run's traces.jsonl")


def _plain(node: Any) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(node, resolve=True)


def _write_bench(out: Path, result: dict[str, Any]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    p = out / BENCH
    tmp = p.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, p)
    return p


# -- the program ------------------------------------------------------------------------------
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
