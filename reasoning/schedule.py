"""The asynchronous schedule of the step loop (``loop.schedule: async``).

In the lockstep schedule (:class:`reasoning.loop.StepLoop`'s default) every round waits for
the slowest problem of the batch: a problem whose step was accepted waits while others' steps
go to the target, and the draft idles while the target works. Here each problem advances on
its own, on a thread of its own (at most ``loop.max_in_flight`` of them), through exactly the
lockstep loop's step code (so its traces are the same on deterministic models). Its calls to
the draft, the judge and the target go to one *gatherer* per model, a thread that merges the
requests of every problem waiting on that model into one engine call: it fires as soon as no
problem thread is still computing (so it cannot gain another request by waiting) or after
``GATHER_MAX_WAIT_S``. The draft's gatherer, the judge's and the target's run at the same
time, so drafts of some problems are written while the target writes or judges others'.

Only models and judges that take concurrent calls (``concurrent_calls = True``:
:class:`~reasoning.backends.server.ServerGenerator`, a judge whose ``generator`` is one, and
judges with no engine: confidence, constant, a lightweight router) are called from their
gatherer's thread, so their calls overlap the engines' (a confidence judge queued behind
engine calls made async 0.61x lockstep at 8 in flight). The calls of every
in-process engine (vLLM, llama.cpp, transformers) go to one shared *engine thread*, one
after another, as the lockstep loop makes them from its one thread: in-process engines share
this machine's cores, and a CPU engine's thread team is per calling thread (llama.cpp's
OpenMP threads), so calling two of them from two threads makes two teams spin against each
other (measured on 2 cores: async 0.73-0.83x lockstep before this). The gain over lockstep
is real where the models can run at the same time: on separate GPUs or servers.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from typing import Any

from reasoning.delegating import Delegating
from reasoning.engine import SCHEDULES as _SCHEDULES
from reasoning.engine import StepEngine
from reasoning.judge_calls import timed_score_info
from reasoning.protocols import option
from reasoning.types import Problem, Trace

log = logging.getLogger(__name__)

GATHER_MAX_WAIT_S = 0.05
"""Longest a gatherer holds a waiting request for more to merge while some problem thread is
still computing (the step code between model calls takes microseconds; this bounds the case
of a slow policy or stop rule)."""

SCHEDULES = _SCHEDULES


class Cancelled(RuntimeError):
    """The run was stopped (interrupted, or its consumer went away) while a request waited."""


class _Gate:
    """How many problem threads are computing (not waiting on a model); gatherers wait on it."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.running = 0
        self.closed = False


