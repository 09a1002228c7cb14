"""The rows a router trains on: loaded, refused if from a test split, split by problem, labelled.

Rows are split into training and held-out rows **by problem** (the steps of a problem are
alike; a row split would leak), the training rows balanced by down-sampling the majority class.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from reasoning.errors import UserError
from reasoning.files import read_jsonl, refuse_other_config, write_atomic
from routers.labels import balance, class_counts, labels, row_advantage

_TEST_ID = re.compile(r"(^|[-_/.])test([-_/.]|$)", re.IGNORECASE)

log = logging.getLogger(__name__)

ROW_VERSION = 1
"""Version of the row format written by :class:`ShadowCollector`."""
STEPS = "steps.jsonl"
"""The rows file in a collection folder."""
SUMMARY = "summary.json"
CONFIG = "config.yaml"


# -- the collection folder ----------------------------------------------------------------------
def _check_train_split(split: str) -> str:
    """``split`` tidied, if it is a train split; else a UserError.

    >>> _check_train_split(" Train ")
    'train'
    """
    tidy = str(split).strip().lower()
    if tidy != "train":
        raise UserError(f"routers train on train splits only: the problems' split is {split!r}; "
                        "collect from a train split (dataset.split=train)")
    return tidy


def _config_split(config: str | None) -> str | None:
    """The ``dataset.split`` of a resolved config in YAML (None when it has none).

    >>> _config_split("dataset:\\n  name: math500\\n  split: test\\n"), _config_split("a: 1\\n")
    ('test', None)
    """
    if not config:
        return None
    from omegaconf import DictConfig, OmegaConf

    try:
        cfg = OmegaConf.create(config)
    except Exception:  # noqa: BLE001 - not a mapping of YAML: no split to read
        return None
    value = OmegaConf.select(cfg, "dataset.split", default=None) if isinstance(cfg, DictConfig) else None
    return None if value is None else str(value)


def check_same_config(out: str | os.PathLike, config: str, has_rows: bool | None = None) -> None:
    """Refuse to add rows to a folder whose rows were collected with another config.

    Raises:
        UserError: naming the folder and the keys that differ.
    """
    out = Path(out)
    if has_rows is None:
        has_rows = (out / STEPS).is_file() and (out / STEPS).stat().st_size > 0
    if has_rows:
        refuse_other_config(out / CONFIG, config, f"folder {out} holds router data",
                            "set out= to another folder")


def summarize_rows(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Counts and means of collected rows.

    >>> summarize_rows([{"problem_id": "a", "advantage": 0.5}, {"problem_id": "a", "advantage": -0.5}])
    {'problems': 1, 'rows': 2, 'mean_advantage': 0.0, 'target_better_share': 0.5}
    """
    n = len(rows)
    return {
        "problems": len({r["problem_id"] for r in rows}),
        "rows": n,
        "mean_advantage": sum(r["advantage"] for r in rows) / n if n else None,
        "target_better_share": sum(r["advantage"] > 0 for r in rows) / n if n else None,
    }


def read_rows(path: str | os.PathLike, repair: bool = False) -> list[dict[str, Any]]:
    """Read a ``steps.jsonl`` file, dropping a torn last line and problems written only in part.

    A problem is whole when it has ``problem_steps`` rows. With ``repair``, the file is rewritten
    without what was dropped, so that appending resumes cleanly.

    Raises:
        UserError: a line other than the last is not a JSON object (the file is not router data).
    """
    p = Path(path)
    try:
        got = read_jsonl(p, _row, "a router data row")
    except ValueError as e:
        raise UserError(str(e)) from None
    rows, dropped = got.records, got.torn
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["problem_id"]] = counts.get(r["problem_id"], 0) + 1
    partial = {pid for pid, c in counts.items()
               if any(r["problem_id"] == pid and r.get("problem_steps", c) != c for r in rows)}
    if partial:
        log.warning("dropping %d problem(s) written only in part in %s", len(partial), p)
        rows = [r for r in rows if r["problem_id"] not in partial]
        dropped = True
    if repair and dropped:
        write_atomic(p, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return rows


def _row(obj: Any) -> dict[str, Any]:
    """A line's JSON value, if it is a row (an object with a ``problem_id``); else a ValueError."""
    if not isinstance(obj, dict) or "problem_id" not in obj:
        raise ValueError("not a row object")
    return obj


# -- rows ----------------------------------------------------------------------------------------
def load_rows(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[dict[str, Any]]:
    """Rows from collection folders (their ``steps.jsonl``) or ``steps.jsonl`` files.

    Raises:
        UserError: a path that does not exist, a problem in two of them (its rows would be
            counted twice, and a split grouped by problem would not keep it on one side), or no
            rows at all.
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    rows: list[dict[str, Any]] = []
    owner: dict[str, Path] = {}
    for p in map(Path, paths):
        file = p / STEPS if p.is_dir() else p
        if not file.is_file():
            raise UserError(f"no router data at {p}: give a folder written by recipes.collect_router_data "
                            f"(holding {STEPS}) or a {STEPS} file")
        got = read_rows(file)
        for pid in dict.fromkeys(r["problem_id"] for r in got):
            if pid in owner:
                raise UserError(f"problem {pid!r} has rows in both {owner[pid]} and {file}; give each "
                                "problem's rows once")
            owner[pid] = file
        rows += got
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
