"""The comparison figure of ``recipes.compare``: accuracy against engine seconds and against
the target's share of generated tokens, drawn with matplotlib (imported only when drawing)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reasoning.metrics import engine_seconds, target_token_share
from recipes._compare_runs import Comparison, Run, differing_knobs, flatten

_LABEL_FONT_PT = 8
_LABEL_GAP_PT = 5.0
"""How far a point's number sits from the point, horizontally and vertically."""
_LABEL_PAD_PT = 1.5
"""The least room between two numbers."""
_SWEEP_COLORS = ("tab:green", "tab:purple", "tab:orange", "tab:brown", "tab:cyan")


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
