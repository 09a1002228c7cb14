"""The step loop: draft a step, judge it, keep it or have the target write it, record it.

The loop is batched across problems in lockstep rounds. In each round every active problem
writes one step: all drafts go to the draft model in one engine call, all drafts are judged in
one judge call, all rejected (or directly routed) steps go to the target in one engine call,
and then the stop rules run. Problems are admitted on a rolling window of ``max_in_flight``,
so a finished problem's place is taken by the next one at the following round.
``schedule: async`` runs the same step code with each problem advancing on its own instead
(see :mod:`reasoning.schedule`).

The round itself is :class:`reasoning.engine.StepEngine`'s (a failing engine or judge call
is retried request by request, so that one bad problem ends with ``stop_reason = error``);
this module is its lockstep schedule.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from reasoning.engine import (  # noqa: F401 - the loop's names, kept importable from here
    SCHEDULES,
    LoopConfig,
    StepEngine,
    _State,
    judge_logprobs,
    request_seed,
    timed_scores,
    with_grade,
)
from reasoning.schedule import iter_async
from reasoning.types import Problem, Trace


class StepLoop(StepEngine):
    """Runs step-level speculative reasoning over a stream of problems.

    The arguments are :class:`~reasoning.engine.StepEngine`'s: the draft, the target, the judge,
    the policy, the segmenter, the prompt, the :class:`LoopConfig` and optional stop rules.
    ``config.schedule`` says how the rounds go: ``lockstep`` here, ``async`` in
    :func:`reasoning.schedule.iter_async`.
    """

    # -- public ----------------------------------------------------------------------------
    def run(self, problems: Iterable[Problem],
            on_trace: Callable[[Trace], None] | None = None) -> list[Trace]:
        """Solve every problem; return traces in the order problems finished.

        ``on_trace`` is called with each trace as soon as its problem finishes (to write it).
        """
        out = []
        for tr in self.iter_traces(problems):
            if on_trace is not None:
                on_trace(tr)
            out.append(tr)
        return out

    def iter_traces(self, problems: Iterable[Problem]) -> Iterator[Trace]:
        """Yield each problem's trace as soon as it finishes."""
        if self.config.schedule == "async":
            yield from iter_async(self, problems)
            return
        pending = iter(problems)
        window = self.config.max_in_flight or None
        active: list[_State] = []
        exhausted = False
        while True:
            while not exhausted and (window is None or len(active) < window):
                p = next(pending, None)
                if p is None:
                    exhausted = True
                    break
                active.append(self.admit(p))
            if not active:
                return
            self.round(active)
            still = []
            for s in active:
                if s.stop is None:
                    still.append(s)
                else:
                    yield self.trace(s)
            active = still

