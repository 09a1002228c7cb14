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
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reasoning.errors import UserError
from reasoning.metrics import (
    engine_seconds,
    format_table,
    headline_speedup,
    mixing_accuracy,
    speedup,  # noqa: F401 - kept importable from here
    stop_reason_share,
    target_token_share,
    versus_baselines,
)
from reasoning.traces import CONFIG, SUMMARY
from recipes import _cli, _runs

log = logging.getLogger("recipes.compare")

BUDGET_WARN_SHARE = 0.05
"""Warn when more than this share of a run's problems stopped at the token budget."""
_BASELINE_POLICIES = ("AlwaysTarget", "AlwaysDraft")
_MAX_KNOBS = 4
_NOT_KNOBS = ("baseline", "progress", "new_folder", "cache")
"""Top-level config keys left out of labels: they do not change a run's own result."""
_USAGE = "python -m recipes.compare RUN_DIR... --out DIR [--baseline RUN_DIR]"


@dataclass
class Run:
    """One run folder's summary and what is needed to name it.

    Attributes:
        dir: The run folder.
        summary: Its ``summary.json``.
        config: Its ``config.yaml`` (None if missing or unreadable).
        recipe: The Hydra recipe choice, if known.
        baseline_of: For a ``baseline-*`` subfolder, the run folder it belongs to.
        label: Unique name in the table and the plot.
    """

    dir: Path
    summary: dict[str, Any]
    config: dict[str, Any] | None = None
    recipe: str | None = None
    baseline_of: Path | None = None
    label: str = ""

    @property
    def baseline_kind(self) -> str | None:
        """``target-only`` / ``draft-only`` for a baseline subfolder, else None."""
        return self.dir.name.removeprefix("baseline-") if self.baseline_of is not None else None

    @property
    def is_baseline(self) -> bool:
        return self.baseline_of is not None or self.summary.get("policy") in _BASELINE_POLICIES

    @property
    def is_target_only(self) -> bool:
        return self.summary.get("policy") == "AlwaysTarget" or self.baseline_kind == "target-only"


@dataclass
class Comparison:
    """Runs, their labels, speed-ups and warnings; what the table, plot and report show."""

    runs: list[Run]
    baseline: Run | None
    speedups: list[float | None]
    warnings: list[str] = field(default_factory=list)
    estimates: list[bool] = field(default_factory=list)
    """Per run: its speed-up is an estimate (it or the baseline had step-cache hits)."""
    draft_only: Run | None = None
    """The draft-only run among the inputs, the mixing line's other end."""
    versus: list[dict[str, Any]] = field(default_factory=list)
    """Per run: :func:`reasoning.metrics.versus_baselines` (paired difference, mixing line)."""

    def rows(self) -> list[tuple[str, dict[str, Any]]]:
        return [(r.label, r.summary) for r in self.runs]

    def table(self, markdown: bool = False) -> str:
        return format_table(self.rows(), ci=True, speedups=self.speedups, markdown=markdown,
                            estimates=self.estimates or None)

    def mixing_line(self) -> list[tuple[float, float]] | None:
        """The mixing line's corners as ``(engine seconds, accuracy %)``: from draft-only to
        target-only, then flat; None without both baselines."""
        b, d = self.baseline, self.draft_only
        if b is None or d is None or b.summary.get("accuracy") is None or d.summary.get("accuracy") is None:
            return None
        cd, ct = engine_seconds(d.summary), engine_seconds(b.summary)
        if ct <= cd:
            return None
        a = (d.summary["accuracy"], cd), (b.summary["accuracy"], ct)
        far = max([engine_seconds(r.summary) for r in self.runs] + [ct]) * 1.05
        return [(x, 100 * mixing_accuracy(x, *a)) for x in (0.0, cd, ct, far)]


