"""The shadow policy (routers.collect) on scripted models: exact rows, batching, resume, and the
collect_router_data recipe (config, train-split check, a scripted run in a subprocess)."""

from __future__ import annotations

import inspect
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from reasoning import (
    AlwaysTarget,
    BlankLineSegmenter,
    ConfidenceJudge,
    ConstantJudge,
    LoopConfig,
    Problem,
    ScriptedGenerator,
    ScriptedJudge,
    StepLoop,
)
from reasoning.errors import UserError
from reasoning.pipeline import grade_trace
from routers.collect import STEPS, ShadowCollector, read_rows

ROOT = Path(__file__).resolve().parents[2]
LOG = math.log

DRAFT = {
    "a": "Add 2 and 2.\n\nThat is 5.\n\nThe answer is \\boxed{5}.",
    "b": "Half of 10 is 5.\n\nSo \\boxed{5}.",
}
TARGET = {
    "a": "Add 2 and 2.\n\nThat is 4.\n\nThe answer is \\boxed{4}.",
    "b": "Half of ten is five.\n\nThe answer is \\boxed{5}.",
}
PROBLEMS = [Problem("a", "What is 2+2?", "4"), Problem("b", "Half of 10?", "5")]
FLAT = {"x": LOG(0.5), "y": LOG(0.5)}


class ByText:
    """A reward that looks a step's score up by (problem id, step text); counts its calls."""

    def __init__(self, table, default=0.5):
        self.table = table
        self.default = default
        self.calls: list[list[tuple[str, int, str]]] = []

    def score(self, requests):
        self.calls.append([(r.problem.id, r.step_index, r.step.text) for r in requests])
        return [self.table.get((r.problem.id, r.step.text), self.default) for r in requests]


class Counting:
    def __init__(self, inner):
        self.inner = inner
        self.calls = 0

    def score(self, requests):
        self.calls += 1
        return self.inner.score(requests)


def models(draft_prob=0.5):
    draft = ScriptedGenerator("draft", DRAFT, token_prob=draft_prob, top_logprobs_fn=lambda req: FLAT)
    target = ScriptedGenerator("target", TARGET)
    return draft, target


def by_step(rows):
    return {(r["problem_id"], r["step_index"]): r for r in rows}


def test_rows_are_exact_with_a_scripted_judge_reward():
    draft, target = models()
    reward = ScriptedJudge({"a": [0.75, 0.25, 0.5], "b": [0.25, 0.5]})
    rows = ShadowCollector(draft, target, reward, BlankLineSegmenter(), grader=grade_trace).run(PROBLEMS).rows
    got = by_step(rows)
    assert sorted(got) == [("a", 0), ("a", 1), ("a", 2), ("b", 0), ("b", 1)]
    row = dict(got[("b", 1)])
    for k in ("draft_seconds", "target_seconds"):
        assert isinstance(row.pop(k), float)
    assert row == {
        "version": 1, "problem_id": "b", "step_index": 1, "question": "Half of 10?", "problem_chars": 11,
        "history": [{"source": "target", "text": "Half of ten is five.\n\n"}],
        "draft_step": "So \\boxed{5}.", "target_step": "The answer is \\boxed{5}.", "target_chained": False,
        "draft_chained": False,
        # A ScriptedJudge scores by (problem, step index): both steps of a place score the same.
        "draft_score": 0.5, "target_score": 0.5, "advantage": 0.0, "target_scores": [0.5],
        "target_sample_steps": [],
        "draft_tokens": 3, "target_tokens": 7, "draft_finish": "eos",
        "features": {"mean_logprob": LOG(0.5), "min_logprob": LOG(0.5), "first_token_entropy": LOG(2),
                     "step_tokens": 3.0, "step_index": 1.0, "problem_chars": 11.0},
        "top_logprobs": 5, "problem_steps": 2, "stop_reason": "answer", "solved": True, "split": None,
    }
    assert [got[("a", i)]["draft_score"] for i in range(3)] == [0.75, 0.25, 0.5]
    assert got[("a", 0)]["history"] == [] and got[("a", 0)]["draft_finish"] == "stop"


