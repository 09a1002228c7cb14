"""The on-disk step cache: a sweep computes each step once, and reproduces uncached runs exactly."""

from __future__ import annotations

import math
import sqlite3
from collections import Counter

import pytest

from reasoning import Pipeline, Problem, ScriptedGenerator, ThresholdPolicy
from reasoning.cache import (
    CacheError,
    StepCache,
    generation_key,
    judge_key,
    model_identity,
)
from reasoning.cached import CachedGenerator, CachedJudge
from reasoning.judges import ScriptedJudge
from reasoning.prompts import ChatPrompt
from reasoning.protocols import JudgeRequest
from reasoning.types import (
    ChatMessage,
    Completion,
    FinishReason,
    GenerationParams,
    GenerationRequest,
    Segment,
    to_dict,
)

N = 4
DRAFT = {f"p{i}": f"Draft one for {i}.\n\nDraft two for {i}.\n\nThe answer is \\boxed{{{i}}}."
         for i in range(N)}
TARGET = {f"p{i}": f"Target one for {i}.\n\nTarget two for {i}.\n\nSo the answer is \\boxed{{{i}}}."
          for i in range(N)}
PROBLEMS = [Problem(f"p{i}", f"What is {i}?", str(i)) for i in range(N)]
# Scores that the two thresholds (0.3 and 0.7) decide differently on: p0 step 1, p1 step 0.
SCORES = {"p0": [0.9, 0.5, 0.9], "p1": [0.5, 0.9, 0.9], "p2": [0.9, 0.9, 0.9], "p3": [0.2, 0.9, 0.9]}
IDS = {"draft": model_identity({"model": "scripted", "name": "draft", "solutions": DRAFT}),
       "target": model_identity({"model": "scripted", "name": "target", "solutions": TARGET}),
       "judge": model_identity({"scores": SCORES})}
TIMING = {"seconds", "latency_seconds", "draft_seconds", "judge_seconds", "target_seconds"}


def scripted(name, solutions):
    """A scripted model with a fixed vocabulary, like a real tokenizer: the double numbers
    pieces of text in the order it first meets them, so every instance first meets them all
    in one order (the prompts and both scripts)."""
    g = ScriptedGenerator(name, solutions)
    for p in PROBLEMS:
        for m in ChatPrompt().messages(p):
            g.encode(m.content)
    for text in [*DRAFT.values(), *TARGET.values()]:
        g.encode(text)
    return g


class RecordingJudge:
    """ScriptedJudge that records what it was asked."""

    def __init__(self) -> None:
        self.inner = ScriptedJudge(SCORES, default=0.9)
        self.requests: list[JudgeRequest] = []
        self.calls = 0

    def score(self, requests):
        self.calls += 1
        self.requests.extend(requests)
        return self.inner.score(requests)


def build(threshold, cache=None):
    d, t, j = scripted("draft", DRAFT), scripted("target", TARGET), RecordingJudge()
    draft, target, judge = d, t, j
    if cache is not None:
        draft = CachedGenerator(d, cache, IDS["draft"])
        target = CachedGenerator(t, cache, IDS["target"])
        judge = CachedJudge(j, cache, IDS["judge"])
    pipe = Pipeline(draft=draft, target=target, judge=judge, policy=ThresholdPolicy(threshold))
    return pipe, (d, t, j)


def gkeys(gen: ScriptedGenerator, which: str) -> Counter:
    return Counter(generation_key(IDS[which], r) for r in gen.requests)


def jkeys(j: RecordingJudge) -> Counter:
    return Counter(judge_key(IDS["judge"], r) for r in j.requests)


def untimed(x):
    if isinstance(x, dict):
        return {k: untimed(v) for k, v in x.items() if k not in TIMING}
    if isinstance(x, list):
        return [untimed(v) for v in x]
    return x


def traces(result):
    return sorted((untimed(t.to_dict()) for t in result.traces), key=lambda d: d["problem_id"])


