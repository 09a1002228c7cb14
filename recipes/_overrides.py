"""The command line's overrides, checked before Hydra runs: group options (and the model group's
two roles), Hydra's override grammar, sweeps, and composing the config to report a mistake in
one line. :mod:`recipes._cli` re-exports every name."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from conf import CONF_DIR  # one definition, in conf/
from reasoning.errors import UserError


def group_options(group: str, search_dirs: Sequence[Path] = ()) -> list[str]:
    """The option names of a config group (the YAML files in ``conf/<group>/`` and in
    ``<dir>/<group>/`` of each of ``search_dirs``)."""
    found = set()
    for base in (CONF_DIR, *search_dirs):
        d = Path(base) / group
        if d.is_dir():
            found.update(p.stem for p in d.glob("*.yaml"))
    return sorted(found)


def groups(search_dirs: Sequence[Path] = ()) -> list[str]:
    found = set()
    for base in (CONF_DIR, *search_dirs):
        if Path(base).is_dir():
            found.update(p.name for p in Path(base).iterdir()
                         if p.is_dir() and not p.name.startswith(("_", ".")))
    return sorted(found)


def unknown_option_message(group: str, value: str, search_dirs: Sequence[Path] = ()) -> str:
    opts = group_options(group, search_dirs)
    near = difflib.get_close_matches(value, opts, n=1, cutoff=0.5)
    hint = f"; did you mean '{near[0]}'?" if near else ""
    return f"unknown {group} '{value}': choose one of {', '.join(opts)}{hint}"


def _parse_overrides(args: Sequence[str]) -> list[Any]:
    """Hydra's parsed overrides of ``args`` (flags left out).

    Raises:
        UserError: one that Hydra's override grammar does not read.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    out = []
    for a in args:
        if a.startswith("-"):
            continue
        try:
            out.append(parser.parse_override(a))
        except HydraException as e:
            raise UserError(f"cannot parse the override {a!r}: {one_line(e)}") from None
    return out


def _values(o: Any, options: Sequence[str] | None = None) -> list[Any]:
    """The values an override sets, one per job of a sweep (a glob is matched against
    ``options``; an interval sweep, which only an optimising sweeper samples, gives none)."""
    from hydra.core.override_parser.types import Glob, ValueType

    if not o.is_sweep_override():
        return [o.value()]
    if o.value_type == ValueType.GLOB_CHOICE_SWEEP:
        glob = o.value()
        return glob.filter(list(options or [])) if isinstance(glob, Glob) else []
    if o.value_type == ValueType.INTERVAL_SWEEP:
        return []
    return list(o.sweep_string_iterator())


def check_group_overrides(args: Sequence[str], search_dirs: Sequence[Path] = ()) -> None:
    """Refuse ``group=option`` overrides naming options that do not exist (before Hydra runs);
    flags (``-m``, ``--cfg``) in ``args`` are skipped.

    Raises:
        UserError: naming the group, the option and the options that exist.
    """
    known = set(groups(search_dirs))
    for o in _parse_overrides(args):
        key = o.key_or_group
        if key not in known or o.is_delete():
            continue
        values = _values(o, group_options(key, search_dirs))
        for v in values:
            for name in v if isinstance(v, list) else [v]:
                name = str(name).strip() if name is not None else ""
                if name and name != "null" and name not in group_options(key, search_dirs):
                    raise UserError(unknown_option_message(key, name, search_dirs))


ROLES = ("draft", "target")
"""The two roles a ``model/`` option takes: ``model@draft=NAME``, ``model@target=NAME``."""

_OLD_NAMES = {("draft", "scripted"): "scripted-draft", ("target", "scripted"): "scripted-target"}
"""Options of the old ``draft/`` and ``target/`` groups whose ``model/`` name differs."""


