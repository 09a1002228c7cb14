"""The figures of a router data card, computed from the collected rows.

    python -m routers.card routers/data/gsm8k-train-outcome routers/data/gsm8k-train-outcome-chained
    python -m routers.card routers/data/gsm8k-train-outcome-chained \
        --write routers/data/gsm8k-train-outcome-chained/README.md
    python -m routers.card --router routers/trained/gsm8k-outcome-qwen-llamacpp \
        --write routers/trained/gsm8k-outcome-qwen-llamacpp/README.md

prints (or, with ``--write``, puts between the card's ``<!-- figures -->`` and
``<!-- /figures -->`` lines) a Markdown block: rows and problems; the step-level outcome
oracle's shares (:func:`routers.oracle.outcome_shares`); and, per problem, from its first row,
what routing whole problems could gain: how often the target's own answer is right
(``solved``), how often the draft's first step continued by the reward's model reaches the gold
answer (with a greedy draft continuing, that is the draft-only answer), and whether the two
models' first steps are the same text (:func:`routers.labels.same_step`), a signal that costs
one target step and no catch-up read. A problem is *safe to draft* when the draft's first row
says the draft reaches the gold answer or the target's own answer is wrong.

With ``--router FOLDER`` the block is a trained router's instead (:func:`render_router`, from
its ``router.json``): rows and problems, the candidates' CV scores, the held-out report and the
operating point.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

BEGIN, END = "<!-- figures -->", "<!-- /figures -->"


def card_figures(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The card's numbers.

    >>> rows = [
    ...     {"problem_id": "a", "step_index": 0, "draft_step": "x", "target_step": "x", "draft_score": 1.0,
    ...      "target_score": 1.0, "solved": True},
    ...     {"problem_id": "a", "step_index": 1, "draft_step": "y", "target_step": "z", "draft_score": 0.0,
    ...      "target_score": 1.0, "solved": True},
    ...     {"problem_id": "b", "step_index": 0, "draft_step": "p", "target_step": "q", "draft_score": 0.0,
    ...      "target_score": 1.0, "solved": True}]
    >>> f = card_figures(rows)
    >>> f["rows"], f["problems"], f["solved"], f["draft_first"], f["target_first"], f["safe"]
    (3, 2, 2, 1, 2, 1)
    >>> f["same_first"], f["same_first_safe"], f["other_first_safe"]
    (1, 1, 0)
    """
    from routers.labels import same_step
    from routers.oracle import outcome_shares

    first = {}
    for r in rows:
        if r["step_index"] == 0:
            first[r["problem_id"]] = r
    shares = outcome_shares(rows)
    safe = {pid: r["draft_score"] >= 1.0 or not r.get("solved") for pid, r in first.items()}
    same = {pid: same_step(r["draft_step"], r["target_step"]) for pid, r in first.items()}
    return {
        "rows": len(rows),
        "problems": len({r["problem_id"] for r in rows}),
        "shares": shares,
        "first_rows": len(first),
        "solved": sum(bool(r.get("solved")) for r in first.values()),
        "draft_first": sum(r["draft_score"] >= 1.0 for r in first.values()),
        "target_first": sum(r["target_score"] >= 1.0 for r in first.values()),
        "safe": sum(safe.values()),
        "same_first": sum(same.values()),
        "same_first_safe": sum(safe[p] for p in first if same[p]),
        "other_first_safe": sum(safe[p] for p in first if not same[p]),
    }


def _pct(k: int, n: int) -> str:
    return f"{k / n:.0%}" if n else "n/a"


