"""The models bench's plan: which runs, in which order, with which method (``recipes.bench``).

Presets are composed here, ``bench.sweep`` and ``bench.concurrency`` are read and checked, and
each run gets its name and its method's config; nothing runs and nothing is written.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from reasoning.errors import UserError
from recipes import _cli


def compose_preset(name: str) -> Any:
    """The composed ``evaluate`` config of the preset ``conf/recipe/<name>.yaml``.

    Raises:
        UserError: no such preset (naming the ones that exist), one that does not compose, or
            a preset of the bench itself.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    if name not in _cli.group_options("recipe"):
        raise UserError(f"bench: {_cli.unknown_option_message('recipe', str(name))}")
    overrides = [f"recipe={name}"]
    try:
        if GlobalHydra.instance().is_initialized():  # inside the running recipe
            cfg = compose(config_name="evaluate", overrides=overrides)
        else:
            with initialize_config_dir(config_dir=str(_cli.CONF_DIR), version_base="1.3"):
                cfg = compose(config_name="evaluate", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as e:
        raise UserError(f"bench: recipe {name!r} does not compose: {_cli.one_line(e)}") from None
    if "bench" in cfg:
        raise UserError(f"bench: recipe {name!r} is a bench preset, not a method to run; name presets "
                        "of recipes.evaluate in bench.baselines and bench.presets")
    return cfg


SWEPT_SECTIONS = ("judge", "policy")
"""The parts of a run its preset gives, so the only ones a sweep of ``bench.sweep`` can change."""


def sweep_of(node: Any) -> tuple[str, list[Any]] | None:
    """``bench.sweep`` as ``(key, values)``, or None when there is none.

    >>> sweep_of({"policy.threshold": [0.9, 0.8]}), sweep_of(None)
    (('policy.threshold', [0.9, 0.8]), None)

    Raises:
        UserError: not a mapping of one ``judge.*`` or ``policy.*`` key to a non-empty list.
    """
    from omegaconf import OmegaConf

    if node is None:
        return None
    plain = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    example = "e.g. bench.sweep={policy.threshold:[0.9,0.8]}"
    if not isinstance(plain, dict) or len(plain) != 1:
        raise UserError(f"bench.sweep must map one key of the method to a list of values ({example}), "
                        f"got {plain!r}")
    (key, values), = plain.items()
    key = str(key)
    if key.split(".")[0] not in SWEPT_SECTIONS or "." not in key:
        raise UserError(f"bench.sweep: {key} is not a key of the method: each run takes only "
                        f"{' and '.join(s + '.*' for s in SWEPT_SECTIONS)} from its preset "
                        f"(set {key}=... for the whole bench)")
    if not isinstance(values, list) or not values:
        raise UserError(f"bench.sweep: {key} needs a non-empty list of values ({example}), got {values!r}")
    seen = [json.dumps(v, sort_keys=True) for v in values]
    twice = sorted({v for v in seen if seen.count(v) > 1})
    if twice:
        raise UserError(f"bench.sweep: {key} lists {', '.join(twice)} more than once")
    return key, values


def point_name(preset: str, key: str, value: Any) -> str:
    """A sweep point's run name (its sub-folder): the preset, the key's last part and the value.

    >>> point_name("specreason", "policy.threshold", 0.9), point_name("x", "judge.mode", "a/b")
    ('specreason-threshold=0.9', 'x-mode=a_b')
    """
    v = value if isinstance(value, str) else json.dumps(value)
    return re.sub(r"[^A-Za-z0-9._=+-]", "_", f"{preset}-{key.rsplit('.', 1)[-1]}={v}")


def plan_runs(baselines: Sequence[str], presets: Sequence[str],
              sweep: tuple[str, Sequence[Any]] | None = None) -> list[tuple[str, str, dict[str, Any]]]:
    """The runs in order, as ``(run name, preset, {key: swept value} or {})``: baselines first,
    then each preset, or, with a sweep, each of its points in the order of the values.

    >>> plan_runs(["target-only"], ["cpu-demo"])
    [('target-only', 'target-only', {}), ('cpu-demo', 'cpu-demo', {})]
    >>> [n for n, _, _ in plan_runs([], ["specreason"], ("policy.threshold", [0.9, 0.8]))]
    ['specreason-threshold=0.9', 'specreason-threshold=0.8']

    Raises:
        UserError: nothing to run, a sweep without presets, or a name listed twice.
    """
    plan = [(str(b), str(b), {}) for b in baselines]
    for p in map(str, presets):
        if sweep is None:
            plan.append((p, p, {}))
        else:
            key, values = sweep
            plan += [(point_name(p, key, v), p, {key: v}) for v in values]
    names = [n for n, _, _ in plan]
    if not names:
        raise UserError("bench: nothing to run: bench.baselines and bench.presets are both empty")
    if sweep is not None and not presets:
        raise UserError(f"bench.sweep of {sweep[0]} applies to each of bench.presets, which is empty")
    twice = sorted({x for x in names if names.count(x) > 1})
    if twice:
        where = "bench.baselines and bench.presets" + (" (with bench.sweep)" if sweep else "")
        raise UserError(f"bench: {', '.join(twice)} listed twice in {where}")
    return plan


def concurrency_of(node: Any) -> list[tuple[str, int]] | None:
    """``bench.concurrency`` as ``[(schedule, in flight), ...]``, or None when there is none.

    >>> concurrency_of({"schedules": ["lockstep", "async"], "in_flight": [1, 8]})
    [('lockstep', 1), ('async', 1), ('lockstep', 8), ('async', 8)]

    Raises:
        UserError: not ``{schedules: [...], in_flight: [...]}`` of known schedules and counts >= 1.
    """
    from omegaconf import OmegaConf

    from reasoning.schedule import SCHEDULES

    if node is None:
        return None
    plain = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    example = "e.g. bench.concurrency={schedules:[lockstep,async],in_flight:[1,8,32]}"
    if not isinstance(plain, dict) or set(plain) != {"schedules", "in_flight"}:
        raise UserError(f"bench.concurrency must have exactly the keys schedules and in_flight ({example}), "
                        f"got {plain!r}")
    schedules, counts = plain["schedules"], plain["in_flight"]
    if not isinstance(schedules, list) or not schedules or any(x not in SCHEDULES for x in schedules):
        raise UserError(f"bench.concurrency.schedules must be a non-empty list of {', '.join(SCHEDULES)}, "
                        f"got {schedules!r}")
    if (not isinstance(counts, list) or not counts
            or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in counts)):
        raise UserError("bench.concurrency.in_flight must be a non-empty list of integers >= 1, "
                        f"got {counts!r}")
    if len(set(schedules)) != len(schedules) or len(set(counts)) != len(counts):
        raise UserError(f"bench.concurrency lists a value twice: {plain!r}")
    return [(sch, int(c)) for c in counts for sch in schedules]


