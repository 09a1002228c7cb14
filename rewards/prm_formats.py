"""PRM formats: for each process reward model family, the exact input it was trained on and where
and how its per-token outputs are read. No model runs here, and nothing heavy is imported.

Each family is one small :class:`PRMFormat` registered by name (:func:`register`); the formats
and readings follow each family's own reference code (see each class). A format answers two
questions: :meth:`PRMFormat.build`, the token ids for a problem and its steps and the positions
whose outputs score the steps, and :meth:`PRMFormat.score`, one step's score in [0, 1] from the
model's output at its position. What the model gives per token (:attr:`PRMFormat.output`) tells
an engine (:mod:`rewards.prm_engines`) which head to run: ``labels`` (2 label logits, label 1 =
good), ``value`` (one value) or ``candidates`` (a causal LM's logits, read at a good and a bad
token, :meth:`PRMFormat.candidates`).

Steps reach a format already stripped of surrounding white space (the loop's steps end with
their ``"\\n\\n"`` stop string; the reference formats put their own separator there). The marker
tokens ``<extra_0>`` and ``ки`` are removed from the problem and the steps of the families that
read at them, so text cannot shift the positions read. A step holding line breaks stays one step
(Skywork's reference splits a response at every ``"\\n"`` and TRL's datasets hold one line a step;
here the score is read after the segment's end).

Adding a family: subclass :class:`LabelFormat`, :class:`ValueFormat` or
:class:`CandidateFormat`, set ``name``, write ``build`` (and, for candidates, ``candidates``),
and decorate it with :func:`register`.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from typing import Any, ClassVar

OUTPUTS = ("labels", "value", "candidates")
"""What a PRM gives per token: 2 label logits, one value, or a causal LM's vocabulary logits."""

QWEN_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
"""The system turn of the Qwen2.5-Math-PRM card's example."""

QWEN_STEP_TOKEN = "<extra_0>"
"""Qwen2.5-Math-PRM's step separator (a special token); scores are read at it."""

SKYWORK_STEP_TOKEN = "\n"
"""Skywork-o1-Open-PRM's ``step_token``; scores are read at the one after each step."""

SHEPHERD_STEP_TAG = "ки"
"""Math-Shepherd's step tag; scores are read at it."""

SHEPHERD_CANDIDATES = "+ -"
"""Math-Shepherd's good and bad tokens, encoded together (``encode("+ -")``)."""

RLHFLOW_GOOD, RLHFLOW_BAD = "+", "-"
"""RLHFlow's assistant answers for a good and a bad step."""

TRL_SEPARATOR = "\n"
"""TRL ``PRMConfig.step_separator``'s default."""


# -- the format protocol and its three readings -------------------------------------------------
class PRMFormat:
    """One PRM family's input format and score reading (stateless; one instance per family)."""

    name: ClassVar[str] = ""
    """The family's name, as ``judge.family`` gives it."""
    output: ClassVar[str] = ""
    """What the model gives per token, one of :data:`OUTPUTS`."""

    def build(self, tokenizer: Any, problem: str, steps: list[str]) -> tuple[list[int], list[int]]:
        """``(input_ids, positions)`` for ``problem`` and ``steps`` (at least one step):
        ``positions[i]`` is the index in ``input_ids`` whose output scores ``steps[i]``."""
        raise NotImplementedError

    def candidates(self, tokenizer: Any) -> tuple[int, int] | None:
        """The (good, bad) token ids a causal-LM family is read at; None for the others."""
        return None

    def score(self, row: list[float], candidates: Sequence[int] | None = None) -> float:
        """One step's score in [0, 1] from the model's output ``row`` at the step's position."""
        raise NotImplementedError

    def inputs(self, tokenizer: Any, problem: str, steps: Sequence[str]) -> tuple[list[int], list[int]]:
        """:meth:`build`, after checking that there is a step."""
        if not steps:
            raise ValueError("build_inputs needs at least one step")
        return self.build(tokenizer, problem, list(steps))

    def read(self, outputs: Any, positions: Sequence[int],
             candidates: Sequence[int] | None = None) -> list[float]:
        """:meth:`score` at each of ``positions`` of the per-token ``outputs``."""
        return [self.score(_row(outputs[p]), candidates) for p in positions]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, output={self.output!r})"