def _share(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def render(f: Mapping[str, Any]) -> str:
    """The Markdown block of :func:`card_figures`' numbers."""
    s = f["shares"]
    n, same = f["first_rows"], f["same_first"]
    return "\n".join([
        f"**Rows so far: {f['rows']} rows from {f['problems']} problems.**",
        "",
        "| | share of rows |",
        "|---|---|",
        f"| both steps lead to the gold answer, or neither (advantage 0) | {_share(s['same'])} |",
        "| only the target's step does (advantage +1, label \"send to the target\") | "
        f"{_share(s['target_better'])} |",
        f"| only the draft's step does (advantage -1) | {_share(s['draft_better'])} |",
        f"| **an outcome oracle keeps the draft's step** (advantage <= 0) | **{_share(s['keep_share'])}** |",
        "",
        f"Per problem (its first row; {n} problems): the target's own answer is right on {f['solved']}; "
        f"the draft's first step continued by the draft reaches the gold answer on {f['draft_first']} "
        f"(the target's first step continued by the draft: {f['target_first']}). Safe to draft (the "
        f"draft reaches the gold answer, or the target's answer is wrong): {f['safe']} "
        f"({_pct(f['safe'], n)}). The two first steps are the same text on {same} problems, "
        f"{f['same_first_safe']} of them safe to draft ({_pct(f['same_first_safe'], same)}); on the "
        f"other {n - same}, {f['other_first_safe']} ({_pct(f['other_first_safe'], n - same)}).",
    ])


def _ci(ci: Sequence[float] | None) -> str:
    return f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def render_router(meta: Mapping[str, Any]) -> str:
    """The Markdown block of a trained router's ``router.json``: what it was trained on, the
    candidates' grouped-CV scores, the kept one's held-out report and its operating point.

    >>> lines = render_router({"split": {"train": {"rows": 10, "problems": 2}, "heldout": {"rows": 4,
    ...     "problems": 1}}, "train": {"rows": 6, "positives": 3}, "model": "logistic",
    ...     "candidates": {"logistic": {"roc_auc": 0.6}}, "selection": {"folds": 2},
    ...     "heldout": {"roc_auc": 0.5, "spearman": 0.1, "accuracy": 0.75}}).splitlines()
    >>> lines[0][:44], lines[4], lines[6][:60]
    ('**Trained on 10 rows from 2 train problems**', '| **logistic** (kept) | 0.600 |', \
'On the held-out problems: ROC-AUC 0.500, Spearman 0.100 with')
    """
    split, t = meta["split"], meta["train"]
    lines = [
        f"**Trained on {split['train']['rows']} rows from {split['train']['problems']} train problems** "
        f"(fitted on {t['rows']} after balancing the classes, {t['positives']} of them where the target's "
        f"step is better); held out for the report: {split['heldout']['rows']} rows from "
        f"{split['heldout']['problems']} problems.",
        "",
        f"| candidate | ROC-AUC, grouped CV on the training problems "
        f"({meta['selection'].get('folds')} folds) |",
        "|---|---|",
    ]
    for name, c in meta.get("candidates", {}).items():
        shown = f"**{name}** (kept)" if name == meta.get("model") else name
        lines.append(f"| {shown} | {_num(c.get('roc_auc'))} |")
    h = meta["heldout"]
    lines += ["", f"On the held-out problems: ROC-AUC {_num(h['roc_auc'])}{_ci(h.get('roc_auc_ci'))}, "
                  f"Spearman {_num(h['spearman'])}{_ci(h.get('spearman_ci'))} with the advantage, accuracy "
                  f"{_num(h['accuracy'])} at P >= 0.5 (95% intervals: bootstrap over held-out problems)."]
    op = meta.get("operating_point")
    if op:
        held = ("" if op.get("heldout_share") is None
                else f"; on the held-out problems it sends {op['heldout_share']:.1%}")
        lines += ["", f"Operating point: `policy.threshold={op['threshold']:.6g}` sends {op['share']:.1%} of "
                      f"{op['steps']} training steps to the target (asked {op['requested']:.1%}, "
                      f"{op['asked']}; from {op['from']}){held}."]
    return "\n".join(lines)


def write_block(card: Path, block: str) -> None:
    """Replace what lies between the card's figure markers with ``block``.

    Raises:
        SystemExit: the card has no markers.
    """
    text = card.read_text(encoding="utf-8")
    pat = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)
    if not pat.search(text):
        sys.exit(f"error: {card} has no {BEGIN} ... {END} lines to put the figures between")
    card.write_text(pat.sub(lambda _: f"{BEGIN}\n{block}\n{END}", text, count=1), encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> None:
    from reasoning.errors import UserError
    from routers.rows import load_rows

    p = argparse.ArgumentParser(prog="python -m routers.card", description=__doc__.split("\n\n")[0])
    p.add_argument("data", nargs="*", help="collection folders or steps.jsonl files")
    p.add_argument("--router", help="a trained router's folder: its router.json's figures instead of rows'")
    p.add_argument("--write", type=Path, help="a card (README.md) to put the figures in, between its markers")
    args = p.parse_args(argv)
    if bool(args.data) == bool(args.router):
        p.error("give collection folders or --router FOLDER (one of the two)")
    try:
        if args.router:
            from routers.saved import read_meta

            block = render_router(read_meta(args.router)[1])
        else:
            block = render(card_figures(load_rows(args.data)))
    except UserError as e:
        sys.exit(f"error: {e}")
    if args.write is not None:
        write_block(args.write, block)
    print(block)


if __name__ == "__main__":
    main()
