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

import functools
import logging
import signal
import sys
from pathlib import Path

from reasoning.errors import UserError
from recipes import _cli

log = logging.getLogger("recipes.evaluate")

CONFIG_NAME = "evaluate"
_BASELINES = ("target-only", "draft-only")
_NOT_RESULT_KEYS = ("progress", "new_folder")
"""Top-level keys that do not change a result: left out of the saved config."""

EXIT_USER_ERROR = 2
EXIT_PROBLEMS_FAILED = 3


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C so that ``finally`` blocks run."""


def _on_sigterm(signum, frame):  # noqa: ARG001
    raise Terminated()


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
    problems = _cli.instantiate(cfg.dataset, "dataset", report=report)
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
    draft = _cli.LazyGenerator(cfg.draft, "draft")
    target = _cli.LazyGenerator(cfg.target, "target")
    judge = _cli.instantiate(cfg.judge, "judge")
    if isinstance(judge, functools.partial):
        # A judge config with `_partial_: true` is finished here with the run's models
        # (e.g. the target model as judge): `generator` is the target, `draft` the draft.
        judge = _cli.bind_judge(judge, {"target": target, "draft": draft})
    pipe = Pipeline(draft=draft, target=target, judge=judge, policy=policy, segmenter=segmenter,
                    prompt=prompt, loop=loop)
    rows = []
    try:
        # Load the models the runs will use before any clock starts, so that no run's wall
        # time includes an engine start.
        load_s = _cli.load_models(_models_needed(policy, cfg.baseline), {"draft": draft, "target": target})
        result = pipe.run(problems, out_dir=out, config=resolved, progress=cfg.progress)
        result.summary["load_seconds"] = load_s
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
        print(f"error: {failed} problem(s) failed; their reasons are in traces.jsonl (field 'error'); "
              f"exit status {EXIT_PROBLEMS_FAILED}", file=sys.stderr)
        return EXIT_PROBLEMS_FAILED
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
        from hydra.core.hydra_config import HydraConfig

        previous = signal.signal(signal.SIGTERM, _on_sigterm)
        try:
            code = run(cfg)
        except UserError as e:
            _cli.fail(str(e))
        except KeyboardInterrupt as e:
            out = Path(HydraConfig.get().runtime.output_dir)
            what = "terminated" if isinstance(e, Terminated) else "interrupted"
            _cli.fail(f"{what}; {_cli.count_done(out)} finished problem(s) are saved in {out}; "
                      "run the same command again to resume", code=143 if isinstance(e, Terminated) else 130)
        finally:
            signal.signal(signal.SIGTERM, previous)
        if code:
            raise SystemExit(code)

    sys.argv = [sys.argv[0], *args]
    _task()


if __name__ == "__main__":
    main()
