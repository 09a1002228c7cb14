"""Completions written in OpenAI's shapes for :mod:`reasoning.serve`: completion and chat
choices, whole or as stream chunks, with their log-probabilities and usage."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from reasoning.types import Completion, FinishReason

MIN_LOGPROB = -9999.0
"""What a log-probability of -inf is sent as (JSON has no infinities)."""


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


def request_usage(results: Sequence[Sequence[Completion]]) -> dict[str, Any]:
    """Usage of a request: each prompt counted once (its first choice's), every choice's tokens."""
    prompt = sum(cs[0].prompt_tokens for cs in results)
    cached = sum(cs[0].cached_prompt_tokens or 0 for cs in results)
    return usage_json(prompt, sum(c.num_tokens for cs in results for c in cs), cached)


@dataclass(frozen=True)
class Out:
    """How a request wants its completions written."""

    stops: tuple[str, ...]
    keep_stop: bool
    logprobs: bool
    return_ids: bool


class Renderer:
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

    def completion_choice(self, index: int, c: Completion, out: "Out") -> dict[str, Any]:
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

    def completion_chunks(self, rid: str, created: int, index: int, c: Completion, out: "Out",
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

    def chat_choice(self, index: int, c: Completion, out: "Out") -> dict[str, Any]:
        text, reason, stop_reason = finish(c, out.stops, False)
        lp = None
        if out.logprobs and c.logprobs is not None:
            lp = self.chat_logprobs(c, range(len(c.token_ids)))
        return {"index": index, "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": lp, "finish_reason": reason, "stop_reason": stop_reason}

    def chat_chunks(self, rid: str, created: int, index: int, c: Completion, out: "Out",
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
