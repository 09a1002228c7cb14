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
    from reasoning.metrics import engine_seconds, format_table, ratio_text
    from reasoning.pipeline import Pipeline, close_all, write_summary
    from reasoning.policies import AlwaysDraft, AlwaysTarget

    out = Path(HydraConfig.get().runtime.output_dir)
    baselines = baselines_of(cfg.baseline)
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
    base_policies = {"target-only": AlwaysTarget(), "draft-only": AlwaysDraft()}
    policies = [policy] + [base_policies[b] for b in baselines]
    rows = []
    dirs = {}
    try:
        # Load the models the runs will use before any clock starts, so that no run's wall
        # time includes an engine start. With the step cache on, a model loads at its first
        # miss instead (a run whose steps all hit loads none), and that time is taken off.
        load_s = {} if store is not None else _cli.load_models(_runs.models_needed(policies), lazies)
        name = HydraConfig.get().runtime.choices.get("recipe") or "run"
        caches = _runs.reset_engine_caches(lazies)
        summary = _runs.run_into(pipe, problems, out, resolved, progress=cfg.progress, lazies=lazies,
                                 wrapped=wrapped, extra={"load_seconds": load_s, "engine_caches": caches})
        if report.get("skipped"):
            print(f"skipped {report['skipped']} malformed dataset row(s) (dataset.skip_malformed=true)",
                  file=sys.stderr)
        rows.append((name, summary))
        dirs[name] = out
        failed = summary["errors"]
        for b in baselines:  # each from empty engine caches: no free prefill from the run before
            base_dir = out / f"baseline-{b}"
            base_cfg = resolved + f"\n# baseline run of the config above: policy={b}\n"
            caches = _runs.reset_engine_caches(lazies)
            rows.append((b, _runs.run_into(pipe.with_policy(base_policies[b]), problems, base_dir, base_cfg,
                                           progress=cfg.progress, lazies=lazies, wrapped=wrapped,
                                           extra={"engine_caches": caches})))
            dirs[b] = base_dir
            failed += rows[-1][1]["errors"]
        has_base = "target-only" in baselines
        heads = _runs.beside_baselines(rows, dirs, "target-only" if has_base else None,
                                       "draft-only" if "draft-only" in baselines else None, pair_base=False)
        s = dict(summary)
        if report.get("skipped"):
            s["dataset_rows_skipped"] = report["skipped"]
        if has_base:
            s.update(heads[name])
        if has_base and "draft-only" in baselines:
            s["problem_oracle"] = _runs.problem_ceiling(dirs["target-only"], dirs["draft-only"])
        if baselines:
            s["baselines"] = {n: {"dir": str(dirs[n]), "accuracy": b["accuracy"], "engine_seconds":
                                  engine_seconds(b), "wall_seconds": b.get("wall_seconds")}
                              for n, b in rows[1:]}
        write_summary(out, s)
    finally:
        close_all([draft, target])
        if store is not None:
            store.close()
    print(format_table(rows, speedups=[heads[n].get("speedup_vs_target_only") for n, _ in rows] if has_base
                       else None, estimates=[bool(heads[n].get("speedup_is_estimate")) for n, _ in rows]))
    if any(heads[n].get("speedup_is_estimate") for n, _ in rows):
        print(_runs.ESTIMATE_NOTE)
    for line in _runs.baseline_lines({"runs": {n: {**heads[n], "cost": s["cost"]} for n, s in rows}}):
        print(line)
    if store is not None:
        _runs.print_cache_hits(rows)
    if (oracle := _runs.oracle_line(s.get("problem_oracle"))) is not None:
        print(oracle)
    if has_base:
        sp = heads[rows[0][0]].get("speedup_vs_target_only")
        mark = "~" if heads[rows[0][0]].get("speedup_is_estimate") else ""
        print(f"speed-up vs target-only (engine seconds): {mark}{ratio_text(sp)}")
    if len(rows) > 1:
        picture = _picture(out)
        if picture is not None:
            print(f"accuracy against cost: {picture}")
    _runs.warn_token_budget(rows)
    print(f"run folder: {out}")
    return _runs.exit_code(failed)


def baselines_of(node) -> list[str]:
    """``baseline`` (null, one name, or a list of names) as a list of baseline names.

    >>> baselines_of(None), baselines_of("target-only"), baselines_of(["target-only", "draft-only"])
    ([], ['target-only'], ['target-only', 'draft-only'])

    Raises:
        UserError: an unknown name, or one listed twice.
    """
    from omegaconf import OmegaConf

    if node is None:
        return []
    names = OmegaConf.to_container(node) if OmegaConf.is_config(node) else node
    names = [names] if isinstance(names, str) else list(names)
    for b in names:
        if b not in _BASELINES:
            raise UserError(f"baseline must be one of {', '.join(_BASELINES)}, a list of them, or null, "
                            f"got {b!r}")
    if len(set(names)) != len(names):
        raise UserError(f"baseline lists a name twice: {names}")
    return names


def _picture(out: Path) -> Path | None:
    """Accuracy against engine seconds (with the mixing line) for the run and its baselines, as
    ``compare.png`` in the run folder (see :mod:`recipes.compare`); None if it cannot be drawn."""
    try:
        from recipes.compare import build, plot

        plot(build([out]), out)
    except Exception as e:  # noqa: BLE001 - the figures are written; the picture is extra
        log.warning("no accuracy-vs-cost picture: %s", e)
        return None
    return out / "compare.png"


def _saved(cfg) -> str:
    from hydra.core.hydra_config import HydraConfig

    out = Path(HydraConfig.get().runtime.output_dir)
    return f"{_cli.count_done(out)} finished problem(s) are saved in {out}"


def main(argv: list[str] | None = None) -> None:
    """Console entry point (``stepspec-evaluate`` / ``python -m recipes.evaluate``)."""
    _cli.hydra_main(CONFIG_NAME, run, _saved, argv)


if __name__ == "__main__":
    main()
