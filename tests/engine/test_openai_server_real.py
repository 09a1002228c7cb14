"""stepspec's OpenAI-compatible server on a real model (SmolLM2-135M on llama.cpp), reached by the
official ``openai`` client, against a second llama.cpp engine of the same GGUF in this process.

Both engines start empty before each comparison (``reset_cache``) and see the same batches, so
greedy decoding gives the same ids on both sides (llama.cpp's numbers depend slightly on the
shapes it computed a prefix with; see tests/engine/test_serve.py).
"""

from __future__ import annotations

import asyncio

import pytest

from reasoning.types import ChatMessage, FinishReason, GenerationParams
from tests.engine.conftest import need, require_llama_cpp

pytestmark = pytest.mark.engine

PROMPT = "The three primary colors are"
QUESTION = "What is 2 + 3? Answer in one short sentence."


@pytest.fixture(scope="module")
def engines():
    require_llama_cpp()
    need("fastapi")
    need("uvicorn")
    from reasoning.backends.llamacpp import LlamaCppGenerator
    from reasoning.cpu_models import ensure_gguf

    path = str(ensure_gguf("smollm2-135m"))
    kw = {"n_ctx": 512, "max_sequences": 4, "n_threads": 1}  # 2 threads crawl on a busy 2-core box
    served, local = LlamaCppGenerator(path, name="smol", **kw), LlamaCppGenerator(path, name="local", **kw)
    yield served, local
    served.close()
    local.close()


@pytest.fixture(scope="module")
def server(engines):
    from reasoning.serve import Server

    with Server(engines[0], wait_s=0.05) as srv:
        srv.start()
        yield srv


@pytest.fixture(scope="module")
def client(server):
    openai = need("openai")
    with openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=120) as c:
        yield c


@pytest.fixture
def fresh(engines):
    """Empty both engines' caches, now and whenever called again."""

    def reset():
        for e in engines:
            e.reset_cache()

    reset()
    return reset


def test_completion_greedy_and_streamed_match_the_engine(client, engines, fresh):
    _, local = engines
    ids = local.tokenize(PROMPT)
    (want,) = local.generate_ids([(None, ids, GenerationParams(max_tokens=20, temperature=0, logprobs=2))])
    out = client.completions.create(model="smol", prompt=PROMPT, max_tokens=20, temperature=0, logprobs=2,
                                    extra_body={"return_token_ids": True})
    (c,) = out.choices
    assert c.model_extra["token_ids"] == list(want.token_ids) and c.text == want.text
    assert c.finish_reason == ("length" if want.finish_reason is FinishReason.LENGTH else "stop")
    assert c.logprobs.token_logprobs == pytest.approx(want.logprobs, abs=1e-3)
    assert c.logprobs.tokens == [local.decode([t]) for t in want.token_ids]
    assert [set(d) for d in c.logprobs.top_logprobs] == [set(d) for d in want.top_logprobs]
    assert out.usage.prompt_tokens == len(ids) and out.usage.completion_tokens == len(want.token_ids)

    fresh()
    chunks = list(client.completions.create(model="smol", prompt=ids, max_tokens=20, temperature=0,
                                            stream=True, stream_options={"include_usage": True},
                                            extra_body={"return_token_ids": True}))
    assert "".join(ch.choices[0].text for ch in chunks if ch.choices) == want.text
    assert [t for ch in chunks if ch.choices for t in ch.choices[0].model_extra["token_ids"]] == \
        list(want.token_ids)
    assert chunks[-1].usage.completion_tokens == len(want.token_ids)


def test_chat_greedy_matches_the_engine_sync_and_async(server, client, engines, fresh):
    openai = need("openai")
    _, local = engines
    ids = local.render_chat((ChatMessage("user", QUESTION),))
    params = GenerationParams(max_tokens=24, temperature=0, stop=("\n\n",), logprobs=2)
    (want,) = local.generate_ids([(None, ids, params)])
    text = want.text.split("\n\n")[0]  # chat leaves the stop string out
    messages = [{"role": "user", "content": QUESTION}]
    out = client.chat.completions.create(model="smol", messages=messages, max_completion_tokens=24,
                                         temperature=0, stop=["\n\n"], logprobs=True, top_logprobs=2)
    (c,) = out.choices
    assert c.message.content == text
    assert [t.token for t in c.logprobs.content] == [local.decode([t]) for t in want.token_ids]
    assert [t.logprob for t in c.logprobs.content] == pytest.approx(want.logprobs, abs=1e-3)
    assert all(len(t.top_logprobs) == 2 for t in c.logprobs.content)
    assert out.usage.prompt_tokens == len(ids)

    fresh()

    async def streamed():
        async with openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0) as ac:
            stream = await ac.chat.completions.create(model="smol", messages=messages, max_tokens=24,
                                                      temperature=0, stop="\n\n", stream=True)
            return "".join([ch.choices[0].delta.content or "" async for ch in stream if ch.choices])

    assert asyncio.run(streamed()) == text


def test_n_seeded_samples_and_a_list_of_prompts_match_the_engine(client, engines, fresh):
    _, local = engines
    ids = local.tokenize(PROMPT)
    p = {"max_tokens": 12, "temperature": 0.9, "top_p": 0.95}
    want = local.generate_ids([(None, ids, GenerationParams(seed=11, **p)),
                               (None, ids, GenerationParams(seed=12, **p))])
    out = client.completions.create(model="smol", prompt=PROMPT, n=2, seed=11,
                                    extra_body={"return_token_ids": True}, **p)
    assert [c.model_extra["token_ids"] for c in out.choices] == [list(w.token_ids) for w in want]
    assert [c.text for c in out.choices] == [w.text for w in want]

    fresh()
    other = "Once upon a time"
    want = local.generate_ids([(None, ids, GenerationParams(max_tokens=10)),
                               (None, local.tokenize(other), GenerationParams(max_tokens=10))])
    out = client.completions.create(model="smol", prompt=[PROMPT, other], max_tokens=10, temperature=0, n=2)
    assert [c.index for c in out.choices] == [0, 1, 2, 3]
    assert [c.text for c in out.choices] == [want[0].text, want[0].text, want[1].text, want[1].text]


def test_bad_requests_on_the_real_engine_leave_it_serving(server, client, engines):
    import httpx

    served, _ = engines
    for path, body, needle in [
        ("/v1/completions", {"prompt": [1] * 600}, "context"),
        ("/v1/completions", {"prompt": [served.n_vocab]}, "vocabulary"),
        ("/v1/completions", {"prompt": [-5, 3]}, "vocabulary"),
        ("/detokenize", {"tokens": [served.n_vocab + 7]}, "vocabulary"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "word " * 600}]}, "context"),
        ("/v1/completions", {"prompt": "x", "echo": True}, "echo"),
    ]:
        r = httpx.post(server.url + path, json=body, timeout=30)
        assert r.status_code == 400 and needle in r.json()["error"]["message"], r.text
    out = client.completions.create(model="smol", prompt=PROMPT, max_tokens=4, temperature=0)
    assert out.choices[0].text and server.batcher.alive