def test_both_steps_are_scored_and_the_answer_goes_on_with_the_targets_step():
    draft, target = models()
    reward = ByText({
        ("a", "That is 5.\n\n"): 0.25, ("a", "That is 4.\n\n"): 1.0,
        ("a", "The answer is \\boxed{5}."): 0.0, ("a", "The answer is \\boxed{4}."): 1.0,
        ("b", "Half of 10 is 5.\n\n"): 0.75, ("b", "Half of ten is five.\n\n"): 0.5,
    })
    rows = by_step(ShadowCollector(draft, target, reward, BlankLineSegmenter()).run(PROBLEMS).rows)
    table = {k: (r["draft_step"], r["target_step"], r["draft_score"], r["target_score"], r["advantage"])
             for k, r in rows.items()}
    assert table == {
        ("a", 0): ("Add 2 and 2.\n\n", "Add 2 and 2.\n\n", 0.5, 0.5, 0.0),
        ("a", 1): ("That is 5.\n\n", "That is 4.\n\n", 0.25, 1.0, 0.75),
        ("a", 2): ("The answer is \\boxed{5}.", "The answer is \\boxed{4}.", 0.0, 1.0, 1.0),
        ("b", 0): ("Half of 10 is 5.\n\n", "Half of ten is five.\n\n", 0.75, 0.5, -0.25),
        ("b", 1): ("So \\boxed{5}.", "The answer is \\boxed{5}.", 0.5, 0.5, 0.0),
    }
    # Step 0 of a: the target wrote the draft's own text, which is not scored again (its
    # advantage is 0 by definition, not by the reward's say).
    assert [c for call in reward.calls for c in call if c[:2] == ("a", 0)] == [("a", 0, "Add 2 and 2.\n\n")]
    # The history is the target's steps: the draft's never enter the answer.
    assert [h["text"] for h in rows[("a", 2)]["history"]] == ["Add 2 and 2.\n\n", "That is 4.\n\n"]
    assert {h["source"] for r in rows.values() for h in r["history"]} == {"target"}
    # Step 2's draft continued from the target's prefix (the scripted draft realigns by steps).
    prefixes = {r.request_id: r.prefix_text for r in draft.requests}
    assert prefixes["a/2/d0"] == "Add 2 and 2.\n\nThat is 4.\n\n"


def test_the_draft_and_the_target_step_of_a_row_are_scored_in_one_reward_call():
    # same batch, same cache state: a reward whose numbers depend on its batch (llama.cpp's do)
    # must not label the difference of two calls as a difference of steps
    draft, target = models()
    reward = ByText({})
    rows = ShadowCollector(draft, target, reward, BlankLineSegmenter()).run(PROBLEMS).rows
    differing = [r for r in rows if r["draft_step"] != r["target_step"]]
    assert len(differing) == 4  # a: steps 1 and 2, b: steps 0 and 1 (hand-read from the scripts)
    for r in differing:
        calls = [call for call in reward.calls
                 if (r["problem_id"], r["step_index"], r["draft_step"]) in call]
        assert len(calls) == 1, r  # the draft's step scored once
        assert (r["problem_id"], r["step_index"], r["target_step"]) in calls[0], r


def test_the_collector_refuses_a_test_split_from_its_config_and_rows_carry_their_split(tmp_path):
    draft, target = models()
    collector = ShadowCollector(draft, target, ScriptedJudge({}), BlankLineSegmenter())
    math = "dataset:\n  name: math500\n  split: test\n"  # MATH-500 ids (math500-3) hold no 'test'
    with pytest.raises(UserError, match="train splits only.*'test'"):
        collector.run(PROBLEMS, out_dir=tmp_path / "m", config=math)
    assert draft.calls == 0
    rows = collector.run(PROBLEMS[:1], out_dir=tmp_path / "g",
                         config="dataset:\n  name: gsm8k\n  split: train\n").rows
    assert {r["split"] for r in rows} == {"train"}
    with pytest.raises(UserError, match="train splits only"):
        ShadowCollector(draft, target, ScriptedJudge({}), BlankLineSegmenter(), split="test")


