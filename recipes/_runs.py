"""Running pipelines from a composed config: what ``evaluate`` and ``bench`` share.

The cheap parts and the problems are built first, so that a bad value fails before any model
loads; the draft and the target are lazy, and load once, before any run's clock starts; each
run writes its traces, config and summary into a folder of its own.
"""

from __future__ import annotations

import functools
import logging
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from reasoning.errors import UserError
from recipes import _cli

log = logging.getLogger(__name__)

EXIT_PROBLEMS_FAILED = 3

BUDGET_WARN_SHARE = 0.05
"""Warn when more than this share of a run's problems stopped at the token budget."""


class TimedLazy(_cli.LazyGenerator):
    """A lazy generator that keeps the seconds its build took (with the step cache on, a model is
    built at its first cache miss, inside a run's clock, and that time is taken out again)."""

    def __init__(self, cfg: Any, what: str) -> None:
        super().__init__(cfg, what)
        self.load_seconds = 0.0

    def get(self) -> Any:
        if self.loaded:
            return super().get()
        t0 = time.perf_counter()
        try:
            return super().get()
        finally:
            self.load_seconds += time.perf_counter() - t0


def load_problems(cfg: Any) -> tuple[list, dict[str, Any]]:
    """The problems of ``cfg.dataset`` and the loader's report (``source``, ``skipped``).

    Raises:
        UserError: the data set cannot be read or the selection is bad, in one line.
    """
    report: dict[str, Any] = {}
    # Built as a partial and called here, so that `report` is this dict (Hydra copies kwargs).
    load = _cli.instantiate(cfg.dataset, "dataset", _partial_=True)
    try:
        return load(report=report), report
    except (UserError, ValueError, FileNotFoundError) as e:
        raise UserError(f"dataset: {_cli.one_line(e)}") from None


def resolved_config(cfg: Any, leave_out: Iterable[str] = (), **replace: Any) -> str:
    """``cfg`` resolved to YAML text without the top-level keys ``leave_out`` (those that do not
    change a result), with the top-level keys in ``replace`` set to the given nodes."""
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(cfg, resolve=True)
    for k in leave_out:
        plain.pop(k, None)
    for k, v in replace.items():
        plain[k] = OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
    return OmegaConf.to_yaml(OmegaConf.create(plain))


def lazy_models(cfg: Any) -> dict[str, TimedLazy]:
    """The draft and the target of ``cfg``, built on first use; a missing model path is refused now."""
    _cli.check_model_paths(cfg.draft, "draft")
    _cli.check_model_paths(cfg.target, "target")
    return {"draft": TimedLazy(cfg.draft, "draft"), "target": TimedLazy(cfg.target, "target")}


def build_judge(judge_cfg: Any, models: Mapping[str, Any]) -> tuple[Any, bool]:
    """The judge of ``judge_cfg`` and whether it was bound to the run's models.

    A judge config with ``_partial_: true`` is finished with the run's models (e.g. the target
    model as judge): ``generator`` is the target, ``draft`` the draft.
    """
    judge = _cli.instantiate(judge_cfg, "judge")
    bound = isinstance(judge, functools.partial)
    if bound:
        judge = _cli.bind_judge(judge, models["target"], models["draft"])
    return judge, bound


