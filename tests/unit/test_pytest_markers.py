"""How ``python -m pytest`` selects by marker: GPU tests are opt-in (``-m gpu``), and other
``-m`` expressions keep working. Each case collects the real test folders in a subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GPU_TESTS = 3  # tests/gpu: test_prm_gpu.py's two backends and test_spec_decode_gpu.py's one test


def _collected(*args: str) -> list[str]:
    cmd = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode in (0, 5), p.stdout[-2000:] + p.stderr[-2000:]  # 5: nothing selected
    return [line for line in p.stdout.splitlines() if "::" in line]


def test_a_plain_run_deselects_the_gpu_tests():
    assert _collected("tests/gpu") == []


def test_minus_m_gpu_selects_them():
    got = _collected("tests/gpu", "-m", "gpu")
    assert len(got) == GPU_TESTS and all(t.startswith("tests/gpu/") for t in got)


@pytest.mark.parametrize("expr", ["not engine", "not slow"])
def test_other_marker_expressions_still_work_and_keep_gpu_tests_out(expr):
    assert _collected("tests/gpu", "-m", expr) == []
    unit = _collected("tests/unit/test_metrics.py", "-m", expr)
    assert unit and all(t.startswith("tests/unit/test_metrics.py::") for t in unit)
    engine = _collected("tests/engine/test_vllm.py", "-m", "not engine")
    assert engine == []  # -m still deselects what it names


def test_gpu_in_an_expression_is_the_users_choice():
    assert len(_collected("tests/gpu", "-m", "gpu or engine")) == GPU_TESTS
    assert _collected("tests/gpu", "-m", "not gpu") == []