class LabelFormat(PRMFormat):
    """A token classifier with 2 labels: a step's score is ``softmax(logits)[1]``."""

    output = "labels"

    def score(self, row: list[float], candidates: Sequence[int] | None = None) -> float:
        if len(row) != 2:
            raise ValueError(f"{self.name}: expected 2 label logits per token, got {len(row)}")
        return _softmax_pick(row[0], row[1], pick_first=False)


class ValueFormat(PRMFormat):
    """A value head, one value per token: a step's score is ``sigmoid(value)``."""

    output = "value"

    def score(self, row: list[float], candidates: Sequence[int] | None = None) -> float:
        if len(row) != 1:
            raise ValueError(f"{self.name}: expected one value per token, got {len(row)}")
        v = row[0]
        return 1.0 / (1.0 + math.exp(-v)) if v >= 0 else math.exp(v) / (1.0 + math.exp(v))


class CandidateFormat(PRMFormat):
    """A causal LM read at a good and a bad token: a step's score is
    ``softmax([logit(good), logit(bad)])[0]``. The row is the vocabulary's logits (picked with
    ``candidates``) or already ``[good, bad]`` (without)."""

    output = "candidates"

    def candidates(self, tokenizer: Any) -> tuple[int, int]:
        raise NotImplementedError

    def score(self, row: list[float], candidates: Sequence[int] | None = None) -> float:
        if candidates is not None:
            row = [row[candidates[0]], row[candidates[1]]]
        if len(row) != 2:
            raise ValueError(f"{self.name}: expected [good, bad] logits or candidates=, "
                             f"got {len(row)} values")
        return _softmax_pick(row[0], row[1], pick_first=True)


# -- the registry -------------------------------------------------------------------------------
_FORMATS: dict[str, PRMFormat] = {}
"""Family name -> its format, in registration order (filled by :func:`register`)."""


def register(cls: type[PRMFormat]) -> type[PRMFormat]:
    """Class decorator: register a :class:`PRMFormat` subclass under its ``name``.

    Raises:
        ValueError: no name, an ``output`` not in :data:`OUTPUTS`, or a name already taken.
    """
    if not cls.name:
        raise ValueError(f"PRM format {cls.__name__} has no name")
    if cls.output not in OUTPUTS:
        raise ValueError(f"PRM format {cls.name!r}: output must be one of {', '.join(OUTPUTS)}, "
                         f"got {cls.output!r}")
    if cls.name in _FORMATS:
        raise ValueError(f"PRM family {cls.name!r} is already registered "
                         f"({type(_FORMATS[cls.name]).__name__})")
    _FORMATS[cls.name] = cls()
    return cls


def families() -> tuple[str, ...]:
    """The registered family names, in registration order."""
    return tuple(_FORMATS)


