"""Reading, labelling and comparing run folders: what ``recipes.compare`` shows.

The runs of the given run and sweep folders (a run's ``baseline-*/`` subfolders are runs of
their own), each labelled by its recipe and the knobs that differ, their speed-ups against one
baseline, each against target-only and the mixing line, and the warnings. No files written:
:mod:`recipes._compare_plot` draws a :class:`Comparison`, :mod:`recipes.compare` reports it.
"""

from __future__ import annotations

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
    stop_reason_share,
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
