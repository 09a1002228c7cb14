"""The requests :mod:`reasoning.serve` takes: their limits, their pydantic models, and one-line
errors in OpenAI's shape for a request that is refused."""

import json
import math
from collections.abc import Sequence
from typing import Annotated, Any, Literal

MAX_BODY_BYTES = 64 << 20
"""Largest request body accepted (HTTP 413 above)."""
MAX_N = 128
"""Most choices one request may ask for (``n`` times the prompts)."""
MAX_LOGPROBS = 20
"""Most top log-probabilities per token (vLLM's default ``max_logprobs``)."""
DEFAULT_MAX_TOKENS = 16
"""``max_tokens`` of a completion that gives none (OpenAI's default)."""


class ApiError(Exception):
    """A request the server answers with an HTTP error (``status``) in OpenAI's error shape."""

    def __init__(self, message: str, status: int = 400, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.param = param



def request_models() -> dict[str, Any]:
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
