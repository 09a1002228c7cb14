"""An OpenAI-compatible server over a stepspec engine (llama.cpp on CPUs), on FastAPI + uvicorn.

Many clients (problems, processes, machines) share one model: requests that arrive together
are decoded together in the engine's sequences (``LlamaCppGenerator.max_sequences``), each
problem keeping its KV cache between steps. llama-cpp-python's own server decodes one request
at a time behind a lock, so stepspec serves its own engine instead: the HTTP side is FastAPI on
uvicorn (as vLLM's OpenAI server is), and one engine thread (:class:`Batcher`) takes every
request waiting and runs them through ``generator.generate_ids`` in one call.

Endpoints (OpenAI's API, with the vLLM extensions that
:class:`reasoning.backends.server.ServerGenerator` uses, so one client reaches a vLLM server
and this one):

- ``GET /health``; ``GET /v1/models`` and ``GET /v1/models/{id}`` (with a ``stepspec`` entry:
  engine, eos ids, ``max_model_len``, batch size).
- ``POST /v1/completions``: ``prompt`` (a string, a list of strings, a list of token ids or a
  list of such lists), ``max_tokens`` (default 16; null: the room left in the context),
  ``temperature`` (default 1), ``top_p``, ``n``, ``seed``, ``stop``, ``logprobs`` (0-20),
  ``stream`` and ``stream_options.include_usage``, ``user`` (a problem id: keeps the problem
  on its cached sequence), and vLLM's ``include_stop_str_in_output``, ``return_token_ids``,
  ``skip_special_tokens`` (false only). ``choices`` are prompt-major (prompt ``j``, sample
  ``i``: index ``j * n + i``); each has ``text``, ``finish_reason``, vLLM's ``stop_reason``,
  ``logprobs`` and, when asked, ``token_ids``; ``usage`` has
  ``prompt_tokens_details.cached_tokens``.
- ``POST /v1/chat/completions``: ``messages`` (system, user, assistant; content a string or
  text parts) rendered with the model's own chat template (the engine's ``render_chat``),
  ``max_tokens`` / ``max_completion_tokens`` (default: the room left in the context),
  ``temperature``, ``top_p``, ``n``, ``seed``, ``stop``, ``logprobs`` / ``top_logprobs``
  (chat format), ``stream``, ``stream_options.include_usage``, ``user``.
- ``POST /tokenize`` (``{"prompt": text}`` or ``{"messages": [...]}``: ``{"tokens": [...]}``)
  and ``POST /detokenize`` (``{"tokens": [...]}``: ``{"prompt": text}``), as vLLM's.

Sampling: ``temperature`` 0 is greedy, and ``n`` greedy choices are ``n`` copies of one
decode. Sampled choice ``i`` of a prompt uses seed ``seed + i``; with no seed, ``n=1`` takes the
engine's own seed (its config's ``seed``: deterministic, as in process) and ``n > 1`` counts
up from it too. A stop string ends the text (kept with ``include_stop_str_in_output``; chat
never keeps it); ``finish_reason`` is ``stop`` (stop string or end of sequence, with
``stop_reason`` the stop string or null) or ``length``. ``max_tokens`` beyond the context is cut
to the room left, as the engine does in process; a prompt with no room is refused.
Log-probabilities cover every generated token; -inf is sent as -9999.0 (as vLLM does).

Streaming is replayed, not live: a request's choices are generated in the batched engine
call like any other (true token streaming would need a callback inside the engine's decode
loop), then sent as server-sent events, one ``data: {...}`` chunk per token (its text, its
logprobs and, when asked, its id), a last chunk per choice with ``finish_reason``, a usage
chunk with ``stream_options.include_usage``, and ``data: [DONE]``. The chunks' texts join to
the non-streamed text exactly (a token in the middle of a UTF-8 character carries no text; the
one completing it carries the character).

Errors are OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}`` with a one-line
message: an unknown or unsupported field (``echo``, ``suffix``, ``tools``, a penalty, ...), a
wrong type, malformed JSON, ``n=0``, a negative ``max_tokens``, a token id outside the
vocabulary or a prompt over the context is HTTP 400 naming the field; an unknown model 404; a
body over 64 MiB 413; an engine failure 500 (the request alone: the batch is retried one
request at a time). A client that goes away mid-stream costs nobody else anything.

Run it::

    python -m reasoning.serve target/qwen2.5-coder-1.5b-llamacpp --port 8001
    python -m reasoning.serve draft/llamacpp model=/path/to/model.gguf --port 0 --port-file port.txt

or with ``scripts/serve.sh`` (starts in the background, stops by process id).
"""

