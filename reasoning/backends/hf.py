"""The transformers backend: the reference ``Generator``, slow but simple and exact.

It renders each request's chat with the tokenizer's own template, appends the answer so far
(reusing this generator's own token ids where a segment carries them, so that step-by-step
decoding is token for token the same as one long decode) and continues it with
``model.generate`` in left-padded batches.

Rules it shares with :class:`~reasoning.backends.scripted.ScriptedGenerator` and the vLLM
backend:

- a stop string counts only inside the generated text (not across the prompt boundary), and
  generation ends with the token that completes the first one; that token is kept whole, so
  the text ends with the stop string or with the rest of that token;
- ``token_ids`` exclude the end-of-sequence token and padding; ``text`` is the decode of
  exactly ``token_ids``;
- logprobs are the log-softmax of the raw logits (before temperature or top-p).

torch and transformers are imported when a generator is built, never at import.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from reasoning.backends._ids import TokenPrompts
from reasoning.backends._lock import serialized
from reasoning.types import ChatMessage, Completion, FinishReason, GenerationRequest

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

_PROMPT_CACHE_SIZE = 512
"""Rendered chats kept (LRU), keyed by the messages tuple."""


class HFGenerator(TokenPrompts):
    """Generates with a transformers causal LM, batched with left padding.

    Args:
        model: A short model name known to :func:`reasoning.offline.resolve_model`
            (``"smollm2-135m"``), a local folder, or a hub id.
        name: Name recorded in segments and traces.
        tokenizer: Tokenizer folder or hub id, if not the model's own.
        dtype: Weight dtype: ``"float32"``, ``"bfloat16"``, ``"float16"`` or ``"auto"``.
        device: Torch device (``"cpu"``, ``"cuda"``, ``"cuda:1"``).
        batch_size: Most requests in one ``model.generate`` call.
        model_kwargs: Extra keyword arguments for ``AutoModelForCausalLM.from_pretrained``
            (e.g. ``{"attn_implementation": "eager"}``).

    Raises:
        ValueError: If ``dtype`` or ``batch_size`` is not valid.
    """

    def __init__(
        self,
        model: str,
        name: str = "hf",
        tokenizer: str | None = None,
        dtype: str = "float32",
        device: str = "cpu",
        batch_size: int = 8,
        model_kwargs: dict | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

        from reasoning.offline import resolve_model

        if dtype == "auto":
            torch_dtype: Any = "auto"
        else:
            torch_dtype = getattr(torch, dtype, None)
            if not isinstance(torch_dtype, torch.dtype):
                raise ValueError(f"dtype must be 'float32', 'bfloat16', 'float16' or 'auto', got {dtype!r}")
        self.name = name
        self.batch_size = batch_size
        self.device = device
        path = str(resolve_model(model))
        tok_path = str(resolve_model(tokenizer)) if tokenizer else path
        t0 = time.perf_counter()
        self._model = None
        self._tokenizer = AutoTokenizer.from_pretrained(tok_path)
        if getattr(self._tokenizer, "chat_template", None) is None:
            raise ValueError(f"tokenizer {tok_path!r} has no chat template: HFGenerator needs a chat model")
        kwargs = dict(model_kwargs or {})
        lm = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, **kwargs)
        if "device_map" not in kwargs:  # accelerate has placed a model loaded with a device map
            lm = lm.to(device)
        lm.eval()

        # End-of-sequence ids: the tokenizer's and the generation config's, as vLLM does.
        eos: set[int] = set()
        for src in (self._tokenizer.eos_token_id, lm.generation_config.eos_token_id):
            if src is not None:
                eos.update([src] if isinstance(src, int) else src)
        self._eos = frozenset(eos)
        pad = self._tokenizer.pad_token_id
        if pad is None:
            pad = lm.generation_config.pad_token_id
        if pad is None:
            pad = min(eos) if eos else 0
        self._pad = int(pad)
        # Only the request's parameters decide sampling: drop any sampling defaults shipped with
        # the checkpoint (temperature, top_k, repetition_penalty, ...).
        lm.generation_config = GenerationConfig(
            bos_token_id=lm.generation_config.bos_token_id,
            eos_token_id=sorted(self._eos) or None,
            pad_token_id=self._pad,
        )
        self._model = lm
        self.init_chat_cache(_PROMPT_CACHE_SIZE)
        log.info("loaded %s (%s) on %s as %s in %.1f s", model, path, device, dtype, time.perf_counter() - t0)

    # -- public ----------------------------------------------------------------------------
    @property
    def tokenizer(self) -> Any:
        """The transformers tokenizer (raises once closed)."""
        self._check_open()
        return self._tokenizer

    @property
    def model(self) -> Any:
        """The transformers model (raises once closed)."""
        self._check_open()
        return self._model

    def prompt_ids(self, request: GenerationRequest) -> list[int]:
        """The token ids this generator prefills for ``request``: chat template, then prefix.

        A prefix segment that this generator wrote (``source == name``) with its token ids is
        appended as those ids; any other segment is tokenised from its text
        (:class:`~reasoning.backends._ids.TokenPrompts`).
        """
        self._check_open()
        return super().prompt_ids(request)

    def render_chat(self, messages: tuple[ChatMessage, ...]) -> tuple[int, ...]:
        """The chat rendered with the tokenizer's template, assistant turn opened, as token ids."""
        text = self._tokenizer.apply_chat_template(
            [{"role": m.role, "content": m.content} for m in messages],
            add_generation_prompt=True, tokenize=False)
        return tuple(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    def encode_text(self, text: str) -> list[int]:
        """``text``'s ids, without special tokens added."""
        return self._tokenizer.encode(text, add_special_tokens=False)

    @serialized
    def generate(self, requests: Sequence[GenerationRequest]) -> list[Completion]:
        """Continue each request; one completion per request, in order.

        Requests are grouped by sampling setting (all greedy requests together; sampled ones by
        temperature, top-p and seed) and run in chunks of ``batch_size``. A seeded sampled request
        runs in a call of its own: transformers samples a batch from torch's one generator, so
        two requests of one seed in one batch would draw different numbers (and a request's sample
        would depend on its batch), where every other backend gives each request its own stream.
        """
        self._check_open()
        groups: dict[tuple, list[int]] = {}
        for i, req in enumerate(requests):
            p = req.params
            key = (0.0, 1.0, None) if p.temperature == 0 else (p.temperature, p.top_p, p.seed)
            groups.setdefault(key, []).append(i)
        out: list[Completion | None] = [None] * len(requests)
        for (temperature, top_p, seed), idx in groups.items():
            size = 1 if seed is not None and temperature > 0 else self.batch_size
            for start in range(0, len(idx), size):
                chunk = idx[start:start + size]
                done = self._generate_chunk([requests[i] for i in chunk], temperature, top_p, seed)
                for i, c in zip(chunk, done):
                    out[i] = c
        return [c for c in out if c is not None]

    def decode(self, ids: Sequence[int]) -> str:
        """The text of ``ids`` (special tokens kept, spaces not cleaned up): what a completion's
        ``text`` is of its ``token_ids``."""
        return self._tokenizer.decode(list(ids), skip_special_tokens=False,
                                      clean_up_tokenization_spaces=False)

    def close(self) -> None:
        """Free the model and tokenizer. Idempotent."""
        if getattr(self, "_model", None) is None:
            return
        device = str(self._model.device)
        self._model = None
        self._tokenizer = None
        self._chat_cache.clear()
        gc.collect()
        if device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()
        log.info("closed %s", self.name)

    # -- internals -------------------------------------------------------------------------
    def _check_open(self) -> None:
        if getattr(self, "_model", None) is None:
            raise RuntimeError(f"HFGenerator {self.name!r} is closed")

    def _decode(self, ids: Sequence[int]) -> str:
        return self._tokenizer.decode(list(ids), skip_special_tokens=False,
                                      clean_up_tokenization_spaces=False)

    def _generate_chunk(self, reqs: list[GenerationRequest], temperature: float, top_p: float,
                        seed: int | None) -> list[Completion]:
        import torch

        t0 = time.perf_counter()
        prompts = [self.prompt_ids(r) for r in reqs]
        width = max(len(p) for p in prompts)  # tokens
        n = len(reqs)
        input_ids = torch.full((n, width), self._pad, dtype=torch.long)
        attention_mask = torch.zeros((n, width), dtype=torch.long)
        for b, p in enumerate(prompts):  # left padding
            input_ids[b, width - len(p):] = torch.tensor(p, dtype=torch.long)
            attention_mask[b, width - len(p):] = 1
        max_tokens = [r.params.max_tokens for r in reqs]
        want_lp = [r.params.logprobs for r in reqs]
        watcher = _StopWatcher(self._tokenizer, width, [r.params.stop for r in reqs], max_tokens, self._eos)
        sample = temperature > 0
        kwargs: dict[str, Any] = dict(
            max_new_tokens=max(max_tokens), do_sample=sample, num_beams=1,
            eos_token_id=sorted(self._eos) or None, pad_token_id=self._pad,
            stopping_criteria=[watcher], return_dict_in_generate=True,
            output_logits=any(k is not None for k in want_lp),
        )
        if sample:  # top_k=0 turns off transformers' default top-k of 50
            kwargs.update(temperature=temperature, top_p=top_p, top_k=0)
        device = self._model.device
        with torch.inference_mode(), contextlib.ExitStack() as stack:
            if sample and seed is not None:
                # transformers samples from torch's global generator: seed it for this call only
                # and restore it after (unseeded calls keep drawing fresh samples).
                stack.enter_context(torch.random.fork_rng(devices=[device] if device.type == "cuda" else []))
                torch.manual_seed(seed)
            res = self._model.generate(input_ids=input_ids.to(device),
                                       attention_mask=attention_mask.to(device), **kwargs)
        sequences = res.sequences[:, width:].tolist()
        logits = res.logits if kwargs["output_logits"] else None

        out = []
        for b in range(n):
            gen = sequences[b][:max_tokens[b]]
            stop_at = watcher.stop_at[b]
            eos_at = next((i for i, t in enumerate(gen) if t in self._eos), None)
            if stop_at is not None and (eos_at is None or stop_at <= eos_at):
                ids, finish = gen[:stop_at], FinishReason.STOP
            elif eos_at is not None:
                ids, finish = gen[:eos_at], FinishReason.EOS
            else:
                ids, finish = gen, FinishReason.LENGTH
            lp = top = None
            if want_lp[b] is not None and logits is not None:
                lp, top = self._logprobs(logits, b, ids, want_lp[b])
            out.append(Completion(text=self._decode(ids), token_ids=tuple(ids), finish_reason=finish,
                                  prompt_tokens=len(prompts[b]), cached_prompt_tokens=0,
                                  logprobs=lp, top_logprobs=top))
        seconds = time.perf_counter() - t0
        new_tokens = sum(len(c.token_ids) for c in out)
        log.debug("%s: batch of %d, %d prompt + %d new tokens in %.2f s (%.1f tokens/s)", self.name, n,
                  sum(len(p) for p in prompts), new_tokens, seconds, new_tokens / max(seconds, 1e-9))
        return [replace(c, seconds=seconds / n) for c in out]

    def _logprobs(self, logits: tuple[torch.Tensor, ...], row: int, ids: list[int],
                  k: int) -> tuple[tuple[float, ...], tuple[dict[str, float], ...] | None]:
        import torch

        if not ids:
            return (), (() if k > 0 else None)
        raw = torch.stack([logits[t][row] for t in range(len(ids))]).float()  # [tokens, vocab]
        logp = torch.log_softmax(raw, dim=-1)
        chosen = logp.gather(1, torch.tensor(ids, device=logp.device)[:, None])[:, 0].tolist()
        if k <= 0:
            return tuple(chosen), None
        values, indices = logp.topk(k, dim=-1)
        top = []
        for vals, idx in zip(values.tolist(), indices.tolist()):
            d: dict[str, float] = {}
            for v, i in zip(vals, idx):
                d.setdefault(self._decode([i]), v)
            top.append(d)
        return tuple(chosen), tuple(top)


class _StopWatcher:
    """A stopping criterion over the generated part of each row, with its own stop strings and limit.

    transformers' ``stop_strings=`` would look across the prompt boundary and takes one list for
    the whole batch; this one checks only the generated text, per row, and records where each
    row's first stop string was completed (``stop_at[row]`` = generated tokens, that one included).
    """

    def __init__(self, tokenizer: Any, prompt_width: int, stops: Sequence[tuple[str, ...]],
                 max_tokens: Sequence[int], eos: frozenset[int]) -> None:
        self.tokenizer = tokenizer
        self.prompt_width = prompt_width  # tokens (padded)
        self.stops = [tuple(s for s in st if s) for st in stops]
        self.max_tokens = list(max_tokens)
        self.eos = eos
        # A stop string of c characters spans at most 4c byte-level tokens (plus the one that
        # completes it), so decoding this many trailing tokens always covers a fresh match.
        self.window = [4 * max(map(len, st)) + 4 if st else 0 for st in self.stops]
        self.stop_at: list[int | None] = [None] * len(self.stops)
        self.done = [False] * len(self.stops)

    def __call__(self, input_ids: torch.Tensor, scores: Any = None, **kwargs: Any) -> torch.Tensor:
        import torch

        total = input_ids.shape[1]
        generated = total - self.prompt_width  # tokens per row so far
        last = input_ids[:, -1].tolist()
        rows, tails = [], []
        for b in range(len(self.done)):
            if self.done[b]:
                continue
            if last[b] in self.eos:
                self.done[b] = True
                continue
            if self.stops[b]:
                start = max(self.prompt_width, total - self.window[b])
                rows.append(b)
                tails.append(input_ids[b, start:].tolist())
        if rows:
            texts = self.tokenizer.batch_decode(tails, skip_special_tokens=False,
                                                clean_up_tokenization_spaces=False)
            for b, text in zip(rows, texts):
                if any(s in text for s in self.stops[b]):
                    self.stop_at[b] = generated
                    self.done[b] = True
        for b in range(len(self.done)):
            if generated >= self.max_tokens[b]:
                self.done[b] = True
        return torch.tensor(self.done, dtype=torch.bool, device=input_ids.device)
