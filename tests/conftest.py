"""Test-wide selection: GPU tests (marker ``gpu``) are opt-in.

A run whose ``-m`` expression does not name ``gpu`` deselects them, so plain ``python -m pytest``
and ``-m "not engine"`` leave them out, and ``-m gpu`` (or any expression naming gpu, such as
``-m "gpu or engine"``) selects them as usual. This is a hook, not ``-m "not gpu"`` in the
pytest addopts: pytest keeps only the last ``-m`` given, so a user's ``-m "not engine"`` would
replace that default and run the GPU tests again.
"""

from __future__ import annotations

import re

import pytest

_NAMES_GPU = re.compile(r"\bgpu\b")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _NAMES_GPU.search(config.getoption("markexpr") or ""):
        return  # the -m expression decides about gpu tests itself
    gpu = [item for item in items if item.get_closest_marker("gpu") is not None]
    if gpu:
        config.hook.pytest_deselected(items=gpu)
        items[:] = [item for item in items if item.get_closest_marker("gpu") is None]
