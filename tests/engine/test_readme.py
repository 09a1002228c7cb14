"""The README's Python API snippet, run exactly as written, on the real models."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def readme_snippet() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## The Python API"):]
    m = re.search(r"```python\n(.*?)```", section, re.S)
    assert m, "no python block under '## The Python API'"
    return m.group(1)


def test_snippet_is_the_documented_api():
    code = readme_snippet()
    compile(code, "README.md", "exec")
    assert "Pipeline(" in code and "pipe.run(" in code


@pytest.mark.engine
@pytest.mark.slow
def test_readme_snippet_runs(tmp_path):
    from reasoning.cpu_models import resolve_model

    try:
        for m in ("smollm2-135m", "qwen2.5-coder-0.5b"):
            resolve_model(m)
    except Exception as e:  # noqa: BLE001
        if os.environ.get("CI"):
            raise
        pytest.skip(f"models not available: {e}")
    (tmp_path / "snippet.py").write_text(readme_snippet())
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, "snippet.py"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=900, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "speculative" in p.stdout and "target-only" in p.stdout
    out = tmp_path / "runs" / "api-example"
    assert (out / "traces.jsonl").read_text().count("\n") == 2
    assert (out / "summary.json").is_file()