def test_a_sweep_computes_exactly_the_union_of_the_steps_its_runs_need(tmp_path):
    # Reference: each threshold on its own, without a cache.
    ref, ref_models = {}, {}
    for th in (0.3, 0.7):
        pipe, models = build(th)
        ref[th], ref_models[th] = pipe.run(PROBLEMS), models
    need = {th: {"draft": gkeys(m[0], "draft"), "target": gkeys(m[1], "target"), "judge": jkeys(m[2])}
            for th, m in ref_models.items()}
    for which in ("draft", "target", "judge"):  # the two runs share steps, and differ in some
        a, b = need[0.3][which], need[0.7][which]
        assert max(a.values()) == 1 and max(b.values()) == 1
        assert set(a) & set(b) and set(b) - set(a), which

    with StepCache(tmp_path / "steps.sqlite") as cache:
        pipe1, (d1, t1, j1) = build(0.3, cache)
        first = pipe1.run(PROBLEMS)
        pipe2, (d2, t2, j2) = build(0.7, cache)
        second = pipe2.run(PROBLEMS)

    # The first run computes everything it needs; the second only what the first did not.
    assert gkeys(d1, "draft") == need[0.3]["draft"] and gkeys(t1, "target") == need[0.3]["target"]
    assert jkeys(j1) == need[0.3]["judge"]
    assert set(gkeys(d2, "draft")) == set(need[0.7]["draft"]) - set(need[0.3]["draft"])
    assert set(gkeys(t2, "target")) == set(need[0.7]["target"]) - set(need[0.3]["target"])
    assert set(jkeys(j2)) == set(need[0.7]["judge"]) - set(need[0.3]["judge"])
    for gen in (d2, t2):
        assert max(Counter(generation_key(IDS[gen.name], r) for r in gen.requests).values()) == 1
        assert 0 not in gen.batch_sizes  # no engine call on an all-hit batch
    assert pipe2.draft.hits == len(set(need[0.7]["draft"]) & set(need[0.3]["draft"])) > 0
    assert pipe2.draft.misses == len(d2.requests)
    assert pipe2.judge.hits + pipe2.judge.misses == sum(need[0.7]["judge"].values())

    # And the traces are those of the uncached runs, timing aside.
    assert traces(first) == traces(ref[0.3])
    assert traces(second) == traces(ref[0.7])
    assert traces(first) != traces(second)


def test_a_run_whose_steps_all_hit_never_builds_its_lazy_models(tmp_path):
    from omegaconf import OmegaConf

    from recipes._cli import LazyGenerator

    def lazy(name, sol):
        return LazyGenerator(OmegaConf.create({"_target_": "reasoning.backends.scripted.ScriptedGenerator",
                                               "name": name, "solutions": sol}), name)

    with StepCache(tmp_path / "c.sqlite") as cache:
        results, gens = [], []
        for _ in range(2):
            d, t = lazy("draft", DRAFT), lazy("target", TARGET)
            pipe = Pipeline(draft=CachedGenerator(d, cache, IDS["draft"]),
                            target=CachedGenerator(t, cache, IDS["target"]),
                            judge=CachedJudge(ScriptedJudge(SCORES, default=0.9), cache, IDS["judge"]),
                            policy=ThresholdPolicy(0.7), grader=None)
            results.append(pipe.run(PROBLEMS))
            gens.append((d, t, pipe))
    (d1, t1, _), (d2, t2, pipe2) = gens
    assert d1.loaded and t1.loaded
    assert not d2.loaded and not t2.loaded
    assert pipe2.draft.misses == pipe2.target.misses == pipe2.judge.misses == 0
    assert traces(results[0]) == traces(results[1])


def req(rid="r", params=None, prefix=(), problem="p1"):
    return GenerationRequest(rid, problem, (ChatMessage("user", "What is 1?"),), prefix,
                             params or GenerationParams(max_tokens=16, stop=("\n\n",)))