import argparse
import asyncio
import json
import logging
import math
import queue
import random
import socket
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from reasoning.types import ChatMessage, Completion, FinishReason, GenerationParams

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 << 20
"""Largest request body accepted (HTTP 413 above)."""
MAX_N = 128
"""Most choices one request may ask for (``n`` times the prompts)."""
MAX_LOGPROBS = 20
"""Most top log-probabilities per token (vLLM's default ``max_logprobs``)."""
MIN_LOGPROB = -9999.0
"""What a log-probability of -inf is sent as (JSON has no infinities)."""
DEFAULT_MAX_TOKENS = 16
"""``max_tokens`` of a completion that gives none (OpenAI's default)."""


class ApiError(Exception):
    """A request the server answers with an HTTP error (``status``) in OpenAI's error shape."""

    def __init__(self, message: str, status: int = 400, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.param = param


# -- the engine thread ------------------------------------------------------------------------
class Batcher:
    """Collects completion requests from many threads and runs them through the engine together.

    One engine thread takes every request waiting (up to ``max_batch``, after waiting at most
    ``wait_s`` for company) and hands them to ``generator.generate_ids`` in one call. If that
    call fails, each request is retried alone, so one bad request fails only itself. A request
    whose future was cancelled before its batch started (its client went away) is dropped.
    """

    def __init__(self, generator: Any, max_batch: int, wait_s: float = 0.005) -> None:
        self.generator = generator
        self.max_batch = max(1, max_batch)
        self.wait_s = wait_s
        self._queue: queue.Queue[tuple[str | None, list[int], GenerationParams, Future] | None]
        self._queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="stepspec-engine", daemon=True)
        self.batches = 0
        """Engine calls made so far."""
        self.requests = 0
        """Requests (choices) run so far."""
        self._thread.start()

    def submit(self, key: str | None, ids: list[int], params: GenerationParams) -> Future:
        """Queue one prompt; the future's result is its :class:`Completion`."""
        fut: Future = Future()
        self._queue.put((key, ids, params, fut))
        return fut

    @property
    def alive(self) -> bool:
        """True while the engine thread runs."""
        return self._thread.is_alive()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=60)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            deadline = time.monotonic() + self.wait_s
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)
                    break
                batch.append(item)
            batch = [b for b in batch if b[3].set_running_or_notify_cancel()]
            if not batch:
                continue
            self.batches += 1
            self.requests += len(batch)
            try:
                out = self.generator.generate_ids([(k, i, p) for k, i, p, _ in batch])
                if len(out) != len(batch):
                    raise RuntimeError(f"the engine returned {len(out)} completions for {len(batch)} prompts")
            except Exception:  # noqa: BLE001 - isolate the request that failed
                for k, i, p, fut in batch:
                    try:
                        fut.set_result(self.generator.generate_ids([(k, i, p)])[0])
                    except Exception as e:  # noqa: BLE001
                        fut.set_exception(e)
            else:
                for (_, _, _, fut), c in zip(batch, out):
                    fut.set_result(c)


