"""An on-disk step cache: a sweep re-uses every engine call and judge score already computed.

A threshold sweep runs the same problems again and again; up to the first step where two
thresholds decide differently, every draft, judge and target call is the same. Wrapping the
generators and the judge in :class:`~reasoning.cached.CachedGenerator` and
:class:`~reasoning.cached.CachedJudge` (in :mod:`reasoning.cached`) over one
:class:`StepCache` file makes each run pay only for the steps no earlier run computed.

The cache is a SQLite file in WAL mode: any number of readers and one writer at a time,
across processes; a writer that finds the file busy waits up to ``timeout_s``.

What a key covers (a sha256 of the canonical JSON of):

- a completion: the model identity (see :func:`model_identity`), the problem id, the
  request's messages, each prefix segment's text, source and token ids, and every
  :class:`~reasoning.types.GenerationParams` field (the seed among them);
- a judge score: the judge identity, the problem id, the messages, the prefix segments' texts
  and sources (which model wrote each step: a router reads it), the step index and the drafted
  step (its text, finish reason and logprobs).

Sampling (temperature > 0) without a seed is not deterministic and is never cached.

A hit returns the completion as it was stored, its ``seconds`` included (the engine time it
took when it was computed), and a judge hit the seconds its score took (and its info, for a
judge with ``score_info``: a cascade's verdict): per-model and judge
seconds in a summary stay the compute cost, while the run's wall-clock time shrinks. Wall
times of runs with cache hits are not comparable, and their engine seconds are an estimate
(the same requests computed again, in another run's company, would not take exactly as long).

>>> import tempfile, pathlib
>>> from reasoning.backends.scripted import ScriptedGenerator
>>> from reasoning.cached import CachedGenerator
>>> from reasoning.types import GenerationParams, GenerationRequest
>>> cache = StepCache(pathlib.Path(tempfile.mkdtemp()) / "steps.sqlite")
>>> inner = ScriptedGenerator("draft", {"p": "One.\\n\\nTwo."})
>>> gen = CachedGenerator(inner, cache, model_id="scripted-draft")
>>> req = GenerationRequest("r", "p", (), (), GenerationParams(max_tokens=8, stop=("\\n\\n",)))
>>> [c.text for c in gen.generate([req])], [c.text for c in gen.generate([req])]
(['One.\\n\\n'], ['One.\\n\\n'])
>>> inner.calls, gen.stats()
(1, {'hits': 1, 'misses': 1, 'uncacheable': 0})
>>> cache.close()
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from reasoning.errors import UserError
from reasoning.protocols import JudgeRequest
from reasoning.types import GenerationRequest, to_dict

log = logging.getLogger(__name__)

KEY_VERSION = 2
"""Part of every key: bump it when what a key covers changes, so old entries are never hit.
(2: a judge key holds each prefix segment's source, and a judge entry its seconds.)"""

SCHEMA_VERSION = 1
"""Layout of the SQLite file."""

NOT_IDENTITY_KEYS = frozenset({"start_timeout_s", "request_timeout_s", "seconds_per_token"})
"""Config keys that change only how long a model takes, never what it writes: left out of
:func:`model_identity` (at any depth)."""

_CHUNK = 500  # keys per SELECT ... IN (...), under SQLite's bound-parameter limit


class CacheError(UserError):
    """The cache file cannot be used: not a SQLite cache, corrupted, or locked too long."""


# -- keys ------------------------------------------------------------------------------------
def canonical_json(obj: Any) -> str:
    """One JSON text per value: records as dicts, sorted keys, no spaces.

    >>> canonical_json({"b": (1, 2), "a": None})
    '{"a":null,"b":[1,2]}'
    """
    return json.dumps(to_dict(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def digest(obj: Any) -> str:
    """sha256 (hex) of :func:`canonical_json` of ``obj``.

    >>> digest({"a": 1}) == digest({"a": 1}) != digest({"a": 2})
    True
    """
    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()


def model_identity(config: Any) -> str:
    """A model's identity for cache keys: the canonical JSON of its resolved config.

    ``config`` is the generator's (or judge's) config node, resolved (a mapping, or an
    OmegaConf node); keys in :data:`NOT_IDENTITY_KEYS` (timeouts, simulated slowness) are left
    out, everything else (model, dtype, engine arguments, name, ...) is kept.

    >>> model_identity({"model": "m", "dtype": "float32", "start_timeout_s": 900})
    '{"dtype":"float32","model":"m"}'
    """
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(config, DictConfig | ListConfig):
            config = OmegaConf.to_container(config, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf is a base dependency
        pass

    def strip(v: Any) -> Any:
        if isinstance(v, Mapping):
            return {str(k): strip(x) for k, x in v.items() if k not in NOT_IDENTITY_KEYS}
        if isinstance(v, list | tuple):
            return [strip(x) for x in v]
        return v

    return canonical_json(strip(config))


def cacheable(request: GenerationRequest) -> bool:
    """Whether the request's output is determined by its inputs (greedy, or sampling with a seed).

    >>> from reasoning.types import GenerationParams
    >>> def req(**kw): return GenerationRequest("r", "p", (), (), GenerationParams(**kw))
    >>> cacheable(req()), cacheable(req(temperature=0.7)), cacheable(req(temperature=0.7, seed=1))
    (True, False, True)
    """
    p = request.params
    return p.temperature == 0 or p.seed is not None


def generation_key(model_id: str, request: GenerationRequest) -> str:
    """The cache key of one generation request (its ``request_id`` is not part of it).

    >>> from reasoning.types import GenerationParams, Segment
    >>> a = GenerationRequest("r1", "p", (), (Segment("x", "draft", (1,)),), GenerationParams())
    >>> b = GenerationRequest("r2", "p", (), (Segment("x", "draft", (2,)),), GenerationParams())
    >>> generation_key("m", a) == generation_key("m", a) != generation_key("m", b)
    True
    """
    return digest({
        "v": KEY_VERSION,
        "kind": "generate",
        "model": model_id,
        "problem_id": request.problem_id,
        "messages": [[m.role, m.content] for m in request.messages],
        "prefix": [{"text": s.text, "source": s.source, "token_ids": s.token_ids} for s in request.prefix],
        "params": to_dict(request.params),
    })


def judge_key(judge_id: str, request: JudgeRequest) -> str:
    """The cache key of one judge request.

    >>> from reasoning.types import Completion, FinishReason, Problem
    >>> step = Completion("x", (1,), FinishReason.STOP, logprobs=(-0.1,))
    >>> r = JudgeRequest(Problem("p", "q"), (), (), step, 0)
    >>> judge_key("j", r) == judge_key("j", r) != judge_key("k", r)
    True
    """
    s = request.step
    return digest({
        "v": KEY_VERSION,
        "kind": "judge",
        "judge": judge_id,
        "problem_id": request.problem.id,
        "messages": [[m.role, m.content] for m in request.messages],
        "prefix": [[seg.text, seg.source] for seg in request.prefix],
        "step_index": request.step_index,
        "step": {"text": s.text, "finish_reason": s.finish_reason, "logprobs": s.logprobs,
                 "top_logprobs": s.top_logprobs},
    })


# -- the file --------------------------------------------------------------------------------
class StepCache:
    """Completions and judge scores on disk (SQLite, WAL mode), keyed by :func:`digest` strings.

    Safe for concurrent readers and one writer at a time across processes; a write that finds
    the file locked waits up to ``timeout_s`` and then raises :class:`CacheError`. The
    connection is opened again in a forked child.

    Args:
        path: The SQLite file (created with its folder if missing).
        timeout_s: Seconds to wait for a lock held by another connection.

    Raises:
        CacheError: The file is not a SQLite cache of this layout, is corrupted or stays locked.
    """

    def __init__(self, path: str | os.PathLike, timeout_s: float = 30.0) -> None:
        self.path = Path(path).expanduser()
        self.timeout_s = float(timeout_s)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid: int | None = None
        self._connection()  # fail now, with a clear message, not at the first step

    # -- connection ------------------------------------------------------------------------
    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.OperationalError as e:
            if "locked" in str(e) or "busy" in str(e):
                raise CacheError(f"step cache {self.path} stayed locked by another process for more than "
                                 f"{self.timeout_s:g}s while {doing}; wait for it to finish or use another "
                                 "cache.path") from e
            raise CacheError(f"step cache {self.path}: {doing} failed ({e}); check the file or use another "
                             "cache.path") from e
        except sqlite3.DatabaseError as e:
            raise CacheError(f"step cache {self.path} is not a readable SQLite cache ({e}); delete it or use "
                             "another cache.path") from e

    def _connection(self) -> sqlite3.Connection:
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        if self.path.is_dir():
            raise CacheError(f"step cache {self.path} is a folder; give a file such as runs/cache.sqlite")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CacheError(f"step cache {self.path}: cannot create its folder ({e})") from e
        with self._errors("opening it"):
            conn = sqlite3.connect(str(self.path), timeout=self.timeout_s, isolation_level=None,
                                   check_same_thread=False)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
                conn.execute("CREATE TABLE IF NOT EXISTS entries (key TEXT PRIMARY KEY, kind TEXT NOT NULL, "
                             "value TEXT NOT NULL, created_s REAL NOT NULL)")
                conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
                row = conn.execute("SELECT value FROM meta WHERE name = 'schema'").fetchone()
            except BaseException:
                conn.close()
                raise
        if row is None or row[0] != str(SCHEMA_VERSION):
            conn.close()
            raise CacheError(f"step cache {self.path} has layout {row[0] if row else '?'}, this version "
                             f"reads {SCHEMA_VERSION}; delete it or use another cache.path")
        self._conn, self._pid = conn, os.getpid()
        return conn

    def close(self) -> None:
        """Close the connection (idempotent); the next use opens it again."""
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def __enter__(self) -> StepCache:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- reads and writes --------------------------------------------------------------------
    def get_many(self, keys: Sequence[str]) -> dict[str, Any]:
        """The stored values (decoded JSON) of those ``keys`` that are in the cache."""
        out: dict[str, Any] = {}
        uniq = list(dict.fromkeys(keys))
        with self._lock, self._errors("reading"):
            conn = self._connection()
            for i in range(0, len(uniq), _CHUNK):
                part = uniq[i:i + _CHUNK]
                q = f"SELECT key, value FROM entries WHERE key IN ({','.join('?' * len(part))})"
                for k, v in conn.execute(q, part):
                    out[k] = json.loads(v)
        return out

    def get(self, key: str) -> Any | None:
        """The stored value of ``key``, or None."""
        return self.get_many([key]).get(key)

    def put_many(self, items: Iterable[tuple[str, str, Any]]) -> None:
        """Store ``(key, kind, value)`` triples (value: JSON-ready) in one transaction."""
        rows = [(k, kind, json.dumps(v, ensure_ascii=False), time.time()) for k, kind, v in items]
        if not rows:
            return
        with self._lock, self._errors("writing"):
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany("INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?)", rows)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def __len__(self) -> int:
        with self._lock, self._errors("counting entries"):
            return self._connection().execute("SELECT COUNT(*) FROM entries").fetchone()[0]

    def __repr__(self) -> str:
        return f"StepCache({str(self.path)!r})"
