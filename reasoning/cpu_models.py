"""The offline CPU models under their first name: :mod:`reasoning.offline` does the work.

Kept so that ``import reasoning.cpu_models``, ``from reasoning.cpu_models import resolve_model``
and ``python -m reasoning.cpu_models [NAMES...] [--cache-dir DIR] [--gguf-only] [--list]`` keep
working; new code imports :mod:`reasoning.offline`.
"""

from __future__ import annotations

import sys

from reasoning.offline import (
    DEFAULT_MODELS,
    HUB_ID,
    MARKER_FILE,
    MODELS,
    Chunk,
    ModelPrepError,
    ModelSpec,
    assemble_gguf,
    cache_dir,
    ensure_gguf,
    ensure_hf,
    ensure_wheels,
    get_spec,
    gguf_path,
    hf_path,
    looks_like_path,
    resolve_gguf,
    resolve_model,
    sha256_file,
)
from reasoning.offline.__main__ import main

_HUB_ID = HUB_ID  # its names before it became reasoning.offline (recipes._cli imports them)
_looks_like_path = looks_like_path

__all__ = [
    "DEFAULT_MODELS", "HUB_ID", "MARKER_FILE", "MODELS", "Chunk", "ModelPrepError", "ModelSpec",
    "assemble_gguf", "cache_dir", "ensure_gguf", "ensure_hf", "ensure_wheels", "get_spec", "gguf_path",
    "hf_path", "looks_like_path", "main", "resolve_gguf", "resolve_model", "sha256_file",
]

if __name__ == "__main__":
    sys.exit(main())
