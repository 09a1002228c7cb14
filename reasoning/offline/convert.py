"""Convert step of preparing an offline model: its GGUF to a bfloat16 safetensors folder.

The folder, which transformers and vLLM load quickly, is written under a temporary name,
reloaded and made to generate, marked with :data:`~reasoning.offline.registry.MARKER_FILE` (the
source GGUF's sha256) and only then moved to ``<cache>/models/hf/<name>/``.
torch and transformers are imported inside the conversion only.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

from reasoning.offline.assemble import ensure_gguf
from reasoning.offline.paths import hf_path, locked, models_dir
from reasoning.offline.registry import MARKER_FILE, ModelPrepError, ModelSpec, get_spec

logger = logging.getLogger(__name__)


def _read_marker(folder: Path) -> dict | None:
    try:
        return json.loads((folder / MARKER_FILE).read_text())
    except (OSError, ValueError):
        return None


def hf_ok(spec: ModelSpec, folder: Path) -> bool:
    """Whether ``folder`` is a finished conversion of ``spec``'s GGUF (marker with the right sha256)."""
    marker = _read_marker(folder)
    return (
        marker is not None
        and marker.get("sha256") == spec.sha256
        and (folder / "config.json").is_file()
        and any(folder.glob("*.safetensors"))
    )


def ensure_hf(name: str, cache: Path | str | None = None) -> Path:
    """The converted safetensors folder of registry model ``name``, prepared if need be.

    When the folder is missing (or its marker names another GGUF), the GGUF is ensured, loaded with
    transformers and dequantized to bfloat16, saved with its tokenizer (chat template kept) and a
    generation config whose eos tokens end a chat turn, reloaded and made to generate ten tokens
    greedily, and only then moved into place. Needs torch and transformers (the ``hf`` extra).

    Args:
        name: a short name from :data:`MODELS`.
        cache: the cache root; ``None`` means :func:`cache_dir`.

    Returns:
        ``<cache>/models/hf/<name>/``, loadable with ``from_pretrained`` and by vLLM.

    Raises:
        ValueError: ``name`` is not in the registry.
        ModelPrepError: a download failed, the GGUF does not match, or the converted model fails its check.
    """
    spec = get_spec(name)
    folder = hf_path(name, cache)
    if hf_ok(spec, folder):
        logger.info("%s: model folder %s is ready", spec.name, folder)
        return folder
    gguf = ensure_gguf(name, cache)
    with locked(models_dir(cache), f"{spec.name}.hf"):
        if hf_ok(spec, folder):  # another process finished it while we waited
            return folder
        folder.parent.mkdir(parents=True, exist_ok=True)
        for stale in folder.parent.glob(f".{spec.name}.tmp-*"):
            logger.info("%s: removing leftover %s", spec.name, stale)
            shutil.rmtree(stale, ignore_errors=True)
        tmp = folder.parent / f".{spec.name}.tmp-{os.getpid()}"
        start = time.perf_counter()
        try:
            _convert_checked(spec, gguf, tmp)
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    logger.info("%s: model folder %s is ready (%.0f s)", spec.name, folder, time.perf_counter() - start)
    return folder


def _convert_checked(spec: ModelSpec, gguf: Path, tmp: Path) -> None:
    """Convert ``gguf`` into ``tmp``, check that it reloads and generates, and write the marker last."""
    start = time.perf_counter()
    logger.info("%s: converting %s to safetensors (1-4 minutes)", spec.name, gguf.name)
    _convert(spec, gguf, tmp)
    convert_s = time.perf_counter() - start
    logger.info("%s: checking that the saved folder reloads and generates", spec.name)
    check = _check_folder(spec, tmp)
    marker = {
        "name": spec.name,
        "title": spec.title,
        "source_gguf": gguf.name,
        "sha256": spec.sha256,
        "dtype": "bfloat16",
        "convert_s": round(convert_s, 1),
        "check": check,
        **_versions(),
    }
    (tmp / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n")
    for file in tmp.iterdir():
        file.chmod(0o644)  # save_pretrained writes the weights owner-only; the cache may be shared


def _versions() -> dict[str, str]:
    import torch
    import transformers

    return {"transformers": transformers.__version__, "torch": torch.__version__}


def _convert(spec: ModelSpec, gguf: Path, out: Path) -> None:
    """Load ``gguf`` with transformers, dequantized to bfloat16, and save model and tokenizer into ``out``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    src, file = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=file)
    # Without dequantize=True the model keeps its GGUF blocks and refuses save_pretrained.
    model = AutoModelForCausalLM.from_pretrained(
        src, gguf_file=file, dtype=torch.bfloat16, quantization_config=GgufConfig(dequantize=True)
    )
    if spec.chat and not tokenizer.chat_template:
        raise ModelPrepError(f"{spec.gguf_file}: the tokenizer read from the GGUF has no chat template")
    if spec.eos_tokens:
        ids = [tokenizer.convert_tokens_to_ids(token) for token in spec.eos_tokens]
        if None in ids or (tokenizer.unk_token_id is not None and tokenizer.unk_token_id in ids):
            raise ModelPrepError(
                f"{spec.gguf_file}: eos tokens {spec.eos_tokens} are not all in the vocabulary"
            )
        tokenizer.eos_token = spec.eos_tokens[0]
        model.config.eos_token_id = ids[0]
        model.generation_config.eos_token_id = ids if len(ids) > 1 else ids[0]
        if tokenizer.pad_token is None:
            tokenizer.pad_token = spec.eos_tokens[-1]
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    # GGUF carries no quantization to keep once dequantized: save a plain bfloat16 checkpoint.
    for holder in (model.config, model):
        if hasattr(holder, "quantization_config"):
            try:
                delattr(holder, "quantization_config")
            except AttributeError:
                pass
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    config = json.loads((out / "config.json").read_text())
    if "quantization_config" in config:
        del config["quantization_config"]
        (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    del model


def _check_folder(spec: ModelSpec, folder: Path) -> dict[str, object]:
    """Reload ``folder`` with transformers and generate ten tokens greedily; raise unless it looks right."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    if spec.chat:
        if not tokenizer.chat_template:
            raise ModelPrepError(f"{folder}: the saved tokenizer lost its chat template")
        messages = [{"role": "user", "content": "What is 2 + 3? Answer with one number."}]
        prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    else:
        prompt = "The capital of France is"
    if spec.eos_tokens and tokenizer.eos_token != spec.eos_tokens[0]:
        raise ModelPrepError(
            f"{folder}: eos token is {tokenizer.eos_token!r}, expected {spec.eos_tokens[0]!r}"
        )
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=10, do_sample=False)
    new = output[0, inputs["input_ids"].shape[1] :]
    text = tokenizer.decode(new, skip_special_tokens=False)
    logger.info("%s: greedy check: %r", spec.name, text)
    if len(new) == 0:
        raise ModelPrepError(f"{folder}: the reloaded model generated nothing")
    eos = model.generation_config.eos_token_id
    return {
        "prompt": prompt,
        "output": text,
        "new_tokens": len(new),
        "eos_token": tokenizer.eos_token,
        "eos_token_id": eos,
        "has_chat_template": bool(tokenizer.chat_template),
    }
