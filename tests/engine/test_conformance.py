"""One conformance suite for every backend: the Generator contract the step loop relies on.

Each backend (the scripted double, llama.cpp, vLLM on the CPU, transformers, and a
ServerGenerator against stepspec's own server) gets the same checks: a batch answers in order,
one completion per request; a stop string ends the step and is kept; the text is the decode of
the token ids; logprobs come one per token, top logprobs at most k per position; greedy is
deterministic; a step continued from the model's own segment (its ids reused) equals one long
decode; an empty batch is an empty answer; limits are kept.
"""

from __future__ import annotations

import pytest

from reasoning.types import FinishReason, GenerationParams, GenerationRequest, Segment
from tests.engine.conftest import need

pytestmark = pytest.mark.engine

BACKENDS = ["scripted", "llamacpp", "vllm", "hf", "server"]


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


def _req(chat, rid, max_tokens, stop=(), logprobs=None, prefix=(), pid=None):
    return GenerationRequest(rid, pid or rid, tuple(chat), tuple(prefix),
                             GenerationParams(max_tokens=max_tokens, stop=tuple(stop), logprobs=logprobs))


def _decode(gen):
    return getattr(gen, "decode", None)


def test_a_batch_answers_in_order_and_keeps_its_limits(backend, chat):
    reqs = [_req(chat, "a", 5), _req(chat, "b", 9), _req(chat, "c", 1)]
    out = backend.generate(reqs)
    assert len(out) == 3
    for r, c in zip(reqs, out):
        assert c.num_tokens <= r.params.max_tokens
        assert c.finish_reason in (FinishReason.LENGTH, FinishReason.EOS, FinishReason.STOP)
        assert c.prompt_tokens > 0
    assert out[2].num_tokens == 1 or out[2].finish_reason is FinishReason.EOS
    assert backend.generate([]) == []


def test_a_stop_string_ends_the_step_and_is_kept(backend, chat):
    (c,) = backend.generate([_req(chat, "stop", 200, stop=("\n\n",))])
    if c.finish_reason is FinishReason.STOP:
        assert "\n\n" in c.text[-8:]
        assert "\n\n" not in c.text[:-8].rstrip("\n")
    else:  # the model ended (or ran out) before a blank line: then there is none at all
        assert "\n\n" not in c.text


def test_the_text_is_the_decode_of_the_ids(backend, chat):
    (c,) = backend.generate([_req(chat, "ids", 24, stop=("\n\n",))])
    decode = _decode(backend)
    if decode is None:
        pytest.skip(f"{type(backend).__name__} has no decode()")
    assert c.text == decode(c.token_ids)


def test_logprobs_come_one_per_token(backend, chat):
    (c,) = backend.generate([_req(chat, "lp", 8, logprobs=3)])
    assert c.logprobs is not None and len(c.logprobs) == c.num_tokens
    assert all(lp <= 1e-6 for lp in c.logprobs)
    assert c.top_logprobs is not None and len(c.top_logprobs) == c.num_tokens
    assert all(1 <= len(t) <= 3 for t in c.top_logprobs)
    (plain,) = backend.generate([_req(chat, "nolp", 4)])
    assert plain.logprobs is None


def test_greedy_is_deterministic(backend, chat):
    a, b = (backend.generate([_req(chat, "det", 16, pid=f"det-{i}")])[0] for i in range(2))
    assert a.token_ids == b.token_ids and a.text == b.text


def test_continuing_its_own_segment_equals_one_long_decode(backend, chat):
    (whole,) = backend.generate([_req(chat, "long", 20, pid="joined")])
    (first,) = backend.generate([_req(chat, "part1", 8, pid="split")])
    seg = Segment(first.text, backend.name, first.token_ids)
    (rest,) = backend.generate([_req(chat, "part2", 12, prefix=(seg,), pid="split")])
    assert first.token_ids + rest.token_ids == whole.token_ids[:first.num_tokens + rest.num_tokens]
    assert first.text + rest.text == whole.text[:len(first.text + rest.text)]
    # an engine with a prefix cache reports reading only the new part
    if rest.cached_prompt_tokens is not None and first.cached_prompt_tokens is not None:
        assert rest.prefill_tokens <= rest.prompt_tokens