def test_the_key_covers_what_changes_an_output_and_not_the_request_id():
    seg = Segment("Draft one for 1.\n\n", "draft", (1, 2, 3))
    base = generation_key("m", req(prefix=(seg,)))
    assert generation_key("m", req(rid="other", prefix=(seg,))) == base
    changed = [
        generation_key("m2", req(prefix=(seg,))),
        generation_key("m", req(prefix=(Segment(seg.text, "draft", (1, 2, 4)),))),
        generation_key("m", req(prefix=(Segment(seg.text, "target", seg.token_ids),))),
        generation_key("m", req(prefix=(Segment(seg.text + " ", "draft", seg.token_ids),))),
        generation_key("m", req(prefix=(seg,), problem="p2")),
        generation_key("m", req(prefix=(seg,), params=GenerationParams(max_tokens=15, stop=("\n\n",)))),
        generation_key("m", req(prefix=(seg,), params=GenerationParams(max_tokens=16, stop=("\n",)))),
        generation_key("m", req(prefix=(seg,), params=GenerationParams(max_tokens=16, stop=("\n\n",),
                                                                       logprobs=0))),
        generation_key("m", req(prefix=(seg,), params=GenerationParams(max_tokens=16, stop=("\n\n",),
                                                                       top_p=0.9))),
    ]
    assert base not in changed and len(set(changed)) == len(changed)


def test_model_identity_is_the_config_without_timing_knobs():
    a = model_identity({"_target_": "x.VLLM", "model": "m", "dtype": "float32", "start_timeout_s": 10})
    b = model_identity({"dtype": "float32", "model": "m", "_target_": "x.VLLM", "start_timeout_s": 99})
    assert a == b
    assert a != model_identity({"_target_": "x.VLLM", "model": "m", "dtype": "bfloat16"})


def test_sampling_without_a_seed_is_not_cached_and_a_seed_is_part_of_the_key(tmp_path):
    inner = ScriptedGenerator("draft", DRAFT)
    with StepCache(tmp_path / "c.sqlite") as cache:
        gen = CachedGenerator(inner, cache, IDS["draft"])
        unseeded = req(params=GenerationParams(max_tokens=16, temperature=0.7, stop=("\n\n",)))
        gen.generate([unseeded])
        gen.generate([unseeded])
        assert inner.calls == 2 and gen.uncacheable == 2 and gen.hits == 0 and len(cache) == 0
        seeded = [req(params=GenerationParams(max_tokens=16, temperature=0.7, seed=s, stop=("\n\n",)))
                  for s in (1, 1, 2)]
        gen.generate(seeded[:1])
        gen.generate(seeded[1:2])
        assert inner.calls == 3 and gen.hits == 1
        gen.generate(seeded[2:])
        assert inner.calls == 4 and gen.misses == 2 and len(cache) == 2


def test_a_mixed_batch_calls_the_engine_once_on_the_misses_in_order(tmp_path):
    inner = ScriptedGenerator("draft", DRAFT)
    with StepCache(tmp_path / "c.sqlite") as cache:
        gen = CachedGenerator(inner, cache, IDS["draft"])
        reqs = [req(rid=f"r{i}", problem=f"p{i}") for i in range(4)]
        first = gen.generate(reqs[1:3])
        out = gen.generate(reqs)
        assert inner.batch_sizes == [2, 2]
        assert [r.problem_id for r in inner.requests[2:]] == ["p0", "p3"]
        assert [c.text for c in out] == [f"Draft one for {i}.\n\n" for i in range(4)]
        assert out[1:3] == first
        assert gen.generate(reqs) == out and inner.calls == 2


