"""Compare runs side by side: one table, one plot, one Markdown report.

    python -m recipes.compare runs/smoke/A runs/smoke/B --out reports/ab
    python -m recipes.compare multirun/smoke/2026-01-01_12-00-00 --out reports/sweep
    python -m recipes.compare multirun/smoke/SWEEP --baseline runs/target-only/X --out reports/sweep

Each RUN_DIR is a run folder (it holds ``summary.json``; its ``baseline-*/`` subfolders count
as runs of their own) or a sweep folder (Hydra's multirun folder: its subfolders are runs).
A run is labelled with its recipe and the config knobs that differ between the runs of that
recipe (``smoke policy.threshold=0.3``). Speed-ups are over engine seconds (draft + target +
judge), against one baseline run: the one given with ``--baseline``, else the first target-only
run among the inputs; where a run or the baseline had step-cache hits the speed-up is marked
``~``, an estimate.

Writes into ``--out``: ``compare.png`` and ``compare.svg`` (accuracy against engine seconds, with
the mixing line from draft-only to target-only when both are among the inputs, and against the
target's share of generated tokens, with 95% intervals, the Pareto frontier and each sweep
joined in order of its knob; points are numbered by their row in the table, the legend names
them) and ``compare.md`` (the table, each run against target-only with a paired interval and
its margin over the mixing line, the plot and warnings).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from reasoning.errors import UserError
from reasoning.metrics import speedup  # noqa: F401 - kept importable from here
from recipes import _cli
from recipes._compare_plot import (  # noqa: F401 - kept importable from here
    figure,
    label_points,
    pareto_front,
    plot,
    sweeps,
)
from recipes._compare_runs import (  # noqa: F401 - kept importable from here
    BUDGET_WARN_SHARE,
    Comparison,
    Run,
    build,
    differing_knobs,
    find_runs,
    flatten,
    knob,
    label_runs,
    load_run,
)

_USAGE = "python -m recipes.compare RUN_DIR... --out DIR [--baseline RUN_DIR]"


def markdown(comp: Comparison, image: str = "compare.png") -> str:
    """The Markdown report: the table, the plot, warnings, what each run is."""
    lines = [f"# Comparison of {len(comp.runs)} runs", "", comp.table(markdown=True), ""]
    base = comp.baseline
    lines.append("Accuracy with its 95% Wilson interval; target steps: share of steps the target wrote; "
                 "target tok share: target tokens / (draft + target tokens generated, rejected drafts "
                 "included); engine s: draft + target + judge seconds (step-cache hits at the seconds "
                 "they took when computed); wall s: wall-clock seconds without model loading and grading; "
                 "speed-up: "
                 + (f"engine seconds of `{base.label}` / engine seconds of the run (~: an estimate, "
                    "step-cache hits in it or the baseline)." if base is not None
                    else "none (no baseline run)."))
    lines += ["", f"![accuracy against engine seconds and target-token share]({image})", ""]
    vs = [(r, v) for r, v in zip(comp.runs, comp.versus) if v.get("paired_vs_target_only")]
    if vs and base is not None:
        lines += [f"## Against `{base.label}`", "",
                  "Paired over the problems both runs graded: accuracy difference, its 95% interval "
                  "(bootstrap over problems), problems only the run got right / only the baseline got "
                  "right, McNemar's exact p; the mixing line's accuracy at the run's engine seconds "
                  "(sending whole problems at random to draft-only or target-only) and the run's margin.",
                  "",
                  "| run | shared | difference | 95% CI | won / lost | McNemar p | mixing line | margin |",
                  "|---|---|---|---|---|---|---|---|"]
        for r, v in vs:
            pr = v["paired_vs_target_only"]
            lo, hi = pr["ci95"]
            mix = v.get("mixing_accuracy")
            mtext = "-" if mix is None else f"{100 * mix:.1f}%"
            margin = "-" if v.get("above_mixing_line") is None else f"{100 * v['above_mixing_line']:+.1f}"
            lines.append(f"| {r.label} | {pr['shared']} | {100 * pr['difference']:+.1f} | {100 * lo:+.1f} to "
                         f"{100 * hi:+.1f} | {pr['run_only']} / {pr['base_only']} | {pr['mcnemar_p']:.2f} | "
                         f"{mtext} | {margin} |")
        lines.append("")
    if comp.warnings:
        lines += ["## Warnings", ""] + [f"- **Warning**: {w}" for w in comp.warnings] + [""]
    lines += ["## Runs", ""]
    for i, r in enumerate(comp.runs, 1):
        extra = " (baseline for speed-ups)" if r is base else ""
        lines.append(f"- `{r.label}`: `{r.dir}` (point {i} in the plot){extra}")
    return "\n".join(lines) + "\n"


def compare(paths: Sequence[str | Path], out: str | Path, baseline: str | Path | None = None) -> Comparison:
    """Build the comparison and write ``compare.png``, ``compare.svg`` and ``compare.md`` into ``out``."""
    comp = build(paths, baseline)
    out_dir = Path(out).expanduser()
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir}: exists and is not a folder; give a folder for the report")
    out_dir.mkdir(parents=True, exist_ok=True)
    plot(comp, out_dir)
    (out_dir / "compare.md").write_text(markdown(comp))
    return comp


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        _cli.fail(f"{message} (usage: {_USAGE.replace('python -m recipes.compare', self.prog)})")


def main(argv: list[str] | None = None) -> None:
    """Console entry point (``python -m recipes.compare``)."""
    parser = _Parser(prog=_cli.prog_name("recipes.compare"), description=__doc__.split("\n\n")[0],
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders or sweep folders")
    parser.add_argument("--out", required=True, metavar="DIR", help="where to write the plot and report")
    parser.add_argument("--baseline", metavar="RUN_DIR", help="the run speed-ups are measured against "
                        "(default: the first target-only run among the inputs)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s: %(message)s")
    try:
        comp = compare(args.runs, args.out, args.baseline)
    except UserError as e:
        _cli.fail(str(e))
    print(comp.table())
    for w in comp.warnings:
        print(f"warning: {w}")
    out = Path(args.out)
    print(f"wrote {out / 'compare.md'}, {out / 'compare.png'}, {out / 'compare.svg'}")


if __name__ == "__main__":
    main()
