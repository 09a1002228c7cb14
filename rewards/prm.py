"""Process reward models (PRMs) as judges: a PRM scores each step of a solution; the drafted step's
score (or the minimum or product over the solution so far) is the judge's score.

The parts live apart: :mod:`rewards.prm_formats` holds each family's exact input format and score
reading, one small registered class per family (``qwen2.5-math-prm``, ``skywork``,
``math-shepherd``, ``rlhflow``, ``trl``; see each class for its reference);
:mod:`rewards.prm_engines` runs the model, transformers (``backend="hf"``) or a vLLM pooling engine
(``backend="vllm"``); this module is the judge, :class:`PRMJudge`, which turns a request into
steps (:func:`request_steps`), has its format build the inputs, its engine run them and its format
read them, and aggregates the step scores (:func:`aggregate`). The formats' names are importable
from here too (``rewards.prm.build_inputs``, ``FAMILIES``, ...).

Steps are the loop's segments, one segment a step: the answer so far (``request.prefix``) and
the drafted step (``request.step``). Each step is stripped of surrounding white space; empty
earlier segments are left out. Every call scores the whole solution so far again: vLLM does not
read its prefix cache for per-token outputs, and the transformers backend keeps no cache between
calls. torch, transformers and vLLM are imported when a judge is built, never at import.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import Any

from reasoning.protocols import JudgeRequest
from rewards.prm_engines import SKYWORK_VLLM_ARCH, HFEngine, VLLMEngine
from rewards.prm_formats import (
    FAMILIES,
    OUTPUTS,
    QWEN_STEP_TOKEN,
    QWEN_SYSTEM,
    RLHFLOW_BAD,
    RLHFLOW_GOOD,
    SHEPHERD_CANDIDATES,
    SHEPHERD_STEP_TAG,
    SKYWORK_STEP_TOKEN,
    TRL_SEPARATOR,
    PRMFormat,
    build_inputs,
    candidate_ids,
    check_family,
    families,
    get_format,
    read_scores,
    register,
)

__all__ = [
    "AGGREGATIONS", "BACKENDS", "DTYPES", "FAMILIES", "OUTPUTS", "PRMFormat", "PRMJudge",
    "QWEN_STEP_TOKEN", "QWEN_SYSTEM", "RLHFLOW_BAD", "RLHFLOW_GOOD", "SHEPHERD_CANDIDATES",
    "SHEPHERD_STEP_TAG", "SKYWORK_STEP_TOKEN", "SKYWORK_VLLM_ARCH", "TRL_SEPARATOR", "aggregate",
    "build_inputs", "candidate_ids", "check_family", "families", "get_format", "read_scores",
    "register", "request_steps",
]

log = logging.getLogger(__name__)

AGGREGATIONS = ("last", "min", "prod")
"""How the per-step scores of the solution so far become the judge's score."""

BACKENDS = ("hf", "vllm")

DTYPES = ("float32", "bfloat16", "float16", "auto")


def request_steps(request: JudgeRequest) -> list[str]:
    """The steps a PRM sees for ``request``: each non-empty prefix segment, then the drafted step.

    >>> from reasoning.types import Completion, FinishReason, Problem, Segment
    >>> prefix = (Segment("Add.\\n\\n", "draft"), Segment("  \\n\\n", "target"))
    >>> step = Completion("So 4.\\n\\n", (1,), FinishReason.STOP)
    >>> request_steps(JudgeRequest(Problem("p", "2+2?"), (), prefix, step, 1))
    ['Add.', 'So 4.']
    """
    history = [s.text.strip() for s in request.prefix]
    return [s for s in history if s] + [request.step.text.strip()]


