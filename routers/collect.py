"""Router training data from the shadow policy: at every step, both models write the next step.

At every step of a problem, the draft and the target each write the next step from the same
prefix, a reward judge scores both, and the answer goes on with the **target's** step. The
rounds are the step loop's (:class:`reasoning.loop.StepLoop` under :class:`ShadowPolicy`), so
the steps are cut exactly as at evaluation time and batched across problems: per round one
draft call and one target call. When a problem finishes, one reward call scores all its steps,
each step's draft and target side by side, so the two steps of a row are scored under the
same batch and cache conditions (an engine's numbers depend on batch shapes: scored in two
calls, the label would mix that noise into the difference of the steps).

Why continue with the target's step: the answer then does not depend on the draft or on the
reward (it is the target-only answer, step for step), so every row's prefix is one a good
solver writes, a draft's mistake never derails the steps after it (whose labels would then be
about recovering from an error, not about the step), and data collected once serves any reward
rescoring or any draft of the same target. The price: a router meets, at evaluation, prefixes
that mix both models' steps, which it saw none of in training.

One JSONL row per step, all rows of a problem written (flushed, fsynced) when it finishes:

- ``version``: row format (:data:`ROW_VERSION`);
- ``problem_id``, ``step_index``, ``question``, ``problem_chars`` (characters of the question);
- ``history``: the answer before the step, ``[{"source": <model name>, "text": ...}, ...]``;
- ``draft_step``, ``target_step``: the two steps written from that prefix (as generated);
- ``draft_score``, ``target_score``: the reward's scores, in [0, 1];
- ``target_chained``: the target's score is the next row's draft score (``reward.chain``,
  :mod:`rewards.outcome`), not a continuation of its own;
- ``draft_chained``: the draft's step is the target's text, so under ``reward.chain`` its
  continuation is the next row's draft continuation too, and its score is the next row's
  draft score (no continuation of its own);
- ``advantage``: ``target_score - draft_score``; a target step (or sample) whose text is the
  draft's step (:func:`routers.labels.same_step`) takes the draft's score unscored, so its
  advantage is exactly 0;
- ``target_scores``: the score of the target's step, then of each extra target sample
  (``target_samples > 1``); ``target_sample_steps``: those samples' texts;
- ``draft_tokens``, ``target_tokens``, ``draft_seconds``, ``target_seconds``, ``draft_finish``;
- ``features``: the draft-side features of :data:`routers.features.FEATURES`;
- ``top_logprobs``: ``k``, the top logprobs per draft token the features were read from;
- ``problem_steps``: rows of the problem (a problem with fewer rows in a file is incomplete);
- ``stop_reason`` and ``solved``: how the problem's (target-only) answer ended and whether it
  was right;
- ``split``: the data set split the problem comes from (the collector's ``split``, else the
  run config's ``dataset.split``; None when neither says). Training refuses rows of a split
  other than train by this field, not by the problem id (MATH-500 ids name no split).

Problems that fail (a model or the reward raises) write no rows; a rerun into the same folder
skips the problems that have rows and tries the others again.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from reasoning.files import write_atomic
from reasoning.loop import LoopConfig, StepLoop, judge_logprobs
from reasoning.prompts import ChatPrompt
from reasoning.protocols import Generator, Judge, JudgeRequest, Segmenter, StepContext
from reasoning.types import (
    Completion,
    Decision,
    GenerationParams,
    GenerationRequest,
    Problem,
    Route,
    StopReason,
    Trace,
)
from routers.features import step_features
from routers.labels import same_step
from routers.rows import (  # noqa: F401 - re-exported: routers.collect.<name> keeps working
    CONFIG,
    ROW_VERSION,
    STEPS,
    SUMMARY,
    _check_train_split,
    _config_split,
    check_same_config,
    read_rows,
    summarize_rows,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ShadowPolicy:
    """Drafts every step, has it judged, and always lets the target write the step that is kept.

    >>> p = ShadowPolicy()
    >>> p.route(StepContext(0, 0, 10, 0)), p.decide(1.0, StepContext(0, 0, 10, 0))
    (<Route.DRAFT: 'draft'>, <Decision.REJECT: 'reject'>)
    """

    @property
    def needs_judge(self) -> bool:
        return True

    def route(self, ctx: StepContext) -> Route:
        return Route.DRAFT

    def decide(self, score: float | None, ctx: StepContext) -> Decision:
        return Decision.REJECT


class _RecordingJudge:
    """Keeps each drafted step's request (with its logprobs) and scores nothing: the shadow
    policy rejects every draft whatever its score, and the reward scores a problem's drafts
    together with the target's steps when the problem finishes (:meth:`ShadowCollector._rows`)."""

    def __init__(self, top_logprobs: int) -> None:
        self.top_logprobs = top_logprobs
        self.drafts: dict[str, dict[int, JudgeRequest]] = {}

    @property
    def needs_logprobs(self) -> int:
        return self.top_logprobs

    def score(self, requests: Sequence[JudgeRequest]) -> list[float]:
        for r in requests:
            self.drafts.setdefault(r.problem.id, {})[r.step_index] = r
        return [0.0] * len(requests)  # unused: ShadowPolicy rejects every draft


