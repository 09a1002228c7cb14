"""`import reasoning` (and the other packages' light modules) needs neither torch nor vllm."""

from __future__ import annotations

import subprocess
import sys

MODULES = ["reasoning", "reasoning.backends", "reasoning.backends.vllm", "reasoning.backends.hf",
           "reasoning.backends.worker", "reasoning.cpu_models", "reasoning.offline", "reasoning.cache",
           "rewards.target_judge", "routers.oracle", "routers.calibration", "recipes.evaluate"]


def test_core_imports_without_heavy_libraries():
    code = ("import sys\n"
            f"for m in {MODULES!r}: __import__(m)\n"
            "heavy = [m for m in ('torch', 'vllm', 'transformers') if m in sys.modules]\n"
            "print(','.join(heavy))\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == ""
