"""Saving the resolved config beside a run's traces."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reasoning.errors import UserError
from reasoning.traces import CONFIG, TRACES


class RunFolderError(UserError):
    """A run folder holds traces of a different config."""


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, Mapping):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): d}


def _load(text: str) -> dict[str, Any]:
    import yaml

    return yaml.safe_load(text) or {}


def config_diff(old: Mapping[str, Any] | str, new: Mapping[str, Any] | str) -> list[str]:
    r"""Dotted keys whose values differ between two configs (YAML text or mappings).

    >>> config_diff("a: 1\nb: {c: 2}", {"a": 1, "b": {"c": 3}})
    ['b.c']
    """
    a = _flat(_load(old) if isinstance(old, str) else old)
    b = _flat(_load(new) if isinstance(new, str) else new)
    return sorted(k for k in a.keys() | b.keys() if a.get(k, object()) != b.get(k, object()))


def check_same_config(out_dir: str | os.PathLike, config: Mapping[str, Any] | str) -> None:
    """Refuse to add traces to a folder whose traces were made with another config.

    Raises:
        RunFolderError: naming the folder and the keys that differ.
    """
    out = Path(out_dir)
    saved = out / CONFIG
    if not saved.exists() or not (out / TRACES).exists() or (out / TRACES).stat().st_size == 0:
        return
    diff = config_diff(saved.read_text(), config if isinstance(config, str) else dict(config))
    if diff:
        shown = ", ".join(diff[:5]) + (f" and {len(diff) - 5} more" if len(diff) > 5 else "")
        raise RunFolderError(f"run folder {out} holds traces of a different config (differs in {shown}); "
                             "use another hydra.run.dir, or new_folder=true to pick a fresh one")


def write_config(out_dir: str | os.PathLike, config: Mapping[str, Any] | str) -> Path:
    """Write ``config.yaml`` (a mapping is dumped as YAML; text is written as is)."""
    p = Path(out_dir) / CONFIG
    if isinstance(config, str):
        text = config
    else:
        from omegaconf import OmegaConf

        text = OmegaConf.to_yaml(OmegaConf.create(dict(config)), resolve=True)
    tmp = p.with_suffix(".yaml.tmp")
    tmp.write_text(text)
    os.replace(tmp, p)
    return p
