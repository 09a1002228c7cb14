"""One conformance suite for every backend: the Generator contract the step loop relies on.

Each backend (the scripted double, llama.cpp, vLLM on the CPU, transformers, and a
ServerGenerator against stepspec's own server) gets the same checks:

- a batch answers in order, one completion per request, each request with its own stop
  strings, limits and logprobs, exactly as it would be answered alone (prompts of different
  lengths: padding changes nothing); an empty batch is an empty answer;
- finish reasons: ``length`` at the limit, ``eos`` when the model ends (the end token in
  neither the ids nor the text), ``stop`` right after the token that completes a stop string,
  which is kept whole in ids and text; a stop string only cuts (the ids before it are those of
  an unstopped decode) and only counts in the generated text, not across the prefix;
- the text is the decode of the ids, whatever ended the call;
- logprobs: one per token, finite, <= 0, the same ids whatever is asked; top logprobs at most
  k per position, best first, the sampled (greedy: best) token among them under its text;
- greedy is deterministic; a seed fixes a sample, another seed gives another;
- prompts: the chat rendered with the model's template, the assistant turn opened,
  ``prompt_tokens`` its ids; a prefix segment this generator wrote travels as its ids, another
  model's as its text encoded; a step continued from its own segment equals one long decode and
  reads the prefix from the engine's cache where the engine has one;
- errors: a prompt over the context is a ValueError; ``close`` is idempotent and a closed
  generator refuses work.

A check that cannot apply to a backend says why in its skip (or strict xfail) reason. What is
specific to one engine (llama.cpp's sequences and counters, vLLM's cache blocks and worker
processes, the server's HTTP errors, loops that reproduce greedy decoding) stays in that
engine's test module.
"""

from __future__ import annotations

import math

import pytest

from reasoning.protocols import Generator
from reasoning.types import ChatMessage, FinishReason, GenerationParams, GenerationRequest, Segment
from tests.engine.conftest import need

pytestmark = pytest.mark.engine

BACKENDS = ["scripted", "llamacpp", "vllm", "hf", "server"]

SHORT = (ChatMessage("user", "Say only the word: yes"),)
"""A chat the test model answers in a few tokens, then ends (EOS)."""
OTHER = (ChatMessage("user", "Name three colours."),)
"""A third chat, shorter than the others: a batch of prompts of three lengths."""
END_TEXTS = ("<|im_end|>", "<|endoftext|>")
"""The test model's end-of-generation tokens (SmolLM2's end of turn and of text): in no
completion's ids (decoded, special tokens kept) or text."""
TOKEN_PROMPTS = "the double has no prompt ids: it reads messages and prefix as text"
"""Why the scripted double skips the checks of prompt ids."""
LOGPROB_TOL = {"llamacpp": 1e-3, "server": 1e-3}
"""How far a token's logprob may move between two requests of one batch (default 1e-4):
llama.cpp decodes each request in a sequence of its own, and its numbers depend slightly on the
shapes it computes with."""


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request):
    kind = request.param
    if kind == "scripted":
        from reasoning.backends.scripted import ScriptedGenerator

        text = "Tom has 3 apples.\n\nHe buys 5 more, so 3 + 5 = 8.\n\nThe answer is \\boxed{8}."
        yield ScriptedGenerator("conf", lambda pid, prefix: text[len(prefix):] if text.startswith(prefix)
                                else "", prefix_cache=True)
        return
    if kind == "vllm":
        yield request.getfixturevalue("vllm_engine")  # the session's one engine (one per process)
        return
    if kind == "hf":
        torch = need("torch")
        need("transformers")
        from reasoning.backends.hf import HFGenerator
        from tests.engine.conftest import resolve_test_model

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        g = HFGenerator(resolve_test_model(), name="conf", dtype="float32")
        yield g
        g.close()
        torch.set_num_threads(threads)
        return
    from tests.engine.conftest import require_llama_cpp

    require_llama_cpp()
    from reasoning.backends.llamacpp import LlamaCppGenerator
    from reasoning.cpu_models import ensure_gguf

    engine = LlamaCppGenerator(str(ensure_gguf("smollm2-135m")), name="conf", n_ctx=1024, max_sequences=4,
                               n_threads=1)
    if kind == "llamacpp":
        yield engine
        engine.close()
        return
    need("fastapi")
    from reasoning.backends.server import ServerGenerator
    from reasoning.serve import Server

    with Server(engine, wait_s=0.02) as srv:
        srv.start()
        client = ServerGenerator(srv.url, name="conf")
        yield client
        client.close()
    engine.close()


