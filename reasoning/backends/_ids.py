"""How the token-id backends build a prompt: the chat, then the answer so far, segment by segment."""

from __future__ import annotations

from collections.abc import Sequence

from reasoning.types import ChatMessage, GenerationRequest, Segment


class TokenPrompts:
    """Mixin: ``prompt_ids`` from ``chat_ids`` and ``encode_text``, which the backend provides.

    A prefix segment this generator wrote itself (``source == name``, ids kept) is appended as
    those ids, so stepping through a problem feeds the model exactly what one long decode
    would; any other segment is its text encoded (no special tokens added).
    """

    name: str

    def chat_ids(self, messages: Sequence[ChatMessage]) -> tuple[int, ...]:
        """The chat rendered with the model's template, assistant turn opened, as ids."""
        raise NotImplementedError

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
