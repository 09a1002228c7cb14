"""A :class:`reasoning.protocols.Generator` over OpenAI-compatible completion servers.

One client for vLLM's server (``vllm serve``) and stepspec's own (``python -m recipes.serve``,
llama.cpp on CPUs): prompts travel as token ids (``/tokenize`` renders the chat with the
server's own template and encodes text; a segment this generator wrote keeps its ids), and
``/v1/completions`` is asked for token ids back (``return_token_ids``), the stop string kept in
the text (``include_stop_str_in_output``) and top logprobs. A completion's text is the decode of
its ids (``/detokenize``, after the prompt's last tokens, the rule of
:mod:`reasoning.backends.vllm`), not the server's text: vLLM cuts its text right after a stop
string even inside the token that completed it, and keeps that token's id, so the server's
text and ids can disagree; decoded, the text ends with the stop string or the rest of the
token that completed it, and the steps of an answer join to the decode of all its ids.
Requests of a batch go out at once (one HTTP request each, up to ``max_concurrency``), so the
server batches them.

Several servers of one model make a pool: each request goes to the endpoint with the fewest
requests in flight; a connection error, a timeout, an HTTP 5xx or a malformed answer is
retried with exponential back-off on the next-least-loaded endpoint, ``retries`` times, then
raised naming the endpoint and the cause. An HTTP 4xx is the request's own fault and is
raised at once.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from reasoning.backends._ids import TokenPrompts
from reasoning.types import ChatMessage, Completion, FinishReason, GenerationRequest

log = logging.getLogger(__name__)

_CONTEXT_TOKENS = 4
"""Prompt tokens decoded before the generated ids (as in :mod:`reasoning.backends.vllm`), so that
a step's text keeps the spaces and byte pieces a tokenizer's decoder drops at a string's start."""


class ServerError(RuntimeError):
    """A server failed to answer (after retries), or answered something malformed."""


class ServerRequestError(ValueError):
    """A server refused a request as malformed (HTTP 4xx): retrying would not help."""