def test_completions_survive_the_round_trip_through_json(tmp_path):
    c = Completion("x y", (1, 2), FinishReason.LENGTH, prompt_tokens=7, cached_prompt_tokens=3,
                   logprobs=(-0.25, -math.inf), top_logprobs=({"x": -0.25}, {"y": -1.5}), seconds=0.5)
    assert Completion.from_dict(to_dict(c)) == c
    with StepCache(tmp_path / "c.sqlite") as cache:
        cache.put_many([("k", "completion", to_dict(c))])
        assert Completion.from_dict(cache.get("k")) == c
        assert cache.get("missing") is None


def test_cached_judge_forwards_needs_logprobs_and_does_not_store_bad_scores(tmp_path):
    from reasoning.judges import ConfidenceJudge

    class OutOfRange:
        def score(self, requests):
            return [2.0 for _ in requests]

    step = Completion("Draft one.\n\n", (1, 2), FinishReason.STOP, logprobs=(-0.1, -0.2))
    reqs = [JudgeRequest(Problem("p", "q"), (), (), step, 0)]
    with StepCache(tmp_path / "c.sqlite") as cache:
        assert CachedJudge(ConfidenceJudge(), cache, "c").needs_logprobs == ConfidenceJudge().needs_logprobs
        bad = CachedJudge(OutOfRange(), cache, "bad")
        assert bad.score(reqs) == [2.0] and len(cache) == 0  # passed on (the loop reports it), not stored
        good = CachedJudge(ScriptedJudge({"p": [0.4]}), cache, "s")
        assert good.score(reqs) == [0.4] and good.score(reqs) == [0.4]
        assert (good.hits, good.misses) == (1, 1)


def test_two_connections_read_while_one_writes(tmp_path):
    path = tmp_path / "c.sqlite"
    with StepCache(path) as a, StepCache(path) as b:
        a.put_many([("k1", "score", 0.5)])
        assert b.get("k1") == 0.5
        assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        # A reader in the middle of a read transaction does not block the writer (WAL).
        reader = sqlite3.connect(path, isolation_level=None)
        reader.execute("BEGIN")
        assert reader.execute("SELECT COUNT(*) FROM entries").fetchone()[0] == 1
        a.put_many([("k2", "score", 0.25)])
        assert reader.execute("SELECT COUNT(*) FROM entries").fetchone()[0] == 1  # its snapshot
        reader.execute("COMMIT")
        assert b.get_many(["k1", "k2", "k3"]) == {"k1": 0.5, "k2": 0.25}
        assert a.get("k2") == 0.25
        reader.close()


def test_a_locked_cache_gives_a_clear_error_after_its_timeout(tmp_path):
    path = tmp_path / "c.sqlite"
    cache = StepCache(path, timeout_s=0.2)
    cache.put_many([("k", "score", 0.5)])
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process is writing
    try:
        assert cache.get("k") == 0.5  # readers still read
        with pytest.raises(CacheError, match="locked by another process for more than 0.2s"):
            cache.put_many([("k2", "score", 0.5)])
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    cache.put_many([("k2", "score", 0.5)])  # and it works again once the lock is gone
    assert len(cache) == 2
    cache.close()


@pytest.mark.parametrize("content", [b"this is not a database, just text\n" * 100,
                                     b"SQLite format 3\x00" + b"\xff" * 4000])
def test_a_corrupted_cache_file_gives_a_clear_error(tmp_path, content):
    path = tmp_path / "c.sqlite"
    path.write_bytes(content)
    with pytest.raises(CacheError) as e:
        StepCache(path).get("k")
    msg = str(e.value)
    assert str(path) in msg and "cache.path" in msg and "\n" not in msg


def test_a_folder_or_another_sqlite_file_is_refused(tmp_path):
    with pytest.raises(CacheError, match="is a folder"):
        StepCache(tmp_path)
    other = tmp_path / "other.sqlite"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
    conn.execute("INSERT INTO meta VALUES ('schema', '999')")
    conn.commit()
    conn.close()
    with pytest.raises(CacheError, match="layout 999"):
        StepCache(other)
