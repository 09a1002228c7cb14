"""How the engine calls a judge: the seconds charged per step (:func:`timed_scores`), what the
judge said beside each score (:func:`timed_score_info`), the logprobs it asks of the draft
(:func:`judge_logprobs`), the candidate drafts it asks for (:func:`draft_candidates`) and each
request's sampling seed (:func:`request_seed`). :mod:`reasoning.engine` re-exports them."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from reasoning.loop_config import LoopConfig
from reasoning.protocols import Judge, JudgeRequest, StepPolicy, option


def request_seed(seed: int, request_id: str) -> int:
    """The sampling seed of one request: ``seed`` and the request id (problem, step, model and
    piece) hashed together, so that problems, steps and models draw different random streams,
    and a rerun with the same ``seed`` draws the same ones.

    >>> request_seed(0, "p/0/d0") == request_seed(0, "p/0/d0") != request_seed(0, "p/0/t0")
    True
    >>> 0 <= request_seed(7, "x") < 2 ** 31
    True
    """
    import hashlib

    h = hashlib.sha256(f"{seed}\x00{request_id}".encode()).digest()
    return int.from_bytes(h[:4], "big") & 0x7FFFFFFF


def timed_scores(judge: Judge, requests: Sequence[JudgeRequest]) -> tuple[list[float], float]:
    """The judge's scores of ``requests`` and the seconds charged to each.

    A judge that knows its own cost per item has ``score_timed`` (returning the scores and the
    seconds per item): the step cache's judge (a hit costs what it cost when computed) and the
    async schedule's gathered judge (its merged call's seconds over the items it merged, not the
    wait in its queue). Any other judge is timed here, the call's wall time over its items.

    Raises:
        RuntimeError: the judge returned another number of scores than it was asked for.
    """
    timed = option(judge, "score_timed")
    if timed is not None:
        scores, seconds = timed(requests)
        scores = list(scores)
    else:
        t0 = time.perf_counter()
        scores = list(judge.score(requests))
        seconds = (time.perf_counter() - t0) / max(len(requests), 1)
    if len(scores) != len(requests):
        raise RuntimeError(f"judge returned {len(scores)} scores for {len(requests)} steps")
    return scores, float(seconds)


def draft_candidates(judge: object, policy: StepPolicy,
                     config: LoopConfig) -> tuple[int, tuple[float, int | None]]:
    """How many candidate drafts the draft writes per step, and at what ``(temperature, seed)``.

    The judge's optional ``draft_candidates`` (:data:`reasoning.protocols.OPTIONS`; e.g.
    ``judge=best-of-n``, :class:`rewards.best_of_n.BestOfNJudge`) asks for ``N``; its
    ``draft_temperature`` and ``draft_seed`` (None: ``loop.temperature`` and ``loop.seed``) are
    what the candidates are sampled at, each request with its own seed (:func:`request_seed`).
    A policy that calls no judge has nothing to choose the best with: one draft, at the loop's.

    >>> class BestOf4:
    ...     draft_candidates, draft_temperature, draft_seed = 4, 0.7, None
    >>> class Thresh:
    ...     needs_judge = True
    >>> draft_candidates(BestOf4(), Thresh(), LoopConfig(seed=3))
    (4, (0.7, 3))
    >>> draft_candidates(object(), Thresh(), LoopConfig())  # no candidates: one draft at the loop's
    (1, (0.0, None))

    Raises:
        ValueError: ``draft_candidates`` not an int >= 1, or ``N > 1`` at temperature 0 (every
            candidate would be the same greedy draft).
    """
    n = option(judge, "draft_candidates")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"{type(judge).__name__}.draft_candidates must be an int >= 1, got {n!r}")
    if n == 1 or not policy.needs_judge:
        return 1, (config.temperature, config.seed)
    t = option(judge, "draft_temperature")
    t = config.temperature if t is None else float(t)
    if not t > 0:
        raise ValueError(f"{type(judge).__name__} asks for {n} candidate drafts per step at temperature {t}: "
                         "greedy candidates are all the same draft; set draft_temperature > 0 "
                         "(judge.temperature for judge=best-of-n)")
    seed = option(judge, "draft_seed")
    return n, (t, config.seed if seed is None else int(seed))


def timed_score_info(judge: Judge, requests: Sequence[JudgeRequest]) -> tuple[list[float], float, list[Any]]:
    """:func:`timed_scores` and, per request, what the judge said about its score: a JSON-ready
    mapping from its ``score_info`` (a cascade's ``{decided_by, stage_scores}``), or None for
    every request of a judge without one. The engine keeps it in the step's record
    (``StepRecord.judge_info``).

    >>> from reasoning.judges import ConstantJudge
    >>> class Says(ConstantJudge):
    ...     def score_info(self, requests):
    ...         return self.score(requests), 0.5, [{"why": "constant"}] * len(requests)
    >>> timed_score_info(Says(0.25), ["a step"])
    ([0.25], 0.5, [{'why': 'constant'}])
    >>> timed_score_info(ConstantJudge(0.25), ["a step"])[2]
    [None]

    Raises:
        RuntimeError: the judge returned another number of scores or infos than it was asked for.
    """
    info = option(judge, "score_info")
    if info is None:
        scores, seconds = timed_scores(judge, requests)
        return scores, seconds, [None] * len(scores)
    scores, seconds, infos = info(requests)
    scores, infos = list(scores), list(infos)
    if len(scores) != len(requests) or len(infos) != len(requests):
        raise RuntimeError(f"judge returned {len(scores)} scores and {len(infos)} infos for "
                           f"{len(requests)} steps")
    return scores, float(seconds), infos


def judge_logprobs(judge: object) -> int | None:
    """What a judge's ``needs_logprobs`` asks of the draft, as ``GenerationParams.logprobs``.

    Missing, False or None: nothing (None); True: the sampled token's logprob (0); an int
    ``k >= 0``: the top ``k`` per token (0 meaning the sampled token's only).

    >>> class Wants:
    ...     needs_logprobs = 5
    >>> judge_logprobs(object()), judge_logprobs(Wants())
    (None, 5)
    """
    need = option(judge, "needs_logprobs")
    if need is None or need is False:
        return None
    if need is True:
        return 0
    if isinstance(need, int) and need >= 0:
        return need
    raise ValueError(f"{type(judge).__name__}.needs_logprobs must be a bool or an int >= 0 "
                     f"(top logprobs per token), got {need!r}")
