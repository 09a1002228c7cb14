"""A corpus of user mistakes, each run through the CLI in a subprocess.

Every case must exit non-zero within seconds, print exactly one line on stderr that names
the problem, and no traceback, before any model loads.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def write(tmp: Path, name: str, text: str) -> str:
    p = tmp / name
    p.write_text(text)
    return str(p)


# (case id, command-line arguments (a function of tmp_path), text the one stderr line contains)
CASES = [
    ("unknown-recipe", lambda t: ["recipe=nope"], "unknown recipe 'nope'"),
    ("unknown-recipe-suggests", lambda t: ["recipe=smok"], "did you mean 'smoke'"),
    ("unknown-judge", lambda t: ["recipe=smoke", "judge=prmm"], "unknown judge 'prmm'"),
    ("unknown-draft", lambda t: ["recipe=smoke", "model@draft=qwen9"], "unknown model 'qwen9'"),
    ("unknown-policy", lambda t: ["recipe=smoke", "policy=thresh"], "did you mean 'threshold'"),
    ("unknown-dataset", lambda t: ["recipe=smoke", "dataset=gsm"], "unknown dataset 'gsm'"),
    ("threshold-above-1", lambda t: ["recipe=smoke", "policy.threshold=1.5"],
     "policy.threshold must be in [0, 1]"),
    ("threshold-negative", lambda t: ["recipe=smoke", "policy.threshold=-0.1"], "policy.threshold"),
    ("budget-zero", lambda t: ["recipe=smoke", "loop.token_budget=0"], "loop.token_budget must be >= 1"),
    ("budget-negative", lambda t: ["recipe=smoke", "loop.token_budget=-5"], "loop.token_budget"),
    ("max-steps-zero", lambda t: ["recipe=smoke", "loop.max_steps=0"], "loop.max_steps"),
    ("step-tokens-zero", lambda t: ["recipe=smoke", "segmenter.max_step_tokens=0"], "max_step_tokens"),
    ("temperature-negative", lambda t: ["recipe=smoke", "loop.temperature=-1"], "temperature"),
    ("misspelt-key", lambda t: ["recipe=smoke", "policy.thresold=0.5"], "policy.thresold"),
    ("unknown-top-key", lambda t: ["recipe=smoke", "budget=5"], "budget"),
    ("bad-baseline", lambda t: ["recipe=smoke", "baseline=oracle"], "baseline must be one of"),
    ("missing-file", lambda t: ["recipe=smoke", "dataset.path=/no/such/file.jsonl"], "/no/such/file.jsonl"),
    ("not-jsonl", lambda t: ["recipe=smoke", "dataset.path=" + write(t, "x.jsonl", "this is not json\n")],
     "line 1"),
    ("no-question-field", lambda t: ["recipe=smoke", "dataset.path=" + write(
        t, "q.jsonl", '{"answer": "#### 4"}\n')], "question"),
    ("no-answer-field", lambda t: ["recipe=smoke", "dataset=jsonl", "dataset.path=" + write(
        t, "a.jsonl", '{"question": "2+2?"}\n'), "dataset.answer_field=answer"], "answer"),
    ("empty-selection", lambda t: ["recipe=smoke", "dataset.offset=100000"], "dataset"),
    ("unknown-id", lambda t: ["recipe=smoke", "dataset.limit=null", "dataset.ids=[gsm8k-test-999999]"],
     "gsm8k-test-999999"),
    ("missing-split", lambda t: ["recipe=smoke", "dataset.split=validation"], "validation"),
    ("model-path-missing", lambda t: ["recipe=cpu-demo", "draft.spec.model=/no/such/model"],
     "/no/such/model"),
    ("model-name-unknown", lambda t: ["recipe=cpu-demo", "target.spec.model=qwen2.5-coder-1.5"],
     "did you mean 'qwen2.5-coder-1.5b'"),
    ("constant-judge-out-of-range", lambda t: ["recipe=smoke", "judge=constant", "judge.value=2"],
     "judge.value must be in [0, 1]"),
    ("router-path-unset", lambda t: ["recipe=smoke", "judge=arbitrage"], "judge.path has no value"),
    ("router-file-wrong-kind", lambda t: ["recipe=smoke", "judge=arbitrage", "judge.path=" + write(
        t, "router.json", '{"format": "something-else"}')], "router"),
    ("model-unset", lambda t: ["recipe=smoke", "model@draft=vllm"], "draft.model has no value"),
    ("bad-override-syntax", lambda t: ["recipe=smoke", "policy.threshold=[1"], "policy.threshold"),
]


@pytest.mark.parametrize("case,args,needle", CASES, ids=[c[0] for c in CASES])
def test_bad_input_exits_with_one_line(case, args, needle, tmp_path):
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "recipes.evaluate", *args(tmp_path),
                        f"hydra.run.dir={tmp_path / 'run'}", "progress=false"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    took = time.monotonic() - t0
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2, (case, p.returncode, p.stderr[-2000:])
    assert len(lines) == 1, (case, p.stderr[-2000:])
    assert lines[0].startswith("error: ") and needle in lines[0], (case, lines[0])
    assert "Traceback" not in p.stderr
    assert took < 30, f"{case} took {took:.1f} s"
    assert not (tmp_path / "run" / "traces.jsonl").exists()


GROUPS = sorted(d.name for d in (ROOT / "conf").iterdir() if d.is_dir() and any(d.glob("*.yaml")))
"""Every config group: a folder of conf/ holding options (read here, not from the CLI's code)."""


@pytest.mark.parametrize("group", GROUPS)
def test_every_config_group_refuses_an_unknown_option_listing_its_options(group, tmp_path):
    options = sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml"))
    args = [f"recipe={'no-such-option' if group == 'recipe' else 'smoke'}"]
    if group != "recipe":
        args.append(f"{group}=no-such-option")
    p = subprocess.run([sys.executable, "-m", "recipes.evaluate", *args, f"hydra.run.dir={tmp_path / 'run'}",
                        "progress=false"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and "Traceback" not in p.stderr, (group, p.stderr[-2000:])
    assert lines[0].startswith(f"error: unknown {group} 'no-such-option': choose one of "), lines[0]
    assert lines[0].split("choose one of ", 1)[1].split(";")[0].split(", ") == options
