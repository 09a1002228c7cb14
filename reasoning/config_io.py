"""Saving the resolved config beside a run's traces."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reasoning.traces import CONFIG


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
