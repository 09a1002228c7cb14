"""The Python API: build two generators, a judge and a policy; run; summarise; save.

>>> from reasoning import Pipeline, ScriptedGenerator, ConstantJudge, ThresholdPolicy, Problem
>>> pipe = Pipeline(
...     draft=ScriptedGenerator("draft", {"p": "2 + 2 = 4.\\n\\nThe answer is \\\\boxed{4}."}),
...     target=ScriptedGenerator("target", {"p": "2 + 2 = 4.\\n\\nThe answer is \\\\boxed{4}."}),
...     judge=ConstantJudge(0.9), policy=ThresholdPolicy(0.5))
>>> result = pipe.run([Problem("p", "What is 2 + 2?", "4")])
>>> result.summary["accuracy"], result.summary["target_step_share"]
(1.0, 0.0)
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reasoning.files import write_atomic
from reasoning.loop import LoopConfig, StepLoop, with_grade
from reasoning.metrics import format_table, summarize
from reasoning.policies import AlwaysDraft, AlwaysTarget, ThresholdPolicy
from reasoning.prompts import ChatPrompt
from reasoning.protocols import Generator, Judge, Segmenter, StepPolicy
from reasoning.segmenter import BlankLineSegmenter
from reasoning.traces import CALLS, SUMMARY, TRACES, TraceWriter, append_call, read_calls, read_traces
from reasoning.types import Problem, StopReason, Trace

log = logging.getLogger(__name__)

_FINISHED = (StopReason.ANSWER, StopReason.EOS)


def grade_trace(trace: Trace) -> Trace:
    """Grade a trace's answer against its gold with math-verify (see :mod:`reasoning.grading`)."""
    from reasoning.grading import grade

    g = grade(trace.text, trace.gold, finished=trace.stop_reason in _FINISHED)
    return with_grade(trace, g.predicted, g.correct, g.note)


@dataclass(slots=True)
class RunResult:
    """What :meth:`Pipeline.run` returns.

    Attributes:
        traces: Graded traces of this call's problems, in the order they finished (plus, when
            resuming into ``out_dir``, the ones found there).
        summary: :func:`reasoning.metrics.summarize` of ``traces``.
        out_dir: Where the files were written, if anywhere.
    """

    traces: list[Trace]
    summary: dict[str, Any]
    out_dir: Path | None = None

    def table(self, name: str = "run") -> str:
        return format_table([(name, self.summary)])


