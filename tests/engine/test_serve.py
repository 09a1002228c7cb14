"""The server path: stepspec's llama.cpp server on loopback, reached by ServerGenerator.

The fixture starts ``python -m recipes.serve`` as its own process on a free port (SmolLM2-135M
GGUF), waits for ``/health``, and stops it by process id at the end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from reasoning.judges import ConfidenceJudge
from reasoning.loop import LoopConfig, StepLoop
from reasoning.policies import AlwaysTarget, ThresholdPolicy
from reasoning.segmenter import BlankLineSegmenter
from reasoning.types import GenerationParams, GenerationRequest, Problem, Segment
from tests.engine.conftest import gsm8k_problems, require_llama_cpp

pytestmark = pytest.mark.engine

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    require_llama_cpp()
    from reasoning.cpu_models import ensure_gguf

    gguf = ensure_gguf("smollm2-135m")
    d = tmp_path_factory.mktemp("serve")
    port_file = d / "port"
    log = open(d / "server.log", "w")
    # One thread per engine: the server's and the local one share 2 cores (with 2 threads each,
    # spinning threads made these tests 4x slower on a busy machine).
    proc = subprocess.Popen(
        [sys.executable, "-m", "recipes.serve", "model/llamacpp", f"model={gguf}", "n_ctx=1024",
         "max_sequences=4", "n_threads=1", "--port", "0", "--port-file", str(port_file)],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    t0 = time.time()
    url = None
    while time.time() - t0 < 300:
        assert proc.poll() is None, (d / "server.log").read_text()[-2000:]
        if port_file.exists():
            url = f"http://127.0.0.1:{port_file.read_text()}"
            try:
                urllib.request.urlopen(url + "/health", timeout=2)
                break
            except OSError:
                pass
        time.sleep(0.5)
    assert url, "server did not start"
    yield url, proc, d
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def local():
    require_llama_cpp()
    from reasoning.backends.llamacpp import LlamaCppGenerator
    from reasoning.cpu_models import ensure_gguf

    gen = LlamaCppGenerator(str(ensure_gguf("smollm2-135m")), name="target", n_ctx=1024, max_sequences=4,
                            n_threads=1)
    yield gen
    gen.close()


def test_server_matches_the_engine_in_process(server, local, chat):
    from reasoning.backends.server import ServerGenerator

    url, _, _ = server
    remote = ServerGenerator(url, name="target")
    params = GenerationParams(max_tokens=40, stop=("\n\n",), logprobs=2)
    reqs = [GenerationRequest(f"r{i}", f"p{i}", chat, (), params) for i in range(3)]
    a, b = remote.generate(reqs), local.generate(reqs)
    for x, y in zip(a, b):
        assert x.token_ids == y.token_ids and x.text == y.text and x.finish_reason is y.finish_reason
        assert x.logprobs == pytest.approx(y.logprobs, abs=1e-3)
        assert x.prompt_tokens == y.prompt_tokens
    # the next step of p0 reuses the server's KV cache of p0
    seg = Segment(a[0].text, "target", a[0].token_ids)
    nxt = remote.generate([GenerationRequest("n", "p0", chat, (seg,), GenerationParams(max_tokens=8))])[0]
    assert nxt.cached_prompt_tokens == nxt.prompt_tokens - 1
    remote.close()


def test_a_few_problems_through_the_server(server, local):
    """Draft and target both on the one server (two clients, two names); then always-target
    through the server equals always-target in process."""
    from reasoning.backends.server import ServerGenerator

    url, proc, _ = server
    problems = gsm8k_problems(3)
    draft, target = ServerGenerator(url, name="draft"), ServerGenerator(url, name="target")
    loop = StepLoop(draft=draft, target=target, judge=ConfidenceJudge(),
                    policy=ThresholdPolicy(threshold=0.6), segmenter=BlankLineSegmenter(max_step_tokens=48),
                    config=LoopConfig(token_budget=64, max_steps=6))
    traces = loop.run(problems)
    assert [t.error for t in traces] == [None] * 3
    assert all(t.steps and t.text == "".join(s.text for s in t.steps) for t in traces)

    # llama.cpp's float results depend on the shapes it computes with: a prompt prefilled in
    # one llama_decode with other problems' prompts, or a KV prefix the draft run left in the
    # server's sequence, can flip a near-tied greedy token. So the comparison runs one problem
    # at a time under problem ids neither side has seen, giving both sides the same shapes.
    def run(gen):
        lp = StepLoop(draft=gen, target=gen, judge=ConfidenceJudge(), policy=AlwaysTarget(),
                      segmenter=BlankLineSegmenter(max_step_tokens=48),
                      config=LoopConfig(token_budget=64, max_steps=6, max_in_flight=1))
        return lp.run([Problem(f"fresh-{p.id}", p.question, p.answer) for p in problems])

    remote_traces, local_traces = run(target), run(local)
    assert [t.text for t in remote_traces] == [t.text for t in local_traces]
    assert proc.poll() is None
    draft.close()
    target.close()


def test_server_refuses_bad_requests_and_keeps_serving(server):
    import json

    from reasoning.backends.server import ServerGenerator, ServerRequestError

    url, proc, _ = server
    gen = ServerGenerator(url, retries=0)
    for body in ({"prompt": []}, {"prompt": [1, 2], "logprobs": -1}, {"prompt": "x", "n": 0},
                 {"prompt": [1] * 5000}, {"prompt": "x", "echo": True}, {"prompt": "x", "frobnicate": 1}):
        with pytest.raises(ServerRequestError, match="HTTP 400"):
            gen._call("POST", "/v1/completions", body)
    req = urllib.request.Request(url + "/v1/completions", data=b"{not json", method="POST",
                                 headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 400 and "not JSON" in json.loads(e.value.read())["error"]["message"]
    out = gen._call("POST", "/v1/completions", {"prompt": "Hello", "max_tokens": 3, "temperature": 0,
                                                "return_token_ids": True})
    choice = out["choices"][0]
    assert len(choice["token_ids"]) <= 3 and choice["finish_reason"] in ("stop", "length")
    assert proc.poll() is None


def test_serve_script_starts_and_stops_by_pid(tmp_path):
    require_llama_cpp()
    from reasoning.cpu_models import ensure_gguf

    env = {**os.environ, "SERVE_DIR": str(tmp_path), "PYTHON": sys.executable}
    gguf = ensure_gguf("smollm2-135m")
    cmd = ["bash", "scripts/serve.sh", "start", "t", "llamacpp", "model/llamacpp", f"model={gguf}",
           "n_ctx=512", "max_sequences=1"]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    pid = int((tmp_path / "t.pid").read_text())
    url = (tmp_path / "t.url").read_text().strip()
    assert urllib.request.urlopen(url + "/health", timeout=5).status == 200
    stop = subprocess.run(["bash", "scripts/serve.sh", "stop", "t"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert stop.returncode == 0, stop.stderr
    with pytest.raises(ProcessLookupError):
        for _ in range(50):
            os.kill(pid, 0)
            time.sleep(0.2)
    bad = subprocess.run(["bash", "scripts/serve.sh", "start", "u", "llamacpp", "target/nope"], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "no generator config" in bad.stderr
