"""An OpenAI-compatible completions server over a stepspec engine (llama.cpp on CPUs).

Many clients (problems, processes, machines) share one model: requests that arrive together
are decoded together in the engine's sequences (``LlamaCppGenerator.max_sequences``), each
problem keeping its KV cache between steps. llama-cpp-python's own server decodes one request
at a time behind a lock, so stepspec serves its own engine instead.

It speaks the subset of vLLM's OpenAI-compatible API that :class:`reasoning.backends.server.ServerGenerator`
uses, so the same client reaches a vLLM server and this one:

- ``GET /health``, ``GET /v1/models`` (with a ``stepspec`` entry: engine, eos ids, sequences);
- ``POST /tokenize``: ``{"messages": [...], "add_generation_prompt": true}`` renders the chat
  with the model's template, ``{"prompt": "text"}`` encodes text; both answer ``{"tokens": [...]}``;
- ``POST /detokenize``: ``{"tokens": [...]}`` answers ``{"prompt": "text"}``;
- ``POST /v1/completions``: ``prompt`` (ids or text), ``max_tokens``, ``temperature``, ``top_p``,
  ``seed``, ``stop``, ``logprobs``, ``include_stop_str_in_output``, ``return_token_ids``, and
  ``user`` (a problem id: keeps the problem on its cached sequence). Answers in vLLM's shape:
  ``choices[0]`` with ``text``, ``token_ids``, ``finish_reason``, ``stop_reason``, ``logprobs``;
  ``usage`` with ``prompt_tokens_details.cached_tokens``.

Run it::

    python -m reasoning.serve target/qwen2.5-coder-1.5b-llamacpp --port 8001
    python -m reasoning.serve draft/llamacpp model=/path/to/model.gguf --port 0 --port-file port.txt

or with ``scripts/serve.sh`` (starts in the background, stops by process id).
"""

from __future__ import annotations

import argparse
import json
import logging
import queue
import signal
import sys
import threading
import time
from concurrent.futures import Future
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from reasoning.types import Completion, FinishReason, GenerationParams

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 << 20


class BadRequest(ValueError):
    """A request the server cannot serve (answered with HTTP 400)."""


class Batcher:
    """Collects completion requests from many threads and runs them through the engine together.

    One engine thread takes every request waiting (up to ``max_batch``, after waiting at most
    ``wait_s`` for company) and hands them to ``generator.generate_ids`` in one call. If that
    call fails, each request is retried alone, so one bad request fails only itself.
    """

    def __init__(self, generator: Any, max_batch: int, wait_s: float = 0.005) -> None:
        self.generator = generator
        self.max_batch = max(1, max_batch)
        self.wait_s = wait_s
        self._queue: queue.Queue[tuple[str | None, list[int], GenerationParams, Future] | None]
        self._queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="stepspec-engine", daemon=True)
        self.batches = 0
        self.requests = 0
        self._thread.start()

    def submit(self, key: str | None, ids: list[int], params: GenerationParams) -> Future:
        fut: Future = Future()
        self._queue.put((key, ids, params, fut))
        return fut

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
            self.batches += 1
            self.requests += len(batch)
            try:
                out = self.generator.generate_ids([(k, i, p) for k, i, p, _ in batch])
                for (_, _, _, fut), c in zip(batch, out):
                    fut.set_result(c)
            except Exception:  # noqa: BLE001 - isolate the request that failed
                for k, i, p, fut in batch:
                    try:
                        fut.set_result(self.generator.generate_ids([(k, i, p)])[0])
                    except Exception as e:  # noqa: BLE001
                        fut.set_exception(e)