class Gatherer:
    """Merges concurrent calls of one model (or judge) into one call, on a thread of its own.

    Args:
        name: For the thread's name and the logs.
        call: Takes the merged list of items, returns one result per item, in order, and the
            seconds the call cost per item (measured where the call ran, so a wait in a queue
            before it is not counted).
        gate: Shared with the problem threads and the other gatherers.
        max_wait_s: Longest to hold a batch open while a problem thread still computes
            (None: ``GATHER_MAX_WAIT_S``).
    """

    def __init__(self, name: str, call: Callable[[list[Any]], Sequence[Any]], gate: _Gate,
                 max_wait_s: float | None = None) -> None:
        self.name = name
        self._call = call
        self._gate = gate
        self._max_wait_s = GATHER_MAX_WAIT_S if max_wait_s is None else max_wait_s
        self._pending: list[tuple[list[Any], Future]] = []
        self.calls = 0
        self.batch_sizes: list[int] = []
        self._thread = threading.Thread(target=self._run, name=f"stepspec-gather-{name}", daemon=True)
        self._thread.start()

    def submit(self, items: Sequence[Any]) -> list[Any]:
        """Called by a problem thread: blocks until the merged call that holds ``items`` returns."""
        return self.submit_timed(items)[0]

    def submit_timed(self, items: Sequence[Any]) -> tuple[list[Any], float]:
        """:meth:`submit`, with the seconds of the merged call charged to each of ``items``: the
        call's cost over every item it merged, the time spent waiting for it left out."""
        fut: Future = Future()
        g = self._gate
        with g.cond:
            if g.closed:
                raise Cancelled(f"{self.name}: the run was stopped")
            self._pending.append((list(items), fut))
            g.running -= 1  # the gatherer gives it back when it hands the result over
            g.cond.notify_all()
        return fut.result()

    def _run(self) -> None:
        g = self._gate
        while True:
            with g.cond:
                while not self._pending and not g.closed:
                    g.cond.wait()
                if g.closed:
                    batch, self._pending = self._pending, []
                    g.running += len(batch)
                    for _, fut in batch:
                        fut.set_exception(Cancelled(f"{self.name}: the run was stopped"))
                    return
                deadline = time.monotonic() + self._max_wait_s
                while g.running > 0 and not g.closed:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    g.cond.wait(left)
                batch, self._pending = self._pending, []
            results = self._results(batch)
            with g.cond:
                g.running += len(batch)  # before the results land, so no gatherer fires early
                g.cond.notify_all()
            for (_, fut), r in zip(batch, results):
                if isinstance(r, BaseException):
                    fut.set_exception(r)
                else:
                    fut.set_result(r)

    def _results(self, batch: list[tuple[list[Any], Future]]) -> list[Any]:
        """Each caller's ``(results, seconds per item)`` (or the exception its part raised)."""
        items = [x for part, _ in batch for x in part]
        self.calls += 1
        self.batch_sizes.append(len(items))
        try:
            out, per_item = self._call(items)
            out = list(out)
            if len(out) != len(items):
                raise RuntimeError(f"{self.name} returned {len(out)} results for {len(items)} items")
        except Exception as e:  # noqa: BLE001 - handed to the callers
            if len(batch) == 1:
                return [e]
            # One caller's bad request must not fail the others': each part again on its own.
            return [self._results([b])[0] for b in batch]
        res, i = [], 0
        for part, _ in batch:
            res.append((out[i:i + len(part)], per_item))
            i += len(part)
        return res


def takes_concurrent_calls(obj: Any) -> bool:
    """Whether ``obj`` (a model or a judge) may be called from several threads at once and
    gains by it: its ``concurrent_calls`` attribute, else, for a judge over a model, its
    ``generator``'s. In-process engines leave it unset (False).

    >>> class Server: concurrent_calls = True
    >>> class Judge: generator = Server()
    >>> takes_concurrent_calls(Server()), takes_concurrent_calls(Judge()), takes_concurrent_calls(object())
    (True, True, False)
    """
    flag = option(obj, "concurrent_calls")
    if flag is not None:
        return bool(flag)
    gen = getattr(obj, "generator", None)
    return gen is not None and gen is not obj and takes_concurrent_calls(gen)


class _EngineThread:
    """One daemon thread that makes the in-process engines' calls, one at a time."""

    def __init__(self) -> None:
        self._jobs: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="stepspec-engine", daemon=True)
        self._thread.start()

    def call(self, fn: Callable[[list[Any]], Sequence[Any]]) -> Callable[[list[Any]], Sequence[Any]]:
        """``fn``, made to run on this thread (the caller blocks until it returns or raises)."""
        def on_engine_thread(items: list[Any]) -> Sequence[Any]:
            fut: Future = Future()
            with self._lock:
                if self._closed:
                    raise Cancelled("engine thread: the run was stopped")
                self._jobs.put((fn, items, fut))
            return fut.result()
        return on_engine_thread

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, items, fut = job
            try:
                fut.set_result(fn(items))
            except BaseException as e:  # noqa: BLE001 - raised in the gatherer that asked
                fut.set_exception(e)

    def close(self) -> None:
        """Lets the call under way finish; later calls raise :class:`Cancelled`."""
        with self._lock:
            self._closed = True
            self._jobs.put(None)


class _Proxy(Delegating):
    """A model or judge whose calls go through a gatherer; everything else is the inner one's."""

    method: str  # the call the gatherer makes on the inner object

    def __init__(self, inner: Any, gatherer: Gatherer) -> None:
        super().__init__(inner)
        self._gatherer = gatherer


class GatheredGenerator(_Proxy):
    method = "generate"

    def generate(self, requests):
        return self._gatherer.submit(requests)


