"""WorkerGenerator: a generator in a process of its own, talked to over a pipe."""

from __future__ import annotations

import os
import signal
import time

import pytest

from reasoning.backends.scripted import ScriptedGenerator
from reasoning.backends.worker import WorkerGenerator, instantiate
from reasoning.protocols import Generator
from reasoning.types import (
    ChatMessage,
    FinishReason,
    GenerationParams,
    GenerationRequest,
    Segment,
)

pytestmark = pytest.mark.engine

SCRIPTS = {"p1": "One.\n\nTwo.\n\nSo the answer is 3.", "p2": "Alpha beta.\n\nGamma."}
SCRIPTED = {"_target_": "reasoning.backends.scripted.ScriptedGenerator", "name": "draft",
            "solutions": SCRIPTS}


def env_solutions(keys: list[str]):
    """Scripted 'solutions' that report the worker's environment (built inside the worker)."""
    text = " ".join(f"{k}={os.environ.get(k)}" for k in keys)
    return lambda problem_id, prefix: text


def _req(pid: str, max_tokens: int = 50, prefix: tuple[Segment, ...] = (),
         logprobs: int | None = None) -> GenerationRequest:
    params = GenerationParams(max_tokens=max_tokens, stop=("\n\n",), logprobs=logprobs)
    return GenerationRequest(f"{pid}/0", pid, (ChatMessage("user", "q"),), prefix, params)


@pytest.fixture(scope="module")
def scripted_worker():
    w = WorkerGenerator(SCRIPTED, env={"STEPSPEC_TEST_FLAG": "on"}, request_timeout_s=60)
    yield w
    w.close()


def test_round_trip_matches_in_process(scripted_worker):
    """The worker's completions equal those of the same generator built in this process."""
    local = ScriptedGenerator("draft", SCRIPTS)
    reqs = [_req("p1"), _req("p2", max_tokens=2, logprobs=0),
            _req("p1", prefix=(Segment("One.\n\n", "draft"),))]
    got = scripted_worker.generate(reqs)
    want = local.generate(reqs)
    assert isinstance(scripted_worker, Generator)
    assert scripted_worker.name == "draft"
    assert [c.text for c in got] == [c.text for c in want] == ["One.\n\n", "Alpha ", "Two.\n\n"]
    assert [c.finish_reason for c in got] == [FinishReason.STOP, FinishReason.LENGTH, FinishReason.STOP]
    assert [c.token_ids for c in got] == [c.token_ids for c in want]
    assert got[1].logprobs == (0.0, 0.0) and got[0].logprobs is None
    assert scripted_worker.generate([]) == []


def test_error_in_child_is_raised_in_parent_and_worker_survives(scripted_worker):
    with pytest.raises(RuntimeError, match=r"KeyError.*no script for problem 'nope'"):
        scripted_worker.generate([_req("nope")])
    assert scripted_worker.generate([_req("p2")])[0].text == "Alpha beta.\n\n"


def test_env_and_devices_are_set_in_the_child(tmp_path):
    """``env`` and ``devices`` reach the child before its generator is built; the parent is untouched."""
    spec = {"_target_": "reasoning.backends.scripted.ScriptedGenerator", "name": "env",
            "solutions": {"_target_": f"{__name__}.env_solutions",
                          "keys": ["CUDA_VISIBLE_DEVICES", "STEPSPEC_TEST_FLAG"]}}
    before = os.environ.get("CUDA_VISIBLE_DEVICES")
    with WorkerGenerator(spec, devices="3", env={"STEPSPEC_TEST_FLAG": "on"}) as w:
        text = w.generate([_req("env")])[0].text
        assert os.environ.get("CUDA_VISIBLE_DEVICES") == before
        assert w.pid != os.getpid()
    assert text == "CUDA_VISIBLE_DEVICES=3 STEPSPEC_TEST_FLAG=on"