def get_format(family: str) -> PRMFormat:
    """The registered format of ``family``, else a ValueError naming the known ones.

    >>> get_format("trl").output
    'labels'
    """
    fmt = _FORMATS.get(family)
    if fmt is None:
        known = families()
        near = difflib.get_close_matches(str(family), known, n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise ValueError(f"judge.family must be one of {', '.join(known)}, got {family!r}{hint}")
    return fmt


def check_family(family: str) -> str:
    """``family`` if it is known, else a ValueError naming the known ones.

    >>> check_family("trl")
    'trl'
    """
    get_format(family)
    return family


# -- the families -------------------------------------------------------------------------------
@register
class QwenMathPRM(LabelFormat):
    """``qwen2.5-math-prm`` (Qwen/Qwen2.5-Math-PRM-7B and -72B model cards, "Quick Start"): chat
    template with system :data:`QWEN_SYSTEM`, user = the problem, assistant = the steps joined with
    ``<extra_0>`` and ending with ``<extra_0>``; rendered with ``add_generation_prompt=False`` and
    encoded. The model gives 2 logits per token; a step's score is ``softmax(logits)[1]`` at its
    ``<extra_0>`` (the card's ``make_step_rewards``)."""

    name = "qwen2.5-math-prm"

    def build(self, tokenizer: Any, problem: str, steps: list[str]) -> tuple[list[int], list[int]]:
        sep = QWEN_STEP_TOKEN
        sep_id = _one_token(tokenizer, sep, self.name)
        problem = problem.replace(sep, "")
        steps = [s.replace(sep, "") for s in steps]
        messages = [{"role": "system", "content": QWEN_SYSTEM}, {"role": "user", "content": problem},
                    {"role": "assistant", "content": sep.join(steps) + sep}]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
        ids = _encode(tokenizer, text)
        return ids, _found(ids, sep_id, len(steps), self.name, sep)


@register
class SkyworkPRM(ValueFormat):
    """``skywork`` (SkyworkAI/skywork-o1-prm-inference, ``model_utils/io_utils.py``
    ``prepare_input`` and ``derive_step_rewards``, and the Skywork-o1-Open-PRM model card,
    ``step_token="\\n"``): ids = ``encode(bos_token + problem + "\\n")``, then for each step
    ``encode(step)`` followed by the id of ``"\\n"``; a value head (``v_head.summary``: one linear
    layer on the last hidden state) gives one value per token; a step's score is
    ``sigmoid(value)`` at its ``"\\n"`` (the card's ``return_probs=True``)."""

    name = "skywork"

    def build(self, tokenizer: Any, problem: str, steps: list[str]) -> tuple[list[int], list[int]]:
        bos = tokenizer.bos_token or ""
        nl_id = _encode(tokenizer, SKYWORK_STEP_TOKEN)[-1]
        ids = _encode(tokenizer, bos + problem + "\n")
        positions = []
        for s in steps:
            ids += (_encode(tokenizer, s) if s else []) + [nl_id]
            positions.append(len(ids) - 1)
        return ids, positions


@register
class MathShepherdPRM(CandidateFormat):
    """``math-shepherd`` (peiyi9979/math-shepherd-mistral-7b-prm model card; huggingface/search-
    and-learn ``MathShepherd``): text ``f"{problem} {output}"`` with ``output`` = each step followed
    by ``" ки"``, the steps joined with ``"\\n"``, encoded with the tokenizer's special tokens
    (BOS); a causal LM; a step's score is ``softmax([logit(good), logit(bad)])[0]`` at its ``ки``,
    where ``good, bad = encode("+ -")`` without special tokens (the card's ``encode("+ -")[1:]``
    with the BOS dropped), which must be two ids."""

    name = "math-shepherd"

    def build(self, tokenizer: Any, problem: str, steps: list[str]) -> tuple[list[int], list[int]]:
        tag = SHEPHERD_STEP_TAG
        tag_id = _encode(tokenizer, tag)[-1]
        problem = problem.replace(tag, "")
        output = "\n".join(f"{s.replace(tag, '')} {tag}" for s in steps)
        ids = _encode(tokenizer, f"{problem} {output}", special=True)
        return ids, _found(ids, tag_id, len(steps), self.name, tag)

    def candidates(self, tokenizer: Any) -> tuple[int, int]:
        ids = _encode(tokenizer, SHEPHERD_CANDIDATES)
        if len(ids) != 2:
            raise ValueError(f"math-shepherd needs {SHEPHERD_CANDIDATES!r} to encode to 2 ids (good, bad), "
                             f"got {ids}; use the PRM's own tokenizer")
        return ids[0], ids[1]


@register
class RLHFlowPRM(CandidateFormat):
    """``rlhflow`` (RLHFlow/Llama3.1-8B-PRM-Deepseek-Data, via RLHFlow/RLHF-Reward-Modeling
    ``math-rm/prm_evaluate.py``, as huggingface/search-and-learn ``RLHFFlow`` copies it): a chat
    with one user turn per step (the first is ``problem + " " + step``) each answered by an
    assistant turn ``"+"``; a causal LM; a step's score is
    ``softmax([logit("+"), logit("-")])[0]`` at the position just before that step's assistant
    ``"+"`` (the card's ``logits[:, -3]`` for the last step), with ``"+"``/``"-"`` =
    ``encode(...)[-1]``."""

    name = "rlhflow"

    def build(self, tokenizer: Any, problem: str, steps: list[str]) -> tuple[list[int], list[int]]:
        good = _encode(tokenizer, RLHFLOW_GOOD)[-1]
        conversation: list[dict[str, str]] = []
        for k, s in enumerate(steps):
            conversation.append({"role": "user", "content": f"{problem} {s}" if k == 0 else s})
            conversation.append({"role": "assistant", "content": RLHFLOW_GOOD})
        ids = _encode(tokenizer, tokenizer.apply_chat_template(conversation, tokenize=False))
        positions = []
        for k in range(len(steps)):
            head = tokenizer.apply_chat_template(conversation[:2 * k + 1], tokenize=False,
                                                 add_generation_prompt=True)
            head_ids = _encode(tokenizer, head)
            n = len(head_ids)
            if ids[:n] != head_ids or n >= len(ids) or ids[n] != good:
                raise ValueError(f"rlhflow: the tokenizer's chat template does not render turn {k}'s "
                                 f"assistant {RLHFLOW_GOOD!r} right after its generation prompt, so there "
                                 "is no position to read; use the PRM's own tokenizer and template")
            positions.append(n - 1)  # where the "+" is predicted
        return ids, positions

    def candidates(self, tokenizer: Any) -> tuple[int, int]:
        return _encode(tokenizer, RLHFLOW_GOOD)[-1], _encode(tokenizer, RLHFLOW_BAD)[-1]


@register
class TRLPRM(LabelFormat):
    """``trl`` (huggingface/trl ``PRMTrainer.tokenize_row``, ``PRMConfig.step_separator="\\n"``):
    ids = ``[bos_token_id]`` (if the tokenizer has one) + ``encode(problem)`` + for each step
    ``encode(step) + encode("\\n")``, all without special tokens; a token-classification model
    (``AutoModelForTokenClassification``, 2 labels); a step's score is ``softmax(logits)[1]`` at
    the last token of its separator, the token TRL trains the step's label on."""

    name = "trl"

    def build(self, tokenizer: Any, problem: str, steps: list[str]) -> tuple[list[int], list[int]]:
        sep_ids = _encode(tokenizer, TRL_SEPARATOR)
        if not sep_ids:
            raise ValueError(f"trl: the step separator {TRL_SEPARATOR!r} encodes to no ids")
        bos_id = tokenizer.bos_token_id
        ids = ([bos_id] if bos_id is not None else []) + _encode(tokenizer, problem)
        positions = []
        for s in steps:
            ids += _encode(tokenizer, s) + sep_ids
            positions.append(len(ids) - 1)
        return ids, positions


FAMILIES = families()
"""The PRM families built in (:func:`families` also lists ones registered later)."""


# -- by family name -----------------------------------------------------------------------------
def candidate_ids(family: str, tokenizer: Any) -> tuple[int, int]:
    """The (good, bad) token ids a causal-LM PRM family is read at (see its class), else a
    ValueError naming the families that are."""
    fmt = get_format(family)
    if fmt.output != "candidates":
        lm = [f.name for f in _FORMATS.values() if f.output == "candidates"]
        raise ValueError(f"PRM family {family!r} is not read at candidate tokens (only {', '.join(lm)} are)")
    ids = fmt.candidates(tokenizer)
    assert ids is not None
    return ids


def build_inputs(family: str, tokenizer: Any, problem: str,
                 steps: Sequence[str]) -> tuple[list[int], list[int]]:
    """The token ids a PRM of ``family`` reads for ``problem`` and ``steps``, and where it reads them.

    Args:
        family: A registered family (:func:`families`).
        tokenizer: The PRM's tokenizer (transformers).
        problem: The problem statement.
        steps: The steps so far, in order (already stripped of surrounding white space).

    Returns:
        ``(input_ids, positions)``: ``positions[i]`` is the index in ``input_ids`` whose output
        scores ``steps[i]`` (see each family's class).

    Raises:
        ValueError: unknown family, no steps, or a tokenizer that does not encode the family's
            markers the way the format needs.
    """
    return get_format(family).inputs(tokenizer, problem, steps)


def read_scores(family: str, outputs: Any, positions: Sequence[int],
                candidates: Sequence[int] | None = None) -> list[float]:
    """Per-step scores in [0, 1] from a PRM's per-token outputs at ``positions``.

    Args:
        family: A registered family (:func:`families`).
        outputs: Per-token outputs, indexable by position (a ``[tokens, ...]`` tensor or nested
            lists): 2 label logits (``qwen2.5-math-prm``, ``trl``); one value (``skywork``);
            vocabulary logits (``math-shepherd``, ``rlhflow``; with ``candidates``), or already
            the two candidate logits ``[good, bad]`` (without ``candidates``).
        positions: Where to read, one position per step (from :func:`build_inputs`).
        candidates: ``(good, bad)`` token ids to pick from vocabulary logits
            (:func:`candidate_ids`); None when ``outputs`` already holds ``[good, bad]``.

    >>> read_scores("trl", [[0.0, 0.0], [1.0, 1.0 + math.log(3)]], [0, 1])
    [0.5, 0.75]
    >>> read_scores("skywork", [[0.0], [5.0]], [0])
    [0.5]
    >>> read_scores("math-shepherd", [[9.0, math.log(3), 0.0]], [0], candidates=(1, 2))
    [0.75]
    """
    return get_format(family).read(outputs, positions, candidates)


# -- helpers ------------------------------------------------------------------------------------
def _encode(tokenizer: Any, text: str, special: bool = False) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=special))