@pytest.fixture
def kind(request) -> str:
    """Which backend the test runs on."""
    return request.node.callspec.params["backend"]


def _not_on(kind: str, **reasons: str) -> None:
    """Skip the test on the backends named, each with its reason."""
    if kind in reasons:
        pytest.skip(f"{kind}: {reasons[kind]}")


def _req(chat, rid, max_tokens, stop=(), logprobs=None, prefix=(), pid=None, temperature=0.0, seed=None):
    return GenerationRequest(rid, pid or rid, tuple(chat), tuple(prefix),
                             GenerationParams(max_tokens=max_tokens, stop=tuple(stop), logprobs=logprobs,
                                              temperature=temperature, seed=seed))


# -- batches and limits ----------------------------------------------------------------------
def test_each_request_of_a_batch_is_answered_as_if_alone(backend, chat):
    """Rows of three prompt lengths, with their own stop strings, limits and logprobs, in one
    call: each gets what it gets alone (so: in order, one per request, nothing padded in)."""
    assert isinstance(backend, Generator)
    reqs = [_req(chat, "mix-stop", 48, stop=("\n\n",), logprobs=3), _req(SHORT, "mix-eos", 48),
            _req(OTHER, "mix-length", 10, logprobs=0)]
    together = backend.generate(reqs)
    alone = [backend.generate([_req(r.messages, f"{r.request_id}-alone", r.params.max_tokens,
                                    r.params.stop, r.params.logprobs)])[0] for r in reqs]
    assert len(together) == 3
    assert len({c.prompt_tokens for c in alone}) == 3, "precondition: prompts of different lengths"
    assert len({c.token_ids for c in alone}) == 3, "precondition: rows that differ, so order shows"
    for r, many, one in zip(reqs, together, alone):
        assert many.token_ids == one.token_ids and many.text == one.text
        assert many.finish_reason is one.finish_reason
        assert many.prompt_tokens == one.prompt_tokens > 0
        assert many.num_tokens <= r.params.max_tokens and many.seconds > 0
        assert (many.logprobs is None) == (r.params.logprobs is None)
    assert together[2].num_tokens == 10 and together[2].finish_reason is FinishReason.LENGTH
    assert backend.generate([]) == []


def test_finish_reasons_length_and_eos(backend):
    length, eos = backend.generate([_req(SHORT, "len", 1), _req(SHORT, "eos", 64)])
    assert length.finish_reason is FinishReason.LENGTH and length.num_tokens == 1
    assert eos.finish_reason is FinishReason.EOS, eos
    assert 0 < eos.num_tokens < 64
    assert not any(e in backend.decode(eos.token_ids) for e in END_TEXTS), "the end token is not in token_ids"
    assert not any(e in eos.text for e in END_TEXTS) and eos.text.strip()


# -- stop strings ----------------------------------------------------------------------------
def test_a_stop_string_ends_the_step_right_after_its_token_and_is_kept(backend, chat):
    (c,) = backend.generate([_req(chat, "stop", 200, stop=("\n\n",))])
    assert c.finish_reason is FinishReason.STOP, c
    assert "\n\n" in c.text[-8:] and "\n\n" not in c.text[:-8].rstrip("\n")
    # completed by the last token: the ids before it hold no stop string
    assert "\n\n" not in backend.decode(c.token_ids[:-1])
    (free,) = backend.generate([_req(chat, "stop-free", c.num_tokens + 5)])
    assert free.num_tokens > c.num_tokens, "precondition: the answer goes on after its first step"
    assert free.token_ids[:c.num_tokens] == c.token_ids, "a stop string only cuts; it does not change tokens"


def test_a_stop_string_inside_a_token_keeps_the_whole_token(backend, chat):
    """A stop string that ends inside a generated token: that token is kept, ids and text."""
    (free,) = backend.generate([_req(chat, "inside-free", 40)])
    tokens = [backend.decode([t]) for t in free.token_ids]
    i, tok = next((i, t) for i, t in enumerate(tokens) if len(t.strip()) >= 4 and i > 0)
    stop = tok[:2]  # the first 2 characters of a long token
    first_there = free.text.find(stop) == sum(map(len, tokens[:i]))
    (c,) = backend.generate([_req(chat, "inside", 40, stop=(stop,))])
    assert c.finish_reason is FinishReason.STOP
    if first_there:
        assert c.token_ids == free.token_ids[:i + 1]
        assert c.text.endswith(tok) and not c.text.endswith(stop)
    assert c.text == backend.decode(c.token_ids)
    assert stop in c.text


