"""The step engine: one round of step-level speculation for a batch of problems, and its parts.

A round, for every problem in the batch, is: route (the policy's per-problem rules, then the
policy: draft or target), propose (the draft writes the step, whole, as a glimpse first, or
piece by piece), verify (the judge scores the drafts), decide (the rules, then the policy, keep
or reject each), target (the target writes the rejected and routed steps), then the record and
the stop rules. The per-problem rules (:class:`reasoning.policies.ProblemRules`: the target's
first steps, its final step, the fallback to the target, the target-token budget) are the
policy's ``rules``; the state they need (the target's tokens so far, the judged drafts, the
answer's phase) is kept per problem here. :class:`StepEngine` makes a round public
(:meth:`StepEngine.admit`, :meth:`StepEngine.round`, :meth:`StepEngine.trace`) so that a
schedule drives it without reaching inside: :class:`reasoning.loop.StepLoop` steps a rolling
window of problems in lockstep rounds, :mod:`reasoning.schedule` each problem on its own.
This module imports neither: the layers point one way (engine, then schedules).

A failing engine or judge call is retried request by request, so that one bad problem ends
with ``stop_reason = error`` (its message recorded) instead of taking the whole batch down.

How a step is written (the requests, merged pieces, retries) is :class:`reasoning.step_writer.StepWriting`'s,
the per-problem records of a round are :mod:`reasoning.round_state`'s; the judge calls are
:mod:`reasoning.judge_calls`'s.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from reasoning.judge_calls import (  # noqa: F401 - re-exported: engine.<name> keeps working
    draft_candidates,
    judge_logprobs,
    request_seed,
    timed_score_info,
    timed_scores,
)
from reasoning.loop_config import SCHEDULES, LoopConfig  # noqa: F401 - re-exported
from reasoning.prompts import ChatPrompt
from reasoning.protocols import (
    Generator,
    Judge,
    JudgeRequest,
    Segmenter,
    StepContext,
    StepPolicy,
    option,
)
from reasoning.round_state import _Candidates, _draft_totals, _State, _Step  # noqa: F401 - loop imports _State here
from reasoning.step_writer import StepWriting
from reasoning.stops import default_stop_rules
from reasoning.types import (
    Decision,
    FinishReason,
    GenerationParams,
    Phase,
    Problem,
    Route,
    Rule,
    Segment,
    StepRecord,
    StopReason,
    Trace,
)

log = logging.getLogger(__name__)



class StepEngine(StepWriting):
    """The rounds of step-level speculative reasoning; schedules drive it (see the module).

    Args:
        draft: The small model that drafts steps.
        target: The large model that writes the steps the judge rejects.
        judge: Scores drafted steps in [0, 1].
        policy: Routes steps and decides on scores.
        segmenter: Stop strings and step rules.
        prompt: Builds the chat for a problem.
        config: Loop knobs.
        stop_rules: Override the default stop rules (see :func:`default_stop_rules`).
    """

    def __init__(self, draft: Generator, target: Generator, judge: Judge, policy: StepPolicy,
                 segmenter: Segmenter, prompt: ChatPrompt | None = None,
                 config: LoopConfig | None = None, stop_rules: Sequence | None = None) -> None:
        self.draft = draft
        self.target = target
        self.judge = judge
        self.policy = policy
        self.segmenter = segmenter
        self.prompt = prompt or ChatPrompt()
        self.config = config or LoopConfig()
        self.stop_rules = tuple(stop_rules) if stop_rules is not None else default_stop_rules(
            segmenter, self.config.max_steps, self.config.max_repeats, self.config.stop_at_answer)
        # The most any of config, judge and policy asks of the draft (None: nothing).
        asked = [x for x in (self.config.draft_logprobs, judge_logprobs(judge), judge_logprobs(policy))
                 if x is not None]
        self._draft_logprobs = max(asked) if asked else None
        self._glimpse = int(option(policy, "glimpse_tokens") or 0)
        self._chunk = int(option(policy, "chunk_tokens") or 0)
        self._keep_aborted = option(policy, "keep_aborted")
        if self._glimpse and self._chunk:
            raise ValueError(f"{type(policy).__name__}: glimpse_tokens and chunk_tokens cannot both be set")
        if self._chunk and not callable(getattr(policy, "keep_drafting", None)):
            raise ValueError(f"{type(policy).__name__} sets chunk_tokens but has no "
                             "keep_drafting(logprobs, ctx)")
        if self._keep_aborted not in ("discard", "prefix"):
            raise ValueError(f"{type(policy).__name__}.keep_aborted must be 'discard' or 'prefix', "
                             f"got {self._keep_aborted!r}")
        self._n, self._sampling = draft_candidates(judge, policy, self.config)
        """Candidate drafts per drafted step (1: one draft), and their (temperature, seed)."""
        if self._n > 1 and (self._glimpse or self._chunk):
            raise ValueError(f"{type(judge).__name__} asks for {self._n} candidate drafts per step, which "
                             f"{type(policy).__name__}'s glimpse_tokens / chunk_tokens (one draft written "
                             "piece by piece) cannot combine with: use a policy that drafts whole steps")
        self._rules = option(policy, "rules")
        phases = tuple(option(segmenter, "phases") or ())
        self._phase0: Phase | None = phases[0] if phases else None
        """The phase a problem starts in; None: a one-phase segmenter."""
        if phases:
            missing = [m for m in ("phase_after", "stop_in", "max_tokens_in", "is_final_step")
                       if not callable(getattr(segmenter, m, None))]
            if missing:
                raise ValueError(f"{type(segmenter).__name__} has phases but no {', '.join(missing)}")
        self._params_cache: dict[tuple, GenerationParams] = {}
        """The (frozen) sampling parameters of each (token limit, logprobs, phase, sampled): a request's
        parameters differ only in these (and the segmenter's stop strings, checked), and building
        them anew for every request showed in the loop's own time (``recipes.bench``)."""

    def admit(self, p: Problem) -> _State:
        """A problem's state as it enters the engine (its chat built, its clock started)."""
        return _State(p, self.prompt.messages(p), t0=time.perf_counter(), phase=self._phase0)

    # -- one round ---------------------------------------------------------------------------
    def round(self, active: list[_State]) -> None:
        """One step for every problem of ``active`` (states from :meth:`admit`), batched: route,
        propose, verify, decide, target, record, stop rules. A state whose ``stop`` is set after
        it is finished; :meth:`trace` makes its trace."""
        budget = self.config.token_budget
        rules = self._rules
        ctxs = {id(s): s.ctx(budget) for s in active}
        to_draft: list[_State] = []
        direct: list[_State] = []  # routed straight to the target
        keep: list[_State] = []  # drafted and kept by a rule (the target's budget spent)
        why: dict[int, Rule] = {}  # the rule that settled a state's step
        for s in active:  # one pass: a membership test per state made this quadratic in the batch
            ctx = ctxs[id(s)]
            settled = rules.route(ctx) if rules is not None else None
            if settled is None:
                (to_draft if self.policy.route(ctx) is Route.DRAFT else direct).append(s)
            else:
                route, why[id(s)] = settled
                (keep if route is Route.DRAFT else direct).append(s)

        cands: dict[int, _Candidates] = {}  # the candidate drafts of each state that has several
        if self._n > 1 and to_draft:  # every candidate (and the kept drafts) in one call
            drafts, decisions, scored, judge_s, told, cands = self._candidate_phase(to_draft, keep, why)
        elif keep and not (self._glimpse or self._chunk):  # the kept drafts in the same call
            drafts, decisions, scored, judge_s, told = self._draft_phase(to_draft + keep, ctxs)
        else:
            drafts, decisions, scored, judge_s, told = self._draft_phase(to_draft, ctxs)
            if keep:
                drafts.update(self._generate_steps(self.draft, keep, self._draft_logprobs, "d"))
        for s in keep:
            if id(s) in drafts:
                decisions[id(s)] = Decision.ACCEPT
        if rules is not None and rules.target_final_step:
            self._final_to_target(to_draft, drafts, decisions, why)
        drafted = [s for s in to_draft + keep if s.error is None and id(s) in drafts]
        judged = [s for s in drafted if id(s) not in decisions and id(s) not in scored]
        if judged and self.policy.needs_judge:
            scores, seconds, infos = self._judge([(s, drafts[id(s)]) for s in judged])
            for s, sc, info in zip(judged, scores, infos):
                if s.error is None:
                    scored[id(s)] = sc
                    judge_s[id(s)] = seconds
                    if info is not None:
                        told[id(s)] = info
        rejected = []
        for s in drafted:
            if s.error is not None:
                continue
            d = decisions.get(id(s))
            if d is None:
                d = decisions[id(s)] = self.policy.decide(scored.get(id(s)), ctxs[id(s)])
            if d is Decision.REJECT:
                rejected.append(s)
        to_target = [s for s in rejected + direct if s.error is None]
        lead: dict[int, _Step] = {}  # stopped drafts the target continues (keep_aborted=prefix)
        if self._keep_aborted == "prefix":
            lead = {id(s): drafts[id(s)] for s in rejected
                    if drafts[id(s)].stopped_at is not None and drafts[id(s)].token_ids}
        limits = None  # the target tokens each step may take under the budget
        if rules is not None and rules.target_token_budget is not None:
            limits = {id(s): rules.target_tokens_left(ctxs[id(s)]) for s in to_target}
        targets = self._generate_steps(self.target, to_target, None, "t", lead=lead, limits=limits)

        for s in active:
            if s.error is not None:
                s.stop = StopReason.ERROR
                continue
            key = id(s)
            dstep, tstep = drafts.get(key), targets.get(key)
            route = Route.DRAFT if key in drafts else Route.TARGET
            decision = decisions.get(key, Decision.SKIP)
            kept_step, kept_gen, kept = ((dstep, self.draft, Route.DRAFT) if decision is Decision.ACCEPT
                                         else (tstep, self.target, Route.TARGET))
            led = key in lead
            if led:  # the stopped draft's tokens start the step, the target's continue it
                s.segments.append(Segment(dstep.text, self.draft.name, tuple(dstep.token_ids)))
            text = self.segmenter.normalize(kept_step.text)
            ids = tuple(kept_step.token_ids) if text == kept_step.text else None
            s.segments.append(Segment(text, kept_gen.name, ids))
            if led:
                text = dstep.text + text
            cs = cands.get(key) if cands else None
            d_tokens, d_prompt, d_seconds, d_prefill, d_prefill_s = _draft_totals(dstep, cs)
            rec = StepRecord(
                index=len(s.steps), route=route, decision=decision, kept=kept, text=text,
                score=scored.get(key),
                draft_text=dstep.text if dstep else None,
                draft_tokens=d_tokens,
                target_text=tstep.text if tstep else None,
                target_tokens=len(tstep.token_ids) if tstep else 0,
                draft_prompt_tokens=d_prompt,
                target_prompt_tokens=tstep.prompt_tokens if tstep else 0,
                draft_seconds=d_seconds,
                judge_seconds=judge_s.get(key, 0.0),
                target_seconds=tstep.seconds if tstep else 0.0,
                finish_reason=kept_step.finish,
                truncated=kept_step.truncated,
                draft_prefill_tokens=d_prefill,
                target_prefill_tokens=tstep.prefill_tokens if tstep else 0,
                draft_prefill_seconds=d_prefill_s,
                target_prefill_seconds=tstep.prefill_seconds if tstep else None,
                draft_stopped_at=dstep.stopped_at if dstep else None,
                draft_prefix_kept=led,
                phase=s.phase,
                rule=why.get(key),
                judge_info=told.get(key),
                candidates=cs.record() if cs is not None else None,
                best_candidate=cs.best if cs is not None else None,
            )
            s.steps.append(rec)
            s.tokens_used += len(kept_step.token_ids) + (len(dstep.token_ids) if led else 0)
            s.target_steps += kept is Route.TARGET
            s.target_run = s.target_run + 1 if kept is Route.TARGET else 0
            if tstep is not None:
                s.target_tokens += len(tstep.token_ids)
            if self._phase0 is not None:
                s.phase = self.segmenter.phase_after(s.phase, text)
            if rules is not None:
                self._after_step(s, rules, judged=dstep is not None and key not in why, decision=decision)
            ctx = s.ctx(budget)
            for rule in self.stop_rules:
                reason = rule.check(s.steps, ctx)
                if reason is not None:
                    s.stop = reason
                    break

    def _candidate_phase(self, states: list[_State], keep: list[_State], why: dict[int, Rule]):
        """Several candidate drafts per step (the judge's ``draft_candidates``): each of ``states``
        gets ``N`` sampled drafts, and each of ``keep`` (drafts a rule keeps unjudged) its one
        draft, all in one call to the draft; the judge scores every candidate in one call; each
        state's best-scored candidate (the first of equals) is its draft, which the policy then
        decides on as usual. With ``target_final_step`` a candidate that gives the final answer is
        thrown away unjudged, and when all are, the step is the target's (rule
        ``target_final_step``), as a single draft's would be.

        Returns :meth:`_draft_phase`'s ``(drafts, decisions, scores, judge seconds, judge infos)``,
        by ``id(state)``, and the candidates of each state (:class:`_Candidates`). A step is
        charged the judge seconds of every candidate judged.
        """
        n = self._n
        slots = [(s, i) for s in states for i in range(n)] + [(s, None) for s in keep]
        got = self._generate(self.draft, slots, self._draft_logprobs, "d")
        drafts = {id(s): got[(id(s), None)] for s in keep if (id(s), None) in got}
        final_rule = self._rules is not None and self._rules.target_final_step
        cands: dict[int, _Candidates] = {}
        items: list[tuple[_State, int, _Step]] = []  # what the judge scores
        for s in states:
            steps = [got[(id(s), i)] for i in range(n) if (id(s), i) in got]
            if s.error is not None or not steps:
                continue
            cands[id(s)] = _Candidates(steps, [None] * len(steps), [None] * len(steps))
            items += [(s, i, st) for i, st in enumerate(steps)
                      if not (final_rule and self._ends_answer(s, st))]
        scores, seconds, infos = self._judge([(s, st) for s, _, st in items]) if items else ([], 0.0, [])
        for (s, i, _), sc, info in zip(items, scores, infos):
            cands[id(s)].scores[i], cands[id(s)].infos[i] = sc, info
        decided: dict[int, Decision] = {}
        scored: dict[int, float | None] = {}
        judge_s: dict[int, float] = {}
        told: dict[int, Any] = {}
        for s in states:
            c = cands.get(id(s))
            if c is None or s.error is not None:
                continue
            judged = [i for i, x in enumerate(c.scores) if x is not None]
            if not judged:  # every candidate gives the final answer: the target writes the step
                drafts[id(s)] = c.steps[0]  # the record's draft_text: the first
                decided[id(s)], why[id(s)] = Decision.REJECT, Rule.TARGET_FINAL_STEP
                continue
            c.best = max(judged, key=lambda i: (c.scores[i], -i))
            drafts[id(s)] = c.steps[c.best]
            scored[id(s)] = c.scores[c.best]
            judge_s[id(s)] = seconds * len(judged)
            if c.infos[c.best] is not None:
                told[id(s)] = c.infos[c.best]
        return drafts, decided, scored, judge_s, told, cands

    def _ends_answer(self, s: _State, st: _Step) -> bool:
        """Whether ``s``'s draft ``st`` turns out final: the segmenter sees the final answer in it,
        or the draft ended its answer there (what ``target_final_step`` gives to the target)."""
        return st.finish is FinishReason.EOS or self._is_final(s.phase, st.text)

    def _final_to_target(self, states: list[_State], drafts: dict[int, _Step],
                         decisions: dict[int, Decision], why: dict[int, Rule]) -> None:
        """``target_final_step``: a whole draft that turns out final (the segmenter sees the final
        answer in it, or the draft ended its answer there) is thrown away unjudged."""
        for s in states:
            st = drafts.get(id(s))
            if (st is None or s.error is not None or st.stopped_at is not None
                    or decisions.get(id(s)) is Decision.REJECT):
                continue
            if self._ends_answer(s, st):
                decisions[id(s)] = Decision.REJECT
                why[id(s)] = Rule.TARGET_FINAL_STEP

    def _after_step(self, s: _State, rules, judged: bool, decision: Decision) -> None:
        """The per-problem rules' state after a step: the judged drafts and the fallback, the
        target's budget."""
        if judged and rules.falls_back and decision is not Decision.SKIP:
            s.judged.append(decision is Decision.ACCEPT)
            if s.fallback_at is None:
                reason = rules.fallback_reason(s.judged)
                if reason is not None:
                    s.fallback_at, s.fallback_reason = len(s.steps), reason
                    log.debug("problem %s: the target writes from step %d on (%s)",
                              s.problem.id, len(s.steps), reason)
        budget = rules.target_token_budget
        if budget is not None and s.budget_spent_at is None and s.target_tokens >= budget:
            s.budget_spent_at = len(s.steps)

    def _draft_phase(self, states: list[_State], ctxs: dict[int, StepContext]):
        """The drafts of ``states``, as the policy has them written: whole, a glimpse that the
        judge rules on before the rest is written, or piece by piece until the policy stops it.

        Returns ``(drafts, decisions already taken, scores, judge seconds, judge infos)``, by
        ``id(state)``.
        """
        lp = self._draft_logprobs
        decided: dict[int, Decision] = {}
        scored: dict[int, float | None] = {}
        judge_s: dict[int, float] = {}
        told: dict[int, Any] = {}
        if self._glimpse:
            drafts = self._generate_steps(self.draft, states, lp, "d", cap=self._glimpse)
            seen = [s for s in states if s.error is None and id(s) in drafts]
            scores, seconds, infos = (self._judge([(s, drafts[id(s)]) for s in seen]) if seen
                                      else ([], 0.0, []))
            more = []
            for s, sc, info in zip(seen, scores, infos):
                if s.error is not None:
                    continue
                scored[id(s)], judge_s[id(s)] = sc, seconds
                if info is not None:
                    told[id(s)] = info
                st = drafts[id(s)]
                d = decided[id(s)] = self.policy.decide(sc, ctxs[id(s)])
                if d is Decision.REJECT:
                    st.stopped_at = len(st.token_ids) if st.capped else None
                elif st.capped:
                    more.append(s)
            drafts.update(self._generate_steps(self.draft, more, lp, "d", start=drafts))
            return drafts, decided, scored, judge_s, told
        if not self._chunk:
            return self._generate_steps(self.draft, states, lp, "d"), decided, scored, judge_s, told
        drafts: dict[int, _Step] = {}
        todo = states
        while todo:
            drafts.update(self._generate_steps(self.draft, todo, lp, "d", cap=self._chunk, start=drafts))
            nxt = []
            for s in todo:
                st = drafts.get(id(s))
                if st is None or s.error is not None or not st.capped:
                    continue
                if self.policy.keep_drafting(tuple(st.logprobs or ()), ctxs[id(s)]):
                    nxt.append(s)
                else:
                    st.stopped_at = len(st.token_ids)
                    decided[id(s)] = Decision.REJECT
            todo = nxt
        return drafts, decided, scored, judge_s, told

    def _judge(self, items: list[tuple[_State, _Step]]) -> tuple[list[float | None], float, list[Any]]:
        """The judge's scores of the drafted steps ``items`` (a problem's state and one of its
        drafts each), in one batched call: ``(scores, seconds per item, infos)``, in order.

        A failing call is retried item by item: an item whose call fails, or whose score is out of
        [0, 1], sets its problem's ``error`` (its score then None)."""
        reqs = [JudgeRequest(s.problem, s.messages, tuple(s.segments), st.completion(), len(s.steps))
                for s, st in items]
        try:
            scores, seconds, infos = timed_score_info(self.judge, reqs)
        except Exception as e:  # noqa: BLE001
            if len(items) == 1:
                items[0][0].error = f"judge: {type(e).__name__}: {e}"
                return [None], 0.0, [None]
            out: list[float | None] = []
            told: list[Any] = []
            total = 0.0
            for it in items:
                one, sec, info = self._judge([it])
                out += one
                told += info
                total += sec
            return out, total / len(items), told
        for (s, _), sc in zip(items, scores):
            if not 0.0 <= sc <= 1.0:
                s.error = f"judge returned score {sc} outside [0, 1]"
        return [float(sc) for sc in scores], seconds, infos

    def trace(self, s: _State) -> Trace:
        """The trace of a finished state."""
        steps = tuple(s.steps)
        seconds = sum(r.draft_seconds + r.judge_seconds + r.target_seconds for r in steps)
        return Trace(problem_id=s.problem.id, question=s.problem.question, gold=s.problem.answer,
                     steps=steps, stop_reason=s.stop or StopReason.ERROR,
                     text="".join(seg.text for seg in s.segments), seconds=seconds,
                     error=s.error, meta=dict(s.problem.meta),
                     latency_seconds=time.perf_counter() - s.t0,
                     fallback_at=s.fallback_at, fallback_reason=s.fallback_reason,
                     target_budget_spent_at=s.budget_spent_at)




def with_grade(trace: Trace, predicted: str | None, correct: bool | None, note: str | None) -> Trace:
    """Return ``trace`` with its grading fields set."""
    return replace(trace, predicted=predicted, correct=correct, grade_note=note)
