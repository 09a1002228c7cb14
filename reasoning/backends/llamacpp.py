"""A :class:`reasoning.protocols.Generator` over llama.cpp (llama-cpp-python), on GGUF files.

The fast CPU engine: quantised GGUF weights, no conversion. llama-cpp-python is an optional
extra (``pip install stepspec[llamacpp]``); it is imported when a generator is built, never
when this module is imported.

How it runs, and why:

- **Sequences, not one context per request.** One llama.cpp context holds up to
  ``max_sequences`` sequences in a unified KV cache. A ``generate`` call puts up to that many
  requests in flight at once and decodes them together, one token of each per
  ``llama_decode`` call, so a batch of steps costs about what one step costs on a machine
  whose decode is memory-bound.
- **Prefix reuse.** Each sequence remembers the ids whose keys and values it holds. A request
  goes to the sequence that last served its problem (``request.problem_id``); only the ids
  after the common prefix are evaluated, so a problem's next step, or the target-as-judge
  call on its latest step, costs its new tokens, not the whole context again.
  ``Completion.cached_prompt_tokens`` says how many prompt ids were reused;
  :meth:`LlamaCppGenerator.perf` reads llama.cpp's own counters, and
  :meth:`LlamaCppGenerator.reset_cache` empties every sequence (a benchmark run that must not
  inherit the run before it). A problem never starts from
  another problem's cache: llama.cpp's numbers depend slightly on how a prefix was split into
  batches (we measured up to 0.1 nats on a first-token log-probability), so sharing would make
  a problem's answer depend on which problems ran before it. With this rule a problem's
  answer depends only on its own calls, and stepping through a problem reproduces one long
  greedy decode token for token. Raw prompts without a problem (``generate_ids`` with key
  None, e.g. from the server) take the sequence with the longest common prefix.
- **Prompts as ids**, exactly as :class:`reasoning.backends.vllm.VLLMGenerator` builds them:
  the chat rendered with the GGUF's own chat template (assistant turn opened), then each
  prefix segment as the ids this generator wrote for it, or its text tokenised. Decoding a
  problem step by step therefore sees the ids that one long decode would have seen.
- **Sampling** happens here, on the logits llama.cpp returns: greedy is the arg-max
  (deterministic), temperature / top-p sampling uses a NumPy generator seeded per request.
  Log-probabilities are the log-softmax of the same logits.

The completion contract is the one the step loop relies on (see ``reasoning/backends/vllm.py``):
``token_ids`` are every id sampled minus a final end-of-generation id; ``text`` is their
bytes decoded, so it ends with the stop string or the rest of the token that completed it;
``finish_reason`` is ``stop``, ``eos`` or ``length``.
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reasoning.backends._ids import TokenPrompts
from reasoning.backends._lock import serialized
from reasoning.types import ChatMessage, Completion, FinishReason, GenerationParams, GenerationRequest

log = logging.getLogger(__name__)

_KEPT_LOGITS = 4
"""Positions per sequence whose logits are kept (see ``_Sequence.logits``); each is a vocabulary of floats."""

Item = tuple[str | None, Sequence[int], GenerationParams]
"""A raw prompt: ``(key, prompt ids, params)``; ``key`` names the problem (None: no affinity)."""


def resolve_gguf(model: str) -> str:
    """A short model name (``qwen2.5-coder-0.5b``) to its GGUF file, prepared offline on demand;
    a path to a ``.gguf`` file unchanged.

    Raises:
        FileNotFoundError: ``model`` looks like a path and no such file exists.
    """
    p = Path(model).expanduser()
    if p.suffix == ".gguf" or os.sep in model or p.exists():
        if not p.is_file():
            raise FileNotFoundError(f"GGUF model file {model!r} does not exist")
        return str(p)
    from reasoning.offline import ensure_gguf

    return str(ensure_gguf(model))


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two id lists.

    >>> common_prefix([1, 2, 3], [1, 2, 4, 5])
    2
    """
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


