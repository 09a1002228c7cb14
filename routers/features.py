"""Cheap features of a drafted step, and the text a sequence-classification router reads.

Everything here is pure (no torch, no model): the same functions turn a collected row into a
training example and a live :class:`reasoning.protocols.JudgeRequest` into a router's input,
so a router sees at evaluation exactly what it was trained on.

The lightweight router's features, in :data:`FEATURES` order:

- ``mean_logprob``: the draft's mean token log-probability over the step (0.0 for an empty step);
- ``min_logprob``: its least likely token's log-probability (0.0 for an empty step);
- ``first_token_entropy``: entropy (nats) of the draft's distribution at the step's first token,
  read from its top-``k`` logprobs renormalised to sum to 1 (0.0 when no top logprobs were
  asked for, ``k = 0``, or the step is empty);
- ``step_tokens``: tokens in the drafted step;
- ``step_index``: 0-based index of the step in the answer;
- ``problem_chars``: characters in the problem statement.

Log-probabilities are floored at :data:`LOGPROB_FLOOR`, so a token of probability 0 keeps every
feature finite.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from reasoning.types import Completion

FEATURES: tuple[str, ...] = (
    "mean_logprob", "min_logprob", "first_token_entropy", "step_tokens", "step_index", "problem_chars",
)
"""Names of the lightweight router's features, in the order of its input vector."""

LOGPROB_FLOOR = -100.0
"""Smallest log-probability a feature uses (a token of probability 0 would be ``-inf``)."""


def token_entropy(top: Mapping[str, float], k: int | None = None) -> float:
    """Entropy (nats) of one position's top alternatives ``{token: logprob}``, renormalised.

    Only the ``k`` most likely alternatives count (None: all of them), so that a position read
    with more alternatives than the router was trained on gives the same value. An empty or
    one-token distribution has entropy 0.

    >>> round(token_entropy({"a": math.log(0.25), "b": math.log(0.25)}), 6) == round(math.log(2), 6)
    True
    >>> token_entropy({"a": math.log(0.5), "b": math.log(0.3), "c": math.log(0.2)}, k=1)
    0.0
    >>> token_entropy({})
    0.0
    """
    lps = sorted((float(x) for x in top.values() if float(x) > -math.inf), reverse=True)
    if k is not None:
        lps = lps[:k]
    ps = [math.exp(x) for x in lps]
    total = sum(ps)
    if total <= 0 or len(ps) < 2:
        return 0.0
    return max(0.0, -sum(p / total * math.log(p / total) for p in ps if p > 0))


def step_features(step: Completion, step_index: int, problem_chars: int,
                  top_logprobs: int | None = None) -> dict[str, float]:
    """The lightweight router's features of one drafted step (see the module docstring).

    Args:
        step: The drafted step, with the draft's logprobs (and top logprobs when ``k > 0``).
        step_index: 0-based index of the step in the answer.
        problem_chars: Characters in the problem statement.
        top_logprobs: ``k``: the alternatives per position that count for the entropy (None: all
            that the step carries).

    Raises:
        ValueError: if the step carries no logprobs.

    >>> from reasoning.types import FinishReason
    >>> c = Completion("a b", (1, 2), FinishReason.STOP, logprobs=(-1.0, -3.0),
    ...                top_logprobs=({"a": math.log(0.5), "x": math.log(0.5)}, {"b": -3.0}))
    >>> f = step_features(c, step_index=2, problem_chars=40)
    >>> f["mean_logprob"], f["min_logprob"], round(f["first_token_entropy"], 4), f["step_tokens"]
    (-2.0, -3.0, 0.6931, 2.0)
    >>> f["step_index"], f["problem_chars"]
    (2.0, 40.0)
    """
    if step.logprobs is None:
        raise ValueError("the router's features need the draft's token logprobs; the drafted step has "
                         "none (ask the draft for them: the judge's needs_logprobs)")
    lps = [max(LOGPROB_FLOOR, float(x)) for x in step.logprobs]
    tops = step.top_logprobs
    return {
        "mean_logprob": sum(lps) / len(lps) if lps else 0.0,
        "min_logprob": min(lps) if lps else 0.0,
        "first_token_entropy": token_entropy(tops[0], top_logprobs) if tops else 0.0,
        "step_tokens": float(step.num_tokens),
        "step_index": float(step_index),
        "problem_chars": float(problem_chars),
    }


def feature_vector(features: Mapping[str, Any], names: Sequence[str] = FEATURES) -> list[float]:
    """The features named ``names``, in that order, as floats.

    Raises:
        ValueError: naming a feature that is missing or not a finite number.

    >>> feature_vector({"a": 1, "b": 2.5}, ["b", "a"])
    [2.5, 1.0]
    """
    out = []
    for n in names:
        if n not in features:
            raise ValueError(f"feature {n!r} is missing (features present: {', '.join(sorted(features))})")
        v = float(features[n])
        if not math.isfinite(v):
            raise ValueError(f"feature {n!r} is {v}; features must be finite numbers")
        out.append(v)
    return out


def row_features(row: Mapping[str, Any], names: Sequence[str] = FEATURES) -> list[float]:
    """The feature vector of one collected row (its ``features`` field, see :mod:`routers.collect`).

    >>> row_features({"features": {"mean_logprob": -0.5, "step_tokens": 7}}, ["step_tokens", "mean_logprob"])
    [7.0, -0.5]
    """
    feats = row.get("features")
    if not isinstance(feats, Mapping):
        raise ValueError(f"row {row.get('problem_id')}/{row.get('step_index')} has no 'features' mapping")
    return feature_vector(feats, names)


def router_text(question: str, history: Iterable[tuple[str, str]], draft_step: str) -> str:
    """The text a sequence-classification router reads: the problem, the answer so far with each
    step marked by the model that wrote it, and the drafted step to judge, last (so that cutting
    the text from the left, to fit a model, keeps the step).

    >>> print(router_text("2 + 2?", [("target", "Add them.\\n\\n")], "2 + 2 = 5.\\n\\n"))
    Problem: 2 + 2?
    <BLANKLINE>
    [target] Add them.
    <BLANKLINE>
    [draft step to judge] 2 + 2 = 5.
    """
    parts = [f"Problem: {question.strip()}"]
    parts += [f"[{source}] {text.strip()}" for source, text in history]
    parts.append(f"[draft step to judge] {draft_step.strip()}")
    return "\n\n".join(parts)


def row_text(row: Mapping[str, Any]) -> str:
    """:func:`router_text` of a collected row.

    >>> row_text({"question": "q", "history": [{"source": "target", "text": "a"}], "draft_step": "b"})
    'Problem: q\\n\\n[target] a\\n\\n[draft step to judge] b'
    """
    history = [(h["source"], h["text"]) for h in row.get("history", ())]
    return router_text(row["question"], history, row["draft_step"])