def plan_concurrency(plan: list[tuple[str, str, dict[str, Any]]], presets: Sequence[str],
                     conc: Sequence[tuple[str, int]]) -> tuple[list[tuple[str, str, dict[str, Any]]],
                                                               dict[str, tuple[str, int]]]:
    """``plan`` with each run of a preset replaced by one run per ``(schedule, in flight)`` of
    ``conc``, named ``<run>-<schedule>-<in flight>``; and those runs' ``(schedule, in flight)``.

    >>> plan, points = plan_concurrency([("t", "t", {}), ("x", "x", {})], ["x"], [("async", 8)])
    >>> [n for n, _, _ in plan], points
    (['t', 'x-async-8'], {'x-async-8': ('async', 8)})
    """
    wanted = {str(p) for p in presets}
    out, points = [], {}
    for n, p, point in plan:
        if p not in wanted:
            out.append((n, p, point))
            continue
        for sch, k in conc:
            out.append((f"{n}-{sch}-{k}", p, point))
            points[f"{n}-{sch}-{k}"] = (sch, k)
    return out, points


def sweep_point(method: Any, preset: str, point: dict[str, Any]) -> Any:
    """The preset's composed config ``method`` with the sweep ``point`` set (a copy; no point:
    ``method`` itself).

    Raises:
        UserError: a key the preset does not have, naming the keys it has.
    """
    import copy
    import difflib

    from omegaconf import OmegaConf

    if not point:
        return method
    missing = object()
    out = copy.deepcopy(method)
    for key, value in point.items():
        if OmegaConf.select(method, key, default=missing) is missing:
            section = key.split(".")[0]
            have = sorted(f"{section}.{k}" for k in (method.get(section) or {}) if not str(k).startswith("_"))
            near = difflib.get_close_matches(key, have, n=1, cutoff=0.5)
            hint = f"; did you mean {near[0]}?" if near else ""
            raise UserError(f"bench.sweep: preset {preset!r} has no key {key} "
                            f"(it has {', '.join(have)}){hint}")
        OmegaConf.update(out, key, value, merge=False)
    return out