def test_a_stop_string_only_counts_in_the_generated_text(backend, chat):
    """Another model's prefix ends in the middle of a blank line: the first generated token, a
    second newline, must not complete "\\n\\n" across the boundary."""
    (free,) = backend.generate([_req(chat, "seam-free", 64)])
    assert "\n\n" in free.text, "precondition: the answer has a blank line"
    prefix = (Segment(free.text[:free.text.index("\n\n") + 1], "other"),)
    (c,) = backend.generate([_req(chat, "seam", 4, stop=("\n\n",), prefix=prefix)])
    first = backend.decode(c.token_ids[:1])
    assert first.startswith("\n") and "\n\n" not in first, "precondition: the boundary case occurs"
    assert c.num_tokens > 1
    assert (c.finish_reason is FinishReason.STOP) == ("\n\n" in c.text)


# -- text and logprobs -----------------------------------------------------------------------
def test_the_text_is_the_decode_of_the_ids(backend, chat):
    out = backend.generate([_req(chat, "ids-stop", 200, stop=("\n\n",)), _req(SHORT, "ids-eos", 64),
                            _req(OTHER, "ids-length", 12)])
    assert [c.finish_reason for c in out] == [FinishReason.STOP, FinishReason.EOS, FinishReason.LENGTH]
    for c in out:
        assert c.text == backend.decode(c.token_ids)


def test_logprobs_shapes(backend, kind, chat):
    none, zero, three = backend.generate([_req(chat, f"lp-{k}", 12, logprobs=k) for k in (None, 0, 3)])
    assert none.logprobs is None and none.top_logprobs is None
    assert zero.token_ids == none.token_ids == three.token_ids
    assert len(zero.logprobs) == zero.num_tokens and zero.top_logprobs is None
    assert all(lp <= 0 and math.isfinite(lp) for lp in zero.logprobs)
    assert len(three.logprobs) == len(three.top_logprobs) == three.num_tokens
    for tid, lp, top in zip(three.token_ids, three.logprobs, three.top_logprobs):
        assert 1 <= len(top) <= 3
        assert max(top.values()) == pytest.approx(lp, abs=1e-5)  # greedy: sampled = best
        assert top[backend.decode([tid])] == pytest.approx(lp, abs=1e-5)  # under its own text
        assert list(top.values()) == sorted(top.values(), reverse=True)  # best first
        assert sum(math.exp(v) for v in top.values()) <= 1.0 + 1e-4
    assert three.logprobs == pytest.approx(zero.logprobs, abs=LOGPROB_TOL.get(kind, 1e-4))


# -- determinism and seeds -------------------------------------------------------------------
def test_greedy_is_deterministic(backend, chat):
    a, b = (backend.generate([_req(chat, "det", 16, pid=f"det-{i}")])[0] for i in range(2))
    assert a.token_ids == b.token_ids and a.text == b.text
    assert a.seconds > 0 and b.seconds > 0


def test_a_seed_fixes_the_sample(backend, kind, chat):
    _not_on(kind, scripted="the double samples nothing: sampled requests write its script")

    def sampled(rid, seed):
        return _req(chat, rid, 16, temperature=1.0, seed=seed)

    x, z = backend.generate([sampled("seed-7", 7), sampled("seed-8", 8)])
    (y,) = backend.generate([sampled("seed-7-again", 7)])
    assert x.num_tokens > 0 and x.token_ids == y.token_ids
    assert x.token_ids != z.token_ids


def test_two_requests_with_one_seed_in_one_batch_sample_alike(backend, kind, chat):
    _not_on(kind, scripted="the double samples nothing: sampled requests write its script")
    params = GenerationParams(max_tokens=16, temperature=1.0, seed=7)
    x, y = backend.generate([GenerationRequest(f"twin-{i}", f"twin-{i}", tuple(chat), (), params)
                             for i in range(2)])
    assert x.num_tokens > 0 and x.token_ids == y.token_ids


# -- prompts and prefixes --------------------------------------------------------------------
def test_the_chat_is_rendered_with_its_template_and_the_assistant_turn_opened(backend, kind, chat):
    _not_on(kind, scripted=TOKEN_PROMPTS)
    ids = list(backend.chat_ids(chat))
    # SmolLM2's ChatML, written out: nothing added (no second BOS), nothing left out
    want = "".join(f"<|im_start|>{m.role}\n{m.content}<|im_end|>\n" for m in chat) + "<|im_start|>assistant\n"
    assert backend.decode(ids) == want
    (c,) = backend.generate([_req(chat, "chat-prompt", 1)])
    assert c.prompt_tokens == len(ids)


