"""Evaluate step-level speculative reasoning on a dataset; optionally beside a baseline.

    python -m recipes.evaluate recipe=cpu-demo
    python -m recipes.evaluate recipe=smoke policy.threshold=0.8 hydra.run.dir=runs/x
    python -m recipes.evaluate -m recipe=smoke policy.threshold=0.5,0.9

Writes, in the run folder (Hydra's ``hydra.run.dir``): ``traces.jsonl`` (a problem a line,
appended as each finishes), ``config.yaml`` (the resolved config) and ``summary.json``; with
``baseline=target-only`` also ``baseline-target-only/`` with the same three files. Re-running
the same command into the same folder resumes where it stopped.

With ``cache.path=FILE`` every engine call and judge score goes through an on-disk step cache
(:mod:`reasoning.cache`): a sweep (``-m policy.threshold=0.5,0.9``) computes each step once.
A model is then built at its first cache miss (a run that only hits builds none), and
``summary.json`` counts this invocation's hits and misses per model and judge under ``cache``.
"""

from __future__ import annotations

import functools
import logging
import sys
import time
from pathlib import Path
from typing import Any

from reasoning.errors import UserError
from recipes import _cli

log = logging.getLogger("recipes.evaluate")

CONFIG_NAME = "evaluate"
_BASELINES = ("target-only", "draft-only")
_NOT_RESULT_KEYS = ("progress", "new_folder", "cache")
"""Top-level keys that do not change a result: left out of the saved config."""

EXIT_USER_ERROR = 2
EXIT_PROBLEMS_FAILED = 3


def _fresh_folder(out: Path) -> Path:
    """``out-2``, ``out-3``, ... whichever does not exist yet."""
    i = 2
    while (cand := out.with_name(f"{out.name}-{i}")).exists():
        i += 1
    return cand


def _models_needed(policy, baseline: str | None) -> list[str]:
    """Which of draft and target the run (and its baseline) will call."""
    from reasoning.policies import AlwaysDraft, AlwaysTarget

    need = set()
    need |= {"target"} if isinstance(policy, AlwaysTarget) else {"draft"} if isinstance(
        policy, AlwaysDraft) else {"draft", "target"}
    if baseline == "target-only":
        need.add("target")
    elif baseline == "draft-only":
        need.add("draft")
    return sorted(need)


class _TimedLazy(_cli.LazyGenerator):
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


def _wrap_with_cache(cfg, draft, target, judge, judge_bound: bool):
    """With ``cache.path`` set: the step cache and the cached draft, target and judge.

    Returns ``(cache or None, draft, target, judge, {name: wrapper})``. A model's identity in
    the cache is its resolved config node; a judge's is its node plus, when it was bound to the
    run's models, theirs.
    """
    from omegaconf import OmegaConf

    c = cfg.get("cache") or {}
    if not c.get("path"):
        return None, draft, target, judge, {}
    from reasoning.cache import CachedGenerator, CachedJudge, StepCache, model_identity

    store = StepCache(c.path)
    ids = {"draft": model_identity(cfg.draft), "target": model_identity(cfg.target)}
    wrapped: dict[str, Any] = {"draft": CachedGenerator(draft, store, ids["draft"]),
                               "target": CachedGenerator(target, store, ids["target"])}
    if c.get("judge", True):
        jid = model_identity({"judge": OmegaConf.to_container(cfg.judge, resolve=True),
                              "models": ids if judge_bound else None})
        wrapped["judge"] = CachedJudge(judge, store, jid)
    log.info("step cache %s (%d entries)", store.path, len(store))
    return store, wrapped["draft"], wrapped["target"], wrapped.get("judge", judge), wrapped


def _account(summary: dict, lazies: dict, loaded_before: dict, wrapped: dict, stats_before: dict) -> None:
    """Add a run's cache counts to its summary, and take models built during the run off its wall time."""
    during = {n: g.load_seconds - loaded_before[n] for n, g in lazies.items()
              if g.load_seconds > loaded_before[n]}
    if during:
        if summary.get("wall_seconds") is not None:
            summary["wall_seconds"] = max(0.0, summary["wall_seconds"] - sum(during.values()))
        summary["load_seconds"] = {**(summary.get("load_seconds") or {}),
                                   **{n: round(v, 2) for n, v in during.items()}}
    if wrapped:
        per = {n: {k: v - stats_before[n].get(k, 0) for k, v in w.stats().items()}
               for n, w in wrapped.items()}
        summary["cache"] = per
        summary["cache_hits"] = sum(d["hits"] for d in per.values())
        summary["cache_misses"] = sum(d["misses"] for d in per.values())


