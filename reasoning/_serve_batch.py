"""The engine thread of :mod:`reasoning.serve`: requests from many threads, run through the
engine together."""

import queue
import threading
import time
from concurrent.futures import Future
from typing import Any

from reasoning.types import GenerationParams


class Batcher:
    """Collects completion requests from many threads and runs them through the engine together.

    One engine thread takes every request waiting (up to ``max_batch``, after waiting at most
    ``wait_s`` for company) and hands them to ``generator.generate_ids`` in one call. If that
    call fails, each request is retried alone, so one bad request fails only itself. A request
    whose future was cancelled before its batch started (its client went away) is dropped.
    """

    def __init__(self, generator: Any, max_batch: int, wait_s: float = 0.005) -> None:
        self.generator = generator
        self.max_batch = max(1, max_batch)
        self.wait_s = wait_s
        self._queue: queue.Queue[tuple[str | None, list[int], GenerationParams, Future] | None]
        self._queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="stepspec-engine", daemon=True)
        self.batches = 0
        """Engine calls made so far."""
        self.requests = 0
        """Requests (choices) run so far."""
        self._thread.start()

    def submit(self, key: str | None, ids: list[int], params: GenerationParams) -> Future:
        """Queue one prompt; the future's result is its :class:`Completion`."""
        fut: Future = Future()
        self._queue.put((key, ids, params, fut))
        return fut

    @property
    def alive(self) -> bool:
        """True while the engine thread runs."""
        return self._thread.is_alive()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=60)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            deadline = time.monotonic() + self.wait_s
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)
                    break
                batch.append(item)
            batch = [b for b in batch if b[3].set_running_or_notify_cancel()]
            if not batch:
                continue
            self.batches += 1
            self.requests += len(batch)
            try:
                out = self.generator.generate_ids([(k, i, p) for k, i, p, _ in batch])
                if len(out) != len(batch):
                    raise RuntimeError(f"the engine returned {len(out)} completions for {len(batch)} prompts")
            except Exception:  # noqa: BLE001 - isolate the request that failed
                for k, i, p, fut in batch:
                    try:
                        fut.set_result(self.generator.generate_ids([(k, i, p)])[0])
                    except Exception as e:  # noqa: BLE001
                        fut.set_exception(e)
            else:
                for (_, _, _, fut), c in zip(batch, out):
                    fut.set_result(c)
