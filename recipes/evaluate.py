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

import logging
import sys
from pathlib import Path

from reasoning.errors import UserError
from recipes import _cli, _runs

log = logging.getLogger("recipes.evaluate")

CONFIG_NAME = "evaluate"
_BASELINES = ("target-only", "draft-only")
_NOT_RESULT_KEYS = ("progress", "new_folder", "cache")
"""Top-level keys that do not change a result: left out of the saved config."""

EXIT_USER_ERROR = 2
EXIT_PROBLEMS_FAILED = _runs.EXIT_PROBLEMS_FAILED


def _fresh_folder(out: Path) -> Path:
    """``out-2``, ``out-3``, ... whichever does not exist yet."""
    i = 2
    while (cand := out.with_name(f"{out.name}-{i}")).exists():
        i += 1
    return cand


def run(cfg) -> int:
    """Run the composed config ``cfg``; returns the exit code."""
    from hydra.core.hydra_config import HydraConfig

    from reasoning.config_io import RunFolderError, check_same_config
    from reasoning.metrics import format_table
    from reasoning.pipeline import Pipeline, close_all, write_summary
    from reasoning.policies import AlwaysDraft, AlwaysTarget

    out = Path(HydraConfig.get().runtime.output_dir)
    if cfg.baseline is not None and cfg.baseline not in _BASELINES:
        raise UserError(f"baseline must be one of {', '.join(_BASELINES)} or null, got {cfg.baseline!r}")
    if "bench" in cfg:
        name = HydraConfig.get().runtime.choices.get("recipe")
        raise UserError(f"recipe {name!r} is a preset of recipes.bench (it sets bench.*): "
                        f"run python -m recipes.bench recipe={name}")
    # Cheap parts first, so a bad value fails before any model loads.
    policy = _cli.instantiate(cfg.policy, "policy")
    segmenter = _cli.instantiate(cfg.segmenter, "segmenter")
    loop = _cli.instantiate(cfg.loop, "loop")
    prompt = _cli.instantiate(cfg.prompt, "prompt")
    problems, report = _runs.load_problems(cfg)
    lazies = _runs.lazy_models(cfg)
    resolved = _runs.resolved_config(cfg, _NOT_RESULT_KEYS)
    try:
        check_same_config(out, resolved)
    except RunFolderError:
        if not cfg.new_folder:
            raise
        out = _fresh_folder(out)
        log.info("run folder holds another config; writing to %s instead", out)
    draft, target = lazies["draft"], lazies["target"]
    judge, bound = _runs.build_judge(cfg.judge, lazies)
    store, run_draft, run_target, judge, wrapped = _runs.wrap_with_cache(cfg, draft, target, judge, bound)
    pipe = Pipeline(draft=run_draft, target=run_target, judge=judge, policy=policy, segmenter=segmenter,
                    prompt=prompt, loop=loop)
    base_policy = {"target-only": AlwaysTarget(), "draft-only": AlwaysDraft()}.get(cfg.baseline)
    policies = [policy] if base_policy is None else [policy, base_policy]
    rows = []
    try:
        # Load the models the runs will use before any clock starts, so that no run's wall
        # time includes an engine start. With the step cache on, a model loads at its first
        # miss instead (a run whose steps all hit loads none), and that time is taken off.
        load_s = {} if store is not None else _cli.load_models(_runs.models_needed(policies), lazies)
        summary = _runs.run_into(pipe, problems, out, resolved, progress=cfg.progress, lazies=lazies,
                                 wrapped=wrapped, extra={"load_seconds": load_s})
        if report.get("skipped"):
            s = dict(summary)
            s["dataset_rows_skipped"] = report["skipped"]
            write_summary(out, s)
            print(f"skipped {report['skipped']} malformed dataset row(s) (dataset.skip_malformed=true)",
                  file=sys.stderr)
        name = HydraConfig.get().runtime.choices.get("recipe") or "run"
        rows.append((name, summary))
        failed = summary["errors"]
        if base_policy is not None:
            base_dir = out / f"baseline-{cfg.baseline}"
            base_cfg = resolved + f"\n# baseline run of the config above: policy={cfg.baseline}\n"
            base = _runs.run_into(pipe.with_policy(base_policy), problems, base_dir, base_cfg,
                                  progress=cfg.progress, lazies=lazies, wrapped=wrapped)
            rows.append((cfg.baseline, base))
            failed += base["errors"]
            s = dict(summary)
            bw, w = base.get("wall_seconds"), s.get("wall_seconds")
            s["baseline"] = {"name": cfg.baseline, "dir": str(base_dir),
                             "accuracy": base["accuracy"], "wall_seconds": bw}
            s["speedup_vs_baseline"] = (bw / w) if bw and w else None
            write_summary(out, s)
    finally:
        close_all([draft, target])
        if store is not None:
            store.close()
    print(format_table(rows))
    if store is not None:
        _runs.print_cache_hits(rows)
    if len(rows) == 2 and rows[1][1].get("wall_seconds") and rows[0][1].get("wall_seconds"):
        print(f"speed-up vs {rows[1][0]}: {rows[1][1]['wall_seconds'] / rows[0][1]['wall_seconds']:.2f}x")
    _runs.warn_token_budget(rows)
    print(f"run folder: {out}")
    return _runs.exit_code(failed)


def _saved(cfg) -> str:
    from hydra.core.hydra_config import HydraConfig

    out = Path(HydraConfig.get().runtime.output_dir)
    return f"{_cli.count_done(out)} finished problem(s) are saved in {out}"


def main(argv: list[str] | None = None) -> None:
    """Console entry point (``stepspec-evaluate`` / ``python -m recipes.evaluate``)."""
    _cli.hydra_main(CONFIG_NAME, run, _saved, argv)


if __name__ == "__main__":
    main()