def model_role_overrides(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """``args`` with the old ``draft=NAME`` / ``target=NAME`` (the ``draft/`` and ``target/``
    groups, now one ``model/`` group used at both roles) rewritten to ``model@draft=NAME`` /
    ``model@target=NAME``, and a note for each rewrite. Sweeps (``draft=a,b``) are rewritten
    value by value; flags and every other override pass through unchanged.

    >>> model_role_overrides(["draft=scripted", "target=qwen2.5-coder-1.5b", "draft.seed=1", "-m"])
    (['model@draft=scripted-draft', 'model@target=qwen2.5-coder-1.5b', 'draft.seed=1', '-m'], \
['draft=scripted is model@draft=scripted-draft now', \
'target=qwen2.5-coder-1.5b is model@target=qwen2.5-coder-1.5b now'])
    """
    import re

    out, notes = [], []
    for a in args:
        key, eq, value = a.partition("=")
        if a.startswith("-") or not eq or key not in ROLES:
            out.append(a)
            continue
        for (role, old), name in _OLD_NAMES.items():
            if role == key:
                value = re.sub(rf"(?<![\w.-]){re.escape(old)}(?![\w.-])", name, value)
        new = f"model@{key}={value}"
        out.append(new)
        notes.append(f"{a} is {new} now")
    return out, notes


def _first_value_override(o: Any, options: Sequence[str]) -> str | None:
    """``o`` as a plain override of its first value (a sweep's first job); None when it has none."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    if not o.is_sweep_override():
        return o.input_line
    values = _values(o, options)
    if not values:
        return None
    key = o.input_line.split("=", 1)[0]
    first = str(values[0])
    try:
        if not OverridesParser.create().parse_override(f"{key}={first}").is_sweep_override():
            return f"{key}={first}"
    except HydraException:
        pass
    quoted = first.replace("\\", "\\\\").replace("'", "\\'")
    return f"{key}='{quoted}'"


def compose_check(config_name: str, args: Sequence[str], search_dirs: Sequence[Path] = (),
                  config_dir: Path | None = None) -> None:
    """Compose the config as Hydra will (without running anything) to report mistakes in one line.

    Sweeps (``-m``, comma lists, ``choice()``, ``range()``, ``glob()``) are checked with their first
    value; flags in ``args`` are skipped. ``search_dirs`` are added to the config search path
    (``--config-dir``), ``config_dir`` replaces ``conf/`` (``--config-path``).
    """
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    primary = Path(config_dir) if config_dir is not None else CONF_DIR
    searchpath = [f"file://{Path(d).resolve()}" for d in search_dirs]
    overrides = []
    for o in _parse_overrides(args):
        key = o.key_or_group
        if key == "hydra.searchpath" and not o.is_sweep_override() and isinstance(o.value(), list):
            searchpath += [str(x) for x in o.value()]
            continue
        if key.startswith(("hydra.", "hydra/")) or key == "hydra":
            continue
        line = _first_value_override(o, group_options(key, search_dirs))
        if line is not None:
            overrides.append(line)
    if searchpath:
        overrides.append("hydra.searchpath=[" + ",".join(f"'{p}'" for p in searchpath) + "]")
    try:
        with initialize_config_dir(config_dir=str(primary.resolve()), version_base="1.3"):
            compose(config_name=config_name, overrides=overrides)
    except (HydraException, OmegaConfBaseException, ValueError) as e:
        msg = one_line(e)
        if e.__cause__ is not None:
            msg += f" ({one_line(e.__cause__)})"
        raise UserError(msg) from None


def one_line(e: BaseException) -> str:
    """An exception's message folded to one line (Hydra's messages span several)."""
    cause = e
    # Hydra wraps errors raised by constructors: report the constructor's own message.
    while getattr(cause, "__cause__", None) is not None and type(cause).__name__ == "InstantiationException":
        cause = cause.__cause__
    lines = [ln.strip() for ln in str(cause).splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith(("full_key:", "object_type=", "Set the environment",
                                                      "To append to your config"))]
    return ": ".join(lines) or type(cause).__name__


def _check_sweeps(overrides: Sequence[str], multirun: bool) -> None:
    """Without ``-m`` a sweep (``a=1,2``) is ambiguous to Hydra: say so in one line."""
    if multirun:
        return
    for o in _parse_overrides(overrides):
        if o.is_sweep_override():
            raise UserError(f"{o.input_line!r} is a sweep: add -m (--multirun) to run one job per value, "
                            f"write {o.key_or_group}=[...] for a list or quote the value for a string")
