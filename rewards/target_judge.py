"""The target model as judge (SpecReason): the target rates each drafted step with one digit.

For every drafted step the judge asks the target one short question, in the shape SpecReason
uses: the same chat the answer answers (system and user turns, unchanged), then the answer so
far *with the drafted step* as a finished assistant turn, then a user turn asking for a rating
from 0 to 9, then the opened assistant turn prefilled with ``"Score: "``. The target generates
one token greedily with its top logprobs; the judge reads the probabilities of the digit
tokens ``0``-``9`` among them.

Why new messages and not a question appended inline to the assistant's text: the rating is
asked as a user turn, which is how chat models are trained to take instructions, and the
prefill pins the answer's format, so the next token is a digit. The earlier messages are
exactly the loop's, so an engine with prefix caching serves the system and user turns (and
usually the assistant text, which the target mostly tokenises the same way) from its cache.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from reasoning.protocols import Generator, JudgeRequest
from reasoning.types import ChatMessage, GenerationParams, GenerationRequest, Segment

log = logging.getLogger(__name__)

DEFAULT_QUESTION = (
    "Rate the last step of your answer above from 0 to 9 for correctness and logical validity "
    "only: 9 if it is correct and follows from the problem and the steps before it, 0 if it is "
    "wrong or does not follow. Ignore style, wording and whether it is useful. "
    "Reply with a single digit."
)
"""The judging turn: SpecReason's criteria (factual correctness and logical validity, 0-9)."""

DEFAULT_PREFILL = "Score: "
"""The start of the target's reply, so that its next token is the digit."""

JUDGE_SOURCE = "judge"
"""``Segment.source`` of the prefill: no generator wrote it, so each encodes it as text."""

MODES = ("expectation", "greedy")

JUDGE_WITH = ("target", "draft")
"""Which of the run's models ``TargetJudge`` asks (``judge_with``)."""


def digit_probs(top: Mapping[str, float]) -> dict[int, float]:
    """The probability of each digit 0-9 among one position's top ``{token text: logprob}``.

    A token counts as a digit when its text is one digit with optional white space around it
    (``"7"``, ``" 7"``, ``"7\\n"``); the probabilities of tokens for the same digit add up.
    Digits absent from ``top`` are absent from the result. Not renormalised.

    >>> p = digit_probs({" 7": math.log(0.5), "7": math.log(0.25), "x": math.log(0.2), "10": -1.0})
    >>> sorted(p.items())
    [(7, 0.75)]
    """
    out: dict[int, float] = {}
    for text, lp in top.items():
        t = text.strip()
        if len(t) == 1 and t in "0123456789" and lp > -math.inf:
            d = int(t)
            out[d] = out.get(d, 0.0) + math.exp(lp)
    return out


