"""One call at a time per engine object.

The asynchronous schedule (:mod:`reasoning.schedule`) calls models from several threads: the
draft's gatherer, the target's, and the judge's (whose target-as-judge calls reach the target
directly). An in-process engine (a vLLM ``LLM``, a llama.cpp context, a torch model, a worker
pipe) is not safe to drive from two threads at once, so its ``generate`` runs under the
object's own re-entrant lock. Different engine objects still run side by side.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

_MAKE = threading.Lock()


def serialized(method: F) -> F:
    """Decorate an engine method so that one call runs at a time per instance."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        lock = self.__dict__.get("_engine_lock")
        if lock is None:
            with _MAKE:
                lock = self.__dict__.setdefault("_engine_lock", threading.RLock())
        with lock:
            return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]