def aggregate(scores: Sequence[float], aggregation: str = "last") -> float:
    """One score from per-step scores: ``last`` (the newest step), ``min`` or ``prod``.

    >>> aggregate([0.9, 0.5, 0.8], "last"), aggregate([0.9, 0.5, 0.8], "min")
    (0.8, 0.5)
    >>> round(aggregate([0.9, 0.5, 0.8], "prod"), 6)
    0.36
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"judge.aggregation must be one of {', '.join(AGGREGATIONS)}, got {aggregation!r}")
    if not scores:
        raise ValueError("aggregate needs at least one step score")
    if aggregation == "last":
        s = scores[-1]
    elif aggregation == "min":
        s = min(scores)
    else:
        s = math.prod(scores)
    return min(1.0, max(0.0, float(s)))


# -- the judge ----------------------------------------------------------------------------------
class PRMJudge:
    """Scores drafted steps with a process reward model.

    For each request the judge has the family's format (:mod:`rewards.prm_formats`) build its
    input for the problem and the steps so far (:func:`request_steps`, :func:`build_inputs`),
    runs the model on all requests of the call (batched, :mod:`rewards.prm_engines`), has the
    format read each step's score (:func:`read_scores`) and aggregates them (:func:`aggregate`).

    Args:
        model: A local folder, a hub id, or a short name known to
            :func:`reasoning.cpu_models.resolve_model`.
        family: The PRM's input format, a registered family (:data:`FAMILIES`, :func:`families`).
        backend: ``hf`` (transformers) or ``vllm`` (a vLLM pooling engine in this process).
        aggregation: ``last`` (the drafted step's score), ``min`` or ``prod`` over all steps.
        dtype: ``float32``, ``bfloat16``, ``float16`` or ``auto``.
        device: Torch device of the ``hf`` backend (vLLM places its engine itself).
        batch_size: Most sequences in one forward pass of the ``hf`` backend (vLLM batches itself).
        engine_kwargs: Further keyword arguments for ``vllm.LLM`` (e.g. ``max_model_len``,
            ``gpu_memory_utilization``, ``enforce_eager``) or, for ``hf``, for ``from_pretrained``.
        trust_remote_code: Let the tokenizer, vLLM and a model of an unknown architecture run
            code shipped with the checkpoint (off by default: a checkpoint's code runs with
            this process's rights). The known heads (token classification,
            ``Qwen2ForProcessRewardModel``, Skywork's value head, causal LMs) load without it;
            a checkpoint of another architecture is refused unless it is set.

    How each backend loads each kind of head: :class:`rewards.prm_engines.HFEngine`,
    :class:`rewards.prm_engines.VLLMEngine`.
    """

    def __init__(
        self,
        model: str,
        family: str,
        backend: str = "hf",
        aggregation: str = "last",
        dtype: str = "float32",
        device: str = "cpu",
        batch_size: int = 8,
        engine_kwargs: dict | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        fmt = get_format(family)
        if backend not in BACKENDS:
            raise ValueError(f"judge.backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"judge.aggregation must be one of {', '.join(AGGREGATIONS)}, "
                             f"got {aggregation!r}")
        if dtype not in DTYPES:
            raise ValueError(f"judge.dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        if batch_size < 1:
            raise ValueError(f"judge.batch_size must be >= 1, got {batch_size}")
        from transformers import AutoTokenizer

        from reasoning.cpu_models import resolve_model

        self.family = family
        self.format = fmt
        """The family's input format and score reading."""
        self.backend = backend
        self.aggregation = aggregation
        self.batch_size = batch_size
        self.model = str(resolve_model(model))
        t0 = time.perf_counter()
        self.tokenizer = AutoTokenizer.from_pretrained(self.model, trust_remote_code=trust_remote_code)
        self.candidates = fmt.candidates(self.tokenizer)
        kwargs = dict(engine_kwargs or {})
        if backend == "hf":
            self._engine: Any = HFEngine(self.model, fmt, dtype, device, batch_size, self.tokenizer,
                                         self.candidates, trust_remote_code, kwargs)
        else:
            self._engine = VLLMEngine(self.model, fmt, dtype, self.tokenizer, self.candidates,
                                      trust_remote_code, kwargs)
        self.start_seconds = time.perf_counter() - t0
        """Seconds the model took to load."""
        log.info("PRM %s (%s, %s) ready in %.1f s", self.model, family, backend, self.start_seconds)

    def inputs(self, request: JudgeRequest) -> tuple[list[int], list[int]]:
        """``(input_ids, positions)`` for one request (see :func:`build_inputs`)."""
        return self.format.inputs(self.tokenizer, request.problem.question, request_steps(request))

    def step_scores(self, requests: Sequence[JudgeRequest]) -> list[list[float]]:
        """Every step's score (the answer so far, then the drafted step) for each request."""
        if not requests:
            return []
        if self._engine is None:
            raise RuntimeError(f"PRMJudge for {self.model} is closed")
        built = [self.inputs(r) for r in requests]
        t0 = time.perf_counter()
        outputs = self._engine.outputs([ids for ids, _ in built])
        log.debug("PRM scored %d requests (%d tokens) in %.2f s", len(built),
                  sum(len(ids) for ids, _ in built), time.perf_counter() - t0)
        return [self.format.read(out, pos) for (_, pos), out in zip(built, outputs)]

    def score(self, requests: Sequence[JudgeRequest]) -> list[float]:
        """One score in [0, 1] per request: its step scores aggregated (``aggregation``)."""
        return [aggregate(s, self.aggregation) for s in self.step_scores(requests)]

    def close(self) -> None:
        """Free the model or engine. Idempotent."""
        engine, self._engine = getattr(self, "_engine", None), None
        if engine is not None:
            engine.close()

    def __enter__(self) -> PRMJudge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"PRMJudge(model={self.model!r}, family={self.family!r}, backend={self.backend!r}, "
                f"aggregation={self.aggregation!r})")