def _params(body: dict[str, Any]) -> GenerationParams:
    stop = body.get("stop") or ()
    if isinstance(stop, str):
        stop = (stop,)
    if not isinstance(stop, list | tuple) or not all(isinstance(s, str) for s in stop):
        raise BadRequest("stop must be a string or a list of strings")
    logprobs = body.get("logprobs")
    if logprobs is not None and (not isinstance(logprobs, int) or isinstance(logprobs, bool) or logprobs < 0):
        raise BadRequest(f"logprobs must be a non-negative integer or null, got {logprobs!r}")
    try:
        return GenerationParams(max_tokens=int(body.get("max_tokens", 16)),
                                temperature=float(body.get("temperature", 1.0)),
                                top_p=float(body.get("top_p", 1.0)),
                                seed=None if body.get("seed") is None else int(body["seed"]),
                                stop=tuple(stop), logprobs=logprobs)
    except (TypeError, ValueError) as e:
        raise BadRequest(str(e)) from e


def completion_json(c: Completion, params: GenerationParams, model: str, generator: Any,
                    include_stop: bool, return_ids: bool) -> dict[str, Any]:
    """One completion in vLLM's ``/v1/completions`` response shape."""
    text = c.text
    stop_reason = None
    if c.finish_reason is FinishReason.STOP:
        hits = [(text.find(s), s) for s in params.stop if s in text]
        pos, stop_reason = min(hits) if hits else (len(text), None)
        if not include_stop and stop_reason is not None:
            text = text[:pos]
    lp = None
    if params.logprobs is not None and c.logprobs is not None:
        lp = {"tokens": [generator.decode([t]) for t in c.token_ids],
              "token_logprobs": list(c.logprobs),
              "top_logprobs": [dict(t) for t in c.top_logprobs] if c.top_logprobs else None}
    choice: dict[str, Any] = {
        "index": 0, "text": text, "logprobs": lp,
        "finish_reason": "length" if c.finish_reason is FinishReason.LENGTH else "stop",
        "stop_reason": stop_reason,
    }
    if return_ids:
        choice["token_ids"] = list(c.token_ids)
    return {
        "id": f"cmpl-{time.time_ns():x}", "object": "text_completion", "created": int(time.time()),
        "model": model, "choices": [choice],
        "usage": {"prompt_tokens": c.prompt_tokens, "completion_tokens": c.num_tokens,
                  "total_tokens": c.prompt_tokens + c.num_tokens,
                  "prompt_tokens_details": {"cached_tokens": c.cached_prompt_tokens or 0}},
    }


