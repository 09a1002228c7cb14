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

This module is the library: :class:`Server` (and :func:`make_server`) over a generator, the
FastAPI app (:func:`make_app`, in ``reasoning._serve_app``), its engine thread (:class:`Batcher`,
``reasoning._serve_batch``), the requests and their errors (``reasoning._serve_requests``) and
the responses (``reasoning._serve_render``). The program that builds a generator from a config
and serves it is :mod:`recipes.serve`::

    python -m recipes.serve model/qwen2.5-coder-1.5b-llamacpp --port 8001
    python -m recipes.serve model/llamacpp model=/path/to/model.gguf --port 0 --port-file port.txt

or ``stepspec-serve``, or ``scripts/serve.sh`` (starts in the background, stops by process id).
"""

import socket
import sys
import threading
import time
from typing import Any

from reasoning._serve_app import make_app
from reasoning._serve_batch import Batcher
from reasoning._serve_render import (  # noqa: F401 - kept importable from here
    MIN_LOGPROB,
    finish,
    split_text,
    token_texts,
    usage_json,
)
from reasoning._serve_requests import (  # noqa: F401 - kept importable from here
    DEFAULT_MAX_TOKENS,
    MAX_BODY_BYTES,
    MAX_LOGPROBS,
    MAX_N,
    ApiError,
    error_body,
    validation_message,
)

MOVED = ("python -m reasoning.serve has moved: run python -m recipes.serve PRESET [key=value ...] (or "
         "stepspec-serve; reinstall with pip install -e . if stepspec-serve brought you here)")
"""What ``python -m reasoning.serve`` (the program's old place) says before exiting 2."""


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


def main(argv: list[str] | None = None) -> int:
    """The program moved to :mod:`recipes.serve` (``reasoning`` imports no program): say so on one
    line and return 2."""
    print(MOVED, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
