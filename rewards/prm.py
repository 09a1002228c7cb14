"""Process reward models (PRMs) as judges: a PRM scores each step of a solution; the drafted step's
score (or the minimum or product over the solution so far) is the judge's score.

Each PRM family was trained on one exact input format and is read at exact positions. The
formats and readings below follow each family's own reference code:

``qwen2.5-math-prm`` (Qwen/Qwen2.5-Math-PRM-7B and -72B model cards, "Quick Start"):
    chat template with system ``"Please reason step by step, and put your final answer within
    \\boxed{}."``, user = the problem, assistant = the steps joined with ``<extra_0>`` and ending
    with ``<extra_0>``; rendered with ``add_generation_prompt=False`` and encoded. The model
    gives 2 logits per token; a step's score is ``softmax(logits)[1]`` at its ``<extra_0>``
    (the card's ``make_step_rewards``).
``skywork`` (SkyworkAI/skywork-o1-prm-inference, ``model_utils/io_utils.py`` ``prepare_input``
    and ``derive_step_rewards``, and the Skywork-o1-Open-PRM model card, ``step_token="\\n"``):
    ids = ``encode(bos_token + problem + "\\n")``, then for each step ``encode(step)`` followed by
    the id of ``"\\n"``; a value head (``v_head.summary``: one linear layer on the last hidden
    state) gives one value per token; a step's score is ``sigmoid(value)`` at its ``"\\n"``
    (the card's ``return_probs=True``).
``math-shepherd`` (peiyi9979/math-shepherd-mistral-7b-prm model card; huggingface/search-and-
    learn ``MathShepherd``): text ``f"{problem} {output}"`` with ``output`` = each step followed by
    ``" ки"``, the steps joined with ``"\\n"``, encoded with the tokenizer's special tokens (BOS);
    a causal LM; a step's score is ``softmax([logit(good), logit(bad)])[0]`` at its ``ки``, where
    ``good, bad = encode("+ -")`` without special tokens (the card's ``encode("+ -")[1:]``).
``rlhflow`` (RLHFlow/Llama3.1-8B-PRM-Deepseek-Data, via RLHFlow/RLHF-Reward-Modeling
    ``math-rm/prm_evaluate.py``, as huggingface/search-and-learn ``RLHFFlow`` copies it): a
    chat with one user turn per step (the first is ``problem + " " + step``) each answered by an
    assistant turn ``"+"``; a causal LM; a step's score is ``softmax([logit("+"), logit("-")])[0]``
    at the position just before that step's assistant ``"+"`` (the card's ``logits[:, -3]`` for
    the last step), with ``"+"``/``"-"`` = ``encode(...)[-1]``.
``trl`` (huggingface/trl ``PRMTrainer.tokenize_row``, ``PRMConfig.step_separator="\\n"``): ids =
    ``[bos_token_id]`` (if the tokenizer has one) + ``encode(problem)`` + for each step
    ``encode(step) + encode("\\n")``, all without special tokens; a token-classification model
    (``AutoModelForTokenClassification``, 2 labels); a step's score is ``softmax(logits)[1]`` at the
    last token of its separator, the token TRL trains the step's label on.

Steps are the loop's segments, one segment a step: the answer so far (``request.prefix``) and
the drafted step (``request.step``). Each step is stripped of surrounding white space (the
loop's steps end with their ``"\\n\\n"`` stop string; the reference formats put their own
separator there); empty earlier segments are left out. The marker tokens ``<extra_0>`` and
``ки`` are removed from the problem and the steps of the families that read at them, so text
cannot shift the positions read. A step holding line breaks stays one step (Skywork's reference
splits a response at every ``"\n"`` and TRL's datasets hold one line a step; here the score is
read after the segment's end).

:func:`build_inputs` and :func:`read_scores` are the pure halves (no model);
:class:`PRMJudge` runs them around a transformers model (``backend="hf"``) or a vLLM pooling
engine (``backend="vllm"``: ``LLM(runner="pooling")`` and ``LLM.encode(...,
pooling_task="token_classify")`` with per-token outputs, read at the same positions).
Every call scores the whole solution so far again: vLLM does not read its prefix cache for
per-token outputs, and the transformers backend keeps no cache between calls.
torch, transformers and vLLM are imported when a judge is built, never at import.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from reasoning.protocols import JudgeRequest

log = logging.getLogger(__name__)

FAMILIES = ("qwen2.5-math-prm", "skywork", "math-shepherd", "rlhflow", "trl")
"""The PRM families whose input format and score reading this module knows."""

AGGREGATIONS = ("last", "min", "prod")
"""How the per-step scores of the solution so far become the judge's score."""

