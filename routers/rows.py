"""The rows a router trains on: loaded, refused if from a test split, split by problem, labelled.

Rows are split into training and held-out rows **by problem** (the steps of a problem are
alike; a row split would leak), the training rows balanced by down-sampling the majority class.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from reasoning.errors import UserError
from routers.labels import balance, class_counts, labels, row_advantage

_TEST_ID = re.compile(r"(^|[-_/.])test([-_/.]|$)", re.IGNORECASE)


# -- rows ----------------------------------------------------------------------------------------
def load_rows(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[dict[str, Any]]:
    """Rows from collection folders (their ``steps.jsonl``) or ``steps.jsonl`` files.

    Raises:
        UserError: a path that does not exist, or no rows at all.
    """
    from routers.collect import STEPS, read_rows

    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    rows: list[dict[str, Any]] = []
    for p in map(Path, paths):
        file = p / STEPS if p.is_dir() else p
        if not file.is_file():
            raise UserError(f"no router data at {p}: give a folder written by recipes.collect_router_data "
                            f"(holding {STEPS}) or a {STEPS} file")
        rows += read_rows(file)
    if not rows:
        raise UserError(f"no rows in {', '.join(map(str, paths))}; collect some with "
                        "python -m recipes.collect_router_data")
    return rows


def check_train_rows(rows: Sequence[Mapping[str, Any]]) -> None:
    """Refuse rows of problems not from a train split: by the ``split`` a row carries (its
    collection config's ``dataset.split``); a row collected before rows carried it, by its id
    naming a test split (``gsm8k-test-3``).

    >>> check_train_rows([{"problem_id": "math500-3", "split": "train"}, {"problem_id": "gsm8k-train-3"}])
    >>> check_train_rows([{"problem_id": "math500-3", "split": "test"}])
    Traceback (most recent call last):
    ...
    reasoning.errors.UserError: row of problem 'math500-3' comes from split 'test'; ...
    >>> check_train_rows([{"problem_id": "gsm8k-test-3"}])
    Traceback (most recent call last):
    ...
    reasoning.errors.UserError: row of problem 'gsm8k-test-3' comes from a test split; ...
    """
    for r in rows:
        pid = str(r.get("problem_id"))
        split = r.get("split")
        if split is not None and str(split).strip().lower() != "train":
            raise UserError(f"row of problem {pid!r} comes from split {split!r}; routers train on train "
                            "splits only (collect with dataset.split=train)")
        if split is None and _TEST_ID.search(pid):
            raise UserError(f"row of problem {pid!r} comes from a test split; routers train on train splits "
                            "only (collect with dataset.split=train)")


def split_by_problem(rows: Sequence[Mapping[str, Any]], test_fraction: float = 0.25,
                     seed: int = 0) -> tuple[list[int], list[int]]:
    """Row indices of the training and held-out parts, all steps of a problem on one side.

    ``round(test_fraction * problems)`` problems, drawn with ``random.Random(seed)``, are held
    out (at least one when ``test_fraction > 0`` and there are two problems or more).

    >>> rows = [{"problem_id": p} for p in "aabbbcd"]
    >>> split_by_problem(rows, 0.5, seed=1)
    ([0, 1, 6], [2, 3, 4, 5])
    >>> split_by_problem(rows, 0.0)
    ([0, 1, 2, 3, 4, 5, 6], [])
    """
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    problems = sorted({str(r["problem_id"]) for r in rows})
    n = round(test_fraction * len(problems))
    if test_fraction > 0 and len(problems) >= 2:
        n = min(max(n, 1), len(problems) - 1)
    held = set(random.Random(seed).sample(problems, n))
    train = [i for i, r in enumerate(rows) if str(r["problem_id"]) not in held]
    test = [i for i, r in enumerate(rows) if str(r["problem_id"]) in held]
    return train, test


def prepare(rows: Sequence[Mapping[str, Any]], margin: float, average_samples: bool,
            balance_classes: bool, seed: int,
            test_fraction: float) -> tuple[list[int], list[int], list[int], list[int], list[float],
                                           list[int]]:
    """Labels, the (balanced) training indices, the held-out indices, the training labels,
    advantages, and the training indices before balancing."""
    if not rows:
        raise UserError("no rows to train on")
    check_train_rows(rows)
    ys = labels(rows, margin, average_samples)
    adv = [row_advantage(r, average_samples) for r in rows]
    train, test = split_by_problem(rows, test_fraction, seed)
    ytrain = [ys[i] for i in train]
    neg, pos = class_counts(ytrain)
    if neg == 0 or pos == 0:
        raise UserError(f"the training rows hold one class only ({pos} with advantage > margin={margin}, "
                        f"{neg} without): collect more problems or change the margin")
    unbalanced = list(train)
    if balance_classes:
        train = [train[i] for i in balance(ytrain, seed)]
    return ys, train, test, [ys[i] for i in train], adv, unbalanced
