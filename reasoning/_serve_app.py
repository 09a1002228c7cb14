"""The FastAPI app of :mod:`reasoning.serve`: its endpoints, their checks, and the middleware that
reads every POST body as JSON."""

import asyncio
import json
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import Future
from typing import Any

from reasoning._serve_batch import Batcher
from reasoning._serve_render import Out, Renderer, request_usage
from reasoning._serve_requests import (
    DEFAULT_MAX_TOKENS,
    MAX_BODY_BYTES,
    MAX_N,
    ApiError,
    error_body,
    request_models,
    validation_message,
)
from reasoning.types import ChatMessage, Completion, GenerationParams

log = logging.getLogger("reasoning.serve")


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

    models = request_models()
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
    render = Renderer(generator, model_name)
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
        out = Out(stops, req.include_stop_str_in_output, req.logprobs is not None, req.return_token_ids)
        rid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        flat = [(j * req.n + i, c) for j, cs in enumerate(results) for i, c in enumerate(cs)]
        if req.stream:
            with_usage = bool(req.stream_options and req.stream_options.include_usage)
            chunks = [ch for index, c in flat
                      for ch in render.completion_chunks(rid, created, index, c, out, with_usage)]
            if with_usage:
                chunks.append({"id": rid, "object": "text_completion", "created": created,
                               "model": model_name, "choices": [], "usage": request_usage(results)})
            return sse(chunks)
        return ok({"id": rid, "object": "text_completion", "created": created, "model": model_name,
                   "choices": [render.completion_choice(index, c, out) for index, c in flat],
                   "usage": request_usage(results)})

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
        out = Out(stops, False, req.logprobs, False)
        rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if req.stream:
            with_usage = bool(req.stream_options and req.stream_options.include_usage)
            chunks = [ch for i, c in enumerate(cs)
                      for ch in render.chat_chunks(rid, created, i, c, out, with_usage)]
            if with_usage:
                chunks.append({"id": rid, "object": "chat.completion.chunk", "created": created,
                               "model": model_name, "choices": [], "usage": request_usage([cs])})
            return sse(chunks)
        return ok({"id": rid, "object": "chat.completion", "created": created, "model": model_name,
                   "choices": [render.chat_choice(i, c, out) for i, c in enumerate(cs)],
                   "usage": request_usage([cs])})

    return app
