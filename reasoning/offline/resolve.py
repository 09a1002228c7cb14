"""A user's model argument to what an engine loads.

A registry short name is prepared; a local path or a hub id passes through.
"""

from __future__ import annotations

import re
from pathlib import Path

from reasoning.offline.assemble import ensure_gguf
from reasoning.offline.convert import ensure_hf
from reasoning.offline.registry import MODELS, unknown_message

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
"""A hub id, ``org/name``."""


def looks_like_path(value: str) -> bool:
    """Whether ``value`` is written like a file path (hub ids are matched before this is asked)."""
    return (
        "/" in value
        or "\\" in value
        or value.startswith(("~", "."))
        or value.endswith((".gguf", ".safetensors"))
    )


def resolve_model(name_or_path: str) -> str:
    """What an engine should load for a user's model argument.

    - a short name from :data:`MODELS`: the model is prepared if need be (see :func:`ensure_hf`)
      and its safetensors folder is returned;
    - an existing local path: returned as is;
    - a hub id (``org/name``): returned unchanged for the engine to load.

    Raises:
        ValueError: anything else, e.g. a misspelt short name (the message lists the known names
            and suggests the nearest) or a path that does not exist.

    >>> resolve_model("Qwen/Qwen2.5-1.5B-Instruct")
    'Qwen/Qwen2.5-1.5B-Instruct'
    """
    if name_or_path in MODELS:
        return str(ensure_hf(name_or_path))
    if Path(name_or_path).expanduser().exists():
        return name_or_path
    if HUB_ID.match(name_or_path):
        return name_or_path
    if looks_like_path(name_or_path):
        raise ValueError(f"model path {name_or_path!r} does not exist")
    raise ValueError(unknown_message(name_or_path) + ", or give a local path or a hub id (org/name)")


def resolve_gguf(name_or_path: str) -> str:
    """The GGUF file for a short name from :data:`MODELS` (prepared if need be) or an existing ``.gguf`` path.

    Raises:
        ValueError: neither a registry name nor an existing ``.gguf`` file.
    """
    if name_or_path in MODELS:
        return str(ensure_gguf(name_or_path))
    path = Path(name_or_path).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return name_or_path
    if path.suffix == ".gguf" or looks_like_path(name_or_path):
        raise ValueError(f"GGUF file {name_or_path!r} does not exist")
    raise ValueError(unknown_message(name_or_path) + ", or give the path of a .gguf file")