def wrap_with_cache(cfg: Any, draft: Any, target: Any, judge: Any, judge_bound: bool, *,
                    judge_cfg: Any = None, store: Any = None) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
    """With ``cfg.cache.path`` set: the step cache and the cached draft, target and judge.

    Returns ``(cache or None, draft, target, judge, {name: wrapper})``. A model's identity in
    the cache is its resolved config node (``cfg.draft``, ``cfg.target``); a judge's is its node
    (``judge_cfg``, default ``cfg.judge``) plus, when it was bound to the run's models, theirs,
    plus its ``cache_identity`` where it has one (a router: a digest of its files).
    ``store``, an open :class:`~reasoning.cache.StepCache`, is used instead of opening
    ``cfg.cache.path`` again (several runs of one program share it); each call makes new
    wrappers, whose counts are that run's.
    """
    from omegaconf import OmegaConf

    c = cfg.get("cache") or {}
    if not c.get("path"):
        return None, draft, target, judge, {}
    from reasoning.cache import StepCache, model_identity
    from reasoning.cached import CachedGenerator, CachedJudge
    from reasoning.protocols import option

    if store is None:
        store = StepCache(c.path)
        log.info("step cache %s (%d entries)", store.path, len(store))
    ids = {"draft": model_identity(cfg.draft), "target": model_identity(cfg.target)}
    wrapped: dict[str, Any] = {"draft": CachedGenerator(draft, store, ids["draft"]),
                               "target": CachedGenerator(target, store, ids["target"])}
    if c.get("judge", True):
        node = cfg.judge if judge_cfg is None else judge_cfg
        key = {"judge": OmegaConf.to_container(node, resolve=True), "models": ids if judge_bound else None}
        content = option(judge, "cache_identity")  # e.g. a router's files: same path, new router
        if content is not None:
            key["content"] = content
        jid = model_identity(key)
        wrapped["judge"] = CachedJudge(judge, store, jid)
    return store, wrapped["draft"], wrapped["target"], wrapped.get("judge", judge), wrapped


def models_needed(policies: Iterable[Any]) -> list[str]:
    """Which of draft and target runs under these policies will call.

    >>> from reasoning.policies import AlwaysDraft, AlwaysTarget
    >>> models_needed([AlwaysTarget()]), models_needed([AlwaysTarget(), AlwaysDraft()])
    (['target'], ['draft', 'target'])
    """
    from reasoning.policies import AlwaysDraft, AlwaysTarget

    need: set[str] = set()
    for p in policies:
        need |= {"target"} if isinstance(p, AlwaysTarget) else {"draft"} if isinstance(
            p, AlwaysDraft) else {"draft", "target"}
    return sorted(need)


def _account(summary: dict, lazies: dict, loaded_before: dict, wrapped: dict, stats_before: dict) -> None:
    """Add a run's cache counts to its summary, and the models built during the run (already off
    its wall time: see ``Pipeline.run``'s ``off_clock``)."""
    during = {n: g.load_seconds - loaded_before[n] for n, g in lazies.items()
              if g.load_seconds > loaded_before[n]}
    if during:
        summary["load_seconds"] = {**(summary.get("load_seconds") or {}),
                                   **{n: round(v, 2) for n, v in during.items()}}
    if wrapped:
        per = {n: {k: v - stats_before[n].get(k, 0) for k, v in w.stats().items()}
               for n, w in wrapped.items()}
        summary["cache"] = per
        summary["cache_hits"] = sum(d["hits"] for d in per.values())
        summary["cache_misses"] = sum(d["misses"] for d in per.values())