def run(cfg) -> int:
    """Run the composed config ``cfg``; returns the exit code."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from reasoning.config_io import RunFolderError, check_same_config
    from reasoning.metrics import format_table
    from reasoning.pipeline import Pipeline, close_all, write_summary

    out = Path(HydraConfig.get().runtime.output_dir)
    if cfg.baseline is not None and cfg.baseline not in _BASELINES:
        raise UserError(f"baseline must be one of {', '.join(_BASELINES)} or null, got {cfg.baseline!r}")
    # Cheap parts first, so a bad value fails before any model loads.
    policy = _cli.instantiate(cfg.policy, "policy")
    segmenter = _cli.instantiate(cfg.segmenter, "segmenter")
    loop = _cli.instantiate(cfg.loop, "loop")
    prompt = _cli.instantiate(cfg.prompt, "prompt")
    report: dict = {}
    # Built as a partial and called here, so that `report` is this dict (Hydra copies kwargs).
    load = _cli.instantiate(cfg.dataset, "dataset", _partial_=True)
    try:
        problems = load(report=report)
    except (UserError, ValueError, FileNotFoundError) as e:
        raise UserError(f"dataset: {_cli.one_line(e)}") from None
    _cli.check_model_paths(cfg.draft, "draft")
    _cli.check_model_paths(cfg.target, "target")
    plain = OmegaConf.to_container(cfg, resolve=True)
    for k in _NOT_RESULT_KEYS:
        plain.pop(k, None)
    resolved = OmegaConf.to_yaml(OmegaConf.create(plain))
    try:
        check_same_config(out, resolved)
    except RunFolderError:
        if not cfg.new_folder:
            raise
        out = _fresh_folder(out)
        log.info("run folder holds another config; writing to %s instead", out)
    draft = _TimedLazy(cfg.draft, "draft")
    target = _TimedLazy(cfg.target, "target")
    lazies = {"draft": draft, "target": target}
    judge = _cli.instantiate(cfg.judge, "judge")
    bound = isinstance(judge, functools.partial)
    if bound:
        # A judge config with `_partial_: true` is finished here with the run's models
        # (e.g. the target model as judge): `generator` is the target, `draft` the draft.
        judge = _cli.bind_judge(judge, target, draft)
    store, run_draft, run_target, judge, wrapped = _wrap_with_cache(cfg, draft, target, judge, bound)
    pipe = Pipeline(draft=run_draft, target=run_target, judge=judge, policy=policy, segmenter=segmenter,
                    prompt=prompt, loop=loop)
    rows = []
    try:
        # Load the models the runs will use before any clock starts, so that no run's wall
        # time includes an engine start. With the step cache on, a model loads at its first
        # miss instead (a run whose steps all hit loads none), and that time is taken off.
        load_s = {} if store is not None else _cli.load_models(_models_needed(policy, cfg.baseline), lazies)
        loaded0 = {n: g.load_seconds for n, g in lazies.items()}
        stats0 = {n: w.stats() for n, w in wrapped.items()}
        result = pipe.run(problems, out_dir=out, config=resolved, progress=cfg.progress)
        result.summary["load_seconds"] = load_s
        _account(result.summary, lazies, loaded0, wrapped, stats0)
        write_summary(out, result.summary)
        if report.get("skipped"):
            s = dict(result.summary)
            s["dataset_rows_skipped"] = report["skipped"]
            write_summary(out, s)
            print(f"skipped {report['skipped']} malformed dataset row(s) (dataset.skip_malformed=true)",
                  file=sys.stderr)
        name = HydraConfig.get().runtime.choices.get("recipe") or "run"
        rows.append((name, result.summary))
        failed = result.summary["errors"]
        if cfg.baseline is not None:
            base_pipe = pipe.target_only() if cfg.baseline == "target-only" else pipe.draft_only()
            base_dir = out / f"baseline-{cfg.baseline}"
            base_cfg = resolved + f"\n# baseline run of the config above: policy={cfg.baseline}\n"
            loaded0 = {n: g.load_seconds for n, g in lazies.items()}
            stats0 = {n: w.stats() for n, w in wrapped.items()}
            base = base_pipe.run(problems, out_dir=base_dir, config=base_cfg, progress=cfg.progress)
            _account(base.summary, lazies, loaded0, wrapped, stats0)
            write_summary(base_dir, base.summary)
            rows.append((cfg.baseline, base.summary))
            failed += base.summary["errors"]
            s = dict(result.summary)
            bw, w = base.summary.get("wall_seconds"), s.get("wall_seconds")
            s["baseline"] = {"name": cfg.baseline, "dir": str(base_dir),
                             "accuracy": base.summary["accuracy"], "wall_seconds": bw}
            s["speedup_vs_baseline"] = (bw / w) if bw and w else None
            write_summary(out, s)
    finally:
        close_all([draft, target])
        if store is not None:
            store.close()
    print(format_table(rows))
    if store is not None:
        for name, s in rows:
            counts = ", ".join(f"{n} {c['hits']}/{c['hits'] + c['misses']}" for n, c in s["cache"].items())
            print(f"step cache hits ({name}): {counts}")
    if len(rows) == 2 and rows[1][1].get("wall_seconds") and rows[0][1].get("wall_seconds"):
        print(f"speed-up vs {rows[1][0]}: {rows[1][1]['wall_seconds'] / rows[0][1]['wall_seconds']:.2f}x")
    for name, summ in rows:
        if summ.get("token_budget_share", 0.0) > 0.05:
            print(f"warning: {name}: {100 * summ['token_budget_share']:.0f}% of problems hit the token "
                  f"budget ({summ.get('token_budget')} tokens); accuracy is cut by it "
                  "(raise loop.token_budget)",
                  file=sys.stderr)
    print(f"run folder: {out}")
    if failed:
        print(f"error: {failed} problem(s) failed; their reasons are in traces.jsonl (field 'error'); "
              f"exit status {EXIT_PROBLEMS_FAILED}", file=sys.stderr)
        return EXIT_PROBLEMS_FAILED
    return 0


def _saved(cfg) -> str:
    from hydra.core.hydra_config import HydraConfig

    out = Path(HydraConfig.get().runtime.output_dir)
    return f"{_cli.count_done(out)} finished problem(s) are saved in {out}"


def main(argv: list[str] | None = None) -> None:
    """Console entry point (``stepspec-evaluate`` / ``python -m recipes.evaluate``)."""
    _cli.hydra_main(CONFIG_NAME, run, _saved, argv)


if __name__ == "__main__":
    main()
