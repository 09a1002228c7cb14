"""How the token-id backends build a prompt: the chat, then the answer so far, segment by segment."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

from reasoning.types import ChatMessage, GenerationRequest, Segment


class TokenPrompts:
    """Mixin: ``prompt_ids`` from ``render_chat`` and ``encode_text``, which the backend provides.

    Rendered chats are kept in a least-recently-used cache of ``chat_cache_size`` entries (set
    up by ``init_chat_cache`` in the backend's constructor; safe across threads). A prefix
    segment this generator wrote itself (``source == name``, ids kept) is appended as those
    ids, so stepping through a problem feeds the model exactly what one long decode would; any
    other segment is its text encoded (no special tokens added).
    """

    name: str

    def init_chat_cache(self, size: int = 1024) -> None:
        self._chat_cache: OrderedDict[tuple[ChatMessage, ...], tuple[int, ...]] = OrderedDict()
        self._chat_cache_size = size
        self._chat_lock = threading.Lock()

    def render_chat(self, messages: tuple[ChatMessage, ...]) -> tuple[int, ...]:
        """The chat rendered with the model's template, assistant turn opened, as ids (uncached)."""
        raise NotImplementedError

    def chat_ids(self, messages: Sequence[ChatMessage]) -> tuple[int, ...]:
        """:meth:`render_chat`, through the cache."""
        key = tuple(messages)
        with self._chat_lock:
            ids = self._chat_cache.get(key)
            if ids is not None:
                self._chat_cache.move_to_end(key)
                return ids
        ids = self.render_chat(key)
        with self._chat_lock:
            self._chat_cache[key] = ids
            if len(self._chat_cache) > self._chat_cache_size:
                self._chat_cache.popitem(last=False)
        return ids

    def encode_text(self, text: str) -> list[int]:
        """``text``'s ids, without special tokens added."""
        raise NotImplementedError

    def segment_ids(self, seg: Segment) -> list[int]:
        """A prefix segment's ids: its own ids if this generator wrote it, else its text encoded."""
        if seg.source == self.name and seg.token_ids is not None:
            return list(seg.token_ids)
        return self.encode_text(seg.text) if seg.text else []

    def prompt_ids(self, request: GenerationRequest) -> list[int]:
        """Token ids of the whole prompt for ``request``: the chat, then the answer so far."""
        ids = list(self.chat_ids(request.messages))
        for seg in request.prefix:
            ids.extend(self.segment_ids(seg))
        return ids

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        raise NotImplementedError