@dataclass
class Pipeline:
    """Step-level speculative reasoning with the parts you choose.

    Attributes:
        draft: Generator that drafts steps.
        target: Generator that writes rejected steps.
        judge: Scores drafts in [0, 1].
        policy: Accept/reject rule (:class:`ThresholdPolicy`, :class:`AlwaysDraft`, ...).
        segmenter: Step boundaries and rules.
        prompt: Problem -> chat.
        loop: Budgets, stop rules and batching.
        grader: ``Trace -> Trace`` that fills the grade fields (None: leave ungraded).
    """

    draft: Generator
    target: Generator
    judge: Judge
    policy: StepPolicy = field(default_factory=ThresholdPolicy)
    segmenter: Segmenter = field(default_factory=BlankLineSegmenter)
    prompt: ChatPrompt = field(default_factory=ChatPrompt)
    loop: LoopConfig = field(default_factory=LoopConfig)
    grader: Callable[[Trace], Trace] | None = grade_trace

    def with_policy(self, policy: StepPolicy) -> Pipeline:
        """The same pipeline (same loaded models) under another policy, e.g. a baseline."""
        return Pipeline(self.draft, self.target, self.judge, policy, self.segmenter, self.prompt,
                        self.loop, self.grader)

    def target_only(self) -> Pipeline:
        return self.with_policy(AlwaysTarget())

    def draft_only(self) -> Pipeline:
        return self.with_policy(AlwaysDraft())

    def run(self, problems: Iterable[Problem], out_dir: str | os.PathLike | None = None,
            config: Mapping[str, Any] | str | None = None, progress: bool = False,
            total: int | None = None, off_clock: Callable[[], float] | None = None) -> RunResult:
        """Solve ``problems``; with ``out_dir``, append traces as they finish and write the summary.

        Problems already in ``out_dir/traces.jsonl`` are skipped (the run resumes), but for those
        whose trace is an error (``stop_reason`` error), which are run again: the new trace is
        appended and supersedes the old. The summary is recomputed from the file, each problem
        counted once, by its latest trace. A folder whose saved config differs from ``config``
        is refused (:class:`reasoning.errors.RunFolderError`): its traces belong to another
        experiment.

        Args:
            problems: The problems to solve.
            out_dir: Run folder for ``traces.jsonl``, ``summary.json`` and ``config.yaml``.
            config: The resolved config to save beside the traces (a mapping, or YAML text).
            progress: Show a progress bar (tqdm) on stderr.

            total: Number of problems, for the progress bar when ``problems`` has no len().
            off_clock: Returns the seconds spent during this call that are not the run's own
                (models built at their first use), taken off its wall time.

        The summary's ``wall_seconds`` is the wall-clock time of the calls that wrote the
        traces, less grading (the same for every method, it would blur speed comparisons) and
        ``off_clock``. With ``out_dir`` each call appends its wall seconds and the problems it
        finished to ``calls.jsonl`` (even when interrupted), so a resumed run's wall time is
        that of all its calls; where some traces came from a call that left no record (killed
        outright), ``wall_seconds`` is None and ``wall_seconds_known`` holds what is known.
        """
        problems = list(problems)
        out = Path(out_dir) if out_dir is not None else None
        done: list[Trace] = []
        written: list[Trace] = []  # every trace line in the file, superseded ones included
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            if config is not None:
                from reasoning.config_io import check_same_config, write_config

                check_same_config(out, config)
                write_config(out, config)
            written = read_traces(out / TRACES, repair=True)
            done = latest_traces(written)
            # an error trace (a failed engine call, maybe transient) is not done: run it again;
            # its new trace supersedes the error line, which stays in the file
            asked = {p.id for p in problems}
            rerun = {t.problem_id for t in done
                     if t.stop_reason is StopReason.ERROR and t.problem_id in asked}
            done = [t for t in done if t.problem_id not in rerun]
            seen = {t.problem_id for t in done}
            if seen or rerun:
                log.info("resuming in %s: %d problems already done, %d errors run again", out, len(seen),
                         len(rerun))
            problems = [p for p in problems if p.id not in seen]
        writer = TraceWriter(out / TRACES) if out is not None else None
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=total if total is not None else len(problems), desc="problems",
                       unit="problem", dynamic_ncols=True)
        loop = StepLoop(self.draft, self.target, self.judge, self.policy, self.segmenter,
                        self.prompt, self.loop)
        new: list[Trace] = []
        grading_s = 0.0
        off0 = off_clock() if off_clock is not None else 0.0
        t0 = time.perf_counter()
        try:
            for tr in loop.iter_traces(problems):
                if self.grader is not None:
                    g0 = time.perf_counter()
                    tr = self.grader(tr)
                    grading_s += time.perf_counter() - g0
                if writer is not None:
                    writer.write(tr)
                new.append(tr)
                if bar is not None:
                    bar.update(1)
                    acc = sum(bool(t.correct) for t in new)
                    bar.set_postfix_str(f"correct {acc}/{len(new)}")
        finally:
            wall = time.perf_counter() - t0 - grading_s
            if off_clock is not None:
                wall = max(0.0, wall - (off_clock() - off0))
            if bar is not None:
                bar.close()
            if writer is not None:
                writer.close()
                append_call(out / CALLS, {"wall_seconds": wall, "problems": len(new),
                                          "grading_seconds": grading_s, "ended_at": time.time()})
        traces = done + new
        summary = summarize(traces, wall_seconds=wall)
        summary["grading_seconds"] = grading_s
        if out is not None:
            calls = read_calls(out / CALLS)
            known = sum(float(c.get("wall_seconds") or 0.0) for c in calls)
            covered = sum(int(c.get("problems") or 0) for c in calls)
            lines = len(written) + len(new)  # each call records the trace lines it wrote
            summary["calls"] = len(calls)
            summary["wall_seconds"] = known if covered >= lines else None
            if covered < lines:
                summary["wall_seconds_known"] = known
                summary["wall_seconds_note"] = (
                    f"{lines - covered} of {lines} problems (trace lines, reruns of errors included) came "
                    "from a call that recorded no wall time (killed); wall seconds unknown")
        summary["policy"] = type(self.policy).__name__
        summary["token_budget"] = self.loop.token_budget
        if out is not None:
            write_summary(out, summary)
        return RunResult(traces, summary, out)


def latest_traces(traces: Iterable[Trace]) -> list[Trace]:
    """Each problem's latest trace (a rerun's line supersedes the earlier one), in the order of
    those latest lines.

    >>> def tr(pid, stop):
    ...     return Trace(pid, "q", None, (), stop, "")
    >>> got = latest_traces([tr("a", StopReason.ERROR), tr("b", StopReason.EOS), tr("a", StopReason.EOS)])
    >>> [(t.problem_id, t.stop_reason.value) for t in got]
    [('b', 'eos'), ('a', 'eos')]
    """
    latest: dict[str, Trace] = {}
    for t in traces:
        latest.pop(t.problem_id, None)
        latest[t.problem_id] = t
    return list(latest.values())


def write_summary(out_dir: str | os.PathLike, summary: Mapping[str, Any]) -> Path:
    """Write ``summary.json`` atomically (temp file, then rename)."""
    return write_atomic(Path(out_dir) / SUMMARY, json.dumps(summary, indent=2, sort_keys=True) + "\n")


def close_all(gens: Sequence[Any]) -> None:
    """Close every generator once (draft and target may be the same object)."""
    seen: set[int] = set()
    for g in gens:
        if g is not None and id(g) not in seen:
            seen.add(id(g))
            close = getattr(g, "close", None)
            if close is not None:
                close()