class ServerGenerator(TokenPrompts):
    """Generates step continuations on one or more OpenAI-compatible servers of one model.

    Args:
        base_urls: One URL (``http://127.0.0.1:8000``) or several (a pool of replicas).
        name: Name recorded in segments and traces; segments carrying it reuse their ids.
        model: The served model name sent with each request (None: the first of ``/v1/models``).
        timeout_s: Seconds one HTTP request may take before it counts as failed.
        retries: Further attempts after a failed one (connection error, timeout, 5xx, bad JSON).
        backoff_s: Wait before the first retry; doubled for each next one.
        max_concurrency: Requests in flight at once from this client.
        eos_token_ids: Ids that end an answer, dropped from the end of ``token_ids`` (None: read
            from stepspec servers' ``/v1/models``; vLLM servers leave it out of ids already
            unless asked otherwise).
        api_key: Bearer token, if the server wants one.
    """

    concurrent_calls = True
    """Calls from several threads run at once (up to ``max_concurrency`` requests): the async
    schedule calls it from its own thread, not the shared in-process engine thread."""

    def __init__(
        self,
        base_urls: str | Sequence[str],
        name: str = "server",
        model: str | None = None,
        timeout_s: float = 600.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        max_concurrency: int = 64,
        eos_token_ids: Sequence[int] | None = None,
        api_key: str | None = None,
    ) -> None:
        urls = [base_urls] if isinstance(base_urls, str) else list(base_urls)
        if not urls or not all(isinstance(u, str) and u.startswith(("http://", "https://")) for u in urls):
            raise ValueError(f"base_urls must be one or more http(s) URLs, got {base_urls!r}")
        if retries < 0 or timeout_s <= 0 or max_concurrency < 1:
            raise ValueError("retries must be >= 0, timeout_s > 0 and max_concurrency >= 1")
        self.name = name
        self.urls = [u.rstrip("/") for u in urls]
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.api_key = api_key
        self._inflight = {u: 0 for u in self.urls}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_concurrency, thread_name_prefix=f"stepspec-{name}")
        self.init_chat_cache()
        self._closed = False
        info = self._get_models()
        self.model = model or info["id"]
        extra = info.get("stepspec") or {}
        self.eos_token_ids = frozenset(eos_token_ids if eos_token_ids is not None
                                       else extra.get("eos_token_ids") or ())
        self.max_model_len = extra.get("max_model_len") or info.get("max_model_len")

    # -- HTTP --------------------------------------------------------------------------------
    def _pick(self, avoid: str | None) -> str:
        with self._lock:
            order = sorted(self.urls, key=lambda u: (u == avoid, self._inflight[u]))
            url = order[0]
            self._inflight[url] += 1
            return url

    def _call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        """One API call with retries over the pool; the decoded JSON answer."""
        last: Exception | None = None
        url = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            url = self._pick(avoid=url)
            try:
                return self._once(url, method, path, body)
            except ServerRequestError:
                raise
            except (ServerError, OSError, TimeoutError) as e:
                last = e
                log.warning("%s %s%s failed (attempt %d of %d): %s", method, url, path, attempt + 1,
                            self.retries + 1, e)
            finally:
                with self._lock:
                    self._inflight[url] -= 1
        raise ServerError(f"{method} {path} failed {self.retries + 1} times; last: {url}: {last}")

    def _once(self, url: str, method: str, path: str, body: Mapping[str, Any] | None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            detail = e.read()[:500].decode("utf-8", "replace")
            if 400 <= e.code < 500:
                raise ServerRequestError(f"{url}{path}: HTTP {e.code}: {detail}") from None
            raise ServerError(f"HTTP {e.code}: {detail}") from None
        try:
            return json.loads(raw)
        except json.JSONDecodeError as e:
            raise ServerError(f"answer is not JSON ({e}): {raw[:200]!r}") from None

    def _get_models(self) -> dict[str, Any]:
        out = self._call("GET", "/v1/models")
        try:
            return dict(out["data"][0])
        except (KeyError, IndexError, TypeError) as e:
            raise ServerError(f"/v1/models answered without a model: {str(out)[:200]}") from e

    # -- prompts -----------------------------------------------------------------------------
    def _tokens(self, body: dict[str, Any]) -> list[int]:
        out = self._call("POST", "/tokenize", {"model": self.model, **body})
        toks = out.get("tokens") if isinstance(out, dict) else None
        if not isinstance(toks, list) or not all(isinstance(t, int) for t in toks):
            raise ServerError(f"/tokenize answered without token ids: {str(out)[:200]}")
        return toks

    def render_chat(self, messages: tuple[ChatMessage, ...]) -> tuple[int, ...]:
        """The chat rendered by the server's template (assistant turn opened), as ids."""
        return tuple(self._tokens({"messages": [{"role": m.role, "content": m.content} for m in messages],
                                   "add_generation_prompt": True, "add_special_tokens": False}))

    def encode_text(self, text: str) -> list[int]:
        return self._tokens({"prompt": text, "add_special_tokens": False})

    def _detokenize(self, ids: Sequence[int]) -> str:
        out = self._call("POST", "/detokenize", {"model": self.model, "tokens": list(ids)})
        text = out.get("prompt") if isinstance(out, dict) else None
        if not isinstance(text, str):
            raise ServerError(f"/detokenize answered without text: {str(out)[:200]}")
        return text

    def decode(self, ids: Sequence[int], context: Sequence[int] = ()) -> str:
        """The text ``ids`` add after ``context``, decoded by the server's tokenizer.

        ``decode(ctx + ids)`` minus ``decode(ctx)`` over the context's last few tokens; ``ids``
        decoded alone when the context's text is not a prefix of the joint text (a character
        split across the boundary).
        """
        if not ids:
            return ""
        ctx = list(context[-_CONTEXT_TOKENS:])
        if ctx:
            head = self._detokenize(ctx)
            whole = self._detokenize(ctx + list(ids))
            if whole.startswith(head):
                return whole[len(head):]
        return self._detokenize(ids)

    # -- generation --------------------------------------------------------------------------
    def generate(self, requests: Sequence[GenerationRequest]) -> list[Completion]:
        """One completion per request; the batch's requests are sent concurrently."""
        if self._closed:
            raise RuntimeError(f"ServerGenerator {self.name!r} is closed")
        if not requests:
            return []
        t0 = time.perf_counter()
        futures = [self._pool.submit(self._complete, r) for r in requests]
        out = [f.result() for f in futures]
        seconds = (time.perf_counter() - t0) / len(requests)
        return [dataclasses.replace(c, seconds=seconds) for c in out]

    def _complete(self, req: GenerationRequest) -> Completion:
        ids = self.prompt_ids(req)
        p = req.params
        body: dict[str, Any] = {
            "model": self.model, "prompt": ids, "max_tokens": p.max_tokens, "temperature": p.temperature,
            "top_p": p.top_p, "stop": list(p.stop), "include_stop_str_in_output": True,
            "return_token_ids": True, "skip_special_tokens": False, "user": req.problem_id,
        }
        if p.seed is not None:
            body["seed"] = p.seed
        if p.logprobs is not None:
            body["logprobs"] = p.logprobs
        out = self._call("POST", "/v1/completions", body)
        try:
            c = self._parse(req, ids, out)
        except (KeyError, IndexError, TypeError, ValueError) as e:
            raise ServerError(f"request {req.request_id!r}: malformed completion ({type(e).__name__}: {e}): "
                              f"{str(out)[:300]}") from e
        # the text of exactly the kept ids (the server's may stop inside the last token)
        return dataclasses.replace(c, text=self.decode(c.token_ids, ids))

    def _parse(self, req: GenerationRequest, prompt_ids: list[int], out: Mapping[str, Any]) -> Completion:
        choice = out["choices"][0]
        toks = choice.get("token_ids")
        if toks is None:
            raise ValueError("the server returned no token_ids (vLLM needs a version with return_token_ids)")
        toks = [int(t) for t in toks]
        reason = choice.get("finish_reason")
        stop_reason = choice.get("stop_reason")
        if reason == "length":
            finish = FinishReason.LENGTH
        elif reason == "stop" and isinstance(stop_reason, str) and stop_reason in req.params.stop:
            finish = FinishReason.STOP
        elif reason == "stop":
            finish = FinishReason.EOS
            while toks and toks[-1] in self.eos_token_ids:
                toks.pop()
        else:
            raise ValueError(f"finish_reason {reason!r}")
        logprobs = top = None
        lp = choice.get("logprobs")
        if req.params.logprobs is not None:
            if not lp or len(lp.get("token_logprobs") or []) < len(toks):
                raise ValueError("logprobs were asked for and not returned for every token")
            logprobs = tuple(float(x) for x in lp["token_logprobs"][:len(toks)])
            if req.params.logprobs > 0:
                top = tuple({str(k): float(v) for k, v in (d or {}).items()}
                            for d in (lp.get("top_logprobs") or [])[:len(toks)])
                if len(top) < len(toks):
                    raise ValueError("top logprobs missing for some tokens")
        usage = out.get("usage") or {}
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
        return Completion(text=str(choice["text"]), token_ids=tuple(toks), finish_reason=finish,
                          prompt_tokens=int(usage.get("prompt_tokens", len(prompt_ids))),
                          cached_prompt_tokens=None if cached is None else int(cached),
                          logprobs=logprobs, top_logprobs=top)

    def close(self) -> None:
        """Stop the client's threads (the servers keep running). Idempotent."""
        if not self._closed:
            self._closed = True
            self._pool.shutdown(wait=False, cancel_futures=True)

    def __repr__(self) -> str:
        return f"ServerGenerator(name={self.name!r}, urls={self.urls!r}, model={self.model!r})"