BACKENDS = ("hf", "vllm")

DTYPES = ("float32", "bfloat16", "float16", "auto")

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

_LABEL_FAMILIES = ("qwen2.5-math-prm", "trl")  # 2-class token classification, label 1 = good
_LM_FAMILIES = ("math-shepherd", "rlhflow")  # causal LMs read at two candidate tokens

SKYWORK_VLLM_ARCH = "StepspecSkyworkQwen2PRM"
"""The architecture name this module registers with vLLM for Skywork's value-head PRMs."""


# -- pure parts ---------------------------------------------------------------------------------
def check_family(family: str) -> str:
    """``family`` if it is known, else a ValueError naming the known ones.

    >>> check_family("trl")
    'trl'
    """
    if family not in FAMILIES:
        import difflib

        near = difflib.get_close_matches(family, FAMILIES, n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise ValueError(f"judge.family must be one of {', '.join(FAMILIES)}, got {family!r}{hint}")
    return family


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


def _encode(tokenizer: Any, text: str, special: bool = False) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=special))


def _one_token(tokenizer: Any, text: str, family: str) -> int:
    ids = _encode(tokenizer, text)
    if len(ids) != 1:
        raise ValueError(f"PRM family {family!r} needs {text!r} to be one token of the tokenizer, "
                         f"but it encodes to {len(ids)} ids {ids}; use the PRM's own tokenizer")
    return ids[0]


def candidate_ids(family: str, tokenizer: Any) -> tuple[int, int]:
    """The (good, bad) token ids a causal-LM PRM family is read at.

    ``math-shepherd``: ``encode("+ -")`` without special tokens (the card's ``encode("+ -")[1:]``
    with the BOS dropped), which must be two ids. ``rlhflow``: ``encode("+")[-1]``,
    ``encode("-")[-1]``.
    """
    if family == "math-shepherd":
        ids = _encode(tokenizer, SHEPHERD_CANDIDATES)
        if len(ids) != 2:
            raise ValueError(f"math-shepherd needs {SHEPHERD_CANDIDATES!r} to encode to 2 ids (good, bad), "
                             f"got {ids}; use the PRM's own tokenizer")
        return ids[0], ids[1]
    if family == "rlhflow":
        return _encode(tokenizer, RLHFLOW_GOOD)[-1], _encode(tokenizer, RLHFLOW_BAD)[-1]
    raise ValueError(f"PRM family {family!r} is not read at candidate tokens "
                     f"(only {', '.join(_LM_FAMILIES)} are)")