# -- pure helpers ----------------------------------------------------------------------------
def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats (lower x and higher y are better), by x.

    >>> pareto_front([(1.0, 0.5), (2.0, 0.7), (3.0, 0.6), (0.5, 0.2)])
    [3, 0, 1]
    >>> pareto_front([])
    []
    """
    keep = []
    for i, (x, y) in enumerate(points):
        dominated = any(xj <= x and yj >= y and (xj < x or yj > y) for j, (xj, yj) in enumerate(points)
                        if j != i)
        if not dominated:
            keep.append(i)
    return sorted(keep, key=lambda i: (points[i][0], -points[i][1]))


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys of a nested mapping.

    >>> flatten({"a": {"b": 1, "c": [1, 2]}, "d": None})
    {'a.b': 1, 'a.c': [1, 2], 'd': None}
    """
    if isinstance(d, dict) and d:
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): d}


def knob(key: str, value: Any, width: int = 40) -> str:
    r"""``key=value`` for a label, long values cut.

    >>> knob("policy.threshold", 0.7), knob("loop.seed", None), knob("segmenter.delimiter", "\n\n")
    ('policy.threshold=0.7', 'loop.seed=null', 'segmenter.delimiter="\\n\\n"')
    """
    plain = isinstance(value, str) and value and not any(c.isspace() or c in "=\"'" for c in value)
    v = value if plain else json.dumps(value, ensure_ascii=False)
    return f"{key}={v if len(v) <= width else v[:width - 3] + '...'}"


def _natural(p: Path) -> tuple[int, str]:
    return (int(p.name), "") if p.name.isdigit() else (sys.maxsize, p.name)


# -- reading runs ----------------------------------------------------------------------------
def _read_yaml(path: Path) -> Any:
    import yaml

    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        log.warning("cannot read %s (%s); labelling without it", path, e)
        return None


def _bench_runs(folder: Path) -> dict[str, Any]:
    """The ``runs`` of the ``bench.json`` of a folder of recipes.bench ({} if none, or unreadable)."""
    p = folder / "bench.json"
    if not p.is_file():
        return {}
    try:
        runs = json.loads(p.read_text()).get("runs")
    except (OSError, ValueError, AttributeError) as e:
        log.warning("cannot read %s (%s); labelling without it", p, e)
        return {}
    return runs if isinstance(runs, dict) else {}


def _recipe(run_dir: Path) -> str | None:
    h = run_dir / ".hydra" / "hydra.yaml"
    if not h.is_file():
        # A run of recipes.bench: a sub-folder of the bench's folder, named after its preset (a
        # sweep point's preset is in bench.json, so that the points of one preset form a sweep).
        if not (run_dir.parent / "bench.json").is_file():
            return None
        entry = _bench_runs(run_dir.parent).get(run_dir.name)
        return (entry.get("preset") if isinstance(entry, dict) else None) or run_dir.name
    data = _read_yaml(h) or {}
    try:
        return data["hydra"]["runtime"]["choices"]["recipe"]
    except (KeyError, TypeError):
        return None


def load_run(run_dir: Path, baseline_of: Path | None = None) -> Run:
    """Read one run folder.

    Raises:
        UserError: no ``summary.json``, or one that is not a run summary.
    """
    p = run_dir / SUMMARY
    if not p.is_file():
        raise UserError(f"{run_dir}: no {SUMMARY} in this folder; give a run folder of recipes.evaluate")
    try:
        summary = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{p}: not a readable summary ({_cli.one_line(e)})") from None
    need = ("problems", "accuracy", "accuracy_ci95", "tokens", "mean_steps", "target_step_share",
            "seconds_per_problem")
    missing = [k for k in need if not isinstance(summary, dict) or k not in summary]
    if missing:
        raise UserError(f"{p}: not a stepspec run summary (no {', '.join(missing)})")
    cfg = _read_yaml(run_dir / CONFIG) if (run_dir / CONFIG).is_file() else None
    recipe = _recipe(baseline_of if baseline_of is not None else run_dir)
    return Run(run_dir, summary, cfg if isinstance(cfg, dict) else None, recipe, baseline_of)


def _expand_run(run_dir: Path) -> list[Run]:
    runs = [load_run(run_dir)]
    for b in sorted(run_dir.glob("baseline-*")):
        if b.is_dir() and (b / SUMMARY).is_file():
            runs.append(load_run(b, baseline_of=run_dir))
    return runs


