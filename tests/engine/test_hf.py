"""The transformers backend on a real model (SmolLM2-135M-Instruct, float32, CPU).

Greedy decoding is the reference everything is checked against: batching with left padding,
per-row stop strings and limits, and the step loop that always asks the target must all give
exactly the tokens of one plain batch-1 decode.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from reasoning.loop import LoopConfig, StepLoop
from reasoning.policies import AlwaysTarget
from reasoning.prompts import ChatPrompt
from reasoning.segmenter import BlankLineSegmenter
from reasoning.types import (
    ChatMessage,
    Completion,
    FinishReason,
    GenerationParams,
    GenerationRequest,
    Problem,
    Segment,
    StopReason,
)
from tests.engine.conftest import Recording

MODEL = "smollm2-135m"
BUDGET = 48  # tokens per plain decode and per loop answer

# A GSM8K training problem; SmolLM2 writes blank-line separated steps for it within BUDGET tokens.
PROBLEM = Problem("gsm8k-robe", "A robe takes 2 bolts of blue fiber and half that much white fiber. "
                                "How many bolts in total does it take?", "3")
CAPITAL = (ChatMessage("user", "What is the capital of France? Answer in one word."),)  # ends with EOS
POEM = (ChatMessage("user", "Write a short poem about the sea, in two stanzas separated by a blank line."),)
CHATS = (ChatPrompt().messages(PROBLEM), CAPITAL, POEM)


def _req(i: int, messages: tuple[ChatMessage, ...], params: GenerationParams,
         prefix: tuple[Segment, ...] = ()) -> GenerationRequest:
    return GenerationRequest(f"r{i}", f"p{i}", messages, prefix, params)


@pytest.fixture(scope="module")
def gen():
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from reasoning.backends.hf import HFGenerator

    # One intra-op thread: on a small machine shared with other jobs, two OpenMP threads that
    # wait for each other decode more than ten times slower than one.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    g = HFGenerator(MODEL, name="hf", dtype="float32")
    yield g
    g.close()
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def singles(gen) -> list[Completion]:
    """Plain greedy decodes, one request per call (no padding): the reference."""
    params = GenerationParams(max_tokens=BUDGET)
    return [gen.generate([_req(i, m, params)])[0] for i, m in enumerate(CHATS)]


@pytest.fixture(scope="module")
def mixed(gen) -> list[Completion]:
    """One batch whose rows differ in stop strings, limits and logprobs."""
    reqs = [
        _req(0, CHATS[0], GenerationParams(max_tokens=BUDGET, stop=("\n\n",), logprobs=3)),
        _req(1, CHATS[1], GenerationParams(max_tokens=BUDGET)),
        _req(2, CHATS[2], GenerationParams(max_tokens=10, logprobs=0)),
    ]
    return gen.generate(reqs)


@pytest.mark.engine
def test_batched_greedy_equals_batch_of_one(gen, singles):
    assert len({c.prompt_tokens for c in singles}) == 3, "prompts must differ in length to test padding"
    batch = gen.generate([_req(i, m, GenerationParams(max_tokens=BUDGET)) for i, m in enumerate(CHATS)])
    for one, many in zip(singles, batch):
        assert many.token_ids == one.token_ids
        assert many.text == one.text
        assert many.finish_reason is one.finish_reason
        assert many.prompt_tokens == one.prompt_tokens


@pytest.mark.engine
def test_text_is_the_decode_of_token_ids(gen, singles, mixed):
    tok = gen.tokenizer
    for c in [*singles, *mixed]:
        assert c.text == tok.decode(list(c.token_ids), skip_special_tokens=False)
        assert tok.eos_token_id not in c.token_ids


@pytest.mark.engine
def test_finish_reasons(singles, mixed):
    robe, capital, poem = singles
    assert robe.finish_reason is FinishReason.LENGTH and robe.num_tokens == BUDGET
    assert capital.finish_reason is FinishReason.EOS and 0 < capital.num_tokens < BUDGET
    assert "Paris" in capital.text and "<|im_end|>" not in capital.text
    assert mixed[0].finish_reason is FinishReason.STOP
    assert mixed[2].finish_reason is FinishReason.LENGTH and mixed[2].num_tokens == 10


@pytest.mark.engine
def test_stop_string_ends_generation_and_stays_in_text(gen, singles, mixed):
    stopped = mixed[0]
    assert "\n\n" in stopped.text
    # cut right after the token that completes the stop string, not later
    assert "\n\n" not in gen.tokenizer.decode(list(stopped.token_ids[:-1]), skip_special_tokens=False)
    # the same greedy tokens as the unstopped decode, up to there
    assert stopped.token_ids == singles[0].token_ids[:stopped.num_tokens]
    assert stopped.num_tokens < singles[0].num_tokens
    # rows that finished or ran on in the same batch are unaffected
    assert mixed[1].token_ids == singles[1].token_ids
    assert mixed[2].token_ids == singles[2].token_ids[:10]


@pytest.mark.engine
def test_stop_string_only_counts_in_generated_text(gen, singles):
    # The prefix (another model's, so re-tokenised) ends in the middle of a blank line: the
    # model's first token is the second "\n", which must not complete "\n\n" across the boundary.
    robe = singles[0]
    cut = robe.text.index("\n\n") + 1
    prefix = (Segment(robe.text[:cut], "other"),)
    c = gen.generate([_req(0, CHATS[0], GenerationParams(max_tokens=4, stop=("\n\n",)), prefix)])[0]
    first = gen.tokenizer.decode([c.token_ids[0]], skip_special_tokens=False)
    assert first.startswith("\n") and "\n\n" not in first, "precondition: the boundary case occurs"
    assert c.num_tokens > 1
    assert (c.finish_reason is FinishReason.STOP) == ("\n\n" in c.text)


@pytest.mark.engine
def test_greedy_logprobs_are_the_top_of_the_distribution(gen, mixed):
    with_top, without_lp, zero = mixed
    assert with_top.logprobs is not None and len(with_top.logprobs) == with_top.num_tokens
    assert with_top.top_logprobs is not None and len(with_top.top_logprobs) == with_top.num_tokens
    for tid, lp, top in zip(with_top.token_ids, with_top.logprobs, with_top.top_logprobs):
        assert len(top) <= 3 and lp <= 0.0
        assert lp == pytest.approx(max(top.values()), abs=1e-5)
        assert top[gen.tokenizer.decode([tid], skip_special_tokens=False)] == pytest.approx(lp, abs=1e-5)
        assert list(top.values()) == sorted(top.values(), reverse=True)
    assert without_lp.logprobs is None and without_lp.top_logprobs is None
    assert zero.logprobs is not None and len(zero.logprobs) == 10 and zero.top_logprobs is None
    assert all(lp <= 0.0 for lp in zero.logprobs)


@pytest.mark.engine
def test_prompt_ids_reuse_own_token_ids_and_retokenise_others(gen):
    tok = gen.tokenizer
    chat = gen.prompt_ids(_req(0, CAPITAL, GenerationParams()))
    own_ids = tuple(tok.encode("Par", add_special_tokens=False) + tok.encode("is", add_special_tokens=False))
    assert list(own_ids) != tok.encode("Paris", add_special_tokens=False)  # so the two paths differ
    mine = gen.prompt_ids(_req(0, CAPITAL, GenerationParams(), (Segment("Paris", "hf", own_ids),)))
    theirs = gen.prompt_ids(_req(0, CAPITAL, GenerationParams(), (Segment("Paris", "other", own_ids),)))
    assert mine == chat + list(own_ids)
    assert theirs == chat + tok.encode("Paris", add_special_tokens=False)
    rendered = tok.apply_chat_template([{"role": "user", "content": CAPITAL[0].content}],
                                       add_generation_prompt=True, tokenize=False)
    assert rendered.endswith("<|im_start|>assistant\n")
    assert tok.decode(chat, skip_special_tokens=False) == rendered  # nothing added, nothing doubled


@pytest.mark.engine
def test_seeded_sampling_repeats(gen):
    params = GenerationParams(max_tokens=8, temperature=1.0, seed=1234)
    a = gen.generate([_req(0, POEM, params)])[0]
    b = gen.generate([_req(0, POEM, params)])[0]
    assert a.token_ids == b.token_ids and a.num_tokens > 0


@pytest.mark.engine
def test_step_loop_always_target_reproduces_plain_greedy(gen, singles):
    from reasoning.judges import ConstantJudge

    target = Recording(gen)
    loop = StepLoop(draft=target, target=target, judge=ConstantJudge(1.0), policy=AlwaysTarget(),
                    segmenter=BlankLineSegmenter(max_step_tokens=BUDGET),
                    config=LoopConfig(stop_at_answer=False, max_repeats=0, token_budget=BUDGET))
    trace = loop.run([PROBLEM])[0]
    plain = singles[0]
    assert len(trace.steps) >= 2, "the decode must cross at least one step boundary"
    assert trace.stop_reason is StopReason.TOKEN_BUDGET
    ids = [t for c in target.completions for t in c.token_ids]
    assert tuple(ids) == plain.token_ids
    assert trace.text == plain.text
    # later steps prefill the earlier ones: the prompt grows by exactly the tokens kept
    prompts = [c.prompt_tokens for c in target.completions]
    kept = [c.num_tokens for c in target.completions]
    assert all(prompts[i + 1] == prompts[i] + kept[i] for i in range(len(prompts) - 1))


@pytest.mark.engine
def test_chunks_of_batch_size_and_close(singles):
    from reasoning.backends.hf import HFGenerator

    g = HFGenerator(MODEL, name="small-batches", batch_size=2)
    out = g.generate([_req(i, m, GenerationParams(max_tokens=8)) for i, m in enumerate(CHATS)])
    assert [c.token_ids for c in out] == [s.token_ids[:8] for s in singles]
    assert all(c.seconds > 0 for c in out)
    g.close()
    g.close()
    with pytest.raises(RuntimeError, match="closed"):
        g.generate([_req(0, CAPITAL, GenerationParams(max_tokens=2))])


def test_import_needs_neither_torch_nor_transformers():
    code = ("import sys, reasoning.backends.hf; "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)