def digit_score(top: Mapping[str, float], mode: str = "expectation") -> float | None:
    """A score in [0, 1] from one position's top logprobs, or None if no digit is among them.

    ``expectation``: the mean digit under the digits' probabilities renormalised to sum to
    1, divided by 9. ``greedy``: the most probable digit / 9 (on a tie, the smaller digit).

    >>> top = {"9": math.log(0.6), "0": math.log(0.2), "Yes": math.log(0.2)}
    >>> digit_score(top)  # (9 * 0.6 + 0 * 0.2) / 0.8 / 9
    0.75
    >>> digit_score(top, "greedy"), digit_score({"Yes": 0.0})
    (1.0, None)
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    probs = digit_probs(top)
    total = sum(probs.values())
    if not probs or total <= 0:
        return None
    if mode == "greedy":
        best = max(sorted(probs), key=lambda d: probs[d])  # max keeps the first: the smaller digit
        return best / 9
    value = sum(d * p for d, p in probs.items()) / total / 9
    return min(1.0, max(0.0, round(value, 12)))


@dataclass(frozen=True)
class TargetJudge:
    """Scores drafted steps by asking the target model to rate them from 0 to 9.

    All steps of a call go to ``generator`` in one batched ``generate`` call: one request per
    step, one token, temperature 0, ``logprobs=top_logprobs``. See :func:`digit_score` for how
    the top logprobs become a score. A step whose top logprobs hold no digit scores 0 (with a
    warning): the target would not rate it.

    Pair it with ``ThresholdPolicy(threshold=7 / 9)`` (about 0.778), SpecReason's default of 7.

    The same prompt can be asked of the draft, which then grades its own step (a self-verifying
    draft, ``judge=self-verify``): in Python pass the draft as ``generator``; from a config
    (``_partial_: true``, where the program binds the run's target as ``generator`` and its
    draft as ``draft``) set ``judge_with: draft``. :attr:`model` is the model asked.

    Args:
        generator: The target model (recipes bind the run's target here). Required to score
            with ``judge_with="target"``.
        mode: ``expectation`` (the expected digit / 9) or ``greedy`` (the likeliest digit / 9).
        top_logprobs: Alternatives read at the one generated position (vLLM allows at most 20
            unless its ``max_logprobs`` is raised). At least 10 so every digit can show.
        question: The user turn that asks for the rating.
        prefill: The start of the target's reply, after which it writes the digit.
        draft: The run's draft (recipes bind it here), asked with ``judge_with="draft"``.
        judge_with: ``target`` asks ``generator``, ``draft`` asks ``draft``.

    >>> from reasoning.backends.scripted import ScriptedGenerator
    >>> from reasoning.types import Completion, FinishReason, Problem
    >>> target = ScriptedGenerator("target", lambda pid, prefix: "8",
    ...                            top_logprobs_fn=lambda req: {"8": math.log(0.5), "6": math.log(0.5)})
    >>> step = Completion("2 + 2 = 4.\\n\\n", (1,), FinishReason.STOP)
    >>> req = JudgeRequest(Problem("p", "2 + 2?"), (ChatMessage("user", "2 + 2?"),), (), step, 0)
    >>> TargetJudge(target).score([req])  # (8 + 6) / 2 / 9
    [0.777777777778]
    """

    generator: Generator | None = None
    mode: str = "expectation"
    top_logprobs: int = 20
    question: str = DEFAULT_QUESTION
    prefill: str = DEFAULT_PREFILL
    draft: Generator | None = None
    judge_with: str = "target"

    def __post_init__(self) -> None:
        if self.judge_with not in JUDGE_WITH:
            raise ValueError(f"judge.judge_with must be one of {', '.join(JUDGE_WITH)}, "
                             f"got {self.judge_with!r}")
        if self.mode not in MODES:
            raise ValueError(f"judge.mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.top_logprobs < 10:
            raise ValueError(f"judge.top_logprobs must be >= 10 so that all ten digits can show, "
                             f"got {self.top_logprobs}")
        if not self.question.strip():
            raise ValueError("judge.question must be a non-empty instruction asking for a 0-9 rating")

    @property
    def model(self) -> Generator | None:
        """The model asked for the rating: ``generator`` or, with ``judge_with="draft"``, ``draft``."""
        return self.draft if self.judge_with == "draft" else self.generator

    @property
    def concurrent_calls(self) -> bool:
        """Whether the model asked takes concurrent calls (the async schedule reads it; without
        it the schedule would follow ``generator``, the target, also when the draft is asked)."""
        from reasoning.schedule import takes_concurrent_calls

        model = self.model
        return model is not None and takes_concurrent_calls(model)

    def messages(self, request: JudgeRequest) -> tuple[ChatMessage, ...]:
        """The judge call's chat: the loop's messages, the answer with the step, the question."""
        answer = "".join(s.text for s in request.prefix) + request.step.text
        return (*request.messages, ChatMessage("assistant", answer), ChatMessage("user", self.question))

    def request(self, request: JudgeRequest) -> GenerationRequest:
        """The one-token generation request that rates ``request``'s step."""
        prefix = (Segment(self.prefill, JUDGE_SOURCE, None),) if self.prefill else ()
        params = GenerationParams(max_tokens=1, temperature=0.0, logprobs=self.top_logprobs)
        return GenerationRequest(f"{request.problem.id}/{request.step_index}/judge", request.problem.id,
                                 self.messages(request), prefix, params)

    def score(self, requests: Sequence[JudgeRequest]) -> list[float]:
        if not requests:
            return []
        model = self.model
        if model is None:
            if self.judge_with == "draft":
                raise ValueError("TargetJudge(judge_with='draft') has no draft: pass draft=<the draft "
                                 "Generator> (recipes bind the run's draft when the judge config has "
                                 "_partial_: true)")
            raise ValueError("TargetJudge has no generator: pass generator=<the target Generator> "
                             "(recipes bind the run's target when the judge config has _partial_: true)")
        gen_requests = [self.request(r) for r in requests]
        completions = model.generate(gen_requests)
        if len(completions) != len(gen_requests):
            raise RuntimeError(f"{model.name} returned {len(completions)} completions "
                               f"for {len(gen_requests)} judge requests")
        out = []
        for req, c in zip(gen_requests, completions):
            if c.top_logprobs is None:
                raise ValueError(f"TargetJudge: {model.name} returned no top logprobs for "
                                 f"{req.request_id!r} though logprobs={self.top_logprobs} were asked for")
            s = digit_score(c.top_logprobs[0], self.mode) if c.top_logprobs else None
            if s is None:
                first = dict(c.top_logprobs[0]) if c.top_logprobs else {}
                best = sorted(first, key=first.get, reverse=True)[:5]
                log.warning("TargetJudge: no digit among %s's top %d tokens for %s (best: %s); scoring 0",
                            model.name, self.top_logprobs, req.request_id, best)
                s = 0.0
            out.append(s)
        return out