def find_runs(paths: Sequence[str | Path]) -> list[Run]:
    """The runs in the given run and sweep folders, in the order given (sweep jobs by number).

    Raises:
        UserError: a path that does not exist, is not a folder, or holds no run.
    """
    runs: list[Run] = []
    seen: set[Path] = set()
    for raw in paths:
        p = Path(raw).expanduser()
        if not p.exists():
            raise UserError(f"{p}: no such folder; give a run folder (with {SUMMARY}) or a sweep folder")
        if not p.is_dir():
            raise UserError(f"{p}: not a folder; give a run folder (with {SUMMARY}) or a sweep folder")
        if (p / SUMMARY).is_file():
            found = _expand_run(p)
        else:
            order = {name: i for i, name in enumerate(_bench_runs(p))}  # a bench's runs in its order
            subs = sorted((d for d in p.iterdir() if d.is_dir() and (d / SUMMARY).is_file()),
                          key=lambda d: (order.get(d.name, len(order)), _natural(d)))
            if not subs:
                raise UserError(f"{p}: no {SUMMARY} here and no run folders inside; give a run folder "
                                f"(it holds {SUMMARY}) or a sweep folder (its subfolders are runs)")
            found = [r for d in subs for r in _expand_run(d)]
        for r in found:
            key = r.dir.resolve()
            if key not in seen:
                seen.add(key)
                runs.append(r)
    return runs


def differing_knobs(configs: Sequence[dict[str, Any] | None]) -> list[str]:
    """The dotted config keys whose values are not the same in all the given configs, sorted.

    Keys under ``_NOT_KNOBS`` (which do not change a run's result) are left out; configs that
    are None are skipped.

    >>> differing_knobs([{"policy": {"threshold": 0.3}, "cache": 1}, {"policy": {"threshold": 0.7}}, None])
    ['policy.threshold']
    """
    flats = [flatten(c) for c in configs if c is not None]
    keys = sorted({k for f in flats for k in f if k.split(".")[0] not in _NOT_KNOBS})
    return [k for k in keys if len({json.dumps(f.get(k), sort_keys=True) for f in flats}) > 1]


def label_runs(runs: Sequence[Run]) -> None:
    """Give each run a unique label: its recipe (or folder) and the knobs that differ.

    Knobs are compared between runs of the same recipe; a baseline subfolder is named by its
    kind (``target-only``) and leaves out the policy and judge knobs, which it does not use.
    """
    groups: dict[str | None, list[Run]] = {}
    for r in runs:
        groups.setdefault(r.recipe, []).append(r)
    differing = {recipe: differing_knobs([r.config for r in rs]) for recipe, rs in groups.items()}
    for r in runs:
        flat = flatten(r.config) if r.config is not None else {}
        keys = [k for k in differing[r.recipe] if k in flat]
        if r.baseline_of is not None:
            keys = [k for k in keys if not k.startswith(("policy.", "judge."))]
            name = r.baseline_kind or r.dir.name
        else:
            name = r.recipe or r.dir.name
        knobs = [knob(k, flat[k]) for k in keys[:_MAX_KNOBS]]
        if len(keys) > _MAX_KNOBS:
            knobs.append(f"+{len(keys) - _MAX_KNOBS} more")
        r.label = " ".join([name, *knobs])
    same: dict[str, list[Run]] = {}
    for r in runs:
        same.setdefault(r.label, []).append(r)
    for label, rs in same.items():  # tell equal labels apart by the shortest folder path that does
        if len(rs) < 2:
            continue
        owners = [(r.baseline_of if r.baseline_of is not None else r.dir).resolve().parts for r in rs]
        for depth in range(1, max(len(o) for o in owners) + 1):
            tags = ["/".join(o[-depth:]) for o in owners]
            if len(set(tags)) == len(tags):
                break
        for r, tag in zip(rs, tags):
            r.label = f"{label} [{tag}]"
    used: set[str] = set()
    for r in runs:
        base, i = r.label, 2
        while r.label in used:
            r.label, i = f"{base} #{i}", i + 1
        used.add(r.label)


