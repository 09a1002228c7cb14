"""Where the offline models live in the cache, and the lock two processes preparing one take turns on.

``<cache>`` is ``$STEPSPEC_CACHE`` when set, else ``~/.cache/stepspec``; models live under
``<cache>/models/`` (``wheels/``, ``gguf/``, ``hf/<name>/``, ``.locks/``).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from reasoning.offline.registry import get_spec

logger = logging.getLogger(__name__)


def cache_dir() -> Path:
    """The stepspec cache: ``$STEPSPEC_CACHE`` when set, else ``~/.cache/stepspec``.

    Models live under ``<cache>/models/`` (``wheels/``, ``gguf/``, ``hf/<name>/``).
    """
    env = os.environ.get("STEPSPEC_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "stepspec"


def models_dir(cache: Path | str | None) -> Path:
    """``<cache>/models``; ``cache=None`` means :func:`cache_dir`."""
    return (Path(cache).expanduser() if cache is not None else cache_dir()) / "models"


@contextlib.contextmanager
def locked(models: Path, key: str) -> Iterator[None]:
    """Hold an exclusive advisory lock ``<models>/.locks/<key>.lock`` for the block.

    Two processes preparing the same model take turns instead of clobbering each other's
    temporary files; the second then finds the first's result and skips. No-op where ``fcntl``
    does not exist.
    """
    path = models / ".locks" / f"{key}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("waiting for another process that holds %s", path)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def gguf_path(name: str, cache: Path | str | None = None) -> Path:
    """Where the assembled GGUF of registry model ``name`` lives (whether or not it exists yet)."""
    return models_dir(cache) / "gguf" / get_spec(name).gguf_file


def hf_path(name: str, cache: Path | str | None = None) -> Path:
    """Where the converted safetensors folder of registry model ``name`` lives (whether or not it exists)."""
    return models_dir(cache) / "hf" / get_spec(name).name
