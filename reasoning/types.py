"""Records that cross a seam: problems, generation requests and completions, step records, traces.

Every record is a frozen dataclass with slots, so it is cheap, hashable where its fields are,
and cannot be changed after the fact by a component downstream. Records turn into plain
JSON-ready dicts with :func:`to_dict` and back with the ``from_dict`` classmethods.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


def fast_init(cls: type) -> type:
    """Give a frozen, slotted dataclass a faster ``__init__`` that does the same.

    The ``__init__`` that ``dataclass`` writes for a frozen class sets each field through
    ``object.__setattr__``; setting the slots through their descriptors is about three times
    faster, which counts for the records the step loop builds at every step (see
    ``python -m recipes.bench recipe=overhead``). Same parameters, defaults, ``__post_init__``
    and frozenness; for classes whose fields all take plain defaults (no ``default_factory``,
    ``kw_only`` or ``init=False``; anything else is refused here, at import).

    >>> @fast_init
    ... @dataclass(frozen=True, slots=True)
    ... class P:
    ...     x: int
    ...     y: str = "a"
    >>> P(1), P(2, y="b") == P(2, "b")
    (P(x=1, y='a'), True)
    """
    fields = dataclasses.fields(cls)
    params = cls.__dataclass_params__  # type: ignore[attr-defined]
    if not params.frozen or "__slots__" not in cls.__dict__:
        raise TypeError(f"fast_init: {cls.__name__} is not a frozen dataclass with slots")
    env: dict[str, Any] = {}
    args, body = [], []
    for f in fields:
        if not f.init or f.kw_only or f.default_factory is not dataclasses.MISSING:
            raise TypeError(f"fast_init: {cls.__name__}.{f.name} needs dataclass's own __init__")
        env[f"_set_{f.name}"] = getattr(cls, f.name).__set__
        if f.default is dataclasses.MISSING:
            args.append(f.name)
        else:
            env[f"_default_{f.name}"] = f.default
            args.append(f"{f.name}=_default_{f.name}")
        body.append(f"    _set_{f.name}(self, {f.name})")
    if hasattr(cls, "__post_init__"):
        body.append("    self.__post_init__()")
    exec(f"def __init__(self, {', '.join(args)}):\n" + "\n".join(body or ["    pass"]), env)
    init = env["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__annotations__ = dict(cls.__init__.__annotations__)
    cls.__init__ = init
    return cls


class Route(enum.StrEnum):
    """Who was asked to write a step."""

    DRAFT = "draft"
    """The draft wrote the step and the judge scored it."""
    TARGET = "target"
    """The policy sent the step straight to the target, without a draft."""


class Decision(enum.StrEnum):
    """What the policy did with a drafted step."""

    ACCEPT = "accept"
    """The draft step was kept."""
    REJECT = "reject"
    """The draft step was thrown away and the target wrote the step instead."""
    SKIP = "skip"
    """No draft was written (route ``target``)."""


class Phase(enum.StrEnum):
    """The part of an answer a step belongs to, for a segmenter that knows a thinking model's
    two phases (``BlankLineSegmenter(thinking=True)``); a step of a one-phase segmenter has none."""

    THINK = "think"
    """Inside the thinking, up to and including the model's ``</think>``: cut into steps."""
    ANSWER = "answer"
    """After ``</think>``: the answer, one segment."""


class Rule(enum.StrEnum):
    """A per-problem rule of the policy that routed or decided a step instead of the judge
    (see :class:`reasoning.policies.ProblemRules`)."""

    TARGET_FIRST_STEPS = "target_first_steps"
    """One of the problem's first ``target_first_steps`` steps: the target wrote it, no draft."""
    TARGET_FINAL_STEP = "target_final_step"
    """A final step (the answer phase, or a draft that turned out to give the final answer):
    the target wrote it (the draft, if one was written, was thrown away unjudged)."""
    FALLBACK = "fallback"
    """Drafting was switched off for the problem (too many rejections): the target wrote it."""
    TARGET_BUDGET = "target_budget"
    """The problem's target-token budget was spent: the draft wrote it and it was kept, unjudged."""
    DECIDED_ONCE = "decided_once"
    """``decide_once``: the problem's first judged draft was kept, so the draft writes every later
    step and each is kept, unjudged (the whole problem is the draft's)."""


class FinishReason(enum.StrEnum):
    """Why one engine call stopped generating."""

    STOP = "stop"
    """A stop string was produced (the step ended normally)."""
    EOS = "eos"
    """The model produced its end-of-sequence token: the whole answer ended."""
    LENGTH = "length"
    """The token limit of the call was reached."""