@dataclass(slots=True)
class ProblemRows:
    """One finished problem: its rows, its (target-only) trace, and its error if it failed."""

    problem_id: str
    rows: list[dict[str, Any]]
    trace: Trace
    error: str | None = None


@dataclass(slots=True)
class CollectResult:
    """What :meth:`ShadowCollector.run` did: the rows (old and new) and a summary."""

    rows: list[dict[str, Any]]
    summary: dict[str, Any] = field(default_factory=dict)
    out_dir: Path | None = None


class ShadowCollector:
    """Collects router training rows under the shadow policy (see the module docstring).

    Args:
        draft: The draft model.
        target: The target model; its steps make the answer.
        reward: Scores both models' steps in [0, 1] (e.g. the target as judge,
            :class:`rewards.target_judge.TargetJudge`). It sees each step as text: a reward
            that needs the step's logprobs cannot score the target's steps and is refused.
        segmenter: Step boundaries (the evaluation's own).
        prompt: Builds the chat for a problem.
        loop: Budgets and stop rules (the evaluation's own; ``draft_logprobs`` is ignored).
        top_logprobs: ``k``, the top logprobs asked of the draft per token, for the entropy
            feature (0: none, the feature is then 0).
        target_samples: Target steps per step: the one the answer continues with, plus
            ``target_samples - 1`` samples at ``sample_temperature`` from the same prefix,
            generated and scored when the problem finishes (one call each), so labels may
            average over them (:func:`routers.labels.row_advantage`). The samples are single
            engine calls (a too-short sample is not extended as the loop extends steps).
        sample_temperature: Temperature of the extra target samples.
        grader: ``Trace -> Trace`` filling ``correct`` (None: rows say ``solved: null``).
        split: The data set split the problems come from, written into each row (None: the
            ``dataset.split`` of the config given to :meth:`run`, if any). Routers train on
            train splits only: any other split is refused.

    >>> from reasoning import BlankLineSegmenter, CallableJudge, ScriptedGenerator
    >>> draft = ScriptedGenerator("draft", {"p": "1 + 1 = 3.\\n\\nThe answer is 3."})
    >>> target = ScriptedGenerator("target", {"p": "1 + 1 = 2.\\n\\nThe answer is 2."})
    >>> reward = CallableJudge(lambda r: 0.0 if "3" in r.step.text else 1.0)
    >>> rows = ShadowCollector(draft, target, reward, BlankLineSegmenter(), grader=None).run(
    ...     [Problem("p", "1 + 1?", "2")]).rows
    >>> [(r["step_index"], r["draft_step"], r["target_step"], r["advantage"]) for r in rows]
    [(0, '1 + 1 = 3.\\n\\n', '1 + 1 = 2.\\n\\n', 1.0), (1, 'The answer is 3.', 'The answer is 2.', 1.0)]
    >>> rows[1]["history"]
    [{'source': 'target', 'text': '1 + 1 = 2.\\n\\n'}]
    """

    def __init__(self, draft: Generator, target: Generator, reward: Judge, segmenter: Segmenter,
                 prompt: ChatPrompt | None = None, loop: LoopConfig | None = None, top_logprobs: int = 5,
                 target_samples: int = 1, sample_temperature: float = 0.7,
                 grader: Callable[[Trace], Trace] | None = None, split: str | None = None) -> None:
        if top_logprobs < 0:
            raise ValueError(f"top_logprobs must be >= 0 (0: no entropy feature), got {top_logprobs}")
        if target_samples < 1:
            raise ValueError(f"target_samples must be >= 1, got {target_samples}")
        if sample_temperature < 0:
            raise ValueError(f"sample_temperature must be >= 0, got {sample_temperature}")
        # the reward's chain (rewards.outcome): a target step takes the next row's draft score
        self.chain = bool(getattr(reward, "chain", False))
        if self.chain:
            if (loop or LoopConfig()).temperature != 0:
                raise ValueError("reward.chain needs greedy draft steps (loop.temperature=0): a target "
                                 "step's outcome is the next draft step's only when both are greedy")
            if getattr(reward, "generator", None) is not draft:
                raise ValueError("reward.chain needs the reward to continue with the collector's draft "
                                 "(continue_with=draft)")
        if judge_logprobs(reward) is not None:
            raise ValueError(f"reward {type(reward).__name__} reads the scored step's logprobs, which the "
                             "target's steps do not carry; use a reward that reads the text (e.g. the "
                             "target as judge)")
        self.draft = draft
        self.target = target
        self.reward = reward
        self.segmenter = segmenter
        self.prompt = prompt or ChatPrompt()
        self.loop = loop or LoopConfig()
        self.top_logprobs = top_logprobs
        self.target_samples = target_samples
        self.sample_temperature = sample_temperature
        self.grader = grader
        self.split = None if split is None else _check_train_split(split)

    # -- collecting ----------------------------------------------------------------------------
    def iter_problems(self, problems: Iterable[Problem], split: str | None = None) -> Iterator[ProblemRows]:
        """Yield each problem's rows as soon as the problem finishes (``split``: the rows' split,
        None: the collector's)."""
        split = self.split if split is None else _check_train_split(split)
        recorder = _RecordingJudge(self.top_logprobs)
        loop = StepLoop(self.draft, self.target, recorder, ShadowPolicy(), self.segmenter, self.prompt,
                        replace(self.loop, draft_logprobs=None))
        for trace in loop.iter_traces(problems):
            drafts = recorder.drafts.pop(trace.problem_id, {})
            if self.grader is not None and trace.stop_reason is not StopReason.ERROR:
                trace = self.grader(trace)
            if trace.stop_reason is StopReason.ERROR:
                log.warning("problem %s failed: %s; no rows", trace.problem_id, trace.error)
                yield ProblemRows(trace.problem_id, [], trace, trace.error or "error")
                continue
            try:
                rows = self._rows(trace, drafts, split)
            except Exception as e:  # noqa: BLE001 - one failing problem must not end the run
                msg = f"{type(e).__name__}: {e}"
                log.warning("problem %s: scoring the target's steps failed: %s; no rows",
                            trace.problem_id, msg)
                yield ProblemRows(trace.problem_id, [], trace, msg)
                continue
            yield ProblemRows(trace.problem_id, rows, trace)

    def _rows(self, trace: Trace, drafts: Mapping[int, JudgeRequest], split: str | None = None
              ) -> list[dict[str, Any]]:
        steps = [s for s in trace.steps if s.index in drafts and s.target_text is not None]
        scored = getattr(self.reward, "scored", None)  # a reward that scores some steps only
        if scored is not None:
            steps = [s for s in steps if scored(s.index)]
        if not steps:
            return []
        # One reward call for the whole problem: per step its draft, then the target's step and
        # its samples as judge requests from the same prefix, side by side in the same batch.
        reqs: list[JudgeRequest] = []
        samples: dict[int, list[str]] = {}
        extra = self._samples(trace, steps, drafts)
        # A target step or sample whose text is the draft's step takes the draft's score
        # unscored: same text, same reward (scored twice, the engine's batch shapes would add
        # noise of their own to the label, not a difference of steps).
        draft_slot: dict[int, int] = {}
        pending: dict[int, list[int | tuple[str, int]]] = {}
        # reward.chain: the target's step i leads where the next draft step (drafted from the
        # prefix plus it) and its continuation lead, so step i's target side takes step i + 1's
        # draft score instead of a continuation of its own (rewards.outcome, "chain").
        # When the draft's step i is the target's text, prefix + it *is* step i + 1's prefix, so
        # its continuation is step i + 1's draft continuation as well: it takes that score.
        # A slot ("draft", j) stands for step j's draft slot until those are all known.
        indices = {s.index for s in steps}
        chained: set[int] = set()
        draft_chained: set[int] = set()
        for s in steps:
            jr = drafts[s.index]
            if self.chain and s.index + 1 in indices and same_step(s.target_text, jr.step.text):
                draft_chained.add(s.index)
            else:
                draft_slot[s.index] = len(reqs)
                reqs.append(jr)
            comps = [Completion(s.target_text, (), s.finish_reason, s.target_prompt_tokens),
                     *extra.get(s.index, [])]
            samples[s.index] = [c.text for c in comps[1:]]
            pending[s.index] = []
            for k, c in enumerate(comps):
                if same_step(c.text, jr.step.text):
                    pending[s.index].append(("draft", s.index))
                elif self.chain and k == 0 and s.index + 1 in indices:
                    pending[s.index].append(("draft", s.index + 1))
                    chained.add(s.index)
                else:
                    pending[s.index].append(len(reqs))
                    reqs.append(JudgeRequest(jr.problem, jr.messages, jr.prefix, c, s.index))
        for i in sorted(draft_chained, reverse=True):  # a run of them ends at a scored draft
            draft_slot[i] = draft_slot[i + 1]
        slots = {i: [draft_slot[x[1]] if isinstance(x, tuple) else x for x in xs]
                 for i, xs in pending.items()}
        scores = [float(x) for x in self.reward.score(reqs)]
        if len(scores) != len(reqs):
            raise RuntimeError(f"reward returned {len(scores)} scores for {len(reqs)} steps")
        for x in scores:
            if not 0.0 <= x <= 1.0:
                raise ValueError(f"reward returned score {x} outside [0, 1]")
        rows = []
        for s in steps:
            jr = drafts[s.index]
            dscore = scores[draft_slot[s.index]]
            tscores = [scores[k] for k in slots[s.index]]
            rows.append({
                "version": ROW_VERSION,
                "problem_id": trace.problem_id,
                "step_index": s.index,
                "question": jr.problem.question,
                "problem_chars": len(jr.problem.question),
                "history": [{"source": seg.source, "text": seg.text} for seg in jr.prefix],
                "draft_step": jr.step.text,
                "target_step": s.target_text,
                "draft_score": dscore,
                "target_score": tscores[0],
                "target_chained": s.index in chained,
                "draft_chained": s.index in draft_chained,
                "advantage": tscores[0] - dscore,
                "target_scores": tscores,
                "target_sample_steps": samples[s.index],
                "draft_tokens": s.draft_tokens,
                "target_tokens": s.target_tokens,
                "draft_seconds": s.draft_seconds,
                "target_seconds": s.target_seconds,
                "draft_finish": jr.step.finish_reason.value,
                "features": step_features(jr.step, s.index, len(jr.problem.question),
                                          self.top_logprobs or None),
                "top_logprobs": self.top_logprobs,
                "problem_steps": len(steps),
                "stop_reason": trace.stop_reason.value,
                "solved": trace.correct,
                "split": split,
            })
        return rows

    def _samples(self, trace: Trace, steps, drafts) -> dict[int, list[Completion]]:
        """``target_samples - 1`` extra target steps per step, in one engine call."""
        n = self.target_samples - 1
        if n == 0:
            return {}
        reqs, owners = [], []
        used = 0
        seed = self.loop.seed
        for s in steps:
            jr = drafts[s.index]
            left = min(self.segmenter.max_step_tokens, self.loop.token_budget - used)
            used += s.target_tokens
            if left < 1:
                continue
            for j in range(n):
                params = GenerationParams(max_tokens=left, temperature=self.sample_temperature,
                                          top_p=self.loop.top_p, stop=self.segmenter.stop,
                                          seed=None if seed is None else seed + 1 + j)
                reqs.append(GenerationRequest(f"{trace.problem_id}/{s.index}/sample{j}", trace.problem_id,
                                              jr.messages, jr.prefix, params))
                owners.append(s.index)
        if not reqs:
            return {}
        out = self.target.generate(reqs)
        if len(out) != len(reqs):
            raise RuntimeError(f"{self.target.name} returned {len(out)} completions for {len(reqs)} requests")
        got: dict[int, list[Completion]] = {}
        for i, c in zip(owners, out):
            got.setdefault(i, []).append(c)
        return got

    def run(self, problems: Iterable[Problem], out_dir: str | os.PathLike | None = None,
            config: str | None = None, progress: bool = False) -> CollectResult:
        """Collect rows for ``problems``; with ``out_dir``, append them to ``steps.jsonl`` as each
        problem finishes, skip problems already there (resume) and write ``summary.json``.

        Args:
            problems: The problems (from a *train* split: routers are trained on train problems).
            out_dir: The collection folder.
            config: The resolved config (YAML) to keep beside the rows; a folder holding rows
                made with another config is refused. Its ``dataset.split`` is the rows' split
                unless the collector was given one; a split other than train is refused.
            progress: Show a progress bar on stderr.

        Raises:
            UserError: the problems' split is not train, or the folder holds another config's rows.
        """
        split = self.split if self.split is not None else _config_split(config)
        if split is not None:
            split = _check_train_split(split)
        problems = list(problems)
        out = Path(out_dir) if out_dir is not None else None
        old: list[dict[str, Any]] = []
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            old = read_rows(out / STEPS, repair=True)
            if config is not None:
                check_same_config(out, config, bool(old))
                write_atomic(out / CONFIG, config)
            seen = {r["problem_id"] for r in old}
            if seen:
                log.info("resuming in %s: %d problems already collected", out, len(seen))
            problems = [p for p in problems if p.id not in seen]
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(problems), desc="problems", unit="problem", dynamic_ncols=True)
        new: list[dict[str, Any]] = []
        errors: list[str] = []
        t0 = time.perf_counter()
        f = open(out / STEPS, "a", encoding="utf-8") if out is not None else None
        try:
            for pr in self.iter_problems(problems, split):
                if pr.error is not None:
                    errors.append(pr.problem_id)
                if f is not None and pr.rows:
                    f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in pr.rows))
                    f.flush()
                    os.fsync(f.fileno())
                new.extend(pr.rows)
                if bar is not None:
                    bar.update(1)
        finally:
            if f is not None:
                f.close()
            if bar is not None:
                bar.close()
        rows = old + new
        summary = summarize_rows(rows)
        summary["errors"] = len(errors)
        summary["failed_problems"] = errors
        summary["wall_seconds"] = time.perf_counter() - t0
        if out is not None:
            write_atomic(out / SUMMARY, json.dumps(summary, indent=2, sort_keys=True) + "\n")
        return CollectResult(rows, summary, out)