def test_own_segments_travel_as_ids_and_others_as_text(backend, kind):
    _not_on(kind, scripted=TOKEN_PROMPTS)
    own = tuple(backend.encode_text("Par") + backend.encode_text("is"))
    assert list(own) != backend.encode_text("Paris"), "precondition: the two paths give different ids"
    chat_ids = list(backend.chat_ids(SHORT))
    mine = _req(SHORT, "own-seg", 1, prefix=(Segment("Paris", backend.name, own),))
    theirs = _req(SHORT, "other-seg", 1, prefix=(Segment("Paris", "other", own),))
    assert backend.prompt_ids(mine) == chat_ids + list(own)
    assert backend.prompt_ids(theirs) == chat_ids + backend.encode_text("Paris")
    a, b = backend.generate([mine, theirs])  # and the engine is fed those ids
    assert a.prompt_tokens == len(chat_ids) + len(own)
    assert b.prompt_tokens == len(chat_ids) + len(backend.encode_text("Paris"))


def test_continuing_its_own_segment_equals_one_long_decode(backend, chat):
    (whole,) = backend.generate([_req(chat, "long", 30, pid="joined")])
    (head,) = backend.generate([_req(chat, "part1", 12, pid="split")])
    seg = Segment(head.text, backend.name, head.token_ids)
    (tail,) = backend.generate([_req(chat, "part2", 18, prefix=(seg,), pid="split")])
    assert whole.finish_reason is FinishReason.LENGTH, "precondition: 30 tokens without an end"
    assert head.token_ids + tail.token_ids == whole.token_ids
    assert head.text + tail.text == whole.text
    assert tail.prompt_tokens == head.prompt_tokens + head.num_tokens


def test_a_continued_step_reads_its_prefix_from_the_cache(backend, kind, chat):
    """How much each engine serves from its cache is its own (llama.cpp: all but the newest id;
    vLLM: whole blocks) and checked in its module; here: some, and it is reported."""
    _not_on(kind, hf="transformers keeps nothing between calls (it reports 0 cached)")
    (head,) = backend.generate([_req(chat, "cache-1", 12, pid="cached")])
    seg = Segment(head.text, backend.name, head.token_ids)
    (tail,) = backend.generate([_req(chat, "cache-2", 4, prefix=(seg,), pid="cached")])
    assert tail.cached_prompt_tokens is not None
    assert 0 < tail.cached_prompt_tokens <= tail.prompt_tokens
    assert tail.prefill_tokens < tail.prompt_tokens


# -- errors ----------------------------------------------------------------------------------
def test_a_prompt_over_the_context_is_a_value_error(backend, kind):
    _not_on(kind, scripted="the double has no context to run out of",
            hf="HFGenerator does not check prompts against the model's context")
    long = (ChatMessage("user", "word " * 1500),)  # over the 1024 tokens every engine here has
    with pytest.raises(ValueError, match="room|context"):
        backend.generate([_req(long, "too-long", 4)])
    (c,) = backend.generate([_req(SHORT, "after-too-long", 2)])  # and it goes on serving
    assert c.num_tokens > 0


def test_close_is_idempotent_and_a_closed_generator_refuses_work(backend, kind):
    """On a generator of its own, built like the suite's (closing the suite's would end it)."""
    _not_on(kind, scripted="the double holds no engine: close releases nothing and it keeps answering",
            vllm="one vLLM engine per process, the session's, shared by the other engine modules")
    if kind == "llamacpp":
        from reasoning.backends.llamacpp import LlamaCppGenerator

        g = LlamaCppGenerator(backend.model, name="closing", n_ctx=256, max_sequences=1, n_threads=1)
    elif kind == "hf":
        from reasoning.backends.hf import HFGenerator
        from tests.engine.conftest import resolve_test_model

        g = HFGenerator(resolve_test_model(), name="closing", dtype="float32")
    else:
        from reasoning.backends.server import ServerGenerator

        g = ServerGenerator(backend.urls, name="closing")
    assert g.generate([_req(SHORT, "before-close", 2)])[0].num_tokens > 0
    g.close()
    g.close()
    with pytest.raises(RuntimeError, match="closed"):
        g.generate([_req(SHORT, "after-close", 2)])
