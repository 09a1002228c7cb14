"""The transformers backend on a real model (SmolLM2-135M-Instruct, float32, CPU): what is its own.

Greedy decoding is the reference: chunks of ``batch_size`` and the step loop that always asks the
target must give exactly the tokens of one plain batch-1 decode. The Generator contract it
shares with every backend (left padding, per-row stop strings and limits, logprobs, seeds,
prompt ids, close) is checked in test_conformance.py.
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
def test_chunks_of_batch_size(singles):
    from reasoning.backends.hf import HFGenerator

    g = HFGenerator(MODEL, name="small-batches", batch_size=2)
    out = g.generate([_req(i, m, GenerationParams(max_tokens=8)) for i, m in enumerate(CHATS)])
    assert [c.token_ids for c in out] == [s.token_ids[:8] for s in singles]
    assert all(c.seconds > 0 for c in out)
    g.close()


def test_import_needs_neither_torch_nor_transformers():
    code = ("import sys, reasoning.backends.hf; "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)