# -- requests ---------------------------------------------------------------------------------
def _models() -> dict[str, Any]:
    """The request models (pydantic is imported when a server is made, not with this module)."""
    from pydantic import BaseModel, ConfigDict, Field

    class Strict(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    pos_int = Annotated[int, Field(ge=1)]
    seed_int = Annotated[int, Field(ge=0, le=2**63 - 1)]
    stops = str | list[str] | None

    class StreamOptions(Strict):
        include_usage: bool = False

    class Sampling(Strict):
        model: str | None = None
        n: Annotated[int, Field(ge=1, le=MAX_N)] = 1
        temperature: Annotated[float, Field(ge=0)] | None = 1.0
        top_p: Annotated[float, Field(gt=0, le=1)] | None = 1.0
        seed: seed_int | None = None
        stop: stops = None
        stream: bool = False
        stream_options: StreamOptions | None = None
        user: str | None = None
        frequency_penalty: float | None = None
        presence_penalty: float | None = None
        logit_bias: dict[str, float] | None = None

    class CompletionRequest(Sampling):
        prompt: str | list[str] | list[int] | list[list[int]]
        max_tokens: pos_int | None = DEFAULT_MAX_TOKENS
        logprobs: Annotated[int, Field(ge=0, le=MAX_LOGPROBS)] | None = None
        echo: bool = False
        best_of: pos_int | None = None
        suffix: str | None = None
        include_stop_str_in_output: bool = False
        return_token_ids: bool = False
        skip_special_tokens: bool | None = None

    class TextPart(Strict):
        type: Literal["text"]
        text: str

    class Message(Strict):
        role: Literal["system", "user", "assistant"]
        content: str | list[TextPart]

    class ChatRequest(Sampling):
        messages: Annotated[list[Message], Field(min_length=1)]
        max_tokens: pos_int | None = None
        max_completion_tokens: pos_int | None = None
        logprobs: bool = False
        top_logprobs: Annotated[int, Field(ge=0, le=MAX_LOGPROBS)] | None = None

    class TokenizeRequest(Strict):
        model: str | None = None
        prompt: str | None = None
        messages: list[Message] | None = None
        add_generation_prompt: bool = True
        add_special_tokens: bool = False

    class DetokenizeRequest(Strict):
        model: str | None = None
        tokens: list[int]

    return {"CompletionRequest": CompletionRequest, "ChatRequest": ChatRequest,
            "TokenizeRequest": TokenizeRequest, "DetokenizeRequest": DetokenizeRequest}


_EXPECTED = {
    "prompt": "a string, a list of strings, a list of token ids or a list of lists of token ids",
    "stop": "a string, a list of strings or null",
    "content": "a string or a list of {\"type\": \"text\", \"text\": ...} parts",
    "messages": "a non-empty list of {\"role\", \"content\"} objects",
    "tokens": "a list of token ids",
}


def validation_message(errors: Sequence[dict[str, Any]], fields: set[str]) -> tuple[str, str | None]:
    """One line, and the field at fault, for pydantic's errors of a request body.

    ``fields`` are the request models' field names: a location's leading part made of them
    (and list indices) names the field; the rest names union branches, which are summarised.

    >>> validation_message([{"type": "extra_forbidden", "loc": ("body", "echo"), "msg": "x"}], {"n"})
    ("unsupported field 'echo'", 'echo')
    >>> validation_message([{"type": "greater_than_equal", "loc": ("body", "n"), "input": 0,
    ...                      "msg": "Input should be greater than or equal to 1"}], {"n"})
    ("field 'n': Input should be greater than or equal to 1, got 0", 'n')
    """
    parts: list[str] = []
    seen: set[str] = set()
    param = None
    for e in errors:
        kind = e.get("type", "")
        loc = [x for x in e.get("loc", ()) if x != "body"]
        if kind == "json_invalid":
            return f"request body is not JSON: {(e.get('ctx') or {}).get('error', 'decode error')}", None
        if not loc:
            if kind in ("model_attributes_type", "dict_type", "model_type"):
                return "request body must be a JSON object", None
            if kind == "missing":
                return "request body is empty: send a JSON object", None
            parts.append(str(e.get("msg")))
            continue
        if kind == "extra_forbidden":
            path = ".".join(str(x) for x in loc)
            msg = f"unsupported field '{path}'"
        else:
            named = []
            for x in loc:
                if isinstance(x, int) or x in fields:
                    named.append(x)
                else:
                    break
            path = ".".join(str(x) for x in named) or str(loc[0])
            last = next((x for x in reversed(named) if isinstance(x, str)), "")
            if kind == "missing":
                msg = f"field '{path}' is required"
            elif last in _EXPECTED and (len(named) < len(loc) or kind.endswith("_type")):
                path = ".".join(str(x) for x in named[:len(named) - named[::-1].index(last)])
                msg = f"field '{path}' must be {_EXPECTED[last]}"
            else:
                msg = f"field '{path}': {e.get('msg')}"
                value = e.get("input")
                if isinstance(value, bool | int | float | str) or value is None:
                    msg += f", got {_short(value)}"
        if path in seen:
            continue
        seen.add(path)
        param = param or path
        parts.append(msg)
    return "; ".join(parts[:4]) or "invalid request", param


def _short(value: Any, n: int = 40) -> str:
    text = json.dumps(value) if not isinstance(value, float) or math.isfinite(value) else repr(value)
    return text if len(text) <= n else text[:n] + "..."


def error_body(status: int, message: str, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error shape, the message on one line."""
    kinds = {400: "BadRequestError", 404: "NotFoundError", 405: "MethodNotAllowedError",
             413: "RequestTooLargeError", 500: "InternalServerError"}
    line = " ".join(str(message).split())
    return {"error": {"message": line, "type": kinds.get(status, "Error"), "param": param, "code": status}}


# -- completions to OpenAI's shapes -----------------------------------------------------------
def _lp(x: float) -> float:
    return x if x > MIN_LOGPROB else MIN_LOGPROB  # -inf (and anything below) as vLLM sends it


def token_texts(decode: Callable[[Sequence[int]], str], ids: Sequence[int]) -> list[str]:
    """Per token, the text it adds: a token that leaves a UTF-8 character unfinished adds "",
    the one finishing it adds the character; they join to ``decode(ids)``.

    >>> pieces = {1: "a", 2: "b"}
    >>> token_texts(lambda ids: "".join(pieces[i] for i in ids), [1, 2, 1])
    ['a', 'b', 'a']
    """
    out: list[str] = []
    start = 0
    for k in range(1, len(ids) + 1):
        text = decode(ids[start:k])
        if text.endswith("\ufffd") and k < len(ids):
            out.append("")
            continue
        out.append(text)
        start = k
    return out


def split_text(pieces: Sequence[str], text: str) -> list[str]:
    """``pieces`` (each token's text) cut to ``text``, a prefix of their join; if it is not one,
    all of ``text`` on the first piece. The result always joins to ``text``.

    >>> split_text(["a", "b\\n", "\\nc"], "ab\\n\\n")
    ['a', 'b\\n', '\\n']
    >>> split_text(["x", "y"], "zz")
    ['zz', '']
    """
    if not pieces:
        return []
    if not "".join(pieces).startswith(text):
        return [text] + [""] * (len(pieces) - 1)
    out, pos = [], 0
    for p in pieces:
        out.append(text[pos:pos + len(p)])
        pos = min(len(text), pos + len(p))
    out[-1] += text[pos:]
    return out


def finish(c: Completion, stop: Sequence[str], keep_stop: bool) -> tuple[str, str, str | None]:
    """``(text, finish_reason, stop_reason)`` of a completion in OpenAI's terms: the text cut
    before the first stop string unless ``keep_stop``.

    >>> finish(Completion("4.\\n\\nmore", (1,), FinishReason.STOP), ["\\n\\n"], False)
    ('4.', 'stop', '\\n\\n')
    """
    text = c.text
    stop_reason = None
    if c.finish_reason is FinishReason.STOP:
        hits = [(text.find(s), s) for s in stop if s in text]
        if hits:
            pos, stop_reason = min(hits)
            if keep_stop:
                text = text[:pos + len(stop_reason)]
            else:
                text = text[:pos]
    return text, ("length" if c.finish_reason is FinishReason.LENGTH else "stop"), stop_reason


def usage_json(prompt_tokens: int, completion_tokens: int, cached: int) -> dict[str, Any]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached}}


def _usage(results: Sequence[Sequence[Completion]]) -> dict[str, Any]:
    """Usage of a request: each prompt counted once (its first choice's), every choice's tokens."""
    prompt = sum(cs[0].prompt_tokens for cs in results)
    cached = sum(cs[0].cached_prompt_tokens or 0 for cs in results)
    return usage_json(prompt, sum(c.num_tokens for cs in results for c in cs), cached)


@dataclass(frozen=True)
class _Out:
    """How a request wants its completions written."""

    stops: tuple[str, ...]
    keep_stop: bool
    logprobs: bool
    return_ids: bool


class _Renderer:
    """Turns completions into OpenAI's completion and chat shapes, whole or as stream chunks."""

    def __init__(self, generator: Any, model: str) -> None:
        self.gen = generator
        self.model = model

    def piece(self, t: int) -> str:
        return self.gen.decode([t])

    # completions
    def completion_logprobs(self, c: Completion, ks: range, offset0: int, texts: Sequence[str]) -> dict:
        offsets, pos = [], offset0
        for k in ks:
            offsets.append(pos)
            pos += len(texts[k])
        return {"tokens": [self.piece(c.token_ids[k]) for k in ks],
                "token_logprobs": [_lp(c.logprobs[k]) for k in ks],
                "top_logprobs": ([{t: _lp(x) for t, x in c.top_logprobs[k].items()} for k in ks]
                                 if c.top_logprobs else None),
                "text_offset": offsets}

    def completion_choice(self, index: int, c: Completion, out: "_Out") -> dict[str, Any]:
        text, reason, stop_reason = finish(c, out.stops, out.keep_stop)
        lp = None
        if out.logprobs and c.logprobs is not None:
            texts = split_text(token_texts(self.gen.decode, c.token_ids), text)
            lp = self.completion_logprobs(c, range(len(c.token_ids)), 0, texts)
        choice: dict[str, Any] = {"index": index, "text": text, "logprobs": lp, "finish_reason": reason,
                                  "stop_reason": stop_reason}
        if out.return_ids:
            choice["token_ids"] = list(c.token_ids)
        return choice

    def completion_chunks(self, rid: str, created: int, index: int, c: Completion, out: "_Out",
                          with_usage: bool) -> list[dict[str, Any]]:
        text, reason, stop_reason = finish(c, out.stops, out.keep_stop)
        texts = split_text(token_texts(self.gen.decode, c.token_ids), text)
        want_lp = out.logprobs and c.logprobs is not None
        chunks, pos = [], 0
        n = len(c.token_ids)
        for k in range(max(n, 1)):
            last = k >= n - 1
            piece = texts[k] if n else ""
            if not (piece or want_lp or out.return_ids or last):
                continue
            choice: dict[str, Any] = {"index": index, "text": piece,
                                      "logprobs": self.completion_logprobs(c, range(k, k + 1), pos, texts)
                                      if want_lp and n else None,
                                      "finish_reason": reason if last else None,
                                      "stop_reason": stop_reason if last else None}
            if out.return_ids:
                choice["token_ids"] = [c.token_ids[k]] if n else []
            pos += len(piece)
            chunks.append(self._chunk(rid, created, "text_completion", choice, with_usage))
        return chunks

    # chat
    def chat_logprobs(self, c: Completion, ks: range) -> dict[str, Any]:
        def entry(token: str, x: float) -> dict[str, Any]:
            return {"token": token, "logprob": _lp(x), "bytes": list(token.encode("utf-8"))}

        content = []
        for k in ks:
            e = entry(self.piece(c.token_ids[k]), c.logprobs[k])
            tops = c.top_logprobs[k] if c.top_logprobs else {}
            e["top_logprobs"] = [entry(t, x) for t, x in tops.items()]
            content.append(e)
        return {"content": content, "refusal": None}

    def chat_choice(self, index: int, c: Completion, out: "_Out") -> dict[str, Any]:
        text, reason, stop_reason = finish(c, out.stops, False)
        lp = None
        if out.logprobs and c.logprobs is not None:
            lp = self.chat_logprobs(c, range(len(c.token_ids)))
        return {"index": index, "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": lp, "finish_reason": reason, "stop_reason": stop_reason}

    def chat_chunks(self, rid: str, created: int, index: int, c: Completion, out: "_Out",
                    with_usage: bool) -> list[dict[str, Any]]:
        text, reason, stop_reason = finish(c, out.stops, False)
        texts = split_text(token_texts(self.gen.decode, c.token_ids), text)
        want_lp = out.logprobs and c.logprobs is not None
        obj = "chat.completion.chunk"
        first = {"index": index, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                 "finish_reason": None}
        chunks = [self._chunk(rid, created, obj, first, with_usage)]
        for k, piece in enumerate(texts):
            if not (piece or want_lp):
                continue
            choice = {"index": index, "delta": {"content": piece},
                      "logprobs": self.chat_logprobs(c, range(k, k + 1)) if want_lp else None,
                      "finish_reason": None}
            chunks.append(self._chunk(rid, created, obj, choice, with_usage))
        chunks.append(self._chunk(rid, created, obj, {"index": index, "delta": {}, "logprobs": None,
                                                      "finish_reason": reason, "stop_reason": stop_reason},
                                  with_usage))
        return chunks

    def _chunk(self, rid: str, created: int, obj: str, choice: dict[str, Any], with_usage: bool) -> dict:
        out = {"id": rid, "object": obj, "created": created, "model": self.model, "choices": [choice]}
        if with_usage:
            out["usage"] = None
        return out


# -- the app ----------------------------------------------------------------------------------
def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


class _JsonBodies:
    """ASGI middleware: a POST body is JSON whatever its Content-Type says (``curl -d`` sends
    form-encoded), so a malformed one is "not JSON", not "not an object"; over
    ``MAX_BODY_BYTES`` (by its Content-Length) it is refused with 413 before it is read."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            size = dict(scope["headers"]).get(b"content-length", b"")
            if size.isdigit() and int(size) > MAX_BODY_BYTES:
                from fastapi.responses import JSONResponse

                body = error_body(413, f"request body of {int(size)} bytes is over {MAX_BODY_BYTES}")
                await JSONResponse(body, status_code=413)(scope, receive, send)
                return
            scope = dict(scope, headers=headers + [(b"content-type", b"application/json")])
        await self.app(scope, receive, send)


def make_app(generator: Any, model: str | None = None, max_batch: int | None = None,
             wait_s: float = 0.005) -> Any:
    """The FastAPI app over ``generator`` (anything with ``generate_ids``, ``tokenize``,
    ``decode`` and ``render_chat``, as :class:`reasoning.backends.llamacpp.LlamaCppGenerator`);
    ``app.state.batcher`` is its engine thread (close it when done)."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response, StreamingResponse
    from starlette.exceptions import HTTPException

    models = _models()
    CompletionRequest = models["CompletionRequest"]  # noqa: N806 - classes
    ChatRequest = models["ChatRequest"]  # noqa: N806
    TokenizeRequest = models["TokenizeRequest"]  # noqa: N806
    DetokenizeRequest = models["DetokenizeRequest"]  # noqa: N806
    fields = {name for m in models.values() for name in m.model_fields}
    fields |= {"include_usage", "role", "content", "type", "text"}

    model_name = model or generator.name
    batcher = Batcher(generator, max_batch or len(getattr(generator, "_seqs", ())) or 8, wait_s)
    max_len = getattr(generator, "max_model_len", None)
    vocab = getattr(generator, "n_vocab", 0) or 0
    eos = [t for t in range(vocab) if generator.is_end(t)] if hasattr(generator, "is_end") else []
    info = {"engine": type(generator).__name__, "model_path": getattr(generator, "model", None),
            "eos_token_ids": eos, "max_model_len": max_len, "max_batch": batcher.max_batch}
    render = _Renderer(generator, model_name)
    created_at = int(time.time())

    app = FastAPI(title="stepspec", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.batcher = batcher
    app.state.generator = generator

    def reply(status: int, message: str, param: str | None = None) -> JSONResponse:
        return JSONResponse(error_body(status, message, param), status_code=status)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return reply(exc.status, str(exc), exc.param)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return reply(400, *validation_message(exc.errors(), fields))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return reply(404, f"no such endpoint: {request.method} {request.url.path}")
        if exc.status_code == 405:
            return reply(405, f"method {request.method} is not allowed on {request.url.path}")
        return reply(exc.status_code, str(exc.detail))

    app.add_middleware(_JsonBodies)

    # -- checks shared by the endpoints --
    def check_model(name: str | None) -> None:
        if name is not None and name != model_name:
            raise ApiError(f"the model '{name}' does not exist: this server serves '{model_name}'", 404,
                           "model")

    def check_ids(ids: Sequence[int], where: str) -> None:
        n_vocab = getattr(generator, "n_vocab", None)
        if n_vocab:
            bad = [t for t in ids if not 0 <= t < n_vocab]
            if bad:
                raise ApiError(f"{where}: token id {bad[0]} is outside the vocabulary (0..{n_vocab - 1})",
                               param=where.split("[")[0])

    def check_room(ids: Sequence[int], where: str) -> None:
        if not ids:
            raise ApiError(f"{where} is empty", param=where.split("[")[0])
        if max_len and len(ids) + 1 > max_len:
            raise ApiError(f"{where} has {len(ids)} tokens, which leaves no room to generate in this "
                           f"model's context of {max_len} tokens", param=where.split("[")[0])

    def refuse(req: Any) -> tuple[str, ...]:
        """The request's stop strings, after refusing what the engine cannot honour."""
        # OpenAI fields the engine cannot honour are refused unless given their neutral value.
        for name in ("frequency_penalty", "presence_penalty"):
            if getattr(req, name) not in (None, 0):
                raise ApiError(f"{name} is not supported (only 0)", param=name)
        if req.logit_bias:
            raise ApiError("logit_bias is not supported", param="logit_bias")
        if req.stream_options is not None and not req.stream:
            raise ApiError("stream_options is only allowed with stream=true", param="stream_options")
        stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or ())
        if any(s == "" for s in stop):
            raise ApiError("stop strings must not be empty", param="stop")
        return tuple(stop)

    def choice_params(req: Any, stops: tuple[str, ...], max_tokens: int | None, ids: Sequence[int],
                      logprobs: int | None, i: int, base_seed: int) -> GenerationParams:
        temperature = 1.0 if req.temperature is None else req.temperature
        seed = req.seed
        if temperature > 0 and req.n > 1:
            if seed is None:
                seed = getattr(generator, "seed", None)
                if seed is None:
                    seed = base_seed
            seed += i
        room = (max_len - len(ids)) if max_len else None
        if max_tokens is None:
            max_tokens = room or DEFAULT_MAX_TOKENS
        return GenerationParams(max_tokens=max_tokens, temperature=temperature,
                                top_p=1.0 if req.top_p is None else req.top_p, seed=seed,
                                stop=stops, logprobs=logprobs)

    async def run(req: Any, stops: tuple[str, ...], prompts: Sequence[list[int]], max_tokens: int | None,
                  logprobs: int | None) -> list[list[Completion]]:
        """Every choice of every prompt through the batcher: ``[prompt][sample]``."""
        base_seed = random.SystemRandom().randrange(2**31)
        greedy = (1.0 if req.temperature is None else req.temperature) == 0
        futures: list[list[Future]] = []
        for ids in prompts:
            fs = []
            for i in range(1 if greedy else req.n):
                params = choice_params(req, stops, max_tokens, ids, logprobs, i, base_seed)
                fs.append(batcher.submit(req.user, list(ids), params))
            futures.append(fs)
        try:
            done = [await asyncio.gather(*(asyncio.wrap_future(f) for f in fs)) for fs in futures]
        except Exception as e:  # noqa: BLE001 - the engine failed on this request: say so, keep serving
            log.exception("generation failed")
            raise ApiError(f"the engine failed: {type(e).__name__}: {e}", 500) from e
        return [list(cs) * req.n if greedy else list(cs) for cs in done]

    def sse(chunks: list[dict[str, Any]]) -> StreamingResponse:
        async def events() -> AsyncIterator[str]:
            for chunk in chunks:
                yield f"data: {_dumps(chunk)}\n\n"
                await asyncio.sleep(0)
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    def ok(obj: Any) -> Response:
        return Response(_dumps(obj), media_type="application/json")

    # -- endpoints --
    @app.get("/health", response_model=None)
    async def health():
        if not batcher.alive:
            return reply(500, "the engine thread has stopped")
        return ok({"status": "ok"})

    def model_card() -> dict[str, Any]:
        return {"id": model_name, "object": "model", "created": created_at, "owned_by": "stepspec",
                "max_model_len": max_len, "stepspec": info}

    @app.get("/v1/models", response_model=None)
    async def list_models():
        return ok({"object": "list", "data": [model_card()]})

    @app.get("/v1/models/{name:path}", response_model=None)
    async def get_model(name: str):
        check_model(name)
        return ok(model_card())

    @app.post("/tokenize", response_model=None)
    async def tokenize(req: TokenizeRequest):
        check_model(req.model)
        if req.add_special_tokens:
            raise ApiError("add_special_tokens=true is not supported (prompts are encoded as given)",
                           param="add_special_tokens")
        if (req.messages is None) == (req.prompt is None):
            raise ApiError("tokenize needs one of messages or prompt", param="messages")
        if req.messages is not None:
            if not req.add_generation_prompt:
                raise ApiError("only add_generation_prompt=true is supported", param="add_generation_prompt")
            toks = list(chat_ids(req.messages))
        else:
            toks = list(generator.tokenize(req.prompt))
        return ok({"count": len(toks), "max_model_len": max_len, "tokens": toks})

    @app.post("/detokenize", response_model=None)
    async def detokenize(req: DetokenizeRequest):
        check_model(req.model)
        check_ids(req.tokens, "tokens")
        return ok({"prompt": generator.decode(req.tokens)})

    def chat_ids(messages: Sequence[Any]) -> tuple[int, ...]:
        msgs = tuple(ChatMessage(m.role, m.content if isinstance(m.content, str)
                                 else "".join(p.text for p in m.content)) for m in messages)
        render_fn = getattr(generator, "chat_ids", None) or generator.render_chat
        try:
            return tuple(render_fn(msgs))
        except Exception as e:  # noqa: BLE001 - a template's own refusal (roles out of order, ...)
            raise ApiError(f"messages cannot be rendered with the model's chat template: "
                           f"{type(e).__name__}: {e}", param="messages") from e

    @app.post("/v1/completions", response_model=None)
    async def completions(req: CompletionRequest):
        check_model(req.model)
        stops = refuse(req)
        if req.echo:
            raise ApiError("echo=true is not supported", param="echo")
        if req.suffix is not None:
            raise ApiError("suffix is not supported", param="suffix")
        if req.best_of is not None and req.best_of != req.n:
            raise ApiError("best_of is not supported (only best_of = n)", param="best_of")
        if req.skip_special_tokens:
            raise ApiError("skip_special_tokens=true is not supported: texts keep the tokens as the "
                           "engine decodes them", param="skip_special_tokens")
        p = req.prompt
        if isinstance(p, str):
            raw: list[str | list[int]] = [p]
        elif p and all(isinstance(t, int) for t in p):
            raw = [p]
        else:
            raw = list(p)
        if not raw:
            raise ApiError("prompt is empty", param="prompt")
        if len(raw) * req.n > MAX_N:
            raise ApiError(f"{len(raw)} prompts x n={req.n} is over {MAX_N} choices", param="n")
        prompts = []
        for j, one in enumerate(raw):
            where = "prompt" if len(raw) == 1 else f"prompt[{j}]"
            ids = list(generator.tokenize(one)) if isinstance(one, str) else list(one)
            check_ids(ids, where)
            check_room(ids, where)
            prompts.append(ids)
        results = await run(req, stops, prompts, req.max_tokens, req.logprobs)
        out = _Out(stops, req.include_stop_str_in_output, req.logprobs is not None, req.return_token_ids)
        rid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        flat = [(j * req.n + i, c) for j, cs in enumerate(results) for i, c in enumerate(cs)]
        if req.stream:
            with_usage = bool(req.stream_options and req.stream_options.include_usage)
            chunks = [ch for index, c in flat
                      for ch in render.completion_chunks(rid, created, index, c, out, with_usage)]
            if with_usage:
                chunks.append({"id": rid, "object": "text_completion", "created": created,
                               "model": model_name, "choices": [], "usage": _usage(results)})
            return sse(chunks)
        return ok({"id": rid, "object": "text_completion", "created": created, "model": model_name,
                   "choices": [render.completion_choice(index, c, out) for index, c in flat],
                   "usage": _usage(results)})

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(req: ChatRequest):
        check_model(req.model)
        stops = refuse(req)
        if req.top_logprobs is not None and not req.logprobs:
            raise ApiError("top_logprobs needs logprobs=true", param="top_logprobs")
        if (req.max_tokens is not None and req.max_completion_tokens is not None
                and req.max_tokens != req.max_completion_tokens):
            raise ApiError("max_tokens and max_completion_tokens disagree: give one", param="max_tokens")
        ids = list(chat_ids(req.messages))
        check_room(ids, "messages")
        max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
        logprobs = (req.top_logprobs or 0) if req.logprobs else None
        (cs,) = await run(req, stops, [ids], max_tokens, logprobs)
        out = _Out(stops, False, req.logprobs, False)
        rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if req.stream:
            with_usage = bool(req.stream_options and req.stream_options.include_usage)
            chunks = [ch for i, c in enumerate(cs)
                      for ch in render.chat_chunks(rid, created, i, c, out, with_usage)]
            if with_usage:
                chunks.append({"id": rid, "object": "chat.completion.chunk", "created": created,
                               "model": model_name, "choices": [], "usage": _usage([cs])})
            return sse(chunks)
        return ok({"id": rid, "object": "chat.completion", "created": created, "model": model_name,
                   "choices": [render.chat_choice(i, c, out) for i, c in enumerate(cs)],
                   "usage": _usage([cs])})

    return app


# -- serving ----------------------------------------------------------------------------------
class Server:
    """uvicorn serving the app over ``generator`` on a socket bound at construction (``port=0``
    picks a free one, read back from ``port``).

    ``serve_forever()`` blocks (uvicorn handles SIGINT and SIGTERM in the main thread);
    ``start()`` serves from a background thread and returns once the server accepts requests;
    ``shutdown()`` stops serving; ``close()`` also stops the engine thread (the generator is
    the caller's to close).
    """

    def __init__(self, generator: Any, host: str = "127.0.0.1", port: int = 0, model: str | None = None,
                 max_batch: int | None = None, wait_s: float = 0.005, log_level: str = "warning") -> None:
        import uvicorn

        self.generator = generator
        self.app = make_app(generator, model, max_batch, wait_s)
        self.batcher: Batcher = self.app.state.batcher
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind((host, port))
            self.sock.listen(2048)
        except OSError:
            self.sock.close()
            self.batcher.close()
            raise
        self.host = host
        self.port = int(self.sock.getsockname()[1])
        self.server_address = (host, self.port)
        config = uvicorn.Config(self.app, log_config=None, log_level=log_level, access_log=False,
                                lifespan="off", timeout_graceful_shutdown=5, timeout_keep_alive=30)
        self._uvicorn = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def serve_forever(self) -> None:
        self._uvicorn.run(sockets=[self.sock])

    def start(self, timeout_s: float = 30.0) -> "Server":
        self._thread = threading.Thread(target=self.serve_forever, name="stepspec-http", daemon=True)
        self._thread.start()
        t0 = time.monotonic()
        while not self._uvicorn.started:
            if not self._thread.is_alive() or time.monotonic() - t0 > timeout_s:
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        return self

    def shutdown(self) -> None:
        self._uvicorn.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=30)

    def close(self) -> None:
        self.shutdown()
        self.batcher.close()
        self.sock.close()

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_server(generator: Any, host: str = "127.0.0.1", port: int = 0, model: str | None = None,
                max_batch: int | None = None, wait_s: float = 0.005) -> "Server":
    """A :class:`Server` (bound, not yet serving) over ``generator``; ``server.batcher`` is its
    engine thread."""
    return Server(generator, host, port, model, max_batch, wait_s)


def build_generator(preset: str, overrides: list[str]) -> Any:
    """A generator from a config group option (``target/qwen2.5-coder-1.5b-llamacpp``) or a YAML
    file, with ``key=value`` overrides."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from conf import CONF_DIR

    path = Path(preset)
    if not path.is_file():
        path = CONF_DIR / f"{preset}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no generator config {preset!r}: give a YAML file or a group option such as "
                                f"target/qwen2.5-coder-1.5b-llamacpp (looked for {path})")
    cfg = OmegaConf.merge(OmegaConf.load(path), OmegaConf.from_dotlist(overrides))
    gen = instantiate(cfg, _convert_="all")
    if not hasattr(gen, "generate_ids"):
        raise TypeError(f"{type(gen).__name__} cannot be served (it has no generate_ids); serve vLLM "
                        f"models with `vllm serve` instead (scripts/serve.sh does)")
    return gen


def main(argv: list[str] | None = None) -> int:
    prog = Path(sys.argv[0]).name
    if prog in ("__main__.py", "serve.py", "-c", ""):
        prog = "python -m reasoning.serve"
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    ap.add_argument("preset", help="generator config: conf group option (target/qwen2.5-coder-1.5b-llamacpp) "
                                   "or a YAML file")
    ap.add_argument("overrides", nargs="*", help="key=value overrides of the generator config")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    ap.add_argument("--port-file", help="write the port here once the server is listening")
    ap.add_argument("--served-model-name", default=None)
    ap.add_argument("--batch-wait-ms", type=float, default=5.0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    gen = None
    try:
        gen = build_generator(args.preset, args.overrides)
        server = Server(gen, args.host, args.port, args.served_model_name, wait_s=args.batch_wait_ms / 1000,
                        log_level="info")
    except Exception as e:  # noqa: BLE001 - one line for a user's mistake
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        if gen is not None:
            gen.close()
        return 2
    if args.port_file:
        tmp = Path(args.port_file + ".tmp")
        tmp.write_text(str(server.port))
        tmp.replace(args.port_file)
    log.info("serving %s on %s", gen, server.url)
    try:
        server.serve_forever()
    finally:
        server.batcher.close()
        server.sock.close()
        gen.close()
        log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