def make_server(generator: Any, host: str = "127.0.0.1", port: int = 0, model: str | None = None,
                max_batch: int | None = None, wait_s: float = 0.005) -> ThreadingHTTPServer:
    """An HTTP server (not yet serving) over ``generator``; ``server.batcher`` is its engine thread."""
    model_name = model or generator.name
    batcher = Batcher(generator, max_batch or len(getattr(generator, "_seqs", ())) or 8, wait_s)
    eos = [t for t in range(getattr(generator, "n_vocab", 0)) if generator.is_end(t)] \
        if hasattr(generator, "is_end") else []
    info = {"engine": type(generator).__name__, "model_path": getattr(generator, "model", None),
            "eos_token_ids": eos, "max_model_len": getattr(generator, "max_model_len", None),
            "max_batch": batcher.max_batch}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt: str, *args: Any) -> None:  # quiet by default
            log.debug("%s " + fmt, self.address_string(), *args)

        def _send(self, code: int, obj: Any) -> None:
            data = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, code: int, message: str) -> None:
            self._send(code, {"error": {"message": message, "type": "BadRequestError" if code == 400
                                        else "InternalServerError", "code": code}})

        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/health":
                self._send(200, {"status": "ok"})
            elif self.path == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": model_name, "object": "model",
                                                              "owned_by": "stepspec", "stepspec": info}]})
            else:
                self._error(404, f"no such endpoint: GET {self.path}")

        def do_POST(self) -> None:  # noqa: N802
            try:
                size = int(self.headers.get("Content-Length") or 0)
                if size > MAX_BODY_BYTES:
                    raise BadRequest(f"request body of {size} bytes is over {MAX_BODY_BYTES}")
                try:
                    body = json.loads(self.rfile.read(size) or b"{}")
                except json.JSONDecodeError as e:
                    raise BadRequest(f"request body is not JSON: {e}") from e
                if not isinstance(body, dict):
                    raise BadRequest("request body must be a JSON object")
                if self.path == "/tokenize":
                    self._send(200, self._tokenize(body))
                elif self.path == "/detokenize":
                    toks = body.get("tokens")
                    if not isinstance(toks, list):
                        raise BadRequest("tokens must be a list of ids")
                    self._send(200, {"prompt": generator.decode(toks)})
                elif self.path == "/v1/completions":
                    self._send(200, self._complete(body))
                else:
                    self._error(404, f"no such endpoint: POST {self.path}")
            except BadRequest as e:
                self._error(400, str(e))
            except Exception as e:  # noqa: BLE001 - the engine failed: tell the client, keep serving
                log.exception("request failed")
                self._error(500, f"{type(e).__name__}: {e}")

        def _tokenize(self, body: dict[str, Any]) -> dict[str, Any]:
            from reasoning.types import ChatMessage

            if "messages" in body:
                msgs = body["messages"]
                ok = isinstance(msgs, list) and all(isinstance(m, dict) and {"role", "content"} <= m.keys()
                                                    for m in msgs)
                if not ok:
                    raise BadRequest("messages must be a list of {role, content} objects")
                if body.get("add_generation_prompt", True) is not True:
                    raise BadRequest("only add_generation_prompt=true is supported")
                toks = list(generator.chat_ids(tuple(ChatMessage(m["role"], m["content"]) for m in msgs)))
            elif isinstance(body.get("prompt"), str):
                toks = generator.tokenize(body["prompt"])
            else:
                raise BadRequest("tokenize needs messages or a prompt string")
            return {"count": len(toks), "max_model_len": info["max_model_len"], "tokens": toks}

        def _complete(self, body: dict[str, Any]) -> dict[str, Any]:
            prompt = body.get("prompt")
            if isinstance(prompt, str):
                ids = generator.tokenize(prompt)
            elif isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
                ids = prompt
            else:
                raise BadRequest("prompt must be a string or a non-empty list of token ids "
                                 "(one prompt per request)")
            if body.get("n", 1) != 1:
                raise BadRequest("only n=1 is supported")
            params = _params(body)
            limit = info["max_model_len"]
            if limit and len(ids) + 1 > limit:
                raise BadRequest(f"prompt of {len(ids)} tokens leaves no room in max_model_len={limit}")
            key = body.get("user")
            c = batcher.submit(str(key) if key is not None else None, ids, params).result()
            return completion_json(c, params, model_name, generator,
                                   bool(body.get("include_stop_str_in_output", False)),
                                   bool(body.get("return_token_ids", False)))

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    server.batcher = batcher  # type: ignore[attr-defined]
    return server


def build_generator(preset: str, overrides: list[str]) -> Any:
    """A generator from a config group option (``target/qwen2.5-coder-1.5b-llamacpp``) or a YAML
    file, with ``key=value`` overrides."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from recipes._cli import CONF_DIR

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
    ap = argparse.ArgumentParser(prog="python -m reasoning.serve", description=__doc__.split("\n\n")[0])
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
    try:
        gen = build_generator(args.preset, args.overrides)
        server = make_server(gen, args.host, args.port, args.served_model_name,
                             wait_s=args.batch_wait_ms / 1000)
    except Exception as e:  # noqa: BLE001 - one line for a user's mistake
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    host, port = server.server_address[:2]
    if args.port_file:
        tmp = Path(args.port_file + ".tmp")
        tmp.write_text(str(port))
        tmp.replace(args.port_file)
    log.info("serving %s on http://%s:%d", gen, host, port)

    def stop(signum: int, frame: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        server.batcher.close()  # type: ignore[attr-defined]
        gen.close()
        log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
