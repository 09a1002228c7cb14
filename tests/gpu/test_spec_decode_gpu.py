"""Step-level speculation composed with vLLM's token-level speculative decoding (n-gram), on a GPU.

Opt-in (``-m gpu``); skips without a CUDA GPU or when the model cannot be had. The target built
from ``conf/model/vllm-ngram.yaml`` (speculative_config passed through ``engine_kwargs``) must
decode greedily exactly as the same target without it: verification makes token-level
speculation lossless, so the always-target loop gives the same traces either way.
"""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from reasoning.judges import ConfidenceJudge
from reasoning.loop import LoopConfig, StepLoop
from reasoning.policies import AlwaysTarget
from reasoning.segmenter import BlankLineSegmenter
from reasoning.types import Problem
from recipes._cli import CONF_DIR

pytestmark = pytest.mark.gpu

MODEL = "Qwen/Qwen2.5-0.5B-Instruct"


def _gpu_target(ngram: bool):
    """The preset's target, in a worker process of its own (two vLLM engines do not share a process)."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    from reasoning.backends.vllm import VLLMGenerator

    preset = CONF_DIR / "model" / ("vllm-ngram.yaml" if ngram else "vllm.yaml")
    cfg = OmegaConf.to_container(OmegaConf.load(preset))
    cfg.pop("_target_")
    cfg.update(model=MODEL, max_model_len=2048, gpu_memory_utilization=0.3)
    try:
        return VLLMGenerator.spawn(devices="0", **cfg)
    except Exception as e:  # noqa: BLE001 - no hub and no local copy of the model
        pytest.skip(f"{MODEL} could not be started: {e}")


def test_ngram_speculative_target_reproduces_plain_greedy_steps():
    question = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in "
                "May. How many clips did Natalia sell altogether in April and May?")
    problems = [Problem("p0", question, "72")]
    texts = []
    for ngram in (False, True):
        target = _gpu_target(ngram)
        try:
            loop = StepLoop(draft=target, target=target, judge=ConfidenceJudge(), policy=AlwaysTarget(),
                            segmenter=BlankLineSegmenter(max_step_tokens=256),
                            config=LoopConfig(token_budget=512, max_steps=16))
            (trace,) = loop.run(problems)
            assert trace.error is None
            texts.append(trace.text)
        finally:
            target.close()
    assert texts[0] == texts[1]