@dataclass(slots=True)
class _Sequence:
    """One sequence of the context: which ids its KV cache holds and whom it served last."""

    seq_id: int
    tokens: list[int] = field(default_factory=list)
    owner: str | None = None
    last_used: int = 0
    logits: dict[int, Any] = field(default_factory=dict)
    """Logits after the first ``n`` ids, for the few ``n`` where a request ended (prompt end, last
    step): a prompt that ends there needs no id evaluated again, so a repeated prompt gives the
    same numbers as the first time (llama.cpp's results depend slightly on the batch shape)."""


@dataclass(slots=True)
class _Active:
    """A request being decoded."""

    index: int
    params: GenerationParams
    seq: _Sequence
    prompt_len: int
    cached: int
    max_tokens: int
    rng: Any
    ids: list[int] = field(default_factory=list)
    pieces: list[bytes] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    top: list[dict[str, float]] = field(default_factory=list)
    finish: FinishReason | None = None
    logits: Any = None
    prefill_s: float = 0.0
    decode_s: float = 0.0


class LlamaCppGenerator(TokenPrompts):
    """Generates step continuations with llama.cpp on a GGUF file, in this process.

    llama.cpp engines, unlike vLLM's, share a process without trouble: draft and target can
    both be built here.

    Args:
        model: A short model name known to :mod:`reasoning.offline` (its GGUF is prepared
            on demand) or a path to a ``.gguf`` file.
        name: Name recorded in segments and traces; segments carrying it reuse their ids.
        n_ctx: Longest prompt + generation of one sequence, in tokens.
        max_sequences: Sequences decoded together, and problems whose context stays cached:
            keep it >= ``loop.max_in_flight`` (the problems in flight), or problems evict each
            other and re-read their whole context at every step (a warning says so). The
            context holds ``n_ctx * max_sequences`` tokens of KV cache.
        n_threads: CPU threads (None: all cores).
        n_batch: Most ids evaluated in one ``llama_decode`` call while reading prompts.
        seed: Seed for sampled (temperature > 0) requests that carry no seed of their own.
        chat_template: A Jinja chat template to use instead of the GGUF's own.
        n_gpu_layers: Layers offloaded to a GPU, for builds that have one (0 on CPUs).
        context_kwargs: Further ``llama_context_params`` fields (e.g. ``flash_attn_type``,
            ``type_k``), set as given.
        verbose: Let llama.cpp print its own logs.
    """

    def __init__(
        self,
        model: str,
        name: str = "llamacpp",
        n_ctx: int = 4096,
        max_sequences: int = 8,
        n_threads: int | None = None,
        n_batch: int = 512,
        seed: int = 0,
        chat_template: str | None = None,
        n_gpu_layers: int = 0,
        context_kwargs: Mapping[str, Any] | None = None,
        verbose: bool = False,
    ) -> None:
        if n_ctx < 16:
            raise ValueError(f"n_ctx must be >= 16, got {n_ctx}")
        if max_sequences < 1:
            raise ValueError(f"max_sequences must be >= 1, got {max_sequences}")
        if n_batch < 1:
            raise ValueError(f"n_batch must be >= 1, got {n_batch}")
        try:
            import llama_cpp
            from llama_cpp import _internals
        except ImportError as e:  # pragma: no cover - depends on the install
            raise ImportError("LlamaCppGenerator needs llama-cpp-python: pip install 'stepspec[llamacpp]' "
                              "(or bash scripts/install_llamacpp.sh)") from e
        import numpy as np

        self._np = np
        self._lc = llama_cpp
        self.name = name
        self.model = resolve_gguf(model)
        self.max_model_len = n_ctx
        self.n_batch = n_batch
        self.seed = seed
        self._tick = 0
        t0 = time.perf_counter()
        _quiet_logs(llama_cpp) if not verbose else None
        mparams = llama_cpp.llama_model_default_params()
        mparams.n_gpu_layers = n_gpu_layers
        self._model = _internals.LlamaModel(path_model=self.model, params=mparams, verbose=verbose)
        cparams = llama_cpp.llama_context_default_params()
        threads = n_threads or os.cpu_count() or 1
        cparams.n_ctx = n_ctx * max_sequences
        cparams.n_batch = n_batch
        cparams.n_ubatch = n_batch
        cparams.n_seq_max = max_sequences
        cparams.n_threads = threads
        cparams.n_threads_batch = threads
        cparams.kv_unified = False  # a KV stream per sequence: numbers independent of the others
        cparams.no_perf = False
        for key, value in dict(context_kwargs or {}).items():
            if not hasattr(cparams, key):
                raise ValueError(f"context_kwargs: llama_context_params has no field {key!r}")
            setattr(cparams, key, value)
        self._ctx = _internals.LlamaContext(model=self._model, params=cparams, verbose=verbose)
        self._batch = _internals.LlamaBatch(n_tokens=max(n_batch, max_sequences), embd=0, n_seq_max=1,
                                            verbose=verbose)
        self._vocab = self._model.vocab
        self.n_vocab = self._model.n_vocab()
        self._pieces: dict[int, bytes] = {}
        meta = self._model.metadata()
        template = chat_template or meta.get("tokenizer.chat_template")
        if not template:
            raise ValueError(f"{self.model}: the GGUF has no chat template (tokenizer.chat_template); "
                             "pass chat_template=")
        self._bos_id = int(llama_cpp.llama_vocab_bos(self._vocab))
        eos_id = int(llama_cpp.llama_vocab_eos(self._vocab))
        self._bos_text = self._piece(self._bos_id).decode("utf-8", "replace") if self._bos_id >= 0 else ""
        eos_text = self._piece(eos_id).decode("utf-8", "replace") if eos_id >= 0 else ""
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self._formatter = Jinja2ChatFormatter(template=template, eos_token=eos_text, bos_token=self._bos_text,
                                              add_generation_prompt=True)
        self._add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self._vocab))
        self._seqs = [_Sequence(i) for i in range(max_sequences)]
        self.init_chat_cache()
        self._closed = False
        self._warned = False
        self.start_seconds = time.perf_counter() - t0
        """Seconds the model took to load."""
        log.info("llama.cpp %r for %s ready in %.1f s (%d sequences x %d tokens, %d threads)",
                 name, self.model, self.start_seconds, max_sequences, n_ctx, threads)

    # -- tokens ------------------------------------------------------------------------------
    def _piece(self, token: int) -> bytes:
        piece = self._pieces.get(token)
        if piece is None:
            buf = ctypes.create_string_buffer(64)
            n = self._lc.llama_token_to_piece(self._vocab, token, buf, 64, 0, True)
            if n < 0:
                buf = ctypes.create_string_buffer(-n)
                n = self._lc.llama_token_to_piece(self._vocab, token, buf, -n, 0, True)
            piece = buf.raw[:n]
            self._pieces[token] = piece
        return piece

    def tokenize(self, text: str) -> list[int]:
        """``text``'s ids, special-token strings parsed as special tokens, no BOS added."""
        return self._model.tokenize(text.encode("utf-8"), False, True) if text else []

    encode_text = tokenize

    def decode(self, ids: Sequence[int]) -> str:
        """The text of ``ids`` (their byte pieces joined, special tokens kept)."""
        return b"".join(self._piece(int(t)) for t in ids).decode("utf-8", "replace")

    def is_end(self, token: int) -> bool:
        """True for an end-of-generation id (EOS, end of turn)."""
        return bool(self._lc.llama_vocab_is_eog(self._vocab, token))

    def render_chat(self, messages: tuple[ChatMessage, ...]) -> tuple[int, ...]:
        """The chat rendered with the GGUF's template, assistant turn opened, as token ids."""
        text = self._formatter(messages=[{"role": m.role, "content": m.content} for m in messages]).prompt
        add_bos = self._add_bos and not (self._bos_text and text.startswith(self._bos_text))
        return tuple(([self._bos_id] if add_bos else []) + self.tokenize(text))

    # -- generation --------------------------------------------------------------------------
    @serialized
    def generate(self, requests: Sequence[GenerationRequest]) -> list[Completion]:
        """Generate one completion per request, ``max_sequences`` at a time."""
        if self._closed:
            raise RuntimeError(f"LlamaCppGenerator {self.name!r} is closed")
        if not requests:
            return []
        items = []
        for req in requests:
            ids = self.prompt_ids(req)
            if len(ids) + 1 > self.max_model_len:
                raise ValueError(f"request {req.request_id!r}: prompt of {len(ids)} tokens leaves no room in "
                                 f"n_ctx={self.max_model_len}; raise n_ctx")
            items.append((req.problem_id, ids, req.params))
        return self.generate_ids(items)

    @serialized
    def generate_ids(self, items: Sequence[Item]) -> list[Completion]:
        """Continue raw prompts: ``(key, prompt ids, params)`` each, ``key`` naming the problem (or
        None) so that its sequence, and the KV cache it holds, is found again next time."""
        if self._closed:
            raise RuntimeError(f"LlamaCppGenerator {self.name!r} is closed")
        for key, ids, _ in items:
            if not ids:
                raise ValueError(f"{key!r}: empty prompt")
            if len(ids) + 1 > self.max_model_len:
                raise ValueError(f"{key!r}: prompt of {len(ids)} tokens leaves no room in "
                                 f"n_ctx={self.max_model_len}; raise n_ctx")
        keys = {k for k, _, _ in items if k is not None}
        if len(keys) > len(self._seqs) and not self._warned:
            self._warned = True
            log.warning("llama.cpp %r: %d problems in one call, more than max_sequences=%d: problems take "
                        "each other's sequences and read their whole context again at every step; "
                        "raise max_sequences or lower loop.max_in_flight",
                        self.name, len(keys), len(self._seqs))
        t0 = time.perf_counter()
        results: list[_Active] = []
        width = len(self._seqs)
        # Waves of at most `width` items, at most one per problem: two requests of one problem
        # (the shadow collection scores a draft and a target step) then both find its sequence.
        waves: list[tuple[list[int], set]] = []
        for i, (key, _, _) in enumerate(items):
            for idx, keys in waves:
                if len(idx) < width and (key is None or key not in keys):
                    idx.append(i)
                    keys.add(key)
                    break
            else:
                waves.append(([i], {key}))
        for idx, _ in waves:
            results.extend(self._run_wave([items[i] for i in idx], idx))
        # Each request is charged its share of the phases it was in (prefill: by the ids it fed;
        # decode: each step's time over the requests decoding in it); what no phase timed (the
        # sequences' bookkeeping) is spread evenly, so the shares add up to the call's seconds.
        timed = sum(a.prefill_s + a.decode_s for a in results)
        rest = (time.perf_counter() - t0 - timed) / max(len(items), 1)
        results.sort(key=lambda a: a.index)
        return [self._completion(a, rest) for a in results]

    def _assign(self, items: Sequence[Item]) -> list[_Sequence]:
        """A free sequence per item: its problem's own, else the longest shared prefix, else the oldest."""
        free = list(self._seqs)
        chosen: list[_Sequence] = []
        for key, ids, _ in items:
            own = [s for s in free if key is not None and s.owner == key]
            if own:
                best = own[0]
            elif key is None:
                best = max(free, key=lambda s: (common_prefix(s.tokens, ids), -s.last_used))
            else:
                best = min(free, key=lambda s: s.last_used)
            free.remove(best)
            chosen.append(best)
        return chosen

    def _run_wave(self, items: Sequence[Item], indices: Sequence[int]) -> list[_Active]:
        np = self._np
        seqs = self._assign(items)
        active: list[_Active] = []
        feeds: list[tuple[_Active, Sequence[int]]] = []
        for i, ((key, ids, p), seq) in enumerate(zip(items, seqs)):
            self._tick += 1
            seq.last_used = self._tick
            # A problem reuses only its own sequence's cache: llama.cpp's numbers depend slightly
            # on how a prefix was split into batches, so reusing another problem's prefix would
            # make a problem's answer depend on which problems ran before it.
            keep = common_prefix(seq.tokens, ids) if key is None or seq.owner == key else 0
            seq.owner = key
            if keep == len(ids) and keep not in seq.logits:
                keep -= 1  # no logits kept for the whole prompt: evaluate its last id again
            self._lc.llama_memory_seq_rm(self._ctx.memory, seq.seq_id, keep, -1)
            del seq.tokens[keep:]
            seq.logits = {n: v for n, v in seq.logits.items() if n <= keep}
            room = self.max_model_len - len(ids)
            seed = p.seed if p.seed is not None else self.seed
            a = _Active(indices[i], p, seq, len(ids), keep, min(p.max_tokens, room),
                        np.random.default_rng(seed) if p.temperature > 0 else None)
            active.append(a)
            if keep == len(ids):
                a.logits = seq.logits[keep]
            else:
                feeds.append((a, ids[keep:]))
        t = time.perf_counter()
        self._prefill(feeds)
        fed = sum(len(ids) for _, ids in feeds)
        spent = time.perf_counter() - t
        for a, ids in feeds:
            a.prefill_s = spent * len(ids) / fed
        for a in active:
            a.seq.logits[len(a.seq.tokens)] = a.logits
        running = list(active)
        while running:
            t = time.perf_counter()
            for a in running:
                self._step(a)
            stepping = running
            running = [a for a in running if a.finish is None]
            if running:
                self._decode_one(running)
            share = (time.perf_counter() - t) / len(stepping)
            for a in stepping:
                a.decode_s += share
        for a in active:
            logits = a.seq.logits
            logits[len(a.seq.tokens)] = a.logits
            for n in sorted(logits)[:-_KEPT_LOGITS]:
                del logits[n]
        return active

    def _prefill(self, feeds: Sequence[tuple[_Active, Sequence[int]]]) -> None:
        """Evaluate each request's new prompt ids, ``n_batch`` ids per ``llama_decode``."""
        n = 0
        last: list[tuple[int, _Active]] = []
        for a, ids in feeds:
            for j, tok in enumerate(ids):
                if n == self.n_batch:
                    self._decode(n, last)
                    n, last = 0, []
                is_last = j == len(ids) - 1
                self._put(n, tok, a.seq, is_last)
                if is_last:
                    last.append((n, a))
                n += 1
        if n:
            self._decode(n, last)

    def _decode_one(self, running: Sequence[_Active]) -> None:
        """Evaluate the last sampled id of every running request in one ``llama_decode``."""
        for n, a in enumerate(running):
            self._put(n, a.ids[-1], a.seq, True)
        self._decode(len(running), list(enumerate(running)))

    def _put(self, n: int, tok: int, seq: _Sequence, logits: bool) -> None:
        """Slot ``n`` of the batch: ``tok`` at the next position of ``seq``."""
        batch = self._batch.batch
        batch.token[n] = tok
        batch.pos[n] = len(seq.tokens)
        batch.n_seq_id[n] = 1
        batch.seq_id[n][0] = seq.seq_id
        batch.logits[n] = logits
        seq.tokens.append(tok)

    def _decode(self, n: int, outputs: Sequence[tuple[int, _Active]]) -> None:
        np = self._np
        self._batch.batch.n_tokens = n
        self._ctx.decode(self._batch)
        for i, a in outputs:
            ptr = self._lc.llama_get_logits_ith(self._ctx.ctx, i)
            a.logits = np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy()

    def _step(self, a: _Active) -> None:
        """Sample one id for ``a`` from its logits and decide whether it finished."""
        np = self._np
        logits = a.logits
        p = a.params
        if a.rng is None:
            tok = int(np.argmax(logits))
        else:
            tok = _sample(np, logits, p.temperature, p.top_p, a.rng)
        if p.logprobs is not None:
            m = float(logits.max())
            lse = m + math.log(float(np.exp(logits - m).sum()))
            a.logprobs.append(float(logits[tok]) - lse)
            if p.logprobs > 0:
                k = min(p.logprobs, self.n_vocab)
                best = np.argpartition(-logits, k - 1)[:k]
                best = best[np.argsort(-logits[best])]
                top: dict[str, float] = {}
                for t in best:
                    text = self._piece(int(t)).decode("utf-8", "replace")
                    top[text] = max(top.get(text, float("-inf")), float(logits[t]) - lse)
                a.top.append(top)
        if self.is_end(tok):
            if a.logprobs and len(a.logprobs) > len(a.ids):
                a.logprobs.pop()
                if a.top:
                    a.top.pop()
            a.finish = FinishReason.EOS
            return
        a.ids.append(tok)
        a.pieces.append(self._piece(tok))
        stops = p.stop
        if stops:
            tail_len = max(len(s) for s in stops) + len(a.pieces[-1]) + 4
            text = b"".join(a.pieces[-tail_len:]).decode("utf-8", "replace")
            if any(s in text for s in stops):
                a.finish = FinishReason.STOP
                return
        if len(a.ids) >= a.max_tokens:
            a.finish = FinishReason.LENGTH

    def _completion(self, a: _Active, rest: float) -> Completion:
        want = a.params.logprobs
        return Completion(
            text=b"".join(a.pieces).decode("utf-8", "replace"),
            token_ids=tuple(a.ids),
            finish_reason=a.finish or FinishReason.LENGTH,
            prompt_tokens=a.prompt_len,
            cached_prompt_tokens=a.cached,
            logprobs=tuple(a.logprobs) if want is not None else None,
            top_logprobs=tuple(a.top) if want else None,
            seconds=a.prefill_s + a.decode_s + rest,
            prefill_seconds=a.prefill_s,
        )

    # -- counters and lifetime ---------------------------------------------------------------
    @serialized
    def reset_cache(self) -> bool:
        """Empty every sequence's KV cache and forget whom it served, so that the next call reads
        all its prompts anew (a benchmark run that must not inherit the run before it). True."""
        self._lc.llama_memory_clear(self._ctx.memory, True)
        for seq in self._seqs:
            seq.tokens.clear()
            seq.owner = None
            seq.logits.clear()
            seq.last_used = 0
        return True

    def perf(self) -> dict[str, float]:
        """llama.cpp's own counters for this context since it was made.

        ``prompt_eval_tokens`` counts ids evaluated in multi-id batches (prompts, and decode
        steps of several sequences at once), ``eval_tokens`` single-id batches.
        """
        d = self._lc.llama_perf_context(self._ctx.ctx)
        return {"prompt_eval_tokens": int(d.n_p_eval), "prompt_eval_ms": float(d.t_p_eval_ms),
                "eval_tokens": int(d.n_eval), "eval_ms": float(d.t_eval_ms)}

    def close(self) -> None:
        """Free the context and the model. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for attr in ("_batch", "_ctx", "_model"):
            obj = getattr(self, attr, None)
            if obj is not None:
                try:
                    obj.close()
                except Exception as e:  # noqa: BLE001 - closing must not raise
                    log.warning("llama.cpp %r: close failed: %s", self.name, e)
        log.info("llama.cpp %r closed", self.name)

    def __repr__(self) -> str:
        return f"LlamaCppGenerator(name={self.name!r}, model={self.model!r})"


def _sample(np: Any, logits: Any, temperature: float, top_p: float, rng: Any) -> int:
    """One id sampled from ``softmax(logits / temperature)`` restricted to the top-p mass."""
    z = logits.astype(np.float64) / temperature
    z -= z.max()
    probs = np.exp(z)
    probs /= probs.sum()
    if top_p < 1.0:
        order = np.argsort(-probs)
        cum = np.cumsum(probs[order])
        cut = int(np.searchsorted(cum, top_p)) + 1
        keep = order[:cut]
        sub = probs[keep] / probs[keep].sum()
        return int(keep[rng.choice(len(keep), p=sub)])
    return int(rng.choice(len(probs), p=probs))


def _quiet_logs(llama_cpp: Any) -> None:
    """Let llama.cpp print only its errors (its info logs go to stderr otherwise)."""
    try:
        from llama_cpp._logger import set_verbose
    except ImportError:  # pragma: no cover - another llama-cpp-python layout
        return
    set_verbose(False)