class StopReason(enum.StrEnum):
    """Why a problem's solution stopped."""

    ANSWER = "answer"
    """A final step (``\\boxed{}``, ``The answer is``, ``####``) was written."""
    EOS = "eos"
    """The model that wrote the last step ended its answer."""
    MAX_STEPS = "max_steps"
    """The problem reached the maximum number of steps."""
    TOKEN_BUDGET = "token_budget"
    """The solution used its whole token budget."""
    REPEATED = "repeated"
    """The same step was written again and again."""
    EMPTY = "empty"
    """The models wrote nothing (only white space or the end token)."""
    ERROR = "error"
    """A generator or judge raised for this problem; the reason is in ``Trace.error``."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One question to solve.

    Attributes:
        id: Unique, stable id within a dataset (e.g. ``"gsm8k-test-17"``).
        question: The problem statement shown to the models.
        answer: The gold final answer (a number or a LaTeX expression), or None if unknown.
        meta: Free-form extra fields (MATH subject and level, the full reference solution).
    """

    id: str
    question: str
    answer: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Problem:
        return cls(id=str(d["id"]), question=d["question"], answer=d.get("answer"),
                   meta=dict(d.get("meta") or {}))


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One chat turn: ``role`` is ``system``, ``user`` or ``assistant``."""

    role: str
    content: str


@dataclass(frozen=True, slots=True)
class GenerationParams:
    """Sampling parameters for one engine call.

    Attributes:
        max_tokens: Most tokens to generate in this call.
        temperature: 0 is greedy decoding.
        top_p: Nucleus sampling mass (1.0 = off).
        seed: Seed for sampling; None lets the engine choose.
        stop: Stop strings; generation ends right after the first one and keeps it in the text.
        logprobs: Number of top log-probabilities to return per generated token (None = off,
            0 = only the sampled token's log-probability).
    """

    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    logprobs: int | None = None

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


@fast_init
@dataclass(frozen=True, slots=True)
class Segment:
    """A piece of the assistant's answer so far, as one model wrote it.

    Steps travel between models as text. A generator that wrote a segment itself may reuse
    ``token_ids`` (exactly what it generated) instead of re-tokenising the text, which keeps
    step-by-step decoding identical to one long decode.

    Attributes:
        text: The segment's text, exactly as it stands in the answer.
        source: Name of the generator that wrote it (``Generator.name``).
        token_ids: The ids the source generated for this text, or None if the text was changed
            after generation (normalised) or the source has no token ids.
    """

    text: str
    source: str
    token_ids: tuple[int, ...] | None = None


@fast_init
@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """Continue the assistant's answer to ``messages`` after ``prefix``.

    Attributes:
        request_id: Unique id of this request (problem id, step index and attempt).
        problem_id: Id of the problem being answered.
        messages: The chat so far, rendered by each generator with its own template, ending
            with the user turn; the assistant turn is opened and ``prefix`` appended raw.
        prefix: The assistant's answer so far, step by step.
        params: Sampling parameters.
    """

    request_id: str
    problem_id: str
    messages: tuple[ChatMessage, ...]
    prefix: tuple[Segment, ...]
    params: GenerationParams

    @property
    def prefix_text(self) -> str:
        return "".join(s.text for s in self.prefix)


@fast_init
@dataclass(frozen=True, slots=True)
class Completion:
    """What one engine call returned for one request.

    Attributes:
        text: The generated text (the decode of ``token_ids``; ends with the stop string when
            ``finish_reason`` is ``stop``).
        token_ids: Generated token ids (the end-of-sequence token excluded).
        finish_reason: Why generation stopped.
        prompt_tokens: Tokens in the prompt the engine saw (prefill), chat template included.
        cached_prompt_tokens: Prompt tokens served from the engine's prefix cache, if known.
        logprobs: Log-probability of each generated token (one per token id), if asked for.
        top_logprobs: For each generated token, the top alternatives as ``{token text: logprob}``.
        seconds: Wall-clock seconds of the engine call this completion was part of that are
            charged to it: divided evenly over the batch, or, where the engine times its phases
            (llama.cpp), its share of each phase.
        prefill_seconds: The part of ``seconds`` spent reading the prompt (prefill), where the
            engine measures it; None where it does not (the split is then unknown, never guessed).
    """

    text: str
    token_ids: tuple[int, ...]
    finish_reason: FinishReason
    prompt_tokens: int = 0
    cached_prompt_tokens: int | None = None
    logprobs: tuple[float, ...] | None = None
    top_logprobs: tuple[Mapping[str, float], ...] | None = None
    seconds: float = 0.0
    prefill_seconds: float | None = None

    @property
    def prefill_tokens(self) -> int:
        """Prompt ids the engine evaluated for this request (not served from its prefix cache).

        >>> Completion("", (), FinishReason.STOP, 10, cached_prompt_tokens=7).prefill_tokens
        3
        >>> Completion("", (), FinishReason.STOP, 10).prefill_tokens  # no cache reported: all read
        10
        """
        return self.prompt_tokens - (self.cached_prompt_tokens or 0)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Completion:
        """The completion that :func:`to_dict` turned into ``d``.

        >>> c = Completion("Hi.", (1, 2), FinishReason.STOP, 3, logprobs=(-0.5, 0.0))
        >>> Completion.from_dict(to_dict(c)) == c
        True
        """
        lp, top = d.get("logprobs"), d.get("top_logprobs")
        return cls(text=d["text"], token_ids=tuple(int(t) for t in d["token_ids"]),
                   finish_reason=FinishReason(d["finish_reason"]),
                   prompt_tokens=int(d.get("prompt_tokens", 0)),
                   cached_prompt_tokens=d.get("cached_prompt_tokens"),
                   logprobs=None if lp is None else tuple(float(x) for x in lp),
                   top_logprobs=None if top is None else tuple(dict(m) for m in top),
                   seconds=float(d.get("seconds", 0.0)),
                   prefill_seconds=None if d.get("prefill_seconds") is None else float(d["prefill_seconds"]))


@fast_init
@dataclass(frozen=True, slots=True)
class StepRecord:
    """Everything that happened for one step of one problem.

    Attributes:
        index: 0-based step index within the problem.
        route: Whether the draft was asked (``draft``) or the target directly (``target``).
        decision: ``accept`` (draft kept), ``reject`` (target rewrote it), ``skip`` (no draft).
        kept: Which model's text went into the answer: ``draft`` or ``target``.
        text: The kept step's text, as it now stands in the answer.
        score: The judge's score of the draft step in [0, 1], or None if no judge ran.
        draft_text: The drafted step (None when route is ``target``); with several candidate
            drafts, the best-scored one (``candidates[best_candidate]``).
        draft_tokens: Tokens the draft generated for this step (0 if none); with several
            candidates, all of them (the draft's work), as are ``draft_prompt_tokens``,
            ``draft_seconds`` and the draft's prefill figures.
        target_text: The target's step (None when the draft was accepted).
        target_tokens: Tokens the target generated for this step (0 if none).
        draft_prompt_tokens: Prompt tokens of the draft's call(s), prefix-cache hits included.
        target_prompt_tokens: Prompt tokens of the target's call(s), prefix-cache hits included.
        draft_seconds: Seconds of draft generation charged to this step.
        judge_seconds: Seconds of judging charged to this step.
        target_seconds: Seconds of target generation charged to this step.
        draft_prefill_tokens: Prompt ids the draft evaluated for this step (its prompt less what
            its engine's prefix cache held): the draft's catch-up read of the target's steps.
        target_prefill_tokens: The same for the target: its catch-up read of the draft's steps.
        draft_prefill_seconds: The part of ``draft_seconds`` spent on that prefill, where the
            engine measures it (None: not measured).
        target_prefill_seconds: The same for ``target_seconds``.
        draft_stopped_at: Tokens the draft had written when the policy stopped it before the
            step's end (a glimpse judged too weak, or a draft aborted mid-step), else None.
        draft_prefix_kept: The stopped draft's text starts the kept step and the target wrote
            the rest (``keep_aborted="prefix"``): ``text`` is ``draft_text + target_text``.
        finish_reason: Finish reason of the kept text's last engine call.
        truncated: True if the kept step hit the step token limit before its stop string.
        phase: The phase of the answer the step was written in (``think`` or ``answer``), for
            a segmenter that knows a thinking model's phases; else None.
        rule: The per-problem rule that routed or decided the step instead of the policy and its
            judge (:class:`Rule`), else None.
        judge_info: What the judge said about its score of the draft, where it says more than the
            score (a judge with ``score_info``, see :data:`reasoning.protocols.OPTIONS`), as a
            JSON-ready mapping: a cascade's ``{decided_by, stage_scores}`` (which stage decided,
            each stage's score); else None. With several candidates: the best one's.
        candidates: Where the draft wrote several candidate steps (the judge's
            ``draft_candidates > 1``, ``judge=best-of-n``), each in the order written:
            ``{text, score, tokens, seconds, prefill_seconds, finish_reason}`` (``score`` None for
            one thrown away unjudged as final under ``target_final_step``; ``judge_info`` too
            where the judge gives one); else None.
        best_candidate: The index in ``candidates`` of the best-scored candidate, the step's
            ``draft_text``, kept if the policy accepts its score; None where there are no
            candidates, or none was judged (every one final: ``draft_text`` is the first).
    """

    index: int
    route: Route
    decision: Decision
    kept: Route
    text: str
    score: float | None = None
    draft_text: str | None = None
    draft_tokens: int = 0
    target_text: str | None = None
    target_tokens: int = 0
    draft_prompt_tokens: int = 0
    target_prompt_tokens: int = 0
    draft_seconds: float = 0.0
    judge_seconds: float = 0.0
    target_seconds: float = 0.0
    finish_reason: FinishReason = FinishReason.STOP
    truncated: bool = False
    draft_prefill_tokens: int = 0
    target_prefill_tokens: int = 0
    draft_prefill_seconds: float | None = None
    target_prefill_seconds: float | None = None
    draft_stopped_at: int | None = None
    draft_prefix_kept: bool = False
    phase: Phase | None = None
    rule: Rule | None = None
    judge_info: Mapping[str, Any] | None = None
    candidates: tuple[Mapping[str, Any], ...] | None = None
    best_candidate: int | None = None

    @property
    def kept_tokens(self) -> int:
        """Tokens of the kept text (a stopped draft's tokens that the target continued included;
        of several candidates, the kept one's only)."""
        if self.kept is Route.DRAFT:
            if self.candidates is not None and self.best_candidate is not None:
                return int(self.candidates[self.best_candidate]["tokens"])
            return self.draft_tokens
        return self.target_tokens + (self.draft_tokens if self.draft_prefix_kept else 0)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StepRecord:
        d = dict(d)
        d["route"] = Route(d["route"])
        d["decision"] = Decision(d["decision"])
        d["kept"] = Route(d["kept"])
        d["finish_reason"] = FinishReason(d["finish_reason"])
        if d.get("phase") is not None:
            d["phase"] = Phase(d["phase"])
        if d.get("rule") is not None:
            d["rule"] = Rule(d["rule"])
        if d.get("candidates") is not None:
            d["candidates"] = tuple(dict(c) for c in d["candidates"])
        return cls(**d)


@dataclass(frozen=True, slots=True)
class Trace:
    """One problem's whole run: its steps, why it stopped, and how it was graded.

    Attributes:
        problem_id: ``Problem.id``.
        question: The problem statement.
        gold: The gold answer, if known.
        steps: One record per step, in order.
        stop_reason: Why the solution stopped.
        text: The whole answer (the kept steps joined).
        predicted: The answer extracted from ``text`` by the grader (None if none found).
        correct: Whether ``predicted`` matches ``gold`` (None if not graded).
        grade_note: Why the problem was marked wrong, if it was (``no_answer``, ``wrong``,
            ``truncated``), else None.
        seconds: Wall-clock seconds charged to this problem (sum over its steps).
        latency_seconds: Wall-clock seconds from the problem's admission into the loop to its
            end (what a user waiting on it sees; 0 where unknown).
        error: The error message when ``stop_reason`` is ``error``.
        meta: Copy of ``Problem.meta`` for breakdowns.
        fallback_at: The index of the step from which the target wrote the rest of the problem
            because drafting was switched off (``policy.fallback_after`` or
            ``policy.fallback_rate``), else None.
        fallback_reason: Why it was switched off (e.g. ``"3 rejections in a row"``), else None.
        target_budget_spent_at: The index of the step from which the draft wrote the rest of
            the problem because the target had written its ``policy.target_token_budget``
            tokens, else None.
    """

    problem_id: str
    question: str
    gold: str | None
    steps: tuple[StepRecord, ...]
    stop_reason: StopReason
    text: str
    predicted: str | None = None
    correct: bool | None = None
    grade_note: str | None = None
    seconds: float = 0.0
    error: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)
    latency_seconds: float = 0.0
    fallback_at: int | None = None
    fallback_reason: str | None = None
    target_budget_spent_at: int | None = None

    @property
    def draft_tokens(self) -> int:
        return sum(s.draft_tokens for s in self.steps)

    @property
    def target_tokens(self) -> int:
        return sum(s.target_tokens for s in self.steps)

    @property
    def target_steps(self) -> int:
        return sum(1 for s in self.steps if s.kept is Route.TARGET)

    def to_dict(self) -> dict[str, Any]:
        d = to_dict(self)
        d["draft_tokens"] = self.draft_tokens
        d["target_tokens"] = self.target_tokens
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Trace:
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        kw["steps"] = tuple(StepRecord.from_dict(s) for s in d["steps"])
        kw["stop_reason"] = StopReason(d["stop_reason"])
        kw["meta"] = dict(d.get("meta") or {})
        return cls(**kw)


def to_dict(record: Any) -> Any:
    """Turn a record (and the records, enums and tuples inside it) into JSON-ready values.

    >>> to_dict(GenerationParams(max_tokens=8, stop=("\\n\\n",)))["stop"]
    ['\\n\\n']
    """
    if dataclasses.is_dataclass(record) and not isinstance(record, type):
        return {f.name: to_dict(getattr(record, f.name)) for f in dataclasses.fields(record)}
    if isinstance(record, enum.Enum):
        return record.value
    if isinstance(record, Mapping):
        return {str(k): to_dict(v) for k, v in record.items()}
    if isinstance(record, Sequence) and not isinstance(record, str | bytes):
        return [to_dict(v) for v in record]
    return record