def test_the_answer_is_the_target_only_answer_and_rounds_are_batched():
    draft, target = models()
    reward = Counting(ScriptedJudge({}, default=0.5))
    collector = ShadowCollector(draft, target, reward, BlankLineSegmenter())
    problems = list(collector.iter_problems(PROBLEMS))
    ref = StepLoop(ScriptedGenerator("draft", DRAFT), ScriptedGenerator("target", TARGET), ConstantJudge(),
                   AlwaysTarget(), BlankLineSegmenter()).run(PROBLEMS)
    assert {p.problem_id: p.trace.text for p in problems} == {t.problem_id: t.text for t in ref}
    # One draft call and one target call per round (a: 3 steps, b: 2), batched across problems.
    assert draft.batch_sizes == [2, 2, 1] and target.batch_sizes == [2, 2, 1]
    # The reward: one call per finished problem, on its drafts and the target's steps together.
    assert reward.calls == 2
    # The draft was asked for k = 5 top logprobs, the target for none.
    assert {r.params.logprobs for r in draft.requests} == {5}
    assert {r.params.logprobs for r in target.requests} == {None}


def test_extra_target_samples_are_scored_and_kept():
    draft, target = models()
    reward = ByText({("b", "Half of ten is five.\n\n"): 1.0}, default=0.25)
    rows = by_step(ShadowCollector(draft, target, reward, BlankLineSegmenter(), target_samples=3,
                                   sample_temperature=0.9, loop=LoopConfig(seed=7)).run(PROBLEMS[1:]).rows)
    r0 = rows[("b", 0)]
    # The scripted target writes the same step when sampled: two samples, scored like the step.
    assert r0["target_sample_steps"] == ["Half of ten is five.\n\n"] * 2
    assert r0["target_scores"] == [1.0, 1.0, 1.0] and r0["target_score"] == 1.0
    samples = [r for r in target.requests if "/sample" in r.request_id]
    assert len(samples) == 2 * 2  # 2 steps x 2 extra samples, in one call
    assert {r.params.temperature for r in samples} == {0.9}
    assert sorted({r.params.seed for r in samples}) == [8, 9]
    assert target.batch_sizes[-1] == 4


def test_a_reward_that_reads_logprobs_is_refused():
    draft, target = models()
    with pytest.raises(ValueError, match="logprobs"):
        ShadowCollector(draft, target, ConfidenceJudge(), BlankLineSegmenter())


def test_a_failing_problem_writes_no_rows_and_the_others_go_on(tmp_path):
    def solutions(pid, prefix):
        if pid == "a":
            raise RuntimeError("engine broke")
        return DRAFT[pid][len(prefix):] if DRAFT[pid].startswith(prefix) else "So \\boxed{5}."

    draft = ScriptedGenerator("draft", solutions)
    result = ShadowCollector(draft, ScriptedGenerator("target", TARGET), ScriptedJudge({}),
                             BlankLineSegmenter()).run(PROBLEMS, out_dir=tmp_path)
    assert {r["problem_id"] for r in result.rows} == {"b"}
    assert result.summary["errors"] == 1 and result.summary["failed_problems"] == ["a"]


def test_rows_are_appended_per_problem_and_a_rerun_resumes(tmp_path):
    draft, target = models()
    collector = ShadowCollector(draft, target, ScriptedJudge({}), BlankLineSegmenter())
    first = collector.run(PROBLEMS[:1], out_dir=tmp_path, config="a: 1\n")
    assert len(first.rows) == 3 and len(read_rows(tmp_path / STEPS)) == 3
    calls = draft.calls
    again = collector.run(PROBLEMS, out_dir=tmp_path, config="a: 1\n")
    assert [r["problem_id"] for r in again.rows] == ["a"] * 3 + ["b"] * 2
    assert draft.batch_sizes[calls:] == [1, 1]  # only b was collected
    assert json.loads((tmp_path / "summary.json").read_text())["rows"] == 5
    with pytest.raises(UserError, match="different config"):
        collector.run(PROBLEMS, out_dir=tmp_path, config="a: 2\n")


