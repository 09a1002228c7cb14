"""The files a run folder holds: JSONL read back past a torn tail, writes that leave no partial
file, and the check that the config saved beside a folder's records is the one being run.

One helper each, so that trace files (:mod:`reasoning.traces`), router data
(:mod:`routers.collect`), summaries and saved configs all behave the same way. Bottom layer:
only the standard library and :mod:`reasoning.errors` (PyYAML is imported when a config is
compared as text).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Generic, TypeVar

from reasoning.errors import UserError

log = logging.getLogger(__name__)

T = TypeVar("T")


# -- torn JSONL ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class JsonLines(Generic[T]):
    """What :func:`read_jsonl` read.

    Attributes:
        records: ``parse(json.loads(line))`` of each whole line, in file order.
        whole_bytes: The length of the file's whole lines: where the torn tail starts, or the
            file's size when nothing was dropped (truncate to it to append cleanly).
        torn: Whether a torn tail was dropped.
    """

    records: list[T]
    whole_bytes: int
    torn: bool


def _as_is(obj: Any) -> Any:
    return obj


def read_jsonl(path: str | os.PathLike, parse: Callable[[Any], T] = _as_is,
               what: str = "a JSON line") -> JsonLines[T]:
    r"""Read a JSONL file written one whole line at a time; a torn tail is dropped, never parsed.

    A line is torn when it is the last one and no newline follows it (a write cut short), or
    when it does not parse and only blank lines follow it. A line that does not parse anywhere
    else is an error: the file was edited, or is not what the caller asked for. A missing file
    holds no records.

    Args:
        path: The file.
        parse: Builds a record from a line's JSON value; its ``ValueError``, ``KeyError`` or
            ``TypeError`` marks the line as bad.
        what: What a good line is, for the error (``"a valid trace"``).

    Raises:
        ValueError: ``"<path>: line <n> is not <what> (<why>)"`` for a bad line before the end.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.jsonl"
    >>> _ = p.write_text('{"a": 1}\n{"a": ')
    >>> read_jsonl(p)
    JsonLines(records=[{'a': 1}], whole_bytes=9, torn=True)
    """
    p = Path(path)
    if not p.exists():
        return JsonLines([], 0, False)
    data = p.read_bytes()
    records: list[T] = []
    good_end = 0
    pos = 0
    torn = False
    lines = data.split(b"\n")
    for i, raw in enumerate(lines):
        last = i == len(lines) - 1
        end = pos + len(raw) + (0 if last else 1)
        if last and raw == b"":
            break
        try:
            if last:  # no newline after it: written only in part
                raise ValueError("unterminated line")
            records.append(parse(json.loads(raw)))
            good_end = end
        except (ValueError, KeyError, TypeError) as e:
            if last or all(not x.strip() for x in lines[i + 1:]):
                log.warning("dropping a torn last line in %s (%d bytes): %s", p, len(raw), e)
                torn = True
                break
            raise ValueError(f"{p}: line {i + 1} is not {what} ({e})") from e
        pos = end
    return JsonLines(records, good_end, torn)


# -- atomic writes ---------------------------------------------------------------------------------
@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", suffix: str = ".tmp") -> Iterator[IO[Any]]:
    """Write ``path`` through ``<path><suffix>``, which replaces ``path`` when the block ends.

    Readers see the old file or the whole new one, never a part. When the block raises, the
    temporary file is removed and ``path`` is left as it was; a temporary file left by an
    earlier crash is overwritten. Text is UTF-8.

    Args:
        path: The file to (re)write.
        mode: ``"w"`` (text) or ``"wb"`` (bytes).
        suffix: Appended to the file's name for the temporary file.
    """
    p = Path(path)
    tmp = p.with_name(p.name + suffix)
    try:
        with open(tmp, mode, encoding=None if "b" in mode else "utf-8") as f:
            yield f
        os.replace(tmp, p)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (:func:`atomic_open`); returns the path.

    >>> import tempfile, pathlib
    >>> p = write_atomic(pathlib.Path(tempfile.mkdtemp()) / "s.json", "{}\\n")
    >>> p.read_text(), sorted(x.name for x in p.parent.iterdir())
    ('{}\\n', ['s.json'])
    """
    with atomic_open(path) as f:
        f.write(text)
    return Path(path)


# -- the same config -------------------------------------------------------------------------------
def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, Mapping):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): d}


def _load(text: str) -> dict[str, Any]:
    import yaml

    return yaml.safe_load(text) or {}


def config_diff(old: Mapping[str, Any] | str, new: Mapping[str, Any] | str) -> list[str]:
    r"""Dotted keys whose values differ between two configs (YAML text or mappings).

    >>> config_diff("a: 1\nb: {c: 2}", {"a": 1, "b": {"c": 3}})
    ['b.c']
    """
    a = _flat(_load(old) if isinstance(old, str) else old)
    b = _flat(_load(new) if isinstance(new, str) else new)
    return sorted(k for k in a.keys() | b.keys() if a.get(k, object()) != b.get(k, object()))


def refuse_other_config(saved: str | os.PathLike, config: Mapping[str, Any] | str, holds: str, fix: str,
                        error: type[Exception] = UserError) -> None:
    """Refuse to add to a folder whose records were made with another config.

    Args:
        saved: The config file saved beside the records (missing: nothing to compare, no error).
        config: The config being run (YAML text or a mapping).
        holds: What the folder holds, the error's start (``"run folder out/ holds traces"``).
        fix: What to do instead, the error's end.
        error: The exception class to raise.

    Raises:
        error: ``"<holds> of a different config (differs in <keys>); <fix>"``, with the first
            five differing keys and how many more.
    """
    saved = Path(saved)
    if not saved.exists():
        return
    diff = config_diff(saved.read_text(), config if isinstance(config, str) else dict(config))
    if diff:
        shown = ", ".join(diff[:5]) + (f" and {len(diff) - 5} more" if len(diff) > 5 else "")
        raise error(f"{holds} of a different config (differs in {shown}); {fix}")
