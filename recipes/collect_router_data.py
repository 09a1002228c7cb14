"""Collect router training data with the shadow policy, on *train* problems.

    python -m recipes.collect_router_data            # the Qwen CPU pair, 50 GSM8K train problems
    python -m recipes.collect_router_data dataset.limit=200 out=runs/router-data/big
    python -m recipes.collect_router_data draft=scripted target=scripted judge@reward=scripted \\
        dataset.split=train dataset.limit=3 out=runs/router-data/smoke

At every step of a problem the draft and the target each write the next step from the same
prefix (one draft call and one target call per round, batched across problems), the reward
(``reward:``, any judge config; by default the target rates each step 0-9) scores both, and the
answer goes on with the target's step. Writes, in ``out``: ``steps.jsonl`` (one row per step,
see :mod:`routers.collect`), ``config.yaml`` and ``summary.json``. Re-running into the same
folder resumes. A test split is refused: routers train on train splits only.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from reasoning.errors import UserError
from recipes import _cli

log = logging.getLogger("recipes.collect_router_data")

CONFIG_NAME = "collect_router_data"
EXIT_PROBLEMS_FAILED = 3
_NOT_RESULT_KEYS = ("progress",)


def check_split(dataset_cfg) -> None:
    """Refuse a data set config that reads a test split.

    >>> check_split({"name": "gsm8k", "split": "train"})
    >>> check_split({"name": "gsm8k", "split": "test"})
    Traceback (most recent call last):
    ...
    reasoning.errors.UserError: routers train on train splits only: dataset.split is 'test'; ...
    """
    split = str(dataset_cfg.get("split") or "").strip().lower()
    if split != "train":
        raise UserError(f"routers train on train splits only: dataset.split is {split or None!r}; "
                        "set dataset.split=train")


def run(cfg) -> int:
    """Run the composed config ``cfg``; returns the exit code."""
    from omegaconf import OmegaConf

    from reasoning.pipeline import close_all, grade_trace
    from routers.collect import ShadowCollector, check_same_config

    check_split(cfg.dataset)
    segmenter = _cli.instantiate(cfg.segmenter, "segmenter")
    loop = _cli.instantiate(cfg.loop, "loop")
    prompt = _cli.instantiate(cfg.prompt, "prompt")
    problems = _cli.instantiate(cfg.dataset, "dataset")
    _cli.check_model_paths(cfg.draft, "draft")
    _cli.check_model_paths(cfg.target, "target")
    out = Path(cfg.out)
    plain = OmegaConf.to_container(cfg, resolve=True)
    for k in _NOT_RESULT_KEYS:
        plain.pop(k, None)
    resolved = OmegaConf.to_yaml(OmegaConf.create(plain))
    check_same_config(out, resolved)
    draft = _cli.LazyGenerator(cfg.draft, "draft")
    target = _cli.LazyGenerator(cfg.target, "target")
    reward = _cli.instantiate(cfg.reward, "reward")
    reward = _cli.bind_judge(reward, target, draft)
    try:
        collector = ShadowCollector(draft, target, reward, segmenter, prompt, loop,
                                    top_logprobs=cfg.top_logprobs, target_samples=cfg.target_samples,
                                    sample_temperature=cfg.sample_temperature, grader=grade_trace)
    except ValueError as e:
        raise UserError(str(e)) from None
    try:
        _cli.load_models(["draft", "target"], {"draft": draft, "target": target})
        result = collector.run(problems, out_dir=out, config=resolved, progress=cfg.progress)
    finally:
        close_all([draft, target])
    s = result.summary
    mean = "n/a" if s["mean_advantage"] is None else f"{s['mean_advantage']:+.3f}"
    share = "n/a" if s["target_better_share"] is None else f"{s['target_better_share']:.1%}"
    print(f"router data: {s['rows']} steps of {s['problems']} problems; mean advantage {mean}; "
          f"target better on {share} of steps")
    print(f"folder: {out}")
    if s["errors"]:
        failed = ", ".join(s["failed_problems"][:5])
        print(f"error: {s['errors']} problem(s) failed and wrote no rows ({failed}); run again to retry "
              f"them; exit status {EXIT_PROBLEMS_FAILED}", file=sys.stderr)
        return EXIT_PROBLEMS_FAILED
    return 0


def main(argv: list[str] | None = None) -> None:
    """Console entry point (``python -m recipes.collect_router_data``)."""
    _cli.hydra_main(CONFIG_NAME, run, lambda cfg: f"the finished problems' rows are saved in {cfg.out}", argv)


if __name__ == "__main__":
    main()
