"""The step cache's wrappers: a generator and a judge that answer from a
:class:`reasoning.cache.StepCache` when they can and compute (and store) only what missed; what
they lack (``name``, ``needs_logprobs``, ...) is the wrapped object's (:mod:`reasoning.delegating`).
The module docstring of :mod:`reasoning.cache` shows them at work."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

from reasoning.cache import StepCache, cacheable, generation_key, judge_key
from reasoning.delegating import Delegating
from reasoning.protocols import Generator, Judge, JudgeRequest, option
from reasoning.types import Completion, GenerationRequest, to_dict

log = logging.getLogger("reasoning.cache")


class CachedGenerator(Delegating):
    """A :class:`~reasoning.protocols.Generator` that answers from a :class:`StepCache` when it can.

    Each batch is looked up; ``inner.generate`` is called once on the requests that missed
    (and the uncacheable ones), never when everything hit, so a lazily built ``inner`` (such
    as ``recipes._cli.LazyGenerator``) is never built by a run that only hits.

    Args:
        inner: The generator that computes misses.
        cache: Where completions are stored.
        model_id: Identity of ``inner``'s model: everything that changes its output (see
            :func:`model_identity`). Two generators with the same id must write the same text.

    Attributes:
        hits: Requests answered from the cache.
        misses: Cacheable requests computed by ``inner`` (and stored).
        uncacheable: Requests sampled without a seed, passed through and not stored.
    """

    def __init__(self, inner: Generator, cache: StepCache, model_id: str) -> None:
        super().__init__(inner)
        self.cache = cache
        self.model_id = model_id
        self.name = inner.name
        self.hits = 0
        self.misses = 0
        self.uncacheable = 0

    def stats(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "uncacheable": self.uncacheable}

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Completion]:
        keys = [generation_key(self.model_id, r) if cacheable(r) else None for r in requests]
        found = self.cache.get_many([k for k in keys if k is not None])
        out: list[Completion | None] = [None] * len(requests)
        todo: list[int] = []  # indices sent to inner
        first: dict[str, int] = {}  # key -> index of the request that computes it
        for i, k in enumerate(keys):
            if k is None:
                self.uncacheable += 1
                todo.append(i)
            elif k in found:
                out[i] = Completion.from_dict(found[k])
                self.hits += 1
            elif k in first:  # the same request twice in one batch: computed once
                self.hits += 1
            else:
                first[k] = i
                self.misses += 1
                todo.append(i)
        if todo:
            got = self.inner.generate([requests[i] for i in todo])
            if len(got) != len(todo):
                raise RuntimeError(f"{self.name} returned {len(got)} completions for {len(todo)} requests")
            for i, c in zip(todo, got):
                out[i] = c
            self.cache.put_many([(keys[i], "completion", to_dict(out[i])) for i in todo
                                 if keys[i] is not None and isinstance(out[i], Completion)])
        for i, k in enumerate(keys):
            if out[i] is None and k is not None:
                out[i] = out[first[k]]
        log.debug("%s: %d hit(s), %d computed", self.name, len(requests) - len(todo), len(todo))
        return out  # type: ignore[return-value]

    def close(self) -> None:
        self.inner.close()

    def __repr__(self) -> str:
        return f"CachedGenerator({self.inner!r}, {self.cache!r})"


class CachedJudge(Delegating):
    """A :class:`~reasoning.protocols.Judge` that answers from a :class:`StepCache` when it can.

    Scores outside [0, 1] (or NaN) are passed on but not stored. A judge that says more than
    its score (``score_info``, e.g. a cascade's verdicts) has each info stored with its score and
    returned with it on a hit (see :attr:`score_info`).

    Args:
        inner: The judge that scores misses.
        cache: Where scores are stored.
        judge_id: Identity of the judge: everything that changes its scores (its config, and
            the models it uses, if any).
    """

    def __init__(self, inner: Judge, cache: StepCache, judge_id: str) -> None:
        super().__init__(inner)
        self.cache = cache
        self.judge_id = judge_id
        self.hits = 0
        self.misses = 0

    def stats(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses}

    def score(self, requests: Sequence[JudgeRequest]) -> list[float]:
        return self.score_timed(requests)[0]

    def score_timed(self, requests: Sequence[JudgeRequest]) -> tuple[list[float], float]:
        """The scores and the seconds per item: a hit at the seconds its score took when it was
        computed, a miss at its share of the inner judge's call (see
        :func:`reasoning.judge_calls.timed_scores`)."""
        scores, seconds, _ = self._scores(requests, with_info=False)
        return scores, seconds

    @property
    def score_info(self) -> Callable[[Sequence[JudgeRequest]], tuple[list[float], float, list[Any]]] | None:
        """The inner judge's ``score_info`` through the cache (None where the inner judge has
        none, as :data:`reasoning.protocols.OPTIONS` says of a judge without it): each score
        is stored with its info, and a hit returns both."""
        return None if option(self.inner, "score_info") is None else self._score_info

    def _score_info(self, requests: Sequence[JudgeRequest]) -> tuple[list[float], float, list[Any]]:
        return self._scores(requests, with_info=True)

    def _scores(self, requests: Sequence[JudgeRequest],
                with_info: bool) -> tuple[list[float], float, list[Any]]:
        """The scores, seconds per item and (``with_info``) the inner judge's infos, hits first.

        An entry stored without an info (by a judge without ``score_info``, or before the cache
        kept them) is not a hit for a call that wants one: it is computed again and stored with
        its info, so no key version changes and every other entry stays valid."""
        from reasoning.judge_calls import timed_score_info, timed_scores

        keys = [judge_key(self.judge_id, r) for r in requests]
        found = self.cache.get_many(keys)
        out: list[float | None] = [None] * len(requests)
        told: list[Any] = [None] * len(requests)
        seconds = 0.0
        todo: list[int] = []
        first: dict[str, int] = {}
        for i, k in enumerate(keys):
            v = found.get(k)
            if v is not None and (not with_info or "info" in v):
                out[i] = float(v["score"])
                told[i] = v.get("info")
                seconds += float(v.get("seconds") or 0.0)
                self.hits += 1
            elif k in first:
                self.hits += 1
            else:
                first[k] = i
                self.misses += 1
                todo.append(i)
        per_item = 0.0
        if todo:
            asked = [requests[i] for i in todo]
            if with_info:
                got, per_item, infos = timed_score_info(self.inner, asked)
            else:
                (got, per_item), infos = timed_scores(self.inner, asked), [None] * len(todo)
            for i, s, info in zip(todo, got, infos):
                out[i], told[i] = s, info
            seconds += per_item * len(todo)
            self.cache.put_many([(keys[i], "score", {"score": float(out[i]), "seconds": per_item,
                                                     **({"info": told[i]} if with_info else {})})
                                 for i in todo
                                 if isinstance(out[i], int | float) and not math.isnan(out[i])
                                 and 0.0 <= out[i] <= 1.0])
        for i, k in enumerate(keys):
            if out[i] is None:
                out[i], told[i] = out[first[k]], told[first[k]]
                seconds += per_item  # a repeat in the batch costs what its first did
        return out, seconds / max(len(requests), 1), told  # type: ignore[return-value]

    def __repr__(self) -> str:
        return f"CachedJudge({self.inner!r}, {self.cache!r})"
