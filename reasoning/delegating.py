"""One base for the wrappers that stand in for a generator or a judge and forward to it.

The step cache's wrappers (:class:`reasoning.cached.CachedGenerator`,
:class:`~reasoning.cached.CachedJudge`), the async schedule's (:class:`reasoning.schedule.GatheredGenerator`,
:class:`~reasoning.schedule.GatheredJudge`) and the bench's clocked one override the calls they
change (``generate``, ``score``, ...) and take everything else from the object they wrap, so the
optional attributes the engine, the schedules and the cache read
(:data:`reasoning.protocols.OPTIONS`: ``needs_logprobs``, ``concurrent_calls``, ...) are the
inner object's by construction, never a default the wrapper forgot to pass on.
"""

from __future__ import annotations

from typing import Any


class Delegating:
    """A wrapper whose public attributes, where it has none of its own, are ``inner``'s.

    Names starting with ``_`` are not forwarded: they are the wrapper's own business, and a
    wrapper being copied or unpickled (no ``inner`` yet) must not recurse looking for them.

    >>> class Judge:
    ...     needs_logprobs = 5
    ...     def score(self, requests): return [1.0] * len(requests)
    >>> class Halved(Delegating):
    ...     def score(self, requests): return [s / 2 for s in self.inner.score(requests)]
    >>> w = Halved(Judge())
    >>> w.score(["a step"]), w.needs_logprobs, hasattr(w, "_private")
    ([0.5], 5, False)
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)