def run_into(pipe: Any, problems: Sequence, out: Path, config: str, *, progress: bool,
             lazies: Mapping[str, TimedLazy], wrapped: Mapping[str, Any] | None = None,
             extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Run ``pipe`` on ``problems`` into the folder ``out`` and return its summary, written.

    Models built during the run are taken off its wall time; with ``wrapped`` (the step cache's
    wrappers) the run's cache counts go into the summary; ``extra`` keys are added to it.
    """
    from reasoning.pipeline import write_summary

    wrapped = wrapped or {}
    loaded0 = {n: g.load_seconds for n, g in lazies.items()}
    stats0 = {n: w.stats() for n, w in wrapped.items()}
    summary = pipe.run(problems, out_dir=out, config=config, progress=progress,
                       off_clock=lambda: sum(g.load_seconds for g in lazies.values())).summary
    summary.update(extra or {})
    _account(summary, dict(lazies), loaded0, dict(wrapped), stats0)
    write_summary(out, summary)
    return summary


def print_cache_hits(rows: Iterable[tuple[str, Mapping[str, Any]]]) -> None:
    """A line per run of the step cache's hits out of its lookups, per model and judge."""
    for name, summ in rows:
        counts = ", ".join(f"{n} {c['hits']}/{c['hits'] + c['misses']}" for n, c in summ["cache"].items())
        print(f"step cache hits ({name}): {counts}")


def warn_token_budget(rows: Iterable[tuple[str, Mapping[str, Any]]]) -> None:
    """On stderr, a line for each run that stopped too many problems at the token budget."""
    for name, summ in rows:
        if summ.get("token_budget_share", 0.0) > BUDGET_WARN_SHARE:
            print(f"warning: {name}: {100 * summ['token_budget_share']:.0f}% of problems hit the token "
                  f"budget ({summ.get('token_budget')} tokens); accuracy is cut by it "
                  "(raise loop.token_budget)",
                  file=sys.stderr)


def exit_code(failed: int, where: str = "traces.jsonl") -> int:
    """0, or (saying so on stderr) :data:`EXIT_PROBLEMS_FAILED` when problems failed."""
    if not failed:
        return 0
    print(f"error: {failed} problem(s) failed; their reasons are in {where} (field 'error'); "
          f"exit status {EXIT_PROBLEMS_FAILED}", file=sys.stderr)
    return EXIT_PROBLEMS_FAILED


ESTIMATE_NOTE = ("~ marks an estimate: the run's steps (or target-only's) came partly from the step cache, "
                 "counted at the seconds they took when computed, not measured standalone")


def beside_baselines(rows: Sequence[tuple[str, Mapping[str, Any]]], dirs: Mapping[str, Path],
                     base_name: str | None, draft_name: str | None,
                     pair_base: bool = True) -> dict[str, dict[str, Any]]:
    """Per run (by name, ``rows`` of ``(name, summary)``, each written into ``dirs[name]``): its
    speed-up over the target-only run ``base_name``'s engine seconds and whether that is an
    estimate (:func:`reasoning.metrics.headline_speedup`), its paired difference from target-only
    and its place against the mixing line to the draft-only run ``draft_name``
    (:func:`reasoning.metrics.versus_baselines`); ``pair_base=False`` leaves target-only's own
    comparison with itself out."""
    from reasoning.metrics import headline_speedup, versus_baselines

    summaries = dict(rows)
    correct = {n: correct_by_problem(dirs[n]) for n, _ in rows}
    base = summaries.get(base_name) if base_name is not None else None
    pair = None if base is None else (base, correct[base_name])
    mix = None if draft_name is None else (summaries[draft_name], correct[draft_name])
    out = {}
    for n, s in rows:
        sp, est = headline_speedup(s, base)
        out[n] = {"speedup_vs_target_only": sp, "speedup_is_estimate": est}
        if pair_base or n != base_name:
            out[n].update(versus_baselines(s, correct[n], pair, mix))
    return out


def correct_by_problem(run_dir: Path) -> dict[str, bool]:
    """``{problem id: correct}`` of the graded traces in ``run_dir`` (a problem's latest line
    wins; {} without a trace file)."""
    return {pid: ok for pid, (ok, _) in outcomes_by_problem(run_dir).items()}


def outcomes_by_problem(run_dir: Path) -> dict[str, tuple[bool, float]]:
    """``{problem id: (correct, seconds charged to it)}`` of the graded traces in ``run_dir`` (a
    problem's latest line wins; {} without a trace file)."""
    from reasoning.traces import TRACES, read_traces

    p = run_dir / TRACES
    if not p.exists():
        return {}
    return {t.problem_id: (bool(t.correct), float(t.seconds))
            for t in read_traces(p) if t.correct is not None}


def problem_ceiling(target_dir: Path, draft_dir: Path) -> dict[str, Any] | None:
    """:func:`reasoning.metrics.problem_oracle` of the target-only and draft-only runs written
    into these folders: the ceiling of routing whole problems."""
    from reasoning.metrics import problem_oracle

    return problem_oracle(outcomes_by_problem(target_dir), outcomes_by_problem(draft_dir))


def oracle_line(o: Mapping[str, Any] | None) -> str | None:
    """The bench's line on the problem-level oracle (None without one).

    >>> print(oracle_line({"shared": 4, "to_draft": 3, "correct": 3, "correct_target_only": 2,
    ...                    "seconds": 21.0, "speedup": 1.857}))
    ceiling, routing whole problems (an estimate from the baselines' per-problem seconds): an oracle
       sends 3 of 4 problems to the draft, 3 correct (target-only 2), 1.86x target-only
    """
    if not o:
        return None
    sp = f"{o['speedup']:.2f}x" if o.get("speedup") else "-"
    return ("ceiling, routing whole problems (an estimate from the baselines' per-problem seconds): "
            "an oracle\n"
            f"   sends {o['to_draft']} of {o['shared']} problems to the draft, {o['correct']} correct "
            f"(target-only {o['correct_target_only']}), {sp} target-only")


def reset_engine_caches(models: dict[str, Any]) -> dict[str, str]:
    """Empty every model's engine caches before a run (see :func:`reasoning.protocols.reset_cache`);
    per model what was done: ``reset``, ``not built`` (nothing cached yet), or ``not reset`` (the
    engine has no way to: the run may inherit prefixes the runs before it left)."""
    from reasoning.protocols import reset_cache

    out = {}
    for name, g in models.items():
        if not getattr(g, "loaded", True):
            out[name] = "not built"
            continue
        done = reset_cache(g)
        out[name] = "reset" if done else "not reset"
        if not done:
            log.warning("bench: %s's engine caches could not be emptied; the next run may inherit them", name)
    return out


def baseline_lines(result: dict[str, Any]) -> list[str]:
    """A line per run: its cost breakdown, and its place against target-only and the mixing line.

    >>> d = {"seconds": 3.0, "prefill_seconds": 1.0, "decode_seconds": 2.0, "unsplit_seconds": 0.0}
    >>> t = {"seconds": 4.0, "prefill_seconds": 1.5, "decode_seconds": 2.5, "unsplit_seconds": 0.0}
    >>> cost = {"draft": d, "target": t, "judge_seconds": 0.5, "wasted_draft_seconds": 1.0,
    ...         "engine_seconds": 7.5}
    >>> e = {"cost": cost, "mixing_accuracy": 0.45, "above_mixing_line": 0.05, "paired_vs_target_only": {
    ...      "difference": -0.02, "ci95": [-0.08, 0.04], "run_only": 1, "base_only": 2, "mcnemar_p": 1.0}}
    >>> for line in baseline_lines({"runs": {"x": e}}): print(line)
    x: engine 7.5 s = draft 3.0 (prefill 1.0, decode 2.0; wasted 1.0)
       + target 4.0 (prefill 1.5, decode 2.5) + judge 0.5
    x: vs target-only -2.0 points (paired 95% CI -8.0 to +4.0; 1 won, 2 lost, McNemar p 1.00);
       mixing line 45.0%, 5.0 points above it
    """
    from reasoning.metrics import seconds_text as sec

    lines = []
    for name, e in result["runs"].items():
        c = e.get("cost")
        if c:
            def part(m: dict[str, Any]) -> str:
                if m["seconds"] and m["unsplit_seconds"] == m["seconds"]:
                    return "prefill and decode not timed apart"
                un = f", not timed apart {sec(m['unsplit_seconds'])}" if m["unsplit_seconds"] else ""
                return f"prefill {sec(m['prefill_seconds'])}, decode {sec(m['decode_seconds'])}{un}"
            d, t = c["draft"], c["target"]
            lines.append(f"{name}: engine {sec(c['engine_seconds'])} s = draft {sec(d['seconds'])} "
                         f"({part(d)}; wasted {sec(c['wasted_draft_seconds'])}) + target {sec(t['seconds'])} "
                         f"({part(t)}) + judge {sec(c['judge_seconds'])}")
        pr = e.get("paired_vs_target_only")
        bits = []
        if pr:
            lo, hi = pr["ci95"]
            bits.append(f"vs target-only {100 * pr['difference']:+.1f} points (paired 95% CI "
                        f"{100 * lo:+.1f} to {100 * hi:+.1f}; {pr['run_only']} won, {pr['base_only']} "
                        f"lost, McNemar p {pr['mcnemar_p']:.2f})")
        if e.get("mixing_accuracy") is not None:
            bits.append(f"mixing line {100 * e['mixing_accuracy']:.1f}%, "
                        f"{100 * abs(e['above_mixing_line']):.1f} points "
                        f"{'above' if e['above_mixing_line'] >= 0 else 'BELOW'} it")
        if bits:
            lines.append(f"{name}: " + "; ".join(bits))
    return lines