class GatheredJudge(_Proxy):
    """A judge whose calls go through a gatherer, which returns each item's ``(score, info)``
    (info None for a judge without ``score_info``); each caller gets back its own items'."""

    method = "score"

    def score(self, requests):
        return self.score_timed(requests)[0]

    def score_timed(self, requests):
        """The scores and the merged call's seconds per item (see
        :func:`reasoning.judge_calls.timed_scores`)."""
        pairs, seconds = self._gatherer.submit_timed(requests)
        return [sc for sc, _ in pairs], seconds

    @property
    def score_info(self):
        """The inner judge's ``score_info`` through the gatherer: the scores, the merged call's
        seconds per item and this caller's items' infos (None where the inner judge has none)."""
        return None if option(self.inner, "score_info") is None else self._score_info

    def _score_info(self, requests):
        pairs, seconds = self._gatherer.submit_timed(requests)
        return [sc for sc, _ in pairs], seconds, [info for _, info in pairs]


def _timed_call(obj: Any, method: str) -> Callable[[list[Any]], tuple[Sequence[Any], float]]:
    """``obj``'s ``method`` as a gatherer calls it: results and seconds per item, timed where it
    runs. A judge's results are ``(score, info)`` pairs (see :func:`reasoning.judge_calls.timed_score_info`),
    so that the merged call's infos are split per item with the scores."""
    if method == "score":
        def scored(items: list[Any]) -> tuple[Sequence[Any], float]:
            scores, seconds, infos = timed_score_info(obj, items)
            return list(zip(scores, infos)), seconds
        return scored
    call = getattr(obj, method)

    def timed(items: list[Any]) -> tuple[Sequence[Any], float]:
        t0 = time.perf_counter()
        out = call(items)
        return out, (time.perf_counter() - t0) / max(len(items), 1)

    return timed


def iter_async(loop: Any, problems: Iterable[Problem]) -> Iterator[Trace]:
    """Run ``loop`` (a :class:`~reasoning.loop.StepLoop`) on the asynchronous schedule; yield
    each trace as its problem finishes.

    ``loop.config.max_in_flight`` problem threads (0 = one per problem) each take the next
    problem, step it to its end with the lockstep loop's own round code on a one-problem
    batch, and take another. An exception in the step code (not an engine failure, which the
    loop records on the problem) stops the run and is raised here.
    """
    from dataclasses import replace

    n = loop.config.max_in_flight
    if n == 0:
        problems = list(problems)
        n = len(problems)
    if n == 0:
        return
    gate = _Gate()
    gathers: dict[int, Gatherer] = {}
    engine = _EngineThread()

    def gathered(obj: Any, cls: type[_Proxy]) -> Any:
        g = gathers.get(id(obj))
        if g is None:  # one gatherer per object: a draft that is also the target shares it
            call = _timed_call(obj, cls.method)
            if not takes_concurrent_calls(obj):
                call = engine.call(call)
            g = gathers[id(obj)] = Gatherer(getattr(obj, "name", type(obj).__name__), call, gate)
        return cls(obj, g)

    # The proxies pass every other attribute through (needs_logprobs included), so the inner
    # loop derives the same draft logprobs and stop rules as ``loop``.
    inner = StepEngine(gathered(loop.draft, GatheredGenerator),
                               gathered(loop.target, GatheredGenerator),
                               gathered(loop.judge, GatheredJudge), loop.policy, loop.segmenter,
                               loop.prompt, replace(loop.config, schedule="lockstep"), loop.stop_rules)
    source = iter(problems)
    take = threading.Lock()
    done: queue.Queue = queue.Queue()

    def work() -> None:
        try:
            while True:
                with take:
                    p = None if gate.closed else next(source, None)
                if p is None:
                    break
                s = inner.admit(p)
                while s.stop is None:
                    inner.round([s])
                done.put(inner.trace(s))
        except Cancelled:
            pass
        except BaseException as e:  # noqa: BLE001 - raised in the consumer's thread
            done.put(e)
        finally:
            with gate.cond:
                gate.running -= 1
                gate.cond.notify_all()
            done.put(None)

    with gate.cond:
        gate.running = n
    threads = [threading.Thread(target=work, name=f"stepspec-problem-{i}", daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    alive = n
    try:
        while alive:
            try:
                item = done.get(timeout=0.2)  # a timeout, so a signal reaches this thread
            except queue.Empty:
                continue
            if item is None:
                alive -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item
    finally:
        with gate.cond:
            gate.closed = True
            gate.cond.notify_all()
        engine.close()
