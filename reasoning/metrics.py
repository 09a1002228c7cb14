"""Metrics over graded traces: what ``summary.json`` holds and the table a run prints."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

from reasoning.comparison import (  # noqa: F401 - re-exported: callers use metrics.<name>
    engine_seconds,
    headline_speedup,
    mixing_accuracy,
    paired_difference,
    problem_oracle,
    speedup,
    versus_baselines,
)
from reasoning.types import Decision, Route, StepRecord, Trace


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float] | None:
    """95% Wilson score interval of a proportion ``k / n``; None when ``n`` is 0 (no interval).

    >>> wilson_interval(0, 0) is None
    True
    >>> lo, hi = wilson_interval(8, 10); round(lo, 3), round(hi, 3)
    (0.49, 0.943)
    """
    if n == 0:
        return None
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, centre - half), min(1.0, centre + half))


def percentile(xs: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile, ``q`` in [0, 100].

    >>> percentile([1, 2, 3, 4], 50)
    2.5
    """
    if not xs:
        return 0.0
    s = sorted(xs)
    k = (len(s) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def ratio_text(ratio: float | None) -> str:
    """A speed-up as printed: ``1.25x``, or ``-`` when there is none.

    >>> ratio_text(1.25), ratio_text(None)
    ('1.25x', '-')
    """
    return "-" if ratio is None else f"{ratio:.2f}x"


def _spread(xs: Sequence[float]) -> dict[str, float]:
    """Mean, p50 and p90 of ``xs`` (0 for each when empty).

    >>> _spread([1.0, 2.0, 3.0])
    {'mean': 2.0, 'p50': 2.0, 'p90': 2.8}
    """
    return {"mean": sum(xs) / len(xs) if xs else 0.0, "p50": percentile(xs, 50), "p90": percentile(xs, 90)}


def summarize(traces: Sequence[Trace], wall_seconds: float | None = None) -> dict[str, Any]:
    """Every figure of a run, from its traces alone (so it can always be recomputed).

    Keys: ``problems``, ``graded``, ``correct``, ``accuracy``, ``accuracy_ci95``, ``steps``,
    ``mean_steps``, ``target_steps``, ``target_step_share``, ``drafted_steps``,
    ``accepted_steps``, ``draft_acceptance``, ``tokens`` (generated, per model),
    ``prompt_tokens`` (prefilled, per model), ``kept_tokens``, ``seconds`` (per model and
    judge, summed over steps), ``seconds_per_problem`` (mean, p50, p90), ``latency_seconds``
    (admission to end, mean, p50, p90), ``wall_seconds``,
    ``stop_reasons``, ``token_budget_share`` (share of problems stopped by the budget),
    ``judge_calls`` (drafted steps the judge scored), ``cost`` (see :func:`cost_breakdown`),
    ``errors``, ``rule_steps`` (steps settled by each per-problem rule of the policy:
    ``{rule: steps}``), ``fallback_problems`` and ``target_budget_spent_problems`` (problems
    whose drafting was switched off, and whose target-token budget was spent),
    ``judge_decided_by`` (for a cascade of judges: steps each stage decided, ``{stage: steps}``,
    from the records' ``judge_info``; {} for any other judge), and, when
    problems carry ``subject`` or ``level`` in their meta (MATH), ``by_subject`` / ``by_level``:
    ``{value: {"problems", "correct", "accuracy"}}``.
    """
    n = len(traces)
    graded = [t for t in traces if t.correct is not None]
    correct = sum(1 for t in graded if t.correct)
    steps = [s for t in traces for s in t.steps]
    drafted = [s for s in steps if s.route is Route.DRAFT]
    accepted = [s for s in drafted if s.decision is Decision.ACCEPT]
    target_steps = sum(1 for s in steps if s.kept is Route.TARGET)
    ci = wilson_interval(correct, len(graded))
    return {
        "problems": n,
        "graded": len(graded),
        "correct": correct,
        "accuracy": correct / len(graded) if graded else None,
        "accuracy_ci95": None if ci is None else list(ci),
        "steps": len(steps),
        "mean_steps": len(steps) / n if n else 0.0,
        "target_steps": target_steps,
        "target_step_share": target_steps / len(steps) if steps else 0.0,
        "drafted_steps": len(drafted),
        "accepted_steps": len(accepted),
        "draft_acceptance": len(accepted) / len(drafted) if drafted else None,
        "tokens": {"draft": sum(s.draft_tokens for s in steps),
                   "target": sum(s.target_tokens for s in steps)},
        "prompt_tokens": {"draft": sum(s.draft_prompt_tokens for s in steps),
                          "target": sum(s.target_prompt_tokens for s in steps)},
        "kept_tokens": sum(s.kept_tokens for s in steps),
        "seconds": {"draft": sum(s.draft_seconds for s in steps),
                    "judge": sum(s.judge_seconds for s in steps),
                    "target": sum(s.target_seconds for s in steps)},
        "seconds_per_problem": _spread([t.seconds for t in traces]),
        "latency_seconds": _spread([t.latency_seconds for t in traces]),
        "wall_seconds": wall_seconds,
        "stop_reasons": dict(sorted(Counter(t.stop_reason.value for t in traces).items())),
        "grade_notes": dict(sorted(Counter(t.grade_note for t in traces if t.grade_note).items())),
        "errors": sum(1 for t in traces if t.error),
        "token_budget_share": (sum(1 for t in traces if t.stop_reason.value == "token_budget") / n
                               if n else 0.0),
        "judge_calls": sum(1 for s in steps if s.score is not None),
        "rule_steps": dict(sorted(Counter(s.rule.value for s in steps if s.rule is not None).items())),
        "fallback_problems": sum(1 for t in traces if t.fallback_at is not None),
        "target_budget_spent_problems": sum(1 for t in traces if t.target_budget_spent_at is not None),
        "judge_decided_by": _decided_by(steps),
        "cost": cost_breakdown(steps),
        **{f"by_{key}": b for key in ("subject", "level") if (b := breakdown(traces, key))},
    }


def _decided_by(steps: Sequence[StepRecord]) -> dict[str, int]:
    """Steps per cascade stage that decided them (``judge_info["decided_by"]``), by stage index.

    >>> from reasoning.types import Decision, Route, StepRecord
    >>> def rec(info): return StepRecord(0, Route.DRAFT, Decision.ACCEPT, Route.DRAFT, "a", judge_info=info)
    >>> _decided_by([rec({"decided_by": 1}), rec({"decided_by": 0}), rec({"decided_by": 1}), rec(None)])
    {'0': 1, '1': 2}
    """
    got = Counter(int(s.judge_info["decided_by"]) for s in steps
                  if s.judge_info is not None and s.judge_info.get("decided_by") is not None)
    return {str(k): got[k] for k in sorted(got)}


def _model_cost(steps: Sequence[StepRecord], who: str) -> dict[str, Any]:
    seconds = prefill = unsplit = 0.0
    for s in steps:
        sec = getattr(s, f"{who}_seconds")
        pre = getattr(s, f"{who}_prefill_seconds")
        seconds += sec
        if pre is None:
            unsplit += sec
        else:
            prefill += pre
    prompt = sum(getattr(s, f"{who}_prompt_tokens") for s in steps)
    read = sum(getattr(s, f"{who}_prefill_tokens") for s in steps)
    return {"seconds": seconds, "prefill_seconds": prefill, "decode_seconds": seconds - prefill - unsplit,
            "unsplit_seconds": unsplit, "prefill_tokens": read, "cached_prompt_tokens": prompt - read,
            "decode_tokens": sum(getattr(s, f"{who}_tokens") for s in steps)}


def cost_breakdown(steps: Sequence[StepRecord]) -> dict[str, Any]:
    """Where a run's engine seconds went, from the seconds and token counts the engines reported.

    ``draft`` and ``target`` each: ``seconds`` = ``prefill_seconds`` (reading prompts: for the
    target, mostly its catch-up reads of the draft's kept steps) + ``decode_seconds`` (writing) +
    ``unsplit_seconds`` (calls of an engine that does not time the two apart: vLLM, servers,
    transformers); ``prefill_tokens`` (prompt ids read), ``cached_prompt_tokens`` (prompt ids its
    prefix cache held), ``decode_tokens`` (ids generated). ``judge_seconds``. Of the draft's
    seconds, ``wasted_draft_seconds`` went into writing steps that were then thrown away
    (rejected, or stopped mid-step; their prefill, a read of the steps before that the draft's
    cache keeps for its next step, is not counted as wasted), or into the candidates of a kept
    step that were not kept (several candidates per step: their decode), ``kept_draft_seconds``
    into the rest; ``wasted_draft_tokens`` and ``stopped_drafts`` count them. ``engine_seconds`` = draft +
    target + judge seconds: what :func:`engine_seconds` reads.

    >>> from reasoning.types import Decision, Route, StepRecord
    >>> kept = StepRecord(0, Route.DRAFT, Decision.ACCEPT, Route.DRAFT, "a", draft_tokens=4,
    ...                   draft_prompt_tokens=10, draft_prefill_tokens=10, draft_seconds=2.0,
    ...                   draft_prefill_seconds=0.5, judge_seconds=0.25)
    >>> thrown = StepRecord(1, Route.DRAFT, Decision.REJECT, Route.TARGET, "b", draft_tokens=4,
    ...                     draft_prompt_tokens=14, draft_prefill_tokens=0, draft_seconds=1.0,
    ...                     draft_prefill_seconds=0.0, target_tokens=5, target_prompt_tokens=14,
    ...                     target_prefill_tokens=14, target_seconds=3.0)
    >>> c = cost_breakdown([kept, thrown])
    >>> c["draft"]["decode_seconds"], c["draft"]["cached_prompt_tokens"], c["wasted_draft_seconds"]
    (2.5, 14, 1.0)
    >>> c["target"]["unsplit_seconds"], c["engine_seconds"]
    (3.0, 6.25)
    """
    thrown = [s for s in steps if s.decision is Decision.REJECT and not s.draft_prefix_kept]
    # A thrown-away draft's decode is lost; its prefill (reading the steps before it) stays in the
    # draft's KV cache for its next step, so it is not. Of a kept step's several candidates
    # (judge=best-of-n), the others are thrown away the same way.
    others = [c for s in steps if s.decision is Decision.ACCEPT and s.candidates is not None
              for i, c in enumerate(s.candidates) if i != s.best_candidate]
    wasted = (sum(s.draft_seconds - (s.draft_prefill_seconds or 0.0) for s in thrown)
              + sum(float(c["seconds"]) - float(c.get("prefill_seconds") or 0.0) for c in others))
    draft = _model_cost(steps, "draft")
    target = _model_cost(steps, "target")
    judge = sum(s.judge_seconds for s in steps)
    return {"draft": draft, "target": target, "judge_seconds": judge,
            "wasted_draft_seconds": wasted, "kept_draft_seconds": draft["seconds"] - wasted,
            "wasted_draft_tokens": (sum(s.draft_tokens for s in thrown)
                                    + sum(int(c["tokens"]) for c in others)),
            "stopped_drafts": sum(1 for s in steps if s.draft_stopped_at is not None),
            "engine_seconds": draft["seconds"] + target["seconds"] + judge}



def breakdown(traces: Sequence[Trace], key: str) -> dict[str, dict[str, Any]]:
    """Accuracy per value of ``meta[key]`` (e.g. MATH subject or level); {} if no trace has it.

    >>> from reasoning.types import StopReason
    >>> ts = [Trace(str(i), "q", "1", (), StopReason.ANSWER, "", correct=c, meta={"level": lv})
    ...       for i, (c, lv) in enumerate([(True, 1), (False, 1), (True, 2)])]
    >>> breakdown(ts, "level")
    {'1': {'problems': 2, 'correct': 1, 'accuracy': 0.5}, '2': {'problems': 1, 'correct': 1, 'accuracy': 1.0}}
    """
    groups: dict[str, list[Trace]] = {}
    for t in traces:
        if key in t.meta:
            groups.setdefault(str(t.meta[key]), []).append(t)
    out = {}
    for value in sorted(groups):
        graded = [t for t in groups[value] if t.correct is not None]
        correct = sum(1 for t in graded if t.correct)
        out[value] = {"problems": len(groups[value]), "correct": correct,
                      "accuracy": correct / len(graded) if graded else None}
    return out


def target_token_share(summary: dict[str, Any]) -> float | None:
    """Share of all generated tokens that the target generated (drafts thrown away included).

    >>> target_token_share({"tokens": {"draft": 30, "target": 10}})
    0.25
    >>> target_token_share({"tokens": {"draft": 0, "target": 0}}) is None
    True
    """
    tok = summary.get("tokens") or {}
    total = (tok.get("draft") or 0) + (tok.get("target") or 0)
    return (tok.get("target") or 0) / total if total else None


def stop_reason_share(summary: dict[str, Any], reason: str) -> float:
    """Share of a run's problems that stopped for ``reason`` (e.g. ``token_budget``).

    >>> stop_reason_share({"problems": 4, "stop_reasons": {"answer": 3, "token_budget": 1}}, "token_budget")
    0.25
    """
    n = summary.get("problems") or 0
    return (summary.get("stop_reasons") or {}).get(reason, 0) / n if n else 0.0


def seconds_text(x: float | None) -> str:
    """Seconds as printed: one decimal from 1 s, else two significant digits.

    >>> seconds_text(12.34), seconds_text(0.5), seconds_text(0.000312), seconds_text(0.0), seconds_text(None)
    ('12.3', '0.5', '0.00031', '0', '-')
    """
    if x is None:
        return "-"
    return f"{x:.1f}" if abs(x) >= 1 else f"{x:.2g}"


def format_table(rows: Sequence[tuple[str, dict[str, Any]]], *, ci: bool = False,
                 speedups: Sequence[float | None] | None = None, markdown: bool = False,
                 estimates: Sequence[bool] | None = None) -> str:
    """A plain-text table of named summaries, one row each, for the terminal.

    Args:
        rows: ``(name, summary)`` pairs.
        ci: Add the 95% interval of the accuracy and the target-token share (see
            :func:`target_token_share`).
        speedups: Add a speed-up column, one value per row (None: ``-``).
        markdown: A Markdown (pipe) table instead of aligned text.
        estimates: One flag per row: its speed-up is an estimate (its steps, or the
            baseline's, came from the step cache), printed with a leading ``~``.

    ``engine s`` is the run's :func:`engine_seconds`.

    >>> s = {"problems": 2, "correct": 1, "graded": 2, "accuracy": 0.5, "accuracy_ci95": [0.0945, 0.9055],
    ...      "target_step_share": 0.25, "tokens": {"draft": 10, "target": 5}, "wall_seconds": 1.5,
    ...      "seconds_per_problem": {"mean": 0.75}, "mean_steps": 2.0,
    ...      "seconds": {"draft": 0.5, "judge": 0.0, "target": 0.75}}
    >>> print(format_table([("x", s)]))
    run  problems  accuracy      steps/problem  target steps  draft tok  target tok  engine s  wall s
      s/problem
    x    2         50.0% (1/2)   2.0            25.0%         10         5           1.2       1.5
      0.75
    >>> md = format_table([("x", s)], ci=True, speedups=[2.0], markdown=True, estimates=[True]).splitlines()
    >>> md[0][:38]
    '| run | problems | accuracy | 95% CI |'
    >>> print(md[2])
    | x | 2 | 50.0% (1/2) | 9.4-90.5% | 2.0 | 25.0% | 33.3% | 10 | 5 | 1.2 | 1.5 | ~2.00x | 0.75 |
    """
    head = ["run", "problems", "accuracy"] + (["95% CI"] if ci else []) + ["steps/problem", "target steps"]
    head += (["target tok share"] if ci else []) + ["draft tok", "target tok", "engine s", "wall s"]
    head += (["speed-up"] if speedups is not None else []) + ["s/problem"]
    body = []
    for i, (name, s) in enumerate(rows):
        acc = ("-" if s.get("accuracy") is None
               else f"{100 * s['accuracy']:.1f}% ({s['correct']}/{s['graded']})")
        row = [name, str(s["problems"]), acc]
        if ci:
            lo, hi = s.get("accuracy_ci95") or (None, None)
            row.append("-" if lo is None or not s.get("graded") else f"{100 * lo:.1f}-{100 * hi:.1f}%")
        row += [f"{s['mean_steps']:.1f}", f"{100 * s['target_step_share']:.1f}%"]
        if ci:
            share = target_token_share(s)
            row.append("-" if share is None else f"{100 * share:.1f}%")
        eng = engine_seconds(s) if "seconds" in s else None
        row += [str(s["tokens"]["draft"]), str(s["tokens"]["target"]), seconds_text(eng),
                seconds_text(s.get("wall_seconds"))]
        if speedups is not None:
            sp = speedups[i]
            mark = "~" if estimates is not None and estimates[i] and sp is not None else ""
            row.append(mark + ratio_text(sp))
        row.append(f"{s['seconds_per_problem']['mean']:.2f}")
        body.append(row)
    if markdown:
        def line(r: list[str]) -> str:
            return "| " + " | ".join(c.replace("|", "\\|") for c in r) + " |"

        return "\n".join([line(head), "|" + "---|" * len(head), *(line(r) for r in body)])
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *body])
