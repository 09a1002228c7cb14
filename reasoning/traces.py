"""Trace files: JSONL, one problem a line, appended and flushed as each problem finishes.

A run that dies loses nothing finished: every line is written whole, flushed and fsynced
before the next problem counts as done, and a torn last line (a crash mid-write) is detected
and dropped when the file is read back, never parsed into a wrong result.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from reasoning.files import read_jsonl
from reasoning.types import Trace

log = logging.getLogger(__name__)

TRACES = "traces.jsonl"
SUMMARY = "summary.json"
CONFIG = "config.yaml"
CALLS = "calls.jsonl"
"""One line per call of a run into its folder (a first run, then each resume): its wall seconds
and the problems it finished, so a resumed run's wall time covers every call, not the last."""


def read_traces(path: str | os.PathLike, repair: bool = False) -> list[Trace]:
    """Read a trace file; a torn (unterminated or unparsable) last line is dropped.

    Args:
        path: The ``traces.jsonl`` file (missing: no traces).
        repair: Also cut the torn tail off the file, so appending resumes cleanly.

    Raises:
        ValueError: A line other than the last is not a valid trace (the file was edited or
            is not a trace file).
    """
    got = read_jsonl(path, Trace.from_dict, "a valid trace")
    if repair and got.torn:
        with open(path, "r+b") as f:
            f.truncate(got.whole_bytes)
            f.flush()
            os.fsync(f.fileno())
    return got.records


class TraceWriter:
    """Appends traces to a JSONL file, one whole line each, flushed and fsynced.

    >>> import tempfile, pathlib
    >>> from reasoning.types import StopReason
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> with TraceWriter(d / "t.jsonl") as w:
    ...     w.write(Trace("p1", "q", "1", (), StopReason.EOS, ""))
    >>> [t.problem_id for t in read_traces(d / "t.jsonl")]
    ['p1']
    """

    def __init__(self, path: str | os.PathLike, fsync: bool = True) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        read_traces(self.path, repair=True)
        self._f = open(self.path, "a", encoding="utf-8")
        self.fsync = fsync

    def write(self, trace: Trace) -> None:
        self._f.write(json.dumps(trace.to_dict(), ensure_ascii=False) + "\n")
        self._f.flush()
        if self.fsync:
            os.fsync(self._f.fileno())

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def iter_trace_dicts(path: str | os.PathLike) -> Iterator[dict]:
    """The raw JSON objects of a trace file (for tools that read fields we don't model)."""
    for tr in read_traces(path):
        yield tr.to_dict()


def append_call(path: str | os.PathLike, record: dict) -> None:
    """Append one call's record (a JSON object) to ``calls.jsonl``, flushed and fsynced."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_calls(path: str | os.PathLike) -> list[dict]:
    """The records of ``calls.jsonl`` (none if it is missing); a torn line is skipped.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / CALLS
    >>> append_call(p, {"wall_seconds": 2.0, "problems": 3})
    >>> _ = p.open("a").write('{"wall_sec')  # a call killed while writing
    >>> read_calls(p)
    [{'problems': 3, 'wall_seconds': 2.0}]
    """
    p = Path(path)
    if not p.exists():
        return []
    out = []
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            log.warning("%s: skipping a torn line", p)
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out
