"""Saving the resolved config beside a run's traces."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reasoning.errors import UserError
from reasoning.files import config_diff, refuse_other_config, write_atomic
from reasoning.traces import CONFIG, TRACES

__all__ = ["RunFolderError", "check_same_config", "config_diff", "write_config"]


class RunFolderError(UserError):
    """A run folder holds traces of a different config."""


def check_same_config(out_dir: str | os.PathLike, config: Mapping[str, Any] | str) -> None:
    """Refuse to add traces to a folder whose traces were made with another config.

    Raises:
        RunFolderError: naming the folder and the keys that differ.
    """
    out = Path(out_dir)
    if not (out / TRACES).exists() or (out / TRACES).stat().st_size == 0:
        return
    refuse_other_config(out / CONFIG, config, f"run folder {out} holds traces",
                        "use another hydra.run.dir, or new_folder=true to pick a fresh one", RunFolderError)


def write_config(out_dir: str | os.PathLike, config: Mapping[str, Any] | str) -> Path:
    """Write ``config.yaml`` (a mapping is dumped as YAML; text is written as is)."""
    if isinstance(config, str):
        text = config
    else:
        from omegaconf import OmegaConf

        text = OmegaConf.to_yaml(OmegaConf.create(dict(config)), resolve=True)
    return write_atomic(Path(out_dir) / CONFIG, text)
