"""How the step engine writes a step: the request's parameters, one batched call per piece, too
short pieces merged, a failing call retried request by request. A mixin of
:class:`reasoning.engine.StepEngine` (it reads the engine's ``config``, ``segmenter``, ``draft``
and the sampling it was built with); the round itself, its judge calls and decisions are the
engine's."""

from __future__ import annotations

import logging
from dataclasses import replace

from reasoning.judge_calls import request_seed
from reasoning.protocols import Generator
from reasoning.round_state import _State, _Step
from reasoning.types import Completion, FinishReason, GenerationParams, GenerationRequest, Phase, Segment

log = logging.getLogger("reasoning.engine")


class StepWriting:
    """The engine's step writing (see the module): :meth:`_generate_steps` and its parts."""

    def _is_final(self, phase: Phase | None, text: str) -> bool:
        """Whether a step ``text`` written in ``phase`` gives the final answer (the segmenter's view)."""
        if self._phase0 is None:
            return self.segmenter.is_final(text)
        return self.segmenter.is_final_step(text, phase)

    def _step_max(self, s: _State) -> int:
        """The token limit of ``s``'s next step (its phase's, for a phased segmenter)."""
        if self._phase0 is None:
            return self.segmenter.max_step_tokens
        return self.segmenter.max_tokens_in(s.phase)

    def _params(self, s: _State, used: int, logprobs: int | None, cap: int | None = None,
                limit: int | None = None, sampled: bool = False) -> tuple[GenerationParams | None, bool]:
        """The request's parameters (None: no room left) and whether ``cap`` set its token limit.

        ``limit``: at most this many more tokens, whatever the step and budget allow (the
        target's budget left); unlike ``cap`` it ends the step there. ``sampled``: a candidate
        draft's, at the candidates' temperature and seed (the judge's ``draft_temperature`` and
        ``draft_seed``) instead of the loop's.
        """
        c = self.config
        left = min(self._step_max(s) - used, c.token_budget - s.tokens_used - used)
        if limit is not None and limit < left:
            left = limit
        if left < 1:
            return None, False
        capped = cap is not None and cap < left
        if capped:
            left = cap
        stop = self.segmenter.stop if self._phase0 is None else self.segmenter.stop_in(s.phase)
        key = (left, logprobs, s.phase, sampled)
        params = self._params_cache.get(key)
        if params is None or params.stop != stop:
            temperature, seed = self._sampling if sampled else (c.temperature, c.seed)
            params = self._params_cache[key] = GenerationParams(
                max_tokens=left, temperature=temperature, top_p=c.top_p, seed=seed, stop=stop,
                logprobs=logprobs)
        return params, capped

    def _generate_steps(self, gen: Generator, states: list[_State], logprobs: int | None,
                        tag: str, cap: int | None = None, start: dict[int, _Step] | None = None,
                        lead: dict[int, _Step] | None = None,
                        limits: dict[int, int | None] | None = None) -> dict[int, _Step]:
        """One step for each state from ``gen``, merging too-short pieces; batched.

        ``cap``: at most this many tokens for this call (a glimpse, a piece of a draft; no
        merging then: the caller goes on). ``start``: steps already begun, continued. ``lead``:
        the first part of the step another model wrote, prefixed to the requests and counted in
        the step's token limit. ``limits``: most tokens ``gen`` may write for a state's step,
        over all its calls (the target's budget left).
        """
        got = self._generate(gen, [(s, None) for s in states], logprobs, tag, cap, start, lead, limits)
        return {k: v for (k, _), v in got.items()}

    def _generate(self, gen: Generator, slots: list[tuple[_State, int | None]], logprobs: int | None,
                  tag: str, cap: int | None = None, start: dict[int, _Step] | None = None,
                  lead: dict[int, _Step] | None = None,
                  limits: dict[int, int | None] | None = None) -> dict[tuple[int, int | None], _Step]:
        """:meth:`_generate_steps` over slots ``(state, candidate)``, by ``(id(state), candidate)``:
        candidate None is the state's one step; an int ``i`` is its ``i``-th candidate draft,
        sampled at the candidates' temperature with its own seed (request id ``.../d<call>c<i>``).
        All slots go to ``gen`` in one call (and one more per merge of too-short pieces)."""
        start = start or {}
        lead = lead or {}
        steps = {(id(s), i): start.get(id(s)) or _Step(logprobs=[] if logprobs is not None else None,
                                                       top_logprobs=[] if logprobs else None)
                 for s, i in slots}
        todo = list(slots)
        for _attempt in range(1 if cap is not None else self.config.max_merges + 1):
            reqs, owners = [], []
            for slot in todo:
                s, i = slot
                st = steps[(id(s), i)]
                led = lead.get(id(s))
                used = len(st.token_ids) + (len(led.token_ids) if led is not None else 0)
                limit = limits.get(id(s)) if limits else None
                if limit is not None:
                    limit -= len(st.token_ids)
                params, capped = self._params(s, used, logprobs, cap, limit, sampled=i is not None)
                st.capped = False
                if params is None:
                    st.finish = FinishReason.LENGTH
                    st.truncated = used >= self._step_max(s)
                    continue
                prefix = tuple(s.segments)
                if led is not None:
                    prefix += (Segment(led.text, self.draft.name, tuple(led.token_ids)),)
                if st.calls:
                    prefix += (Segment(st.text, gen.name, tuple(st.token_ids)),)
                rid = f"{s.problem.id}/{len(s.steps)}/{tag}{st.calls}"
                if i is not None:
                    rid += f"c{i}"
                if params.seed is not None and params.temperature > 0:
                    params = replace(params, seed=request_seed(params.seed, rid))
                reqs.append(GenerationRequest(rid, s.problem.id, s.messages, prefix, params))
                owners.append((slot, capped))
            if not reqs:
                break
            results = self._call(gen, reqs, [slot[0] for slot, _ in owners])
            todo = []
            for (slot, capped), c in zip(owners, results):
                if c is None:
                    continue
                s = slot[0]
                st = steps[(id(s), slot[1])]
                st.text += c.text
                st.token_ids.extend(c.token_ids)
                if st.logprobs is not None:
                    if c.logprobs is None:
                        s.error = f"{gen.name} returned no logprobs though they were asked for"
                        continue
                    st.logprobs.extend(c.logprobs)
                if st.top_logprobs is not None:  # kept only while every piece has them
                    tops = c.top_logprobs
                    st.top_logprobs = None if tops is None else st.top_logprobs + list(tops)
                st.prompt_tokens += c.prompt_tokens
                st.prefill_tokens += c.prefill_tokens
                st.seconds += c.seconds
                st.prefill_seconds = (None if st.prefill_seconds is None or c.prefill_seconds is None
                                      else st.prefill_seconds + c.prefill_seconds)
                st.calls += 1
                st.finish = c.finish_reason
                if c.finish_reason is FinishReason.LENGTH:
                    st.capped = capped
                    led = lead.get(id(s))
                    st.truncated = (len(st.token_ids) + (len(led.token_ids) if led is not None else 0)
                                    >= self._step_max(s))
                if (c.finish_reason is FinishReason.STOP and self.segmenter.too_short(st.text)
                        and not self._is_final(s.phase, st.text)):
                    if cap is not None:
                        st.capped = True  # too short to stand: the caller's next piece extends it
                    else:
                        todo.append(slot)
            if not todo:
                break
        return {k: v for k, v in steps.items() if v.calls}

    def _call(self, gen: Generator, reqs: list[GenerationRequest],
              owners: list[_State], tries_left: int | None = None) -> list[Completion | None]:
        """Call the engine on a batch; on failure, retry one by one to isolate bad requests."""
        try:
            out = gen.generate(reqs)
            if len(out) != len(reqs):
                raise RuntimeError(f"{gen.name} returned {len(out)} completions for {len(reqs)} requests")
            for c in out:
                if not isinstance(c, Completion):
                    raise RuntimeError(f"{gen.name} returned {type(c).__name__}, not a Completion")
            return list(out)
        except Exception as e:  # noqa: BLE001 - a failing engine call must not end the run
            if len(reqs) == 1:
                left = self.config.retries if tries_left is None else tries_left
                if left > 0:
                    log.warning("problem %s: %s failed (%s); retrying", owners[0].problem.id, gen.name, e)
                    return self._call(gen, reqs, owners, left - 1)
                owners[0].error = f"{gen.name}: {type(e).__name__}: {e}"
                log.warning("problem %s failed in %s: %s", owners[0].problem.id, gen.name, e)
                return [None]
            log.warning("%s failed on a batch of %d (%s); retrying one by one", gen.name, len(reqs), e)
            return [self._call(gen, [r], [o])[0] for r, o in zip(reqs, owners)]