def build(paths: Sequence[str | Path], baseline: str | Path | None = None) -> Comparison:
    """Read, label and compare the runs; no files written.

    Raises:
        UserError: see :func:`find_runs`.
    """
    runs = find_runs(paths)
    base: Run | None = None
    if baseline is not None:
        bp = Path(baseline).expanduser()
        if not bp.is_dir():
            raise UserError(f"--baseline {bp}: no such folder; give the run folder of a baseline run")
        base_key = bp.resolve()
        base = next((r for r in runs if r.dir.resolve() == base_key), None)
        if base is None:
            base = load_run(bp)
            runs.append(base)
    else:
        base = next((r for r in runs if r.is_target_only), None)
    label_runs(runs)
    heads = [headline_speedup(r.summary, base.summary if base is not None else None) for r in runs]
    draft = next((r for r in runs if r.summary.get("policy") == "AlwaysDraft"
                  or r.baseline_kind == "draft-only"), None)
    correct = {id(r): _runs.correct_by_problem(r.dir) for r in runs}
    versus = [versus_baselines(r.summary, correct[id(r)],
                               None if base is None else (base.summary, correct[id(base)]),
                               None if draft is None else (draft.summary, correct[id(draft)]))
              for r in runs]
    return Comparison(runs, base, [h for h, _ in heads], _warnings(runs, base), [e for _, e in heads],
                      draft, versus)


def _warnings(runs: Sequence[Run], base: Run | None) -> list[str]:
    out = []
    if base is None:
        out.append("no target-only run among the inputs, so no speed-ups; name one with --baseline RUN_DIR")
    counts = sorted({r.summary.get("problems") for r in runs}, key=str)
    if len(counts) > 1:
        out.append(f"the runs answer different numbers of problems ({', '.join(map(str, counts))}): "
                   "their accuracies are not on the same problems")
    for r in runs:
        s = r.summary
        share = stop_reason_share(s, "token_budget")
        if share > BUDGET_WARN_SHARE:
            k = (s.get("stop_reasons") or {}).get("token_budget", 0)
            budget = s.get("token_budget")
            at = f" (loop.token_budget={budget})" if budget is not None else ""
            out.append(f"{r.label}: {100 * share:.1f}% of problems ({k}/{s['problems']}) stopped at the "
                       f"token budget{at}: answers cut off, so the accuracy understates the method")
        if s.get("errors"):
            out.append(f"{r.label}: {s['errors']} problem(s) failed with an error ('error' in its traces)")
        hits = s.get("cache_hits") or 0
        if hits:
            total = hits + (s.get("cache_misses") or 0)
            out.append(f"{r.label}: {hits} of {total} engine requests and judge scores came from the step "
                       "cache, so its wall seconds do not measure its cost and its speed-up (over engine "
                       "seconds, cache hits at the seconds they took when computed) is an estimate")
    return out


# -- outputs ---------------------------------------------------------------------------------
_LABEL_FONT_PT = 8
_LABEL_GAP_PT = 5.0
"""How far a point's number sits from the point, horizontally and vertically."""
_LABEL_PAD_PT = 1.5
"""The least room between two numbers."""
_SWEEP_COLORS = ("tab:green", "tab:purple", "tab:orange", "tab:brown", "tab:cyan")


def sweeps(runs: Sequence[Run]) -> list[tuple[str, list[Run]]]:
    """The sweeps among the runs: runs of one recipe (baselines left out) whose configs differ in
    one numeric knob only, as ``(knob, runs in order of its value)``."""
    groups: dict[str | None, list[Run]] = {}
    for r in runs:
        if not r.is_baseline and r.config is not None:
            groups.setdefault(r.recipe, []).append(r)
    out = []
    for rs in groups.values():
        keys = differing_knobs([r.config for r in rs])
        if len(rs) < 2 or len(keys) != 1:
            continue
        values = [flatten(r.config).get(keys[0]) for r in rs]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            order = sorted(range(len(rs)), key=lambda i: values[i])
            out.append((keys[0], [rs[i] for i in order]))
    return out