def build_inputs(family: str, tokenizer: Any, problem: str,
                 steps: Sequence[str]) -> tuple[list[int], list[int]]:
    """The token ids a PRM of ``family`` reads for ``problem`` and ``steps``, and where it reads them.

    Args:
        family: One of :data:`FAMILIES`.
        tokenizer: The PRM's tokenizer (transformers).
        problem: The problem statement.
        steps: The steps so far, in order (already stripped of surrounding white space).

    Returns:
        ``(input_ids, positions)``: ``positions[i]`` is the index in ``input_ids`` whose output
        scores ``steps[i]`` (see the module docstring for each family).

    Raises:
        ValueError: unknown family, no steps, or a tokenizer that does not encode the family's
            markers the way the format needs.
    """
    check_family(family)
    if not steps:
        raise ValueError("build_inputs needs at least one step")
    steps = list(steps)
    if family == "qwen2.5-math-prm":
        sep = QWEN_STEP_TOKEN
        sep_id = _one_token(tokenizer, sep, family)
        problem = problem.replace(sep, "")
        steps = [s.replace(sep, "") for s in steps]
        messages = [{"role": "system", "content": QWEN_SYSTEM}, {"role": "user", "content": problem},
                    {"role": "assistant", "content": sep.join(steps) + sep}]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
        ids = _encode(tokenizer, text)
        return ids, _found(ids, sep_id, len(steps), family, sep)
    if family == "math-shepherd":
        tag = SHEPHERD_STEP_TAG
        tag_id = _encode(tokenizer, tag)[-1]
        problem = problem.replace(tag, "")
        output = "\n".join(f"{s.replace(tag, '')} {tag}" for s in steps)
        ids = _encode(tokenizer, f"{problem} {output}", special=True)
        return ids, _found(ids, tag_id, len(steps), family, tag)
    if family == "skywork":
        bos = tokenizer.bos_token or ""
        nl_id = _encode(tokenizer, SKYWORK_STEP_TOKEN)[-1]
        ids = _encode(tokenizer, bos + problem + "\n")
        positions = []
        for s in steps:
            ids += (_encode(tokenizer, s) if s else []) + [nl_id]
            positions.append(len(ids) - 1)
        return ids, positions
    if family == "trl":
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
    # rlhflow: one user turn per step, each answered "+"; read where the "+" is predicted.
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
            raise ValueError(f"rlhflow: the tokenizer's chat template does not render turn {k}'s assistant "
                             f"{RLHFLOW_GOOD!r} right after its generation prompt, so there is no position "
                             "to read; use the PRM's own tokenizer and template")
        positions.append(n - 1)
    return ids, positions


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


def read_scores(family: str, outputs: Any, positions: Sequence[int],
                candidates: Sequence[int] | None = None) -> list[float]:
    """Per-step scores in [0, 1] from a PRM's per-token outputs at ``positions``.

    Args:
        family: One of :data:`FAMILIES`.
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
    check_family(family)
    out = []
    for p in positions:
        row = _row(outputs[p])
        if family in _LABEL_FAMILIES:
            if len(row) != 2:
                raise ValueError(f"{family}: expected 2 label logits per token, got {len(row)}")
            s = _softmax_pick(row[0], row[1], pick_first=False)
        elif family == "skywork":
            if len(row) != 1:
                raise ValueError(f"skywork: expected one value per token, got {len(row)}")
            v = row[0]
            s = 1.0 / (1.0 + math.exp(-v)) if v >= 0 else math.exp(v) / (1.0 + math.exp(v))
        else:
            if candidates is not None:
                row = [row[candidates[0]], row[candidates[1]]]
            if len(row) != 2:
                raise ValueError(f"{family}: expected [good, bad] logits or candidates=, "
                                 f"got {len(row)} values")
            s = _softmax_pick(row[0], row[1], pick_first=True)
        out.append(s)
    return out


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

    For each request the judge builds the family's input for the problem and the steps so far
    (:func:`request_steps`, :func:`build_inputs`), runs the model on all requests of the call
    (batched), reads each step's score (:func:`read_scores`) and aggregates them
    (:func:`aggregate`).

    Args:
        model: A local folder, a hub id, or a short name known to
            :func:`reasoning.cpu_models.resolve_model`.
        family: The PRM's input format, one of :data:`FAMILIES`.
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

    The ``hf`` backend loads ``*ForTokenClassification`` checkpoints with
    ``AutoModelForTokenClassification``; ``Qwen2ForProcessRewardModel`` (Qwen2.5-Math-PRM) and
    Skywork's PRM as the base model plus their heads read from the checkpoint (``score.0``/
    ``score.2``: linear, ReLU, linear; ``v_head.summary``: linear); math-shepherd and rlhflow as
    causal LMs, computing only the two candidate logits. The ``vllm`` backend runs
    ``Qwen2ForProcessRewardModel`` natively, converts ``*ForTokenClassification`` and causal LMs
    (``convert="classify"``, the two candidate rows of the LM head as the classifier), and
    registers a small model class for Skywork's value head (in this process's vLLM registry:
    the engine core must run in this process or a forked one).
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
        check_family(family)
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
        self.backend = backend
        self.aggregation = aggregation
        self.batch_size = batch_size
        self.model = str(resolve_model(model))
        t0 = time.perf_counter()
        self.tokenizer = AutoTokenizer.from_pretrained(self.model, trust_remote_code=trust_remote_code)
        self.candidates = candidate_ids(family, self.tokenizer) if family in _LM_FAMILIES else None
        kwargs = dict(engine_kwargs or {})
        if backend == "hf":
            self._engine: Any = _HFEngine(self.model, family, dtype, device, batch_size, self.tokenizer,
                                          self.candidates, trust_remote_code, kwargs)
        else:
            self._engine = _VLLMEngine(self.model, family, dtype, self.tokenizer, self.candidates,
                                       trust_remote_code, kwargs)
        self.start_seconds = time.perf_counter() - t0
        """Seconds the model took to load."""
        log.info("PRM %s (%s, %s) ready in %.1f s", self.model, family, backend, self.start_seconds)

    def inputs(self, request: JudgeRequest) -> tuple[list[int], list[int]]:
        """``(input_ids, positions)`` for one request (see :func:`build_inputs`)."""
        return build_inputs(self.family, self.tokenizer, request.problem.question, request_steps(request))

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
        return [read_scores(self.family, out, pos) for (_, pos), out in zip(built, outputs)]

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


# -- backends -----------------------------------------------------------------------------------
def _local_folder(model: str) -> Path:
    """The model's local folder: the path itself, or the hub snapshot (downloaded if need be)."""
    p = Path(model).expanduser()
    if p.is_dir():
        return p
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(model))