def test_worker_name_maps_segments_to_the_inner_name():
    """A worker named differently from its generator hands its own segments over under the inner name."""
    with WorkerGenerator(SCRIPTED, name="small") as w:
        assert (w.name, w.inner_name) == ("small", "draft")
        w.generate([_req("p1", prefix=(Segment("One.\n\n", "small", (0, 1)), Segment("x", "draft")))])
        w2 = [r for r in w._rename([_req("p1", prefix=(Segment("a", "small", (1,)),
                                                         Segment("b", "draft", (2,))))])]
    assert [s.source for s in w2[0].prefix] == ["draft", "draft@other"]


def test_start_failure_is_reported():
    with pytest.raises(RuntimeError, match=r"failed to start[\s\S]*no_such_module"):
        WorkerGenerator({"_target_": "no_such_module.Gen"}, start_timeout_s=60)


def test_start_timeout_stops_the_worker():
    spec = {"_target_": "time.sleep", "_args_": [30]}
    t0 = time.perf_counter()
    with pytest.raises(RuntimeError, match=r"gave no answer to start within 1.0 s; the worker was stopped"):
        WorkerGenerator(spec, start_timeout_s=1.0)
    assert time.perf_counter() - t0 < 15


def test_request_timeout_stops_the_worker():
    spec = dict(SCRIPTED, seconds_per_token=1.0)
    w = WorkerGenerator(spec, request_timeout_s=0.5)
    t0 = time.perf_counter()
    with pytest.raises(RuntimeError, match="within 0.5 s"):
        w.generate([_req("p1")])
    assert time.perf_counter() - t0 < 10
    assert not w.is_alive()
    with pytest.raises(RuntimeError, match="closed"):
        w.generate([_req("p1")])
    w.close()


def test_dead_child_raises_clearly_and_close_is_idempotent():
    w = WorkerGenerator(SCRIPTED)
    os.kill(w.pid, signal.SIGKILL)
    w._proc.join(10)
    with pytest.raises(RuntimeError, match=r"died during generate \(exit code -9\)"):
        w.generate([_req("p1")])
    w.close()
    w.close()
    assert not w.is_alive()


def test_close_ends_the_process_and_refuses_more_work():
    w = WorkerGenerator(SCRIPTED)
    pid = w.pid
    w.close()
    assert not w.is_alive() and w._proc.exitcode == 0
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(RuntimeError, match="closed"):
        w.generate([_req("p1")])
    w.close()


def test_instantiate_builds_nested_specs():
    gen = instantiate({"_target_": "reasoning.backends.scripted.ScriptedGenerator", "name": "n",
                       "solutions": {"a": ["x ", "y"]}, "token_prob": 0.5})
    assert isinstance(gen, ScriptedGenerator) and gen.name == "n" and gen.token_prob == 0.5
    with pytest.raises(ImportError, match="no_such_module"):
        instantiate({"_target_": "no_such_module.Gen"})
    with pytest.raises(ImportError, match="has no attribute 'Nope'"):
        instantiate({"_target_": "reasoning.backends.scripted.Nope"})


def test_vllm_worker_matches_in_process(vllm_engine, test_model, engine_kwargs, cpu_engine_env, chat):
    """A VLLMGenerator in a worker generates the same tokens as the in-process engine."""
    params = GenerationParams(max_tokens=24, stop=("\n\n",), logprobs=0)
    reqs = [GenerationRequest("w0", "w", chat, (), params),
            GenerationRequest("w1", "w", chat, (Segment("Let me think.", "someone"),), params)]
    spec = {"_target_": "reasoning.backends.vllm.VLLMGenerator", "model": test_model, "name": "vllm",
            **engine_kwargs}
    t0 = time.perf_counter()
    with WorkerGenerator(spec, env=cpu_engine_env, start_timeout_s=300, request_timeout_s=300) as w:
        start = time.perf_counter() - t0
        got = w.generate(reqs)
    want = vllm_engine.generate(reqs)
    print(f"\nvLLM worker: start {start:.1f} s, total {time.perf_counter() - t0:.1f} s")
    assert [c.token_ids for c in got] == [c.token_ids for c in want]
    assert [c.text for c in got] == [c.text for c in want]
    assert [c.finish_reason for c in got] == [c.finish_reason for c in want]
    for a, b in zip(got, want):
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-3)