def test_a_torn_line_and_a_problem_written_in_part_are_dropped(tmp_path):
    rows = [{"problem_id": "a", "step_index": i, "problem_steps": 3} for i in range(3)]
    rows += [{"problem_id": "b", "step_index": 0, "problem_steps": 2}]
    f = tmp_path / STEPS
    f.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"problem_id": "b", "st')
    assert [r["problem_id"] for r in read_rows(f, repair=True)] == ["a"] * 3
    assert f.read_text().count("\n") == 3
    f.write_text("not json\n" + json.dumps(rows[0]) + "\n")
    with pytest.raises(UserError, match="line 1"):
        read_rows(f)


def test_rows_of_several_folders_are_read_together_but_a_problem_only_once(tmp_path):
    from routers.rows import load_rows

    draft, target = models()
    collector = ShadowCollector(draft, target, ScriptedJudge({}), BlankLineSegmenter())
    collector.run(PROBLEMS[:1], out_dir=tmp_path / "one", config="a: 1\n")
    collector.run(PROBLEMS[1:], out_dir=tmp_path / "two", config="a: 2\n")
    rows = load_rows([tmp_path / "one", tmp_path / "two"])
    assert [r["problem_id"] for r in rows] == ["a"] * 3 + ["b"] * 2
    collector.run(PROBLEMS[:1], out_dir=tmp_path / "three", config="a: 1\n")
    with pytest.raises(UserError, match="problem 'a' has rows in both"):
        load_rows([tmp_path / "one", tmp_path / "two", tmp_path / "three"])


# -- the recipe -----------------------------------------------------------------------------------
def test_the_recipe_refuses_a_test_split():
    from recipes.collect_router_data import check_split

    check_split({"name": "gsm8k", "split": "train"})
    for split in ("test", None):
        with pytest.raises(UserError, match="train splits only"):
            check_split({"name": "gsm8k", "split": split})


def test_the_recipe_config_composes_and_matches_the_code():
    from hydra import compose, initialize_config_dir
    from hydra.utils import get_method
    from omegaconf import DictConfig

    from recipes._cli import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="collect_router_data")
    assert cfg.dataset.split == "train" and cfg.reward._target_ == "rewards.target_judge.TargetJudge"
    assert cfg.reward._partial_ is True
    special = {"_target_", "_recursive_", "_convert_", "_partial_", "_args_"}
    for key in ("draft", "target", "reward", "segmenter", "dataset", "prompt", "loop"):
        node = cfg[key]
        assert isinstance(node, DictConfig)
        params = inspect.signature(get_method(node._target_)).parameters
        unknown = {k for k in node if k not in special} - set(params)
        assert not unknown, f"{key}: {node._target_} takes no {sorted(unknown)}"
    import routers.collect as rc

    params = inspect.signature(rc.ShadowCollector).parameters
    assert {"top_logprobs", "target_samples", "sample_temperature"} <= set(params)


def _run(*args):
    return subprocess.run([sys.executable, "-m", "recipes.collect_router_data", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_the_recipe_collects_with_scripted_models(tmp_path):
    out = tmp_path / "data"
    p = _run("model@draft=scripted-draft", "model@target=scripted-target", "judge@reward=scripted",
             "dataset.limit=2", f"out={out}",
             "progress=false")
    assert p.returncode == 0, p.stderr
    rows = read_rows(out / STEPS)
    assert {r["problem_id"] for r in rows} == {"gsm8k-train-0", "gsm8k-train-1"}
    assert (out / "config.yaml").is_file() and "router data:" in p.stdout
    bad = _run("model@draft=scripted-draft", "model@target=scripted-target", "judge@reward=scripted",
               "dataset.split=test",
               f"out={tmp_path / 'x'}")
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "error: routers train on train splits only: dataset.split is 'test'; set dataset.split=train"]
