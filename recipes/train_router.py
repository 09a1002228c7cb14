"""Train a router on rows collected by ``recipes.collect_router_data`` (train problems only).

    python -m recipes.train_router runs/router-data/gsm8k-train --out runs/router/lightweight
    python -m recipes.train_router runs/router-data/gsm8k-train --kind seq-classification \\
        --base-model smollm2-135m --out runs/router/seq --epochs 1 --max-length 384
    python -m recipes.evaluate recipe=arbitrage judge.path=runs/router/lightweight

``lightweight`` (the default) compares a logistic regression and gradient boosting on the
draft's cheap features by grouped cross-validation on the training problems (``--cv-folds``
folds, a problem's rows in one fold) and keeps the better by mean CV ROC-AUC;
``seq-classification`` fine-tunes a transformers model on the annotated history and the drafted
step. Held-out problems (not rows), never used to choose, give the final report: ROC-AUC,
accuracy and the Spearman correlation of the router's P with the advantage, ROC-AUC and
Spearman with 95% intervals from a bootstrap over held-out problems
(``--bootstrap-resamples``). The router folder holds ``router.json`` (kind, format version, features, metrics)
and the model; :class:`routers.judge.RouterJudge` (``judge=arbitrage``) loads it.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from reasoning.errors import UserError
from recipes import _cli

log = logging.getLogger("recipes.train_router")

_USAGE = "python -m recipes.train_router DATA... --out DIR [--kind lightweight|seq-classification]"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        _cli.fail(f"{message} (usage: {_USAGE.replace('python -m recipes.train_router', self.prog)})")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = _Parser(prog=_cli.prog_name("recipes.train_router"), description=__doc__.split("\n\n")[0])
    p.add_argument("data", nargs="+", help="collection folders (holding steps.jsonl) or steps.jsonl files")
    p.add_argument("--out", required=True, help="the router folder to write")
    p.add_argument("--kind", default="lightweight", choices=["lightweight", "seq-classification"])
    p.add_argument("--margin", type=float, default=0.0,
                   help="label 1 (send to the target) when target score - draft score > margin")
    p.add_argument("--average-samples", action="store_true",
                   help="compare the draft with the mean score of all target samples of a step")
    p.add_argument("--no-balance", action="store_true", help="do not down-sample the majority class")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--test-fraction", type=float, default=0.25,
                   help="share of problems held out (for the final report only)")
    p.add_argument("--cv-folds", type=int, default=5,
                   help="lightweight: grouped CV folds on the training problems that choose the model")
    p.add_argument("--candidates", default="logistic,gboost",
                   help="lightweight: the models compared by grouped CV, comma-separated (logistic, gboost); "
                        "a logistic router is read from router.json's coefficients, no pickle")
    p.add_argument("--target-share", default="oracle",
                   help="lightweight: the share of steps the router's operating point sends to the target, "
                        "calibrated on out-of-fold P of the training steps: a number in [0, 1], 'oracle' "
                        "(the share of training steps where the target's step is better) or 'none'")
    p.add_argument("--bootstrap-resamples", type=int, default=1000,
                   help="resamples of held-out problems for the 95%% intervals")
    g = p.add_argument_group("seq-classification")
    g.add_argument("--base-model", default="smollm2-135m", help="short name, local folder or hub id")
    g.add_argument("--epochs", type=int, default=1)
    g.add_argument("--max-steps", type=int, default=None)
    g.add_argument("--lr", type=float, default=5e-5)
    g.add_argument("--batch-size", type=int, default=8)
    g.add_argument("--max-length", type=int, default=512)
    g.add_argument("--device", default="cpu")
    return p.parse_args(argv)


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _ci(ci) -> str:
    return "" if not ci else f" [{ci[0]:.3f}, {ci[1]:.3f}]"


def _report(name: str, m) -> None:
    """The held-out report: point estimates and 95% intervals (bootstrap over problems)."""
    print(f"{name}: held-out ROC-AUC {_fmt(m['roc_auc'])}{_ci(m.get('roc_auc_ci'))}, accuracy "
          f"{_fmt(m['accuracy'])}, Spearman {_fmt(m['spearman'])}{_ci(m.get('spearman_ci'))} "
          f"(95% intervals: bootstrap over held-out problems)")


def _share(text: str) -> float | str | None:
    """``--target-share``: a number in [0, 1], ``oracle`` or ``none``."""
    if text in ("oracle", "none"):
        return None if text == "none" else text
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not 0.0 <= v <= 1.0:
        raise UserError(f"--target-share must be a number in [0, 1], 'oracle' or 'none', got {text!r}")
    return v


def run(args: argparse.Namespace) -> int:
    from routers.train import load_rows, train_lightweight, train_seq_router

    if not 0.0 <= args.test_fraction < 1.0:
        raise UserError(f"--test-fraction must be in [0, 1), got {args.test_fraction}")
    if args.cv_folds < 2:
        raise UserError(f"--cv-folds must be >= 2, got {args.cv_folds}")
    if args.bootstrap_resamples < 1:
        raise UserError(f"--bootstrap-resamples must be >= 1, got {args.bootstrap_resamples}")
    share = _share(args.target_share)
    rows = load_rows(args.data)
    kw = dict(margin=args.margin, average_samples=args.average_samples, balance_classes=not args.no_balance,
              seed=args.seed, test_fraction=args.test_fraction, bootstrap_resamples=args.bootstrap_resamples)
    if args.kind == "lightweight":
        try:
            names = [c.strip() for c in args.candidates.split(",") if c.strip()]
            router = train_lightweight(rows, cv_folds=args.cv_folds, target_share=share, candidates=names,
                                       **kw)
        except ImportError as e:
            raise UserError(f"the lightweight router needs scikit-learn: pip install -e '.[router]' "
                            f"({e})") from None
        router.meta["data"] = [str(d) for d in args.data]
        router.save(args.out)
        meta = router.meta
        for name, m in meta["candidates"].items():
            print(f"{name:>9}: CV ROC-AUC {_fmt(m['roc_auc'])} ({meta['selection']['method']})")
        cost = meta["cost_ms"]
        print(f"kept {meta['model']} ({meta['selected_by']}; CV ROC-AUC {_fmt(meta['cv_score'])}); "
              f"{cost.get('single_ms')} ms per decision alone, {cost.get('batch64_ms')} ms in a batch of 64")
        _report(meta["model"], meta["heldout"])
        op = meta.get("operating_point")
        if op:
            held = ("" if op["heldout_share"] is None
                    else f"; on the held-out problems {op['heldout_share']:.1%}")
            print(f"operating point: policy.threshold={op['threshold']:.6g} sends {op['share']:.1%} of "
                  f"{op['steps']} training steps to the target (asked {op['requested']:.1%}, "
                  f"{op['asked']}; from {op['from']}){held}")
    else:
        try:
            meta = train_seq_router(rows, args.base_model, args.out, epochs=args.epochs,
                                    max_steps=args.max_steps, lr=args.lr, batch_size=args.batch_size,
                                    max_length=args.max_length, device=args.device, **kw)
        except ImportError as e:
            raise UserError(f"the seq-classification router needs torch and transformers: pip install -e "
                            f"'.[hf]' ({e})") from None
        _report(f"seq-classification ({meta['steps']} steps)", meta["heldout"])
    from routers.oracle import outcome_shares

    o = outcome_shares(rows, args.margin)
    print(f"the oracle (target when its score beats the draft's by more than {args.margin:g}) keeps the "
          f"draft's step at {o['keep_share']:.1%} of {o['rows']} rows: target better "
          f"{o['target_better']:.1%}, draft better {o['draft_better']:.1%}, same {o['same']:.1%}")
    t, split = meta["train"], meta["split"]
    print(f"split by problem: train {split['train']['rows']} rows of {split['train']['problems']} problems "
          f"(fitted on {t['rows']}, {t['positives']} where the target is better), held out "
          f"{split['heldout']['rows']} rows of {split['heldout']['problems']} problems")
    op = meta.get("operating_point")
    thr = f" policy.threshold={op['threshold']:.6g}" if op else ""
    print(f"router: {args.out} (python -m recipes.evaluate recipe=arbitrage judge.path={args.out}{thr})")
    log.debug("router.json: %s", json.dumps(meta))
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point (``python -m recipes.train_router``)."""
    _cli.quiet_third_party_logs()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    args = parse_args(sys.argv[1:] if argv is None else list(argv))
    try:
        code = run(args)
    except UserError as e:
        _cli.fail(str(e))
    if code:
        raise SystemExit(code)


if __name__ == "__main__":
    main()