def _one_token(tokenizer: Any, text: str, family: str) -> int:
    ids = _encode(tokenizer, text)
    if len(ids) != 1:
        raise ValueError(f"PRM family {family!r} needs {text!r} to be one token of the tokenizer, "
                         f"but it encodes to {len(ids)} ids {ids}; use the PRM's own tokenizer")
    return ids[0]


def _found(ids: Sequence[int], marker_id: int, n_steps: int, family: str, marker: str) -> list[int]:
    positions = [i for i, t in enumerate(ids) if t == marker_id]
    if len(positions) != n_steps:
        raise ValueError(f"{family}: found {len(positions)} {marker!r} tokens (id {marker_id}) for {n_steps} "
                         "steps; the tokenizer splits the marker differently: use the PRM's own tokenizer")
    return positions


def _row(x: Any) -> list[float]:
    """One position's output as a list of floats (a scalar becomes a 1-list)."""
    if hasattr(x, "tolist"):
        x = x.tolist()
    if isinstance(x, int | float):
        return [float(x)]
    return [float(v) for v in x]


def _softmax_pick(a: float, b: float, pick_first: bool) -> float:
    """``softmax([a, b])[0 if pick_first else 1]``, computed stably."""
    hi = max(a, b)
    ea, eb = math.exp(a - hi), math.exp(b - hi)
    return (ea if pick_first else eb) / (ea + eb)
