"""Data sets: GSM8K, MATH-500 and any JSONL file, read line by line into :class:`Problem` records.

The shipped files live in one folder (see :func:`default_data_dir`): ``gsm8k_train.jsonl``,
``gsm8k_test.jsonl`` and ``math500_test.jsonl``. Problem ids are stable: they come from the row's
0-based line index in its file (``gsm8k-test-17``, ``math500-3``), or, for a JSONL file, from
its id field when one is named (else ``<file stem>-<index>``).

A selection (``offset``/``limit``, ``sample``, ``ids``) picks problems without changing their
ids, so a run over a selection can be compared problem by problem with a run over the whole set.
Every mistake raises :class:`~reasoning.errors.DataError` with a one-line message naming the
file, the line and what is wrong.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib.util
import itertools
import json
import logging
import os
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reasoning.errors import DataError
from reasoning.types import Problem

logger = logging.getLogger(__name__)

DATA_ENV = "STEPSPEC_DATA"
"""Environment variable naming the folder that holds the data files."""


@dataclass(frozen=True, slots=True)
class _Spec:
    """How one named data set is stored."""

    splits: tuple[str, ...]
    question_field: str
    answer_field: str
    hub_repo: str | None = None
    hub_config: str | None = None


_SPECS: dict[str, _Spec] = {
    "gsm8k": _Spec(("train", "test"), "question", "answer", "openai/gsm8k", "main"),
    "math500": _Spec(("test",), "problem", "answer", "HuggingFaceH4/MATH-500"),
}
KNOWN_DATASETS: tuple[str, ...] = ("gsm8k", "jsonl", "math500")
"""Names :func:`load_dataset` accepts."""

_MATH500_META = ("subject", "level", "unique_id")


class _RowError(Exception):
    """A row is malformed; the reader adds the file and line to the message."""


def default_data_dir() -> Path:
    """The folder that holds the data files.

    ``$STEPSPEC_DATA`` if set; else the ``shared/data`` folder beside the repository checkout
    (``<repo>/../shared/data``, or ``<repo>/shared/data``); else ``./data``.
    """
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    repo = Path(__file__).resolve().parents[1]
    for candidate in (repo.parent / "shared" / "data", repo / "shared" / "data"):
        if candidate.is_dir():
            return candidate
    return Path("data")


def gsm8k_gold(solution: str) -> str | None:
    """The gold answer of a GSM8K reference solution: the text after the last ``####``.

    Thousands separators are removed. Returns None if there is no ``####`` line.

    >>> gsm8k_gold("She makes 9 * 2 = $<<9*2=18>>18 every day.\\n#### 18")
    '18'
    >>> gsm8k_gold("So 1,000 in all.\\n#### 1,000")
    '1000'
    >>> gsm8k_gold("no marker") is None
    True
    """
    head, sep, tail = solution.rpartition("####")
    if not sep:
        return None
    gold = tail.strip().replace(",", "")
    return gold or None


def load_dataset(
    name: str,
    split: str = "test",
    path: str | os.PathLike[str] | None = None,
    question_field: str | None = None,
    answer_field: str | None = None,
    id_field: str | None = None,
    limit: int | None = None,
    offset: int = 0,
    sample: int | None = None,
    seed: int = 0,
    ids: Sequence[str] | None = None,
    skip_malformed: bool = False,
    report: dict[str, Any] | None = None,
) -> list[Problem]:
    """Load a data set as a list of problems.

    Args:
        name: ``gsm8k``, ``math500`` or ``jsonl`` (any JSONL file; needs ``path``).
        split: ``train`` or ``test`` for GSM8K, ``test`` for MATH-500; part of GSM8K ids.
        path: The JSONL file to read (or a folder holding the default file name). None reads
            ``<data dir>/<name>_<split>.jsonl`` (see :func:`default_data_dir`), or the
            Hugging Face hub copy when that file is missing and ``datasets`` is installed.
        question_field: Field holding the question (required for ``jsonl``; defaults
            ``question`` for GSM8K, ``problem`` for MATH-500).
        answer_field: Field holding the gold answer (required for ``jsonl``; defaults
            ``answer``). For GSM8K it is the reference solution ending in ``#### <answer>``.
        id_field: Field holding a unique problem id (``jsonl`` only; default
            ``<file stem>-<line index>``).
        limit: Keep at most this many problems (after ``offset``).
        offset: Skip this many problems first.
        sample: Keep a random sample of this many problems from those left after ``offset``
            and ``limit``, drawn with ``random.Random(seed)``, in file order.
        seed: Seed of ``sample``.
        ids: Keep exactly these problem ids, in this order (excludes the options above).
        skip_malformed: Skip rows that are not JSON objects or lack a field, and log how many,
            instead of raising.
        report: If given, filled with ``source`` (the file or hub name read) and ``skipped``
            (malformed rows skipped among those read; reading stops once the selection is known).

    Returns:
        The selected problems. A GSM8K problem keeps its reference solution in
        ``meta["solution"]``; a MATH-500 problem keeps ``solution``, ``subject``, ``level`` and
        ``unique_id``; a JSONL problem keeps every other field of its row.

    Raises:
        DataError: Unknown name or split, missing file, malformed row, bad or empty selection.
    """
    key = name.strip().lower()
    if key not in KNOWN_DATASETS:
        near = difflib.get_close_matches(key, KNOWN_DATASETS, n=1, cutoff=0.5)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise DataError(f"unknown dataset {name!r}: known datasets are {', '.join(KNOWN_DATASETS)}{hint}")
    _check_selection(limit=limit, offset=offset, sample=sample, ids=ids)

    if key == "jsonl":
        if path is None:
            raise DataError("dataset 'jsonl' needs a file: set dataset.path=/path/to/file.jsonl")
        if not question_field or not answer_field:
            raise DataError(
                "dataset 'jsonl' needs dataset.question_field and dataset.answer_field "
                f"(the names of the question and gold-answer fields in {path})"
            )
        qf, af = question_field, answer_field
    else:
        if id_field is not None:
            raise DataError(f"dataset.id_field applies only to dataset 'jsonl', not {key!r}")
        spec = _SPECS[key]
        if path is None and split not in spec.splits:
            known = ", ".join(spec.splits)
            raise DataError(f"dataset {key!r} has no split {split!r}: known splits are {known}")
        qf = question_field or spec.question_field
        af = answer_field or spec.answer_field

    label, rows = _open_rows(key, split, path)
    stem = Path(label).stem
    counts = {"skipped": 0, "read": 0}

    def convert(index: int, row: Any) -> Problem:
        return _to_problem(key, split, stem, index, row, qf, af, id_field)

    problems = _iter_problems(label, rows, convert, skip_malformed, counts)
    with contextlib.closing(problems):
        selected = _select(problems, label=label, limit=limit, offset=offset, sample=sample, seed=seed,
                           ids=ids, counts=counts)
    if counts["skipped"]:
        logger.warning("%s: skipped %d malformed row(s)", label, counts["skipped"])
    if report is not None:
        report.update(source=label, skipped=counts["skipped"])
    return selected


def _check_selection(*, limit: int | None, offset: int, sample: int | None,
                     ids: Sequence[str] | None) -> None:
    if limit is not None and limit < 1:
        raise DataError(f"dataset.limit must be >= 1 or null (all problems), got {limit}")
    if offset < 0:
        raise DataError(f"dataset.offset must be >= 0, got {offset}")
    if sample is not None and sample < 1:
        raise DataError(f"dataset.sample must be >= 1 or null (no sampling), got {sample}")
    if ids is not None:
        if isinstance(ids, str):
            raise DataError(f"dataset.ids must be a list of problem ids, got the string {ids!r}")
        if limit is not None or offset or sample is not None:
            raise DataError("dataset.ids selects problems by id: leave dataset.limit, offset and sample "
                            "unset")
        if not ids:
            raise DataError("dataset.ids is empty: list at least one problem id, or set it to null")
        dup = next((i for i, n in _counts(ids).items() if n > 1), None)
        if dup is not None:
            raise DataError(f"dataset.ids lists {dup!r} more than once")


def _counts(items: Iterable[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        out[item] = out.get(item, 0) + 1
    return out


def _open_rows(key: str, split: str,
               path: str | os.PathLike[str] | None) -> tuple[str, Iterator[tuple[int, Any]]]:
    """Where rows come from: a label for messages and an iterator of (0-based index, row)."""
    if path is not None:
        file = Path(path).expanduser()
        if file.is_dir() and key != "jsonl":
            file = file / f"{key}_{split}.jsonl"
        if not file.is_file():
            raise DataError(f"dataset {key!r}: no file {file}; set dataset.path to an existing JSONL file")
        return str(file), _file_rows(file)
    file = default_data_dir() / f"{key}_{split}.jsonl"
    if file.is_file():
        return str(file), _file_rows(file)
    spec = _SPECS[key]
    if spec.hub_repo and _hub_available():
        logger.info("%s not found; loading %s from the Hugging Face hub", file, spec.hub_repo)
        try:
            rows = _hub_rows(spec, split)
        except Exception as e:  # offline, unknown split, ...: one clear line
            raise DataError(
                f"dataset {key!r}: no file {file}, and the hub copy {spec.hub_repo} failed to load "
                f"({type(e).__name__}: {e}); set dataset.path=/path/to/{key}_{split}.jsonl"
            ) from e
        return f"{spec.hub_repo}[{split}]", rows
    raise DataError(
        f"dataset {key!r}: no file {file}; set dataset.path=/path/to/{key}_{split}.jsonl "
        f"or {DATA_ENV}=<folder holding {key}_{split}.jsonl>"
    )


def _hub_available() -> bool:
    """Whether the Hugging Face ``datasets`` library is installed (for the hub fallback)."""
    return importlib.util.find_spec("datasets") is not None


def _file_rows(file: Path) -> Iterator[tuple[int, Any]]:
    """Stream a JSONL file: (0-based line index, parsed row or the _RowError for a bad line)."""
    with file.open(encoding="utf-8") as f:
        for index, line in enumerate(f):
            if not line.strip():
                continue
            try:
                yield index, json.loads(line)
            except json.JSONDecodeError as e:
                yield index, _RowError(f"not valid JSON ({e.msg} at column {e.colno})")


def _hub_rows(spec: _Spec, split: str) -> Iterator[tuple[int, Any]]:
    import datasets  # optional, online users only

    assert spec.hub_repo is not None
    ds = datasets.load_dataset(spec.hub_repo, spec.hub_config, split=split)
    return ((index, dict(row)) for index, row in enumerate(ds))


def _iter_problems(label: str, rows: Iterator[tuple[int, Any]], convert, skip_malformed: bool,
                   counts: dict[str, int]) -> Iterator[Problem]:
    """Turn rows into problems, raising (or counting and skipping) malformed ones."""
    seen: set[str] = set()
    try:
        for index, row in rows:
            counts["read"] += 1
            try:
                if isinstance(row, _RowError):
                    raise row
                problem = convert(index, row)
                if problem.id in seen:
                    raise _RowError(f"problem id {problem.id!r} is used by an earlier row")
            except _RowError as e:
                if not skip_malformed:
                    raise DataError(f"{label}: line {index + 1}: {e} (set dataset.skip_malformed=true "
                                    "to skip bad rows)") from None
                counts["skipped"] += 1
                continue
            seen.add(problem.id)
            yield problem
    finally:
        close = getattr(rows, "close", None)
        if close is not None:
            close()


def _field(row: Mapping[str, Any], field: str, what: str) -> Any:
    if field not in row:
        present = ", ".join(map(repr, row)) or "none"
        raise _RowError(f"no {what} field {field!r} (fields present: {present})")
    return row[field]


def _to_problem(key: str, split: str, stem: str, index: int, row: Any, qf: str, af: str,
                id_field: str | None) -> Problem:
    """One row as a Problem; raises _RowError if it is malformed."""
    if not isinstance(row, dict):
        raise _RowError(f"a JSON {type(row).__name__}, not an object")
    question = _field(row, qf, "question")
    if not isinstance(question, str) or not question.strip():
        raise _RowError(f"question field {qf!r} is empty or not text")
    answer = _field(row, af, "answer")
    if key == "gsm8k":
        if not isinstance(answer, str) or (gold := gsm8k_gold(answer)) is None:
            raise _RowError(f"answer field {af!r} has no '#### <answer>' line")
        return Problem(id=f"gsm8k-{split}-{index}", question=question, answer=gold, meta={"solution": answer})
    gold = None if answer is None else str(answer).strip()
    if key == "math500":
        meta = {k: row[k] for k in _MATH500_META if k in row}
        if "solution" in row:
            meta["solution"] = row["solution"]
        return Problem(id=f"math500-{index}", question=question, answer=gold, meta=meta)
    if id_field is not None:
        pid = _field(row, id_field, "id")
        if pid is None or str(pid) == "":
            raise _RowError(f"id field {id_field!r} is empty")
        pid = str(pid)
    else:
        pid = f"{stem}-{index}"
    meta = {k: v for k, v in row.items() if k not in (qf, af, id_field)}
    return Problem(id=pid, question=question, answer=gold, meta=meta)


def _select(problems: Iterator[Problem], *, label: str, limit: int | None, offset: int, sample: int | None,
            seed: int, ids: Sequence[str] | None, counts: dict[str, int]) -> list[Problem]:
    if ids is not None:
        wanted = set(ids)
        found: dict[str, Problem] = {}
        first_id = None
        for problem in problems:
            first_id = first_id or problem.id
            if problem.id in wanted:
                found[problem.id] = problem
                if len(found) == len(wanted):
                    break
        missing = [i for i in ids if i not in found]
        if missing:
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            shown = ", ".join(map(repr, missing[:5])) + more
            like = f" (ids look like {first_id!r})" if first_id else ""
            raise DataError(f"{label}: no problem with id {shown}{like}")
        return [found[i] for i in ids]

    stop = None if limit is None else offset + limit
    chosen = list(itertools.islice(problems, offset, stop))
    if not chosen:
        raise DataError(f"{label}: the selection is empty: {counts['read'] - counts['skipped']} problem(s) "
                        f"in the file, dataset.offset={offset}")
    if sample is not None:
        if sample > len(chosen):
            raise DataError(f"{label}: dataset.sample={sample} but only {len(chosen)} problem(s) are left "
                            f"after offset={offset} and limit={limit}")
        picked = sorted(random.Random(seed).sample(range(len(chosen)), sample))
        chosen = [chosen[i] for i in picked]
    return chosen
