"""``reasoning.serve``'s OpenAI-compatible API, driven by the official ``openai`` client
(sync and async) and by raw HTTP, over a scripted engine on a loopback port.

The engine is :class:`ScriptedEngine`: LlamaCppGenerator's server-facing interface
(``generate_ids``, ``tokenize``, ``decode``, ``render_chat``) over the library's
:class:`~reasoning.backends.scripted.ScriptedGenerator`, whose script is written here, so every
expected text below is worked out by hand from :func:`reply`.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import threading

import pytest

from reasoning.backends.scripted import ScriptedGenerator
from reasoning.types import ChatMessage, GenerationParams, GenerationRequest, Segment


def _need(module: str):
    if os.environ.get("CI"):  # CI installs the extras: a skip there would hide a failure
        return __import__(module)
    return pytest.importorskip(module)


openai = _need("openai")
httpx = _need("httpx")
_need("fastapi")
_need("uvicorn")

from reasoning.serve import Server  # noqa: E402


def reply(prompt: str, temperature: float, seed: int | None) -> str:
    """The scripted model: it repeats the prompt's last word (greedy) or names its seed (sampled).
    A prompt ending in ``long`` gets a 600-token answer."""
    words = prompt.split()
    last = words[-1] if words else ""
    if last == "long":
        return "la " * 300
    if temperature == 0:
        return f"You said {last} .\n\nBye ."
    return f"Seed {seed} says {last} .\n\nBye ."


class ScriptedEngine:
    """What the server needs of an engine (LlamaCppGenerator's ``generate_ids``, ``tokenize``,
    ``decode``, ``render_chat``, ``name``, ``max_model_len``, ``n_vocab``, ``seed``), generating
    with a :class:`ScriptedGenerator` (stop strings, token limit, end of sequence, logprobs)."""

    name = "scripted"
    max_model_len = 1024
    seed = 0

    def __init__(self, seconds_per_token: float = 0.0) -> None:
        self.calls: list[list[tuple]] = []
        self.fail_on: str | None = None
        self._lock = threading.Lock()
        self.scripted = ScriptedGenerator("scripted", self._continue, token_prob=0.5,
                                          seconds_per_token=seconds_per_token)
        self._known = 0

    def _continue(self, problem_id: str, prefix_text: str) -> str:
        temperature, seed = json.loads(problem_id)[1:]
        return reply(prefix_text, temperature, seed)

    @property
    def n_vocab(self) -> int:
        return self._known

    def tokenize(self, text: str) -> list[int]:
        with self._lock:
            ids = self.scripted.encode(text)
            self._known = max([self._known, *(i + 1 for i in ids)])
            return ids

    def decode(self, ids) -> str:
        return self.scripted.decode(ids)

    def render_chat(self, messages: tuple[ChatMessage, ...]) -> tuple[int, ...]:
        return tuple(self.tokenize("".join(f"<{m.role}> {m.content} " for m in messages) + "<assistant>"))

    def generate_ids(self, items):
        self.calls.append(list(items))
        reqs = []
        for n, (key, ids, p) in enumerate(items):
            text = self.decode(ids)
            if self.fail_on and self.fail_on in text:
                raise RuntimeError("scripted engine failure")
            pid = json.dumps([key, p.temperature, p.seed])
            reqs.append(GenerationRequest(f"r{n}", pid, (), (Segment(text, "user"),), p))
        return self.scripted.generate(reqs)

    def close(self) -> None:
        pass


LN_HALF = math.log(0.5)


@pytest.fixture(scope="module")
def engine():
    return ScriptedEngine()


@pytest.fixture(scope="module")
def server(engine):
    with Server(engine, wait_s=0.02) as srv:
        srv.start()
        yield srv


@pytest.fixture(scope="module")
def client(server):
    with openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=30) as c:
        yield c


def _tokens(text: str) -> int:
    """Tokens of ``text`` by the scripted tokenizer: runs of space and runs of non-space."""
    import re

    return len(re.findall(r"\s+|\S+", text))


# -- completions ------------------------------------------------------------------------------
def test_models_and_health(server, client):
    (m,) = client.models.list().data
    assert m.id == "scripted" and m.owned_by == "stepspec"
    assert client.models.retrieve("scripted").id == "scripted"
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}


def test_completion_greedy_with_stop_and_ids(client):
    out = client.completions.create(model="scripted", prompt="Say hi", max_tokens=20, temperature=0,
                                    stop=["\n\n"], extra_body={"return_token_ids": True})
    (c,) = out.choices
    assert c.text == "You said hi ." and c.finish_reason == "stop" and c.index == 0
    assert c.model_extra["stop_reason"] == "\n\n"
    assert len(c.model_extra["token_ids"]) == 8  # You, ' ', said, ' ', hi, ' ', '.', '\n\n'
    assert out.usage.prompt_tokens == 3 and out.usage.completion_tokens == 8
    kept = client.completions.create(model="scripted", prompt="Say hi", temperature=0, stop="\n\n",
                                     extra_body={"include_stop_str_in_output": True})
    assert kept.choices[0].text == "You said hi .\n\n"


def test_completion_length_eos_and_logprobs(client):
    short = client.completions.create(model="scripted", prompt="Say yo", max_tokens=3, temperature=0,
                                      logprobs=1)
    (c,) = short.choices
    assert c.text == "You said" and c.finish_reason == "length"
    assert c.logprobs.tokens == ["You", " ", "said"] and c.logprobs.text_offset == [0, 3, 4]
    assert c.logprobs.token_logprobs == pytest.approx([LN_HALF] * 3)
    assert c.logprobs.top_logprobs[2] == pytest.approx({"said": LN_HALF})
    full = client.completions.create(model="scripted", prompt="Say yo", max_tokens=50, temperature=0)
    assert full.choices[0].text == "You said yo .\n\nBye ." and full.choices[0].finish_reason == "stop"
    assert full.choices[0].model_extra["stop_reason"] is None  # end of sequence


def test_completion_stream_matches_the_whole_answer(client):
    stream = client.completions.create(model="scripted", prompt="Say hey", max_tokens=20, temperature=0,
                                       stop=["\n\n"], stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    texts = [ch.choices[0].text for ch in chunks if ch.choices]
    assert texts == ["You", " ", "said", " ", "hey", " ", ".", ""]  # the stop string's token: no text
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 8
    assert chunks[-1].usage.prompt_tokens == 3 and chunks[-1].usage.total_tokens == 11
    assert all(ch.usage is None for ch in chunks[:-1])


def test_stream_wire_format(server):
    body = {"model": "scripted", "prompt": "Say a", "max_tokens": 2, "temperature": 0, "stream": True}
    with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=30) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        raw = r.read().decode()
    events = raw.split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    payloads = [json.loads(e[len("data: "):]) for e in events[:-2]]
    assert all(e.startswith("data: {") for e in events[:-2])
    assert [p["choices"][0]["text"] for p in payloads] == ["You", " "]
    assert [p["object"] for p in payloads] == ["text_completion"] * 2 and "usage" not in payloads[0]


def test_n_seeded_and_greedy_copies(client):
    out = client.completions.create(model="scripted", prompt="Say x", max_tokens=20, n=3, seed=7,
                                    temperature=0.8, stop="\n\n")
    assert [c.index for c in out.choices] == [0, 1, 2]
    assert [c.text for c in out.choices] == ["Seed 7 says x .", "Seed 8 says x .", "Seed 9 says x ."]
    assert out.usage.prompt_tokens == 3 and out.usage.completion_tokens == 3 * 10
    greedy = client.completions.create(model="scripted", prompt="Say x", max_tokens=20, n=2,
                                       temperature=0, stop="\n\n")
    assert [c.text for c in greedy.choices] == ["You said x ."] * 2
    unseeded = client.completions.create(model="scripted", prompt="Say x", n=2, temperature=1, stop="\n\n")
    assert [c.text for c in unseeded.choices] == ["Seed 0 says x .", "Seed 1 says x ."]  # the engine's seed


def test_list_of_prompts_is_prompt_major(client, engine):
    ids = engine.tokenize("Say two")
    out = client.completions.create(model="scripted", prompt=["Say one", "Say three"], n=2, seed=1,
                                    temperature=1, stop="\n\n")
    assert [(c.index, c.text) for c in out.choices] == [
        (0, "Seed 1 says one ."), (1, "Seed 2 says one ."),
        (2, "Seed 1 says three ."), (3, "Seed 2 says three .")]
    assert out.usage.prompt_tokens == 6
    by_ids = client.completions.create(model="scripted", prompt=[ids, ids + engine.tokenize(" more")],
                                       temperature=0, stop="\n\n")
    assert [c.text for c in by_ids.choices] == ["You said two .", "You said more ."]
    one = client.completions.create(model="scripted", prompt=ids, temperature=0, stop="\n\n")
    assert [c.text for c in one.choices] == ["You said two ."]


def test_n_stream_and_list_stream_index_choices(client):
    chunks = list(client.completions.create(model="scripted", prompt=["Say p", "Say q"], n=2, seed=3,
                                            temperature=1, max_tokens=20, stop="\n\n", stream=True))
    texts: dict[int, str] = {}
    for ch in chunks:
        for c in ch.choices:
            texts[c.index] = texts.get(c.index, "") + c.text
    assert texts == {0: "Seed 3 says p .", 1: "Seed 4 says p .", 2: "Seed 3 says q .", 3: "Seed 4 says q ."}


# -- chat -------------------------------------------------------------------------------------
def test_chat_uses_the_template_and_trims_the_stop(client, engine):
    messages = [{"role": "system", "content": "Be brief"}, {"role": "user", "content": "Hello there"}]
    out = client.chat.completions.create(model="scripted", messages=messages, temperature=0, stop=["\n\n"],
                                         max_completion_tokens=50)
    (c,) = out.choices
    assert c.message.role == "assistant" and c.message.content == "You said <assistant> ."
    assert c.finish_reason == "stop" and out.object == "chat.completion"
    (key, ids, params), = engine.calls[-1]
    assert engine.decode(ids) == "<system> Be brief <user> Hello there <assistant>"
    assert params.max_tokens == 50 and params.stop == ("\n\n",) and params.temperature == 0
    assert out.usage.prompt_tokens == _tokens("<system> Be brief <user> Hello there <assistant>")
    assert out.usage.completion_tokens == 8


def test_chat_default_max_tokens_is_the_room_left(client, engine):
    client.chat.completions.create(model="scripted", messages=[{"role": "user", "content": "a"}])
    (_, ids, params), = engine.calls[-1]
    assert params.max_tokens == engine.max_model_len - len(ids) and params.temperature == 1.0


def test_chat_logprobs_n_seed_and_parts(client):
    out = client.chat.completions.create(
        model="scripted", messages=[{"role": "user", "content": [{"type": "text", "text": "Hi"},
                                                                 {"type": "text", "text": " you"}]}],
        n=2, seed=5, temperature=0.5, top_p=0.9, max_tokens=3, logprobs=True, top_logprobs=1)
    assert [c.message.content for c in out.choices] == ["Seed 5", "Seed 6"]
    lp = out.choices[1].logprobs.content
    assert [t.token for t in lp] == ["Seed", " ", "6"] and lp[2].bytes == [ord("6")]
    assert lp[0].logprob == pytest.approx(LN_HALF)
    assert [(t.token, t.logprob) for t in lp[0].top_logprobs] == [("Seed", pytest.approx(LN_HALF))]
    assert all(c.finish_reason == "length" for c in out.choices)


def test_chat_stream(client):
    chunks = list(client.chat.completions.create(
        model="scripted", messages=[{"role": "user", "content": "Go"}], temperature=0, stop="\n\n",
        stream=True, stream_options={"include_usage": True}, logprobs=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == "You said <assistant> ."
    reasons = [ch.choices[0].finish_reason for ch in chunks if ch.choices]
    assert reasons[-1] == "stop" and set(reasons[:-1]) == {None}
    lps = [t.token for ch in chunks if ch.choices and ch.choices[0].logprobs
           for t in ch.choices[0].logprobs.content]
    assert lps == ["You", " ", "said", " ", "<assistant>", " ", ".", "\n\n"]
    assert chunks[-1].usage.completion_tokens == 8 and chunks[-1].object == "chat.completion.chunk"


# -- many clients -----------------------------------------------------------------------------
def test_async_clients_are_batched_together():
    engine = ScriptedEngine(seconds_per_token=0.01)
    with Server(engine, wait_s=0.05) as srv:
        srv.start()

        async def main():
            async with openai.AsyncOpenAI(base_url=srv.url + "/v1", api_key="none", max_retries=0) as c:
                async def one(i):
                    if i % 2:
                        r = await c.chat.completions.create(model="scripted", temperature=0, stop="\n\n",
                                                            messages=[{"role": "user", "content": f"w{i}"}])
                        return r.choices[0].message.content
                    stream = await c.completions.create(model="scripted", prompt=f"Say w{i}", temperature=0,
                                                        max_tokens=20, stop="\n\n", stream=True)
                    return "".join([ch.choices[0].text async for ch in stream if ch.choices])

                return await asyncio.gather(*(one(i) for i in range(8)))

        texts = asyncio.run(main())
    assert texts == [f"You said w{i} ." if i % 2 == 0 else "You said <assistant> ." for i in range(8)]
    assert srv.batcher.requests == 8 and srv.batcher.batches < 8
    assert max(len(c) for c in engine.calls) > 1


def test_server_generator_speaks_to_it(server, engine):
    from reasoning.backends.server import ServerGenerator

    gen = ServerGenerator(server.url, name="scripted", retries=0)
    chat = (ChatMessage("user", "Add"),)
    params = GenerationParams(max_tokens=20, stop=("\n\n",), logprobs=1)
    (a,) = gen.generate([GenerationRequest("r", "p1", chat, (), params)])
    assert a.text == "You said <assistant> .\n\n" and a.finish_reason.value == "stop"
    assert engine.decode(a.token_ids) == a.text and a.logprobs == pytest.approx([LN_HALF] * 8)
    assert engine.calls[-1][0][0] == "p1"  # the problem id travels as `user`: the engine's key
    gen.close()


# -- bad requests -----------------------------------------------------------------------------
BAD = [
    ("/v1/completions", b"{not json", 400, "not JSON"),
    ("/v1/completions", b"", 400, "empty"),
    ("/v1/completions", b"[1, 2]", 400, "JSON object"),
    ("/v1/completions", {"model": "scripted"}, 400, "'prompt' is required"),
    ("/v1/completions", {"prompt": "x", "n": 0}, 400, "'n'"),
    ("/v1/completions", {"prompt": "x", "max_tokens": -1}, 400, "'max_tokens'"),
    ("/v1/completions", {"prompt": "x", "max_tokens": "5"}, 400, "'max_tokens'"),
    ("/v1/completions", {"prompt": "x", "temperature": -0.5}, 400, "'temperature'"),
    ("/v1/completions", {"prompt": "x", "top_p": 0}, 400, "'top_p'"),
    ("/v1/completions", {"prompt": "x", "n": True}, 400, "'n'"),
    ("/v1/completions", {"prompt": "x", "seed": -1}, 400, "'seed'"),
    ("/v1/completions", {"prompt": "x", "logprobs": 50}, 400, "'logprobs'"),
    ("/v1/completions", {"prompt": "x", "stop": [1]}, 400, "'stop'"),
    ("/v1/completions", {"prompt": "x", "stop": [""]}, 400, "stop"),
    ("/v1/completions", {"prompt": "x", "frobnicate": 1}, 400, "unsupported field 'frobnicate'"),
    ("/v1/completions", {"prompt": "x", "echo": True}, 400, "echo"),
    ("/v1/completions", {"prompt": "x", "suffix": "y"}, 400, "suffix"),
    ("/v1/completions", {"prompt": "x", "best_of": 3}, 400, "best_of"),
    ("/v1/completions", {"prompt": "x", "presence_penalty": 0.5}, 400, "presence_penalty"),
    ("/v1/completions", {"prompt": "x", "logit_bias": {"1": 5}}, 400, "logit_bias"),
    ("/v1/completions", {"prompt": "x", "stream_options": {"include_usage": True}}, 400, "stream_options"),
    ("/v1/completions", {"prompt": "x", "stream": True, "stream_options": {"x": 1}}, 400,
     "unsupported field 'stream_options.x'"),
    ("/v1/completions", {"prompt": []}, 400, "prompt"),
    ("/v1/completions", {"prompt": ""}, 400, "prompt is empty"),
    ("/v1/completions", {"prompt": [1, True]}, 400, "'prompt' must be"),
    ("/v1/completions", {"prompt": [[0], []]}, 400, "prompt[1] is empty"),
    ("/v1/completions", {"prompt": [0] * 1100}, 400, "context"),
    ("/v1/completions", {"prompt": [10**9]}, 400, "outside the vocabulary"),
    ("/v1/completions", {"prompt": [-1]}, 400, "outside the vocabulary"),
    ("/v1/completions", {"prompt": "x", "n": 200}, 400, "'n'"),
    ("/v1/completions", {"prompt": ["x"] * 70, "n": 2}, 400, "choices"),
    ("/v1/completions", {"prompt": "x", "model": "gpt-9"}, 404, "gpt-9"),
    ("/v1/completions", {"prompt": "x", "skip_special_tokens": True}, 400, "skip_special_tokens"),
    ("/v1/chat/completions", {"messages": []}, 400, "'messages'"),
    ("/v1/chat/completions", {"prompt": "x"}, 400, "unsupported field 'prompt'"),
    ("/v1/chat/completions", {"messages": [{"role": "tool", "content": "x"}]}, 400, "messages.0.role"),
    ("/v1/chat/completions", {"messages": [{"role": "user"}]}, 400, "'messages.0.content' is required"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": 5}]}, 400, "messages.0.content"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x", "name": "bob"}]}, 400,
     "unsupported field 'messages.0.name'"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, 400,
     "messages.0.content"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "tools": []}, 400,
     "unsupported field 'tools'"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2}, 400,
     "top_logprobs"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "max_tokens": 3,
                              "max_completion_tokens": 4}, 400, "max_completion_tokens"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x " * 1100}]}, 400, "context"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "logprobs": 1}, 400,
     "'logprobs'"),
    ("/tokenize", {"prompt": "x", "add_special_tokens": True}, 400, "add_special_tokens"),
    ("/tokenize", {}, 400, "messages or prompt"),
    ("/detokenize", {"tokens": ["a"]}, 400, "'tokens'"),
    ("/detokenize", {"tokens": [10**9]}, 400, "vocabulary"),
    ("/v1/embeddings", {"input": "x"}, 404, "no such endpoint"),
]


@pytest.mark.parametrize("path, body, status, needle", BAD, ids=[f"{i}-{b[0]}" for i, b in enumerate(BAD)])
def test_bad_requests_get_a_one_line_error(server, path, body, status, needle):
    kw = {"content": body} if isinstance(body, bytes) else {"json": body}
    r = httpx.post(server.url + path, headers={"Content-Type": "application/json"}, timeout=30, **kw)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["code"] == status
    assert needle in err["message"] and "\n" not in err["message"], err["message"]


def test_client_sees_bad_requests_and_the_server_serves_on(server, client):
    with pytest.raises(openai.BadRequestError, match="echo"):
        client.completions.create(model="scripted", prompt="x", echo=True)
    with pytest.raises(openai.BadRequestError, match="'n'"):
        client.chat.completions.create(model="scripted", messages=[{"role": "user", "content": "x"}], n=0)
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="other", prompt="x")
    # form-encoded (curl -d) is read as JSON all the same
    r = httpx.post(server.url + "/v1/completions", content=b'{"prompt": "Say ok", "temperature": 0}',
                   headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200 and r.json()["choices"][0]["text"].startswith("You said ok")
    assert server.batcher.alive
    out = client.completions.create(model="scripted", prompt="Say fine", temperature=0, stop="\n\n")
    assert out.choices[0].text == "You said fine ."


def test_engine_failure_is_a_500_for_that_request_only(server, client, engine):
    engine.fail_on = "explode"
    try:
        with pytest.raises(openai.InternalServerError, match="engine failed"):
            client.completions.create(model="scripted", prompt="explode now", temperature=0)
        out = client.completions.create(model="scripted", prompt="Say calm", temperature=0, stop="\n\n")
        assert out.choices[0].text == "You said calm ."
    finally:
        engine.fail_on = None


def test_clients_that_go_away_do_not_break_the_server():
    engine = ScriptedEngine(seconds_per_token=0.001)
    with Server(engine) as srv:
        srv.start()
        # mid-stream: read one event of a stream of 8 x 600 tokens (about 1.5 MB), then drop it
        body = {"prompt": "long", "max_tokens": 600, "temperature": 0, "stream": True, "logprobs": 5, "n": 8}
        for _ in range(3):
            with httpx.stream("POST", srv.url + "/v1/completions", json=body, timeout=30) as r:
                assert next(r.iter_lines()).startswith("data: {")
        # before the answer: the client times out while the engine works
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(srv.url + "/v1/completions", json={"prompt": "long", "max_tokens": 600,
                                                          "temperature": 0}, timeout=0.2)
        with openai.OpenAI(base_url=srv.url + "/v1", api_key="none", max_retries=0) as c:
            out = c.completions.create(model="scripted", prompt="Say still", temperature=0, stop="\n\n")
        assert out.choices[0].text == "You said still ." and srv.batcher.alive
