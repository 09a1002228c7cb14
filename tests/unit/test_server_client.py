"""ServerGenerator against fake OpenAI-compatible servers that fail, time out and send garbage."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from reasoning.backends.server import ServerError, ServerGenerator, ServerRequestError
from reasoning.types import ChatMessage, FinishReason, GenerationParams, GenerationRequest, Segment

CHAT = (ChatMessage("user", "2+2?"),)


VOCAB = {300: "\n\n\n"}
"""The fake's tokenizer: id 300 is one token of three newlines, any id below 256 the character
with that code (52 is "4", 10 is a newline)."""


def _detok(ids):
    return "".join(VOCAB.get(i) or chr(i) for i in ids)


class Fake:
    """A scripted server: ``plan`` is a list of behaviours for successive /v1/completions calls
    (``ok``, ``500``, ``400``, ``garbage``, ``sleep``, ``no_ids``, ``cut``: vLLM's text cut
    right after the stop string inside the token that completed it); the last one repeats."""

    def __init__(self, plan=("ok",), eos=(99,)):
        self.plan = list(plan)
        self.calls: list[dict] = []
        self.detokenized: list[list[int]] = []
        self.eos = list(eos)
        fake = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _send(self, code, body: bytes):
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                self._send(200, json.dumps({"data": [{"id": "fake-model",
                                                      "stepspec": {"eos_token_ids": fake.eos}}]}).encode())

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path == "/tokenize":
                    toks = [1, 2, 3] if "messages" in body else [ord(c) for c in body["prompt"]]
                    return self._send(200, json.dumps({"tokens": toks}).encode())
                if self.path == "/detokenize":
                    fake.detokenized.append(body["tokens"])
                    return self._send(200, json.dumps({"prompt": _detok(body["tokens"])}).encode())
                fake.calls.append(body)
                what = fake.plan[min(len(fake.calls) - 1, len(fake.plan) - 1)]
                if what == "500":
                    return self._send(500, b'{"error": "boom"}')
                if what == "400":
                    return self._send(400, b'{"error": {"message": "bad prompt"}}')
                if what == "garbage":
                    return self._send(200, b"<html>not json")
                if what == "sleep":
                    threading.Event().wait(1.0)
                choice = {"text": "4\n\n", "token_ids": [52, 10, 10], "finish_reason": "stop",
                          "stop_reason": "\n\n",
                          "logprobs": {"tokens": ["4", "\n", "\n"], "token_logprobs": [-0.1, -0.2, -0.3],
                                       "top_logprobs": [{"4": -0.1}, {"\n": -0.2}, {"\n": -0.3}]}}
                if what == "eos":
                    choice.update(text="4", token_ids=[52, 99], stop_reason=None)
                if what == "cut":  # the token "\n\n\n" completed the stop "\n\n"; vLLM cut after it
                    choice.update(text="4\n\n", token_ids=[52, 300])
                    choice["logprobs"] = {"tokens": ["4", "\n\n\n"], "token_logprobs": [-0.1, -0.2],
                                          "top_logprobs": [{"4": -0.1}, {"\n\n\n": -0.2}]}
                if what == "no_ids":
                    del choice["token_ids"]
                out = {"choices": [choice], "usage": {"prompt_tokens": len(body["prompt"]),
                                                      "prompt_tokens_details": {"cached_tokens": 2}}}
                self._send(200, json.dumps(out).encode())

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake(request):
    servers = []

    def make(*plan, eos=(99,)):
        f = Fake(plan or ("ok",), eos)
        servers.append(f)
        return f

    yield make
    for f in servers:
        f.close()


def _req(logprobs=None, prefix=()):
    return GenerationRequest("r", "p", CHAT, prefix, GenerationParams(max_tokens=8, stop=("\n\n",),
                                                                     logprobs=logprobs))


def test_completion_fields_and_request_body(fake):
    f = fake("ok")
    gen = ServerGenerator(f.url, name="draft", backoff_s=0)
    seg = Segment("ab", "other")
    (c,) = gen.generate([_req(logprobs=1, prefix=(seg,))])
    assert c.text == "4\n\n" and c.token_ids == (52, 10, 10) and c.finish_reason is FinishReason.STOP
    assert c.logprobs == (-0.1, -0.2, -0.3) and c.top_logprobs[0] == {"4": -0.1}
    assert c.prompt_tokens == 5 and c.cached_prompt_tokens == 2
    body = f.calls[0]
    assert body["prompt"] == [1, 2, 3, ord("a"), ord("b")]  # chat ids, then the foreign segment encoded
    assert body["model"] == "fake-model" and body["return_token_ids"] and body["include_stop_str_in_output"]
    assert body["user"] == "p" and body["stop"] == ["\n\n"] and body["logprobs"] == 1
    own = Segment("x", "draft", (7, 8))
    gen.generate([_req(prefix=(own,))])
    assert f.calls[-1]["prompt"] == [1, 2, 3, 7, 8]  # own segment: its ids, not re-encoded
    gen.close()


def test_eos_id_is_dropped(fake):
    gen = ServerGenerator(fake("eos").url, backoff_s=0)
    (c,) = gen.generate([_req()])
    assert c.finish_reason is FinishReason.EOS and c.token_ids == (52,)


def test_text_is_the_decode_of_the_ids_when_the_server_cut_inside_a_token(fake):
    # vLLM ends the text right after the stop string, inside the token that completed it
    # ("4\n\n" for ids [52, 300], 300 = "\n\n\n"); the ids stay whole, so the text must too:
    # "4" then the token's three newlines, which ends with the stop string's rest of the token.
    f = fake("cut")
    gen = ServerGenerator(f.url, backoff_s=0)
    (c,) = gen.generate([_req(prefix=(Segment("ab", "other"),))])
    assert c.token_ids == (52, 300) and c.finish_reason is FinishReason.STOP
    assert c.text == "4\n\n\n"
    # decoded after some of the prompt's last tokens (a bare decode drops leading spaces)
    assert any(len(t) > 2 and t[-2:] == [52, 300] and t[-3] == ord("b") for t in f.detokenized)
    gen.close()


def test_a_step_joins_back_into_the_decoded_answer(fake):
    # two steps of one answer, each cut by the server inside its last token: their texts joined
    # equal the decode of all their ids together.
    f = fake("cut")
    gen = ServerGenerator(f.url, name="draft", backoff_s=0)
    (a,) = gen.generate([_req()])
    (b,) = gen.generate([_req(prefix=(Segment(a.text, "draft", a.token_ids),))])
    assert a.text + b.text == "4\n\n\n4\n\n\n" == _detok(a.token_ids + b.token_ids)
    gen.close()


def test_retries_a_failing_server_then_succeeds(fake):
    f = fake("500", "garbage", "ok")
    gen = ServerGenerator(f.url, retries=2, backoff_s=0)
    (c,) = gen.generate([_req()])
    assert c.text == "4\n\n" and len(f.calls) == 3


def test_gives_up_after_retries_naming_the_cause(fake):
    f = fake("500")
    gen = ServerGenerator(f.url, retries=1, backoff_s=0)
    with pytest.raises(ServerError, match="failed 2 times.*HTTP 500"):
        gen.generate([_req()])
    assert len(f.calls) == 2


def test_malformed_json_is_an_error(fake):
    gen = ServerGenerator(fake("garbage").url, retries=0, backoff_s=0)
    with pytest.raises(ServerError, match="not JSON"):
        gen.generate([_req()])


def test_answer_without_token_ids_is_an_error(fake):
    gen = ServerGenerator(fake("no_ids").url, retries=0, backoff_s=0)
    with pytest.raises(ServerError, match="malformed completion.*token_ids"):
        gen.generate([_req()])


def test_client_error_is_not_retried(fake):
    f = fake("400")
    gen = ServerGenerator(f.url, retries=3, backoff_s=0)
    with pytest.raises(ServerRequestError, match="HTTP 400.*bad prompt"):
        gen.generate([_req()])
    assert len(f.calls) == 1


def test_timeout_is_retried_and_reported(fake):
    f = fake("sleep")
    gen = ServerGenerator(f.url, retries=1, backoff_s=0, timeout_s=0.2)
    with pytest.raises(ServerError, match="failed 2 times"):
        gen.generate([_req()])


def test_pool_spreads_load_and_fails_over(fake):
    a, b = fake("ok"), fake("ok")
    gen = ServerGenerator([a.url, b.url], max_concurrency=8, backoff_s=0)
    gen.generate([_req() for _ in range(16)])
    assert len(a.calls) + len(b.calls) == 16 and a.calls and b.calls
    dead = "http://127.0.0.1:9"  # nothing listens on the discard port
    gen2 = ServerGenerator([a.url, dead], retries=2, backoff_s=0)
    out = gen2.generate([_req() for _ in range(4)])
    assert all(c.text == "4\n\n" for c in out)


def test_bad_urls_are_refused():
    with pytest.raises(ValueError, match="base_urls"):
        ServerGenerator("localhost:8000")
