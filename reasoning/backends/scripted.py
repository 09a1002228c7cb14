"""A deterministic generator double, shipped in the library for tests, examples and benchmarks.

It behaves like an engine in every way the step loop can see (stop strings kept in the text,
token limits, end of sequence, token ids that round-trip, logprobs and top logprobs when asked) but its
"model" is a script: for each problem, the whole answer this model would write.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from reasoning.backends._lock import serialized
from reasoning.types import Completion, FinishReason, GenerationRequest

_PIECE = re.compile(r"\s+|\S+")
_REMEMBERED = 4096
"""Texts whose token ids a generator remembers (then it forgets them all and starts again)."""


class ScriptedGenerator:
    """Continues each answer from a scripted solution.

    Tokens are runs of white space or of non-space characters (``"Hi there.\\n\\n"`` is four
    tokens: ``"Hi"``, ``" "``, ``"there."``, ``"\\n\\n"``), so counts are easy to check by hand.

    The continuation after a prefix: if the script starts with the prefix text, the rest of the
    script; otherwise (another model wrote part of the answer) the script's steps after as many
    steps as the prefix has, steps being cut at ``step_delimiter``.

    Args:
        name: Name recorded in segments and traces.
        solutions: ``{problem_id: answer text}`` (or a list of steps, joined), or a function
            ``(problem_id, prefix_text) -> continuation``.
        default: Answer for a problem not in ``solutions`` (None: such a problem is an error).
        token_prob: Probability reported for every token when logprobs are asked for; or a
            mapping ``{problem_id: probability}``.
        step_delimiter: Where the script's steps end, to align it with another model's prefix.
        seconds_per_token: Sleep this long per generated token (0: none), to mimic a slow model.
        top_logprobs_fn: For requests asking for top logprobs (``logprobs > 0``): a function
            ``request -> {token text: logprob}`` giving the alternatives reported at every
            generated token (cut to the ``logprobs`` best), e.g. the digit distribution a
            target-as-judge call reads. It takes the whole request because judge calls differ
            in their messages, not their prefix. Without it (or when it returns None), the
            top alternatives are the sampled token alone, with its ``token_prob``.
        keep_requests: Keep every request seen in ``requests`` (tests read them); off for long
            benchmarks, where they would hold most of the memory measured.
        prefix_cache: Behave like an engine with a KV cache per problem: a request's prompt ids
            (its messages' ids, then its prefix's) that continue what the last call of its
            problem read and wrote are reported as ``cached_prompt_tokens``; the rest is what it
            reads (prefill). :meth:`reset_cache` empties it. Off: nothing is reported cached.
        prefill_cost: With ``decode_cost``, a modelled cost instead of measured time: each
            completion's ``seconds`` is ``prefill_cost`` per prompt id read plus ``decode_cost``
            per generated id, and its ``prefill_seconds`` the first part (nothing sleeps), so
            cost accounting can be checked by hand. Both None: the call's wall time, unsplit.
        decode_cost: See ``prefill_cost``.
        sample_fn: What sampling writes: for a request at temperature > 0, a function
            ``request -> continuation`` (None: the script's), so that sampled requests can write
            something else than the script, which is what greedy decoding writes; e.g. a
            different candidate for each of a step's candidate drafts (``judge=best-of-n``; the
            ``i``-th candidate's request id ends with ``c<i>``, ``"p/0/d0c2"``). Without it, a
            sampled request writes the script, like a greedy one.

    >>> from reasoning.types import GenerationParams, GenerationRequest
    >>> g = ScriptedGenerator("draft", {"p": "One.\\n\\nTwo.\\n\\n"})
    >>> params = GenerationParams(max_tokens=10, stop=("\\n\\n",))
    >>> [c.text for c in g.generate([GenerationRequest("r", "p", (), (), params)])]
    ['One.\\n\\n']
    """

    def __init__(
        self,
        name: str,
        solutions: Mapping[str, str | Sequence[str]] | Callable[[str, str], str],
        default: str | None = None,
        token_prob: float | Mapping[str, float] = 1.0,
        step_delimiter: str = "\n\n",
        seconds_per_token: float = 0.0,
        top_logprobs_fn: Callable[[GenerationRequest], Mapping[str, float] | None] | None = None,
        keep_requests: bool = True,
        prefix_cache: bool = False,
        prefill_cost: float | None = None,
        decode_cost: float | None = None,
        sample_fn: Callable[[GenerationRequest], str | None] | None = None,
    ) -> None:
        if (prefill_cost is None) != (decode_cost is None):
            raise ValueError("ScriptedGenerator: give both prefill_cost and decode_cost, or neither")
        for what, v in (("prefill_cost", prefill_cost), ("decode_cost", decode_cost)):
            if v is not None and v < 0:
                raise ValueError(f"ScriptedGenerator: {what} must be >= 0, got {v}")
        self.name = name
        self.prefix_cache = prefix_cache
        self.prefill_cost = prefill_cost
        self.decode_cost = decode_cost
        self._held: dict[str, tuple[int, ...]] = {}  # problem id -> ids its "KV cache" holds
        if callable(solutions):
            self._fn = solutions
            self._solutions: dict[str, str] = {}
        else:
            self._fn = None
            self._solutions = {str(k): v if isinstance(v, str) else "".join(v)
                               for k, v in solutions.items()}
        self.default = default
        self.token_prob = token_prob
        self.step_delimiter = step_delimiter
        self.seconds_per_token = seconds_per_token
        self.top_logprobs_fn = top_logprobs_fn
        self.sample_fn = sample_fn
        self.keep_requests = keep_requests
        self._vocab: dict[str, int] = {}
        self._pieces: list[str] = []
        self._encoded: dict[str, tuple[int, ...]] = {}
        self.calls = 0
        """Number of ``generate`` calls (engine calls) so far."""
        self.requests: list[GenerationRequest] = []
        """Every request seen, in order (with ``keep_requests``)."""
        self.batch_sizes: list[int] = []
        """The number of requests of each ``generate`` call."""

    # -- a tiny, exactly invertible tokenizer --------------------------------------------
    def encode(self, text: str) -> list[int]:
        ids = []
        for piece in _PIECE.findall(text):
            if piece not in self._vocab:
                self._vocab[piece] = len(self._pieces)
                self._pieces.append(piece)
            ids.append(self._vocab[piece])
        return ids

    def _token_ids(self, text: str) -> tuple[int, ...]:
        """``encode(text)``, remembered: the rest of a script and the prompts come back call
        after call, and encoding them again was most of this double's time in long benchmarks."""
        ids = self._encoded.get(text)
        if ids is None:
            if len(self._encoded) >= _REMEMBERED:
                self._encoded.clear()
            ids = self._encoded[text] = tuple(self.encode(text))
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self._pieces[i] for i in ids)

    # -- the "model" ---------------------------------------------------------------------
    def continuation(self, problem_id: str, prefix_text: str) -> str:
        """The rest of the answer this model would write after ``prefix_text``."""
        if self._fn is not None:
            return self._fn(problem_id, prefix_text)
        script = self._solutions.get(problem_id, self.default)
        if script is None:
            raise KeyError(f"ScriptedGenerator {self.name!r} has no script for problem {problem_id!r}")
        if script.startswith(prefix_text):
            return script[len(prefix_text):]
        from reasoning.segmenter import BlankLineSegmenter

        seg = BlankLineSegmenter(delimiter=self.step_delimiter)
        parts = seg.split(prefix_text)
        # A step begun in the prefix (a glimpse, a stopped draft): go on with the script's step
        # of that index, past what the prefix already has of it.
        partial = parts[-1] if parts and not parts[-1].endswith(self.step_delimiter) else ""
        done = len(parts) - (1 if partial else 0)
        rest = seg.split(script)[done:]
        if partial and rest and rest[0].startswith(partial):
            rest[0] = rest[0][len(partial):]
        return "".join(rest)

    def _prob(self, problem_id: str) -> float:
        if isinstance(self.token_prob, Mapping):
            return float(self.token_prob.get(problem_id, 1.0))
        return float(self.token_prob)

    @serialized
    def generate(self, requests: Sequence[GenerationRequest]) -> list[Completion]:
        self.calls += 1
        self.batch_sizes.append(len(requests))
        t0 = time.perf_counter()
        out = []
        for req in requests:
            if self.keep_requests:
                self.requests.append(req)
            prefix_text = req.prefix_text
            p = req.params
            text = self.sample_fn(req) if self.sample_fn is not None and p.temperature > 0 else None
            if text is None:
                text = self.continuation(req.problem_id, prefix_text)
            ids = self._token_ids(text)
            finish = FinishReason.EOS
            gen: list[int] = []
            produced = ""
            for tid in ids:
                if len(gen) >= p.max_tokens:
                    finish = FinishReason.LENGTH
                    break
                gen.append(tid)
                produced += self._pieces[tid]
                if p.stop and any(s in produced for s in p.stop):
                    finish = FinishReason.STOP
                    break
            if self.seconds_per_token:
                time.sleep(self.seconds_per_token * len(gen))
            lp = top = None
            if p.logprobs is not None:
                prob = self._prob(req.problem_id)
                lp = tuple([math.log(prob) if prob > 0 else -math.inf] * len(gen))
                if p.logprobs > 0:
                    top = self._top(req, gen, lp, p.logprobs)
            prompt_ids = tuple(t for m in req.messages for t in self._token_ids(m.content)) + tuple(
                self._token_ids(prefix_text))
            cached = None
            if self.prefix_cache:
                held = self._held.get(req.problem_id, ())
                cached = 0
                while cached < min(len(held), len(prompt_ids)) and held[cached] == prompt_ids[cached]:
                    cached += 1
                self._held[req.problem_id] = prompt_ids + tuple(gen)
            c = Completion(text=produced, token_ids=tuple(gen), finish_reason=finish,
                           prompt_tokens=len(prompt_ids), cached_prompt_tokens=cached,
                           logprobs=lp, top_logprobs=top)
            if self.prefill_cost is not None:
                pre = self.prefill_cost * c.prefill_tokens
                c = replace(c, seconds=pre + self.decode_cost * len(gen), prefill_seconds=pre)
            out.append(c)
        if self.prefill_cost is not None:
            return out
        dt = (time.perf_counter() - t0) / max(1, len(requests))
        return [replace(c, seconds=dt) for c in out]

    def reset_cache(self) -> bool:
        """Forget what the modelled KV cache holds (see ``prefix_cache``). True."""
        self._held.clear()
        return True

    def _top(self, req: GenerationRequest, gen: Sequence[int], lp: Sequence[float],
             k: int) -> tuple[dict[str, float], ...]:
        """The top-``k`` alternatives at each generated token, as an engine reports them."""
        given = self.top_logprobs_fn(req) if self.top_logprobs_fn is not None else None
        if given is None:
            return tuple({self._pieces[t]: x} for t, x in zip(gen, lp))
        best = dict(sorted(((str(t), float(x)) for t, x in given.items()),
                           key=lambda kv: kv[1], reverse=True)[:k])
        return tuple(dict(best) for _ in gen)

    def close(self) -> None:
        pass
