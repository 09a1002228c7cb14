"""Evaluate step-level speculative reasoning on a dataset; optionally beside a baseline.

    python -m recipes.evaluate recipe=cpu-demo
    python -m recipes.evaluate recipe=smoke policy.threshold=0.8 hydra.run.dir=runs/x
    python -m recipes.evaluate -m recipe=smoke policy.threshold=0.5,0.9

Writes, in the run folder (Hydra's ``hydra.run.dir``): ``traces.jsonl`` (a problem a line,
appended as each finishes), ``config.yaml`` (the resolved config) and ``summary.json``; with
``baseline=target-only`` also ``baseline-target-only/`` with the same three files. Re-running
the same command into the same folder resumes where it stopped.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from recipes import _cli
from reasoning.errors import UserError

log = logging.getLogger("recipes.evaluate")

CONFIG_NAME = "evaluate"
_BASELINES = ("target-only", "draft-only")


def run(cfg) -> int:
    """Run the composed config ``cfg``; returns the exit code."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

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
    problems = _cli.instantiate(cfg.dataset, "dataset")
    judge = _cli.instantiate(cfg.judge, "judge")
    draft = _cli.LazyGenerator(cfg.draft, "draft")
    target = _cli.LazyGenerator(cfg.target, "target")
    resolved = OmegaConf.to_yaml(cfg, resolve=True)
    pipe = Pipeline(draft=draft, target=target, judge=judge, policy=policy, segmenter=segmenter,
                    prompt=prompt, loop=loop)
    rows = []
    try:
        result = pipe.run(problems, out_dir=out, config=resolved, progress=cfg.progress)
        name = HydraConfig.get().runtime.choices.get("recipe") or "run"
        rows.append((name, result.summary))
        failed = result.summary["errors"]
        if cfg.baseline is not None:
            base_pipe = pipe.target_only() if cfg.baseline == "target-only" else pipe.draft_only()
            base_dir = out / f"baseline-{cfg.baseline}"
            base_cfg = resolved + f"\n# baseline run of the config above: policy={cfg.baseline}\n"
            base = base_pipe.run(problems, out_dir=base_dir, config=base_cfg, progress=cfg.progress)
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
    print(format_table(rows))
    if len(rows) == 2 and rows[1][1].get("wall_seconds") and rows[0][1].get("wall_seconds"):
        print(f"speed-up vs {rows[1][0]}: {rows[1][1]['wall_seconds'] / rows[0][1]['wall_seconds']:.2f}x")
    print(f"run folder: {out}")
    if failed:
        print(f"error: {failed} problem(s) failed; their reasons are in traces.jsonl (field 'error')",
              file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> None:
    """Console entry point (``stepspec-evaluate`` / ``python -m recipes.evaluate``)."""
    import hydra

    args = sys.argv[1:] if argv is None else list(argv)
    _cli.quiet_third_party_logs()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    try:
        _cli.check_group_overrides(args)
        _cli.compose_check(CONFIG_NAME, args)
    except UserError as e:
        _cli.fail(str(e))

    @hydra.main(config_path=str(_cli.CONF_DIR), config_name=CONFIG_NAME, version_base="1.3")
    def _task(cfg) -> None:
        try:
            code = run(cfg)
        except UserError as e:
            _cli.fail(str(e))
        except KeyboardInterrupt:
            _cli.fail("interrupted; run the same command again to resume where it stopped", code=130)
        if code:
            raise SystemExit(code)

    sys.argv = [sys.argv[0], *args]
    _task()


if __name__ == "__main__":
    main()