def _text_box(ann: Any, renderer: Any) -> Any:
    """The display-space box of an annotation's text alone (its leader line left out)."""
    from matplotlib.text import Text

    ann.update_positions(renderer)
    return Text.get_window_extent(ann, renderer)


def _offsets(step_pt: float, tries: int):
    """Where a number may go, nearest first: the four corners around its point, then stacked
    above and below by ``step_pt`` (with a leader line), alternating. Yields (dx, dy, ha, va, lead)."""
    g = _LABEL_GAP_PT
    yield from ((g, g, "left", "bottom", False), (g, -g, "left", "top", False),
                (-g, g, "right", "bottom", False), (-g, -g, "right", "top", False))
    for k in range(1, tries + 1):
        yield g, g + k * step_pt, "left", "bottom", True
        yield g, -g - k * step_pt, "left", "top", True


def label_points(ax: Any, labels: dict[tuple[float, float], str],
                 markers_pt: dict[tuple[float, float], float], renderer: Any) -> list[Any]:
    """Write each point's label beside it where it overlaps no other label and no marker.

    Deterministic: points are taken by x, then y; each takes the first free place of
    :func:`_offsets`, checked in display space with the renderer (call after the layout is
    fixed). Labels stay out of the layout, so placing them does not move the axes.

    Args:
        ax: The axes the points are drawn in (data coordinates).
        labels: Label text of each point.
        markers_pt: Marker radius of each point, in points: room the labels keep clear of.
        renderer: The figure's renderer.
    """
    from matplotlib.transforms import Bbox

    to_px = ax.figure.dpi / 72.0
    markers = []
    for (x, y), radius in markers_pt.items():
        cx, cy = ax.transData.transform((x, y))
        r = radius * to_px
        markers.append(Bbox.from_extents(cx - r, cy - r, cx + r, cy + r))
    pad = _LABEL_PAD_PT * to_px
    placed: list[Any] = []
    anns = []
    for (x, y), text in sorted(labels.items()):
        ann = ax.annotate(text, (x, y), xytext=(0.0, 0.0), textcoords="offset points",
                          fontsize=_LABEL_FONT_PT, zorder=4,
                          arrowprops=dict(arrowstyle="-", color="0.55", linewidth=0.6, shrinkA=0, shrinkB=3))
        ann.set_in_layout(False)
        box = None
        step_pt = _text_box(ann, renderer).height / to_px + _LABEL_PAD_PT
        for dx, dy, ha, va, lead in _offsets(step_pt, tries=2 * (len(placed) + len(markers)) + 1):
            ann.xyann = (dx, dy)
            ann.set_horizontalalignment(ha)
            ann.set_verticalalignment(va)
            ann.arrow_patch.set_visible(lead)
            box = _text_box(ann, renderer)
            clear = not any(box.padded(pad).overlaps(b) for b in placed)
            if clear and not any(box.overlaps(m) for m in markers):
                break
        placed.append(box)
        anns.append(ann)
    return anns