@contextlib.contextmanager
def _quiet_transformers():
    """Silence transformers' load report while loading a base model whose heads we read ourselves."""
    from transformers.utils import logging as tf_logging

    old = tf_logging.get_verbosity()
    tf_logging.set_verbosity_error()
    try:
        yield
    finally:
        tf_logging.set_verbosity(old)


def _read_tensors(folder: Path, prefix: str) -> dict[str, Any]:
    """The checkpoint tensors whose names start with ``prefix`` (safetensors or ``.bin`` files)."""
    import torch

    found: dict[str, Any] = {}
    files = sorted(folder.glob("*.safetensors"))
    if files:
        from safetensors import safe_open

        for f in files:
            with safe_open(str(f), framework="pt") as st:
                for k in st.keys():
                    if k.startswith(prefix):
                        found[k[len(prefix):]] = st.get_tensor(k)
    else:
        for f in sorted(folder.glob("*.bin")):
            sd = torch.load(f, map_location="cpu", weights_only=True)
            found.update({k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)})
    return found


class _HFEngine:
    """Per-token PRM outputs from transformers, right-padded batches of ``batch_size``.

    ``outputs`` returns, per sequence, a float32 CPU tensor: ``[tokens, 2]`` label logits
    (label families), ``[tokens, 1]`` values (skywork) or ``[tokens, 2]`` candidate logits
    ``[good, bad]`` (causal-LM families).
    """

    def __init__(self, model: str, family: str, dtype: str, device: str, batch_size: int, tokenizer: Any,
                 candidates: tuple[int, int] | None, trust_remote_code: bool,
                 kwargs: Mapping[str, Any]) -> None:
        import torch
        from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForTokenClassification

        torch_dtype: Any = "auto" if dtype == "auto" else getattr(torch, dtype)
        folder = _local_folder(model)
        try:
            config = AutoConfig.from_pretrained(str(folder), trust_remote_code=False)
        except (ValueError, KeyError):  # a model type transformers does not know
            config = AutoConfig.from_pretrained(str(folder), trust_remote_code=trust_remote_code)
        archs = list(getattr(config, "architectures", None) or [])
        load = dict(dtype=torch_dtype, **kwargs)
        self.family = family
        self.device = device
        self.batch_size = batch_size
        pad = tokenizer.pad_token_id
        if pad is None:
            pad = tokenizer.eos_token_id
        self.pad = int(pad) if pad is not None else 0
        self.full: Any = None  # a model whose output holds the per-token outputs
        self.base: Any = None  # a base model whose last hidden state goes through self.head
        self.head: Any = None
        if family in _LABEL_FAMILIES:
            if any(a.endswith("ForTokenClassification") for a in archs):
                self.full = AutoModelForTokenClassification.from_pretrained(str(folder), **load)
            elif "Qwen2ForProcessRewardModel" in archs or _read_tensors(folder, "score.2.weight"):
                with _quiet_transformers():  # its score.* head is not Qwen2Model's: read below
                    self.base = AutoModel.from_pretrained(str(folder), trust_remote_code=False, **load)
                self.head = _qwen_prm_head(folder, config.hidden_size)
            elif trust_remote_code:
                self.full = AutoModel.from_pretrained(str(folder), trust_remote_code=True, **load)
            else:
                raise ValueError(f"{family}: {model} ({archs}) is neither a token-classification model "
                                 "nor Qwen2ForProcessRewardModel; pass trust_remote_code=true to run "
                                 "its own code")
        elif family == "skywork":
            with _quiet_transformers():  # lm_head and v_head are not Qwen2Model's: v_head read below
                self.base = AutoModel.from_pretrained(str(folder), trust_remote_code=False, **load)
            self.head = _skywork_head(folder, config.hidden_size, model)
        else:
            lm = AutoModelForCausalLM.from_pretrained(str(folder), **load)
            out = lm.get_output_embeddings()
            assert candidates is not None
            idx = torch.tensor(list(candidates))
            rows = out.weight.detach()[idx].clone()
            bias = out.bias.detach()[idx].clone() if getattr(out, "bias", None) is not None else None
            self.base = getattr(lm, lm.base_model_prefix)
            self.head = torch.nn.Linear(rows.shape[1], 2, bias=bias is not None)
            with torch.no_grad():
                self.head.weight.copy_(rows)
                if bias is not None:
                    self.head.bias.copy_(bias)
            self.head.to(rows.dtype)
            del lm, out
        for m in (self.full, self.base, self.head):
            if m is not None:
                m.to(device)
                m.eval()
        gc.collect()

    def outputs(self, batch: Sequence[Sequence[int]]) -> list[Any]:
        import torch

        order = sorted(range(len(batch)), key=lambda i: len(batch[i]))
        result: list[Any] = [None] * len(batch)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            width = max(len(batch[i]) for i in chunk)  # tokens
            ids = torch.full((len(chunk), width), self.pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for b, i in enumerate(chunk):  # right padding: positions stay as built
                ids[b, :len(batch[i])] = torch.tensor(list(batch[i]), dtype=torch.long)
                mask[b, :len(batch[i])] = 1
            ids, mask = ids.to(self.device), mask.to(self.device)
            with torch.inference_mode():
                if self.full is not None:
                    res = self.full(input_ids=ids, attention_mask=mask)
                    out = res.logits if hasattr(res, "logits") else res[0]
                else:
                    hidden = self.base(input_ids=ids, attention_mask=mask).last_hidden_state
                    head_dtype = next(self.head.parameters()).dtype
                    out = self.head(hidden.to(head_dtype))
            out = out.float().cpu()
            if out.dim() == 2:  # [batch, tokens] values
                out = out[..., None]
            for b, i in enumerate(chunk):
                result[i] = out[b, :len(batch[i])]
        return result

    def close(self) -> None:
        device = self.device
        self.full = self.base = self.head = None
        gc.collect()
        if str(device).startswith("cuda"):
            import torch

            torch.cuda.empty_cache()


def _qwen_prm_head(folder: Path, hidden: int) -> Any:
    """Qwen2ForProcessRewardModel's ``score``: Linear(hidden, hidden), ReLU, Linear(hidden, 2)."""
    import torch

    sd = _read_tensors(folder, "score.")
    head = torch.nn.Sequential(torch.nn.Linear(hidden, hidden), torch.nn.ReLU(),
                               torch.nn.Linear(hidden, int(sd["2.weight"].shape[0])))
    head.load_state_dict(sd)
    return head.to(sd["0.weight"].dtype)


def _skywork_head(folder: Path, hidden: int, model: str) -> Any:
    """Skywork's ``v_head.summary``: Linear(hidden, 1) on the last hidden state."""
    import torch

    sd = _read_tensors(folder, "v_head.summary.")
    if "weight" not in sd:
        raise ValueError(f"skywork: {model} has no 'v_head.summary.weight' tensor: not a Skywork-o1-Open-PRM "
                         "checkpoint (its value head is missing)")
    head = torch.nn.Linear(hidden, 1, bias="bias" in sd)
    head.load_state_dict(sd)
    return head.to(sd["weight"].dtype)


class _VLLMEngine:
    """Per-token PRM outputs from a vLLM pooling engine (``token_classify``, every token, raw)."""

    def __init__(self, model: str, family: str, dtype: str, tokenizer: Any,
                 candidates: tuple[int, int] | None, trust_remote_code: bool,
                 kwargs: Mapping[str, Any]) -> None:
        import vllm
        from vllm.config import PoolerConfig

        args: dict[str, Any] = dict(
            model=model, runner="pooling", dtype=dtype, trust_remote_code=trust_remote_code, seed=0,
            pooler_config=PoolerConfig(task="token_classify", tok_pooling_type="ALL", use_activation=False),
        )
        if family in _LM_FAMILIES:
            assert candidates is not None
            # The causal LM becomes a token classifier whose two logits are the LM head's rows
            # for the good and bad tokens (vLLM's "no_post_processing" conversion).
            args["convert"] = "classify"
            tokens = tokenizer.convert_ids_to_tokens(list(candidates))
            args["hf_overrides"] = {"classifier_from_token": tokens, "method": "no_post_processing",
                                    "num_labels": 2}
        elif family == "skywork":
            _register_skywork_vllm()
            args["hf_overrides"] = {"architectures": [SKYWORK_VLLM_ARCH]}
        args.update(kwargs)
        self._llm = vllm.LLM(**args)

    def outputs(self, batch: Sequence[Sequence[int]]) -> list[Any]:
        from vllm import PoolingParams
        from vllm.inputs import TokensPrompt

        prompts = [TokensPrompt(prompt_token_ids=list(ids)) for ids in batch]
        outs = self._llm.encode(prompts, pooling_params=PoolingParams(use_activation=False),
                                pooling_task="token_classify", use_tqdm=False)
        result = []
        for ids, o in zip(batch, outs):
            data = o.outputs.data.float().cpu()
            if data.dim() == 1:
                data = data[:, None]
            if data.shape[0] != len(ids):
                raise RuntimeError(f"vLLM returned outputs for {data.shape[0]} tokens of a "
                                   f"{len(ids)}-token input")
            result.append(data)
        return result

    def close(self) -> None:
        llm, self._llm = self._llm, None
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        shutdown = getattr(core, "shutdown", None)
        if callable(shutdown):
            try:
                shutdown()
            except Exception as e:  # noqa: BLE001 - closing must not raise
                log.warning("vLLM PRM engine did not shut down cleanly: %s", e)
        del llm, core
        gc.collect()


def _register_skywork_vllm() -> None:
    """Register a vLLM model for Skywork-o1-Open-PRM: Qwen2 plus a one-value linear head per token.

    The checkpoint's ``v_head.summary.{weight,bias}`` load into the head; its ``lm_head`` is
    ignored. Registered in this process only (vLLM plugins register in every process).
    """
    from vllm import ModelRegistry

    if SKYWORK_VLLM_ARCH in ModelRegistry.get_supported_archs():
        return
    from vllm.model_executor.layers.linear import ReplicatedLinear
    from vllm.model_executor.layers.pooler.tokwise import pooler_for_token_classify
    from vllm.model_executor.models.interfaces_base import default_pooling_type
    from vllm.model_executor.models.qwen2_rm import Qwen2RewardBaseModel

    @default_pooling_type(tok_pooling_type="ALL")
    class StepspecSkyworkQwen2PRM(Qwen2RewardBaseModel):
        def __init__(self, *, vllm_config: Any, prefix: str = "") -> None:
            vllm_config.model_config.hf_config.num_labels = 1
            super().__init__(vllm_config=vllm_config, prefix=prefix)
            self.score = ReplicatedLinear(self.config.hidden_size, 1, bias=True, params_dtype=self.head_dtype,
                                          return_bias=False)
            self.pooler = pooler_for_token_classify(vllm_config.model_config.pooler_config)

        def load_weights(self, weights: Any) -> set[str]:
            old = "v_head.summary."
            renamed = ((("score." + n[len(old):]) if n.startswith(old) else n, w) for n, w in weights)
            return super().load_weights(renamed)

    ModelRegistry.register_model(SKYWORK_VLLM_ARCH, StepspecSkyworkQwen2PRM)
