"""What the benches report: ``bench.json``'s entries and the lines printed (``recipes.bench``).

Pure functions of the runs' summaries: the overhead bench's table, each run's entry, the
sweep's and the concurrency runs' reports, and the lines under the table.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reasoning.metrics import engine_seconds


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


SWEEP_NOTE = ("runs with step-cache hits do not measure standalone time: their wall seconds leave out "
              "what the cache answered; engine seconds count it at the seconds it took when computed")


def concurrency_report(points: Sequence[tuple[str, str, str, int, dict[str, Any]]]) -> dict[str, Any]:
    """What ``bench.json`` says of ``bench.concurrency``: per run (``(name, preset, schedule, in
    flight, summary)``) its throughput and latency, and async over lockstep per preset and count.

    >>> s = {"problems": 10, "wall_seconds": 60.0, "accuracy": 0.5,
    ...      "latency_seconds": {"mean": 6.0, "p50": 5.0, "p90": 9.0}}
    >>> r = concurrency_report([("a", "x", "lockstep", 8, s),
    ...                         ("b", "x", "async", 8, {**s, "wall_seconds": 30.0})])
    >>> r["runs"][1]["problems_per_minute"], r["async_over_lockstep"]
    (20.0, {'x': {'8': 2.0}})
    """
    runs, ppm = [], {}
    for name, preset, sch, n, s in points:
        wall = s.get("wall_seconds") or 0.0
        rate = s["problems"] / wall * 60 if wall else None
        ppm[(preset, sch, n)] = rate
        lat = s.get("latency_seconds") or {}
        runs.append({"name": name, "preset": preset, "schedule": sch, "in_flight": n,
                     "problems": s["problems"], "accuracy": s.get("accuracy"), "wall_seconds": wall,
                     "problems_per_minute": rate, "latency_seconds": lat})
    ratio: dict[str, dict[str, float | None]] = {}
    for (preset, sch, n), rate in ppm.items():
        if sch == "async" and (preset, "lockstep", n) in ppm:
            lock = ppm[(preset, "lockstep", n)]
            ratio.setdefault(preset, {})[str(n)] = rate / lock if rate and lock else None
    return {"runs": runs, "async_over_lockstep": ratio}


def judge_share(summary: dict[str, Any], base: dict[str, Any] | None) -> float | None:
    """A run's judge seconds per judge call over target-only's target seconds per step: what one
    judge call costs as a share of the target writing one step (batched calls amortised over
    their items, cache hits at the seconds they took). None without judge calls or a baseline.

    >>> judge_share({"judge_calls": 10, "seconds": {"judge": 5.0}},
    ...             {"target_steps": 20, "seconds": {"target": 40.0}})
    0.25
    >>> judge_share({"judge_calls": 0, "seconds": {"judge": 0.0}}, None) is None
    True
    """
    if base is None or not summary.get("judge_calls") or not base.get("target_steps"):
        return None
    per_step = base["seconds"]["target"] / base["target_steps"]
    return (summary["seconds"]["judge"] / summary["judge_calls"]) / per_step if per_step > 0 else None


def run_entry(name: str, summary: dict[str, Any], speedup: float | None, preset: str | None = None,
              point: dict[str, Any] | None = None) -> dict[str, Any]:
    """What ``bench.json`` keeps of one run's summary (``preset``: the preset it ran, ``point``: the
    swept value of a sweep point)."""
    entry = {"dir": name, "preset": preset or name, **({"point": dict(point)} if point else {}),
             "policy": summary.get("policy"), "problems": summary["problems"],
             "accuracy": summary["accuracy"], "correct": summary["correct"], "graded": summary["graded"],
             "accuracy_ci95": summary["accuracy_ci95"], "wall_seconds": summary["wall_seconds"],
             "speedup_vs_target_only": speedup, "target_step_share": summary["target_step_share"],
             "tokens": summary["tokens"], "engine_seconds": engine_seconds(summary),
             "judge_seconds": summary["seconds"]["judge"],
             "judge_calls": summary["judge_calls"], "draft_acceptance": summary["draft_acceptance"],
             "token_budget_share": summary["token_budget_share"], "errors": summary["errors"],
             "cost": summary.get("cost")}
    entry.update({k: summary[k] for k in ("cache_hits", "cache_misses", "cache", "load_seconds")
                  if k in summary})
    return entry


def sweep_report(key: str, values: Sequence[Any],
                 points: Sequence[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """What ``bench.json`` says of a sweep: its points' wall seconds in all, and its most
    expensive point, the one whose target generated the most tokens (the first of equals).

    ``engine_seconds`` is the point's :func:`engine_seconds`.

    >>> s = {"wall_seconds": 2.0, "tokens": {"target": 30},
    ...      "seconds": {"draft": 1.0, "judge": 0.0, "target": 1.0}}
    >>> r = sweep_report("policy.threshold", [0.9, 0.5], [("a", s), ("b", {**s, "wall_seconds": 0.5,
    ...                  "tokens": {"target": 10}, "cache_hits": 4})])
    >>> top = r["most_expensive_point"]
    >>> r["wall_seconds_total_points"], top["name"], top["wall_seconds"], top["engine_seconds"]
    (2.5, 'a', 2.0, 2.0)
    """
    name, top = max(points, key=lambda p: p[1]["tokens"]["target"])
    return {"key": key, "values": list(values), "points": [n for n, _ in points],
            "wall_seconds_total_points": sum(s.get("wall_seconds") or 0.0 for _, s in points),
            "most_expensive_point": {"name": name, "wall_seconds": top.get("wall_seconds"),
                                     "target_tokens": top["tokens"]["target"],
                                     "engine_seconds": engine_seconds(top),
                                     "cache_hits": top.get("cache_hits", 0)},
            "note": SWEEP_NOTE}


def footer(result: dict[str, Any]) -> str:
    """The lines under the table: the bench's wall time and, after a sweep, the sweep's against its
    most expensive point's.

    >>> r = {"wall_seconds_total": 9.0, "load_seconds": {"target": 3.0}, "sweep": {
    ...      "key": "policy.threshold", "points": ["a", "b"], "wall_seconds_total_points": 6.0,
    ...      "most_expensive_point": {"name": "a", "wall_seconds": 4.0, "engine_seconds": 5.0,
    ...                               "cache_hits": 0}, "note": "n"}}
    >>> print(footer(r))
    wall seconds: 9.00 for the whole bench (models loaded: target 3.00 s, not counted)
    sweep of policy.threshold, 2 points: 6.00 s in all, 1.50x its most expensive point
    most expensive point (most target tokens): a, 4.00 s (engine seconds 5.00)
    """
    loads = ", ".join(f"{n} {v:.2f} s" for n, v in (result.get("load_seconds") or {}).items()) or "none"
    lines = [f"wall seconds: {result['wall_seconds_total']:.2f} for the whole bench "
             f"(models loaded: {loads}, not counted)"]
    sw = result.get("sweep")
    for r in (result.get("concurrency") or {}).get("runs", []):
        lat = r["latency_seconds"]
        rate = f"{r['problems_per_minute']:.2f}" if r["problems_per_minute"] else "-"
        lines.append(f"{r['name']}: {rate} problems/min, latency p50 {lat.get('p50', 0.0):.2f} s "
                     f"p90 {lat.get('p90', 0.0):.2f} s")
    for preset, by_n in ((result.get("concurrency") or {}).get("async_over_lockstep") or {}).items():
        lines.append(f"{preset}: async over lockstep throughput " + ", ".join(
            f"{n} in flight {v:.2f}x" if v else f"{n} in flight -" for n, v in by_n.items()))
    if sw:
        top, total = sw["most_expensive_point"], sw["wall_seconds_total_points"]
        wall = top["wall_seconds"]
        ratio = f", {total / wall:.2f}x its most expensive point" if wall else ""
        n = len(sw["points"])
        lines.append(f"sweep of {sw['key']}, {n} point{'s' * (n != 1)}: {total:.2f} s in all{ratio}")
        lines.append(f"most expensive point (most target tokens): {top['name']}, {wall or 0.0:.2f} s "
                     f"(engine seconds {top['engine_seconds']:.2f})")
        if top["cache_hits"]:
            lines.append(f"note: {top['name']} had {top['cache_hits']} step-cache hits; {sw['note']}")
    return "\n".join(lines)