def figure(comp: Comparison) -> Any:
    """The comparison figure: accuracy against wall seconds and against the target-token share,
    95% intervals, the Pareto frontier, baselines as red squares, each sweep joined in order of
    its knob. Each point is numbered (its row in the table; points that coincide share one label)
    and the legend says which run each number is."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    number = {id(r): i + 1 for i, r in enumerate(comp.runs)}

    def style(r: Run) -> tuple[str, str, float]:  # marker, colour, size (points): baselines red squares
        return ("s", "tab:red", 8.0) if r.is_baseline or r is comp.baseline else ("o", "tab:blue", 6.0)

    found = sweeps(comp.runs)
    entries = [r for r in comp.runs if r.summary.get("accuracy") is not None]
    longest = max((len(r.label) for r in entries), default=0)
    ncols = 1 if longest > 90 else 2 if longest > 45 else 3
    rows = -(-(len(entries) + 1 + len(found)) // ncols)
    fig = Figure(figsize=(13, 5.5 + 0.2 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    panels = fig.subplots(1, 2)
    specs = [("engine seconds: draft + target + judge (lower is better)", engine_seconds),
             ("target share of generated tokens, % (lower is cheaper)",
              lambda s: None if target_token_share(s) is None else 100 * target_token_share(s))]
    to_label = []
    for ax, (xlabel, xof) in zip(panels, specs):
        pts: list[tuple[float, float]] = []
        where: dict[int, tuple[float, float]] = {}
        names: dict[tuple[float, float], list[str]] = {}
        markers: dict[tuple[float, float], float] = {}
        for r in comp.runs:
            s = r.summary
            x = xof(s)
            if x is None or s.get("accuracy") is None:
                continue
            y = 100 * s["accuracy"]
            ci = s.get("accuracy_ci95")  # None when nothing was graded (older runs: [0, 0])
            lo, hi = (100 * v for v in ci) if ci else (y, y)
            marker, color, size = style(r)
            ax.errorbar([x], [y], yerr=[[max(0.0, y - lo)], [max(0.0, hi - y)]], fmt=marker, color=color,
                        markersize=size, capsize=3, zorder=3, ecolor=(color, 0.4), elinewidth=1)
            pts.append((float(x), y))
            where[id(r)] = (float(x), y)
            names.setdefault((float(x), y), []).append(str(number[id(r)]))
            markers[(float(x), y)] = max(markers.get((float(x), y), 0.0), size / 2)
        for i, (_, rs) in enumerate(found):
            line = [where[id(r)] for r in rs if id(r) in where]
            if len(line) > 1:
                ax.plot(*zip(*line), color=_SWEEP_COLORS[i % len(_SWEEP_COLORS)], linewidth=1, alpha=0.6,
                        zorder=2)
        mix = comp.mixing_line() if ax is panels[0] else None
        if mix is not None:
            ax.plot(*zip(*mix), color="tab:red", linestyle=":", linewidth=1.2, alpha=0.8, zorder=1)
            ax.set_xlim(0, mix[-1][0])
        front = pareto_front(pts)
        if front:
            fx = [pts[i][0] for i in front]
            fy = [pts[i][1] for i in front]
            ax.step(fx, fy, where="post", color="0.35", linestyle="--", linewidth=1, zorder=2)
        ax.margins(0.08)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("accuracy, % (95% interval)")
        ax.grid(True, alpha=0.3)
        to_label.append((ax, {p: ", ".join(n) for p, n in names.items()}, markers))
    panels[0].set_title("accuracy vs engine seconds")
    panels[1].set_title("accuracy vs target-token share")
    handles = [Line2D([], [], color="0.35", linestyle="--", label="Pareto frontier")]
    if comp.mixing_line() is not None:
        handles.append(Line2D([], [], color="tab:red", linestyle=":",
                              label="mixing line: whole problems sent at random to draft-only or "
                                    "target-only (below it: worse than no judge)"))
    handles += [Line2D([], [], color=_SWEEP_COLORS[i % len(_SWEEP_COLORS)], alpha=0.6,
                       label=f"{rs[0].recipe or 'runs'}: sweep of {key}, in increasing order")
                for i, (key, rs) in enumerate(found)]
    for r in entries:
        marker, color, _ = style(r)
        handles.append(Line2D([], [], marker=marker, color=color, linestyle="",
                              label=f"{number[id(r)]}: {r.label}"))
    fig.legend(handles=handles, loc="outside lower center", ncols=ncols, frameon=False,
               fontsize=_LABEL_FONT_PT)
    fig.draw_without_rendering()  # fixes the layout; the labels, placed in display space, stay out of it
    renderer = fig.canvas.get_renderer()
    for ax, labels, markers in to_label:
        label_points(ax, labels, markers, renderer)
    return fig


def plot(comp: Comparison, out_dir: Path) -> list[Path]:
    """Draw :func:`figure` into ``compare.png`` and ``compare.svg``."""
    fig = figure(comp)
    paths = [out_dir / "compare.png", out_dir / "compare.svg"]
    fig.savefig(paths[0], dpi=150)
    fig.savefig(paths[1])
    return paths


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
