"""A step's reward from where it leads: continue the answer from it and grade the end.

A process reward model or the target as judge says how good a step *looks*; on the small
models here neither ranks two steps well (held-out Spearman 0.05 for the target's 0-9 rating).
What a router must predict is whether the target's step would lead somewhere the draft's does
not. :class:`OutcomeJudge` measures exactly that, against the gold answer: from the prefix plus
the step, a model continues greedily (or ``samples`` times at ``temperature``, seeded) to the
end of the answer, the end is graded with :func:`reasoning.grading.grade`, and the score is the
share of continuations that reach the gold answer. As the reward of router collection
(``python -m recipes.collect_router_data judge@reward=outcome``) each row's draft step and
target step get their outcome from the same prefix, so ``advantage`` is +1 where only the
target's step leads to the right answer, -1 where only the draft's does, 0 where both or
neither do.

It needs the gold answer (training data only) and costs a whole continuation per step scored:
``every`` scores only some steps (every k-th), which the collector writes rows for.

``chain`` saves the collection about a third of its continuations, for the same labels. With greedy
continuations by the draft (``continue_with: draft``) and greedy draft steps, the draft's
continuation from (prefix + target's step ``i``) first writes the draft's next step ``i + 1``,
which is exactly what the collector drafts from that prefix, and then goes on as the
continuation of that step. So the target step's outcome *is* the next row's draft outcome, and
the collector takes it from there instead of generating it again; only the last step's target
side (there is no next draft) is continued. The two differ only where the engine tokenizes a
re-read step otherwise than it wrote it, and by the next draft step's tokens of extra room (the
continuation after the next draft step has ``max_tokens`` of its own): on 341 pairs of
consecutive rows collected unchained (``routers/data/gsm8k-train-outcome``) the two scores
agreed on 334 (98%). By the same argument a drafted step with the target's own text (a
quarter of the steps there) leads where the next draft does, and takes its score too
(``draft_chained`` rows): on the rows collected before that, 103 of 103 such steps scored as
the next draft did.

>>> from reasoning.backends.scripted import ScriptedGenerator
>>> from reasoning.types import Completion, FinishReason, Problem, Segment
>>> gen = ScriptedGenerator("target", {"p": "Two plus two.\\n\\nThe answer is \\\\boxed{4}."})
>>> judge = OutcomeJudge(gen, max_tokens=32)
>>> step = Completion("Two plus two.\\n\\n", (), FinishReason.STOP)
>>> judge.score([JudgeRequest(Problem("p", "2+2?", "4"), (), (), step, 0)])
[1.0]
>>> judge.score([JudgeRequest(Problem("p", "2+2?", "5"), (), (), step, 0)])
[0.0]
"""

from __future__ import annotations

from collections.abc import Sequence

from reasoning.protocols import Generator, JudgeRequest
from reasoning.types import FinishReason, GenerationParams, GenerationRequest, Segment


class OutcomeJudge:
    """Scores a step by the share of continuations from it that reach the gold answer.

    Args:
        generator: The model that continues the answer (bound to the run's target by a
            ``_partial_: true`` config; ``continue_with: draft`` in the config takes the draft).
        max_tokens: Most tokens of one continuation (the rest of the answer's budget).
        samples: Continuations per step: 1 greedy (``temperature`` 0), or several sampled.
        temperature: Sampling temperature of the continuations (0: greedy; then ``samples``
            must be 1).
        seed: Seed of sampled continuations (continuation ``i`` of a step uses ``seed + i``).
        every: Score only steps whose index is a multiple of this (1: every step); the router
            collector writes rows for those steps only (see :meth:`scored`), and the others get
            0.5 (no evidence either way) if asked.
        draft: The run's draft (bound by the program), used with ``continue_with: draft``.
        continue_with: ``target`` (``generator``) or ``draft`` continues the answer.
        chain: Router collection only: a target step's outcome is the next row's draft outcome
            (see the module docstring), so the collector does not continue the target's steps
            but the last. Needs ``continue_with: draft``, one greedy continuation per step and
            ``every`` 1; the collector also checks that its draft steps are greedy.
    """

    needs_logprobs = False

    def __init__(self, generator: Generator | None = None, max_tokens: int = 512, samples: int = 1,
                 temperature: float = 0.0, seed: int = 0, every: int = 1, draft: Generator | None = None,
                 continue_with: str = "target", chain: bool = False) -> None:
        if continue_with not in ("target", "draft"):
            raise ValueError(f"continue_with must be 'target' or 'draft', got {continue_with!r}")
        gen = generator if continue_with == "target" else draft
        if gen is None:
            raise ValueError(f"OutcomeJudge needs a model to continue with ({continue_with} is None)")
        if max_tokens < 1 or samples < 1 or every < 1:
            raise ValueError(f"max_tokens, samples and every must be >= 1, got {max_tokens}, {samples}, "
                             f"{every}")
        if temperature < 0 or (temperature == 0 and samples > 1):
            raise ValueError("samples > 1 needs temperature > 0 (greedy continuations are all the same)")
        if chain and (continue_with != "draft" or samples != 1 or temperature != 0 or every != 1):
            raise ValueError("chain needs continue_with=draft, samples=1, temperature=0 and every=1 "
                             "(a target step's outcome is the next draft step's only when the draft "
                             f"continues greedily from every step), got continue_with={continue_with!r}, "
                             f"samples={samples}, temperature={temperature}, every={every}")
        self.generator = gen
        self.chain = chain
        self.max_tokens = max_tokens
        self.samples = samples
        self.temperature = temperature
        self.seed = seed
        self.every = every
        self.continuations = 0
        """Continuations generated so far (the judge's cost in engine requests)."""

    def scored(self, step_index: int) -> bool:
        """Whether a step at this index is scored (see ``every``)."""
        return step_index % self.every == 0

    def score(self, requests: Sequence[JudgeRequest]) -> list[float]:
        """Each step's share of continuations that reach its problem's gold answer; a step not
        scored (``every``) gets 0.5, no evidence either way.

        Raises:
            ValueError: a problem without a gold answer.
        """
        from reasoning.grading import grade

        reqs, owners = [], []
        for i, r in enumerate(requests):
            if r.problem.answer is None:
                raise ValueError(f"OutcomeJudge needs the gold answer; problem {r.problem.id!r} has none")
            if not self.scored(r.step_index):
                continue
            prefix = (*r.prefix, Segment(r.step.text, "outcome-judged-step"))
            for k in range(self.samples):
                params = GenerationParams(max_tokens=self.max_tokens, temperature=self.temperature,
                                          seed=self.seed + k if self.temperature > 0 else None)
                reqs.append(GenerationRequest(f"{r.problem.id}/{r.step_index}/outcome{i}.{k}", r.problem.id,
                                              r.messages, prefix, params))
                owners.append(i)
        hits = [0] * len(requests)
        out = self.generator.generate(reqs) if reqs else []
        self.continuations += len(reqs)
        for (i, req), c in zip(zip(owners, reqs), out):
            r = requests[i]
            text = req.prefix_text + c.text
            g = grade(text, r.problem.answer, finished=c.finish_reason is not FinishReason.LENGTH)
            hits[i] += bool(g.correct)
        return [hits[i] / self.samples if self.scored(r.step_index) else 0.5
                for i, r in enumerate(requests)]
