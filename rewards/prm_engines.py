"""PRM engines: run a process reward model over token ids and return its per-token outputs.

An engine is built for one model and one :class:`rewards.prm_formats.PRMFormat`, whose
``output`` says which head to run; ``outputs(batch)`` returns, per sequence of ids, a float32
CPU tensor ``[tokens, k]``: ``k = 2`` label logits (``labels``), ``k = 1`` value (``value``) or
``k = 2`` candidate logits ``[good, bad]`` (``candidates``); ``close()`` frees it.

:class:`HFEngine` runs transformers, right-padded batches; :class:`VLLMEngine` a vLLM pooling
engine (``LLM(runner="pooling")`` and ``LLM.encode(..., pooling_task="token_classify")`` with
per-token outputs). Neither keeps a cache between calls. torch, transformers and vLLM are
imported when an engine is built, never at import.
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rewards.prm_formats import PRMFormat

log = logging.getLogger(__name__)

SKYWORK_VLLM_ARCH = "StepspecSkyworkQwen2PRM"
"""The architecture name this module registers with vLLM for Skywork's value-head PRMs."""


def _local_folder(model: str) -> Path:
    """The model's local folder: the path itself, or the hub snapshot (downloaded if need be)."""
    p = Path(model).expanduser()
    if p.is_dir():
        return p
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(model))


@contextlib.contextmanager
def _quiet_transformers():
    """Silence transformers' load report while loading a base model whose heads we read ourselves."""
    from transformers.utils import logging as tf_logging

    old = tf_logging.get_verbosity()
    tf_logging.set_verbosity_error()
    try:
        yield
    finally:
        tf_logging.set_verbosity(old)


def _read_tensors(folder: Path, prefix: str) -> dict[str, Any]:
    """The checkpoint tensors whose names start with ``prefix`` (safetensors or ``.bin`` files)."""
    import torch

    found: dict[str, Any] = {}
    files = sorted(folder.glob("*.safetensors"))
    if files:
        from safetensors import safe_open

        for f in files:
            with safe_open(str(f), framework="pt") as st:
                for k in st.keys():
                    if k.startswith(prefix):
                        found[k[len(prefix):]] = st.get_tensor(k)
    else:
        for f in sorted(folder.glob("*.bin")):
            sd = torch.load(f, map_location="cpu", weights_only=True)
            found.update({k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)})
    return found


class HFEngine:
    """Per-token PRM outputs from transformers, right-padded batches of ``batch_size``.

    ``outputs`` returns, per sequence, a float32 CPU tensor: ``[tokens, 2]`` label logits
    (``labels`` formats), ``[tokens, 1]`` values (``value``) or ``[tokens, 2]`` candidate logits
    ``[good, bad]`` (``candidates``).

    ``labels``: ``*ForTokenClassification`` checkpoints load with
    ``AutoModelForTokenClassification``, ``Qwen2ForProcessRewardModel`` (Qwen2.5-Math-PRM) as the
    base model plus its ``score`` head read from the checkpoint (``score.0``/``score.2``: linear,
    ReLU, linear), another architecture only with ``trust_remote_code``. ``value``: the base
    model plus Skywork's value head ``v_head.summary`` (linear). ``candidates``: the causal LM's
    base model plus a 2-row head of its LM head's rows for the good and bad tokens, so only the
    two candidate logits are computed.
    """

    def __init__(self, model: str, fmt: PRMFormat, dtype: str, device: str, batch_size: int, tokenizer: Any,
                 candidates: tuple[int, int] | None, trust_remote_code: bool,
                 kwargs: Mapping[str, Any]) -> None:
        import torch
        from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForTokenClassification

        torch_dtype: Any = "auto" if dtype == "auto" else getattr(torch, dtype)
        folder = _local_folder(model)
        try:
            config = AutoConfig.from_pretrained(str(folder), trust_remote_code=False)
        except (ValueError, KeyError):  # a model type transformers does not know
            config = AutoConfig.from_pretrained(str(folder), trust_remote_code=trust_remote_code)
        archs = list(getattr(config, "architectures", None) or [])
        load = dict(dtype=torch_dtype, **kwargs)
        self.family = fmt.name
        self.device = device
        self.batch_size = batch_size
        pad = tokenizer.pad_token_id
        if pad is None:
            pad = tokenizer.eos_token_id
        self.pad = int(pad) if pad is not None else 0
        self.full: Any = None  # a model whose output holds the per-token outputs
        self.base: Any = None  # a base model whose last hidden state goes through self.head
        self.head: Any = None
        if fmt.output == "labels":
            if any(a.endswith("ForTokenClassification") for a in archs):
                self.full = AutoModelForTokenClassification.from_pretrained(str(folder), **load)
            elif "Qwen2ForProcessRewardModel" in archs or _read_tensors(folder, "score.2.weight"):
                with _quiet_transformers():  # its score.* head is not Qwen2Model's: read below
                    self.base = AutoModel.from_pretrained(str(folder), trust_remote_code=False, **load)
                self.head = _qwen_prm_head(folder, config.hidden_size)
            elif trust_remote_code:
                self.full = AutoModel.from_pretrained(str(folder), trust_remote_code=True, **load)
            else:
                raise ValueError(f"{fmt.name}: {model} ({archs}) is neither a token-classification model "
                                 "nor Qwen2ForProcessRewardModel; pass trust_remote_code=true to run "
                                 "its own code")
        elif fmt.output == "value":
            with _quiet_transformers():  # lm_head and v_head are not Qwen2Model's: v_head read below
                self.base = AutoModel.from_pretrained(str(folder), trust_remote_code=False, **load)
            self.head = _skywork_head(folder, config.hidden_size, model)
        else:  # candidates
            lm = AutoModelForCausalLM.from_pretrained(str(folder), **load)
            out = lm.get_output_embeddings()
            assert candidates is not None
            idx = torch.tensor(list(candidates))
            rows = out.weight.detach()[idx].clone()
            bias = out.bias.detach()[idx].clone() if getattr(out, "bias", None) is not None else None
            self.base = getattr(lm, lm.base_model_prefix)
            self.head = torch.nn.Linear(rows.shape[1], 2, bias=bias is not None)
            with torch.no_grad():
                self.head.weight.copy_(rows)
                if bias is not None:
                    self.head.bias.copy_(bias)
            self.head.to(rows.dtype)
            del lm, out
        for m in (self.full, self.base, self.head):
            if m is not None:
                m.to(device)
                m.eval()
        gc.collect()

    def outputs(self, batch: Sequence[Sequence[int]]) -> list[Any]:
        import torch

        order = sorted(range(len(batch)), key=lambda i: len(batch[i]))
        result: list[Any] = [None] * len(batch)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            width = max(len(batch[i]) for i in chunk)  # tokens
            ids = torch.full((len(chunk), width), self.pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for b, i in enumerate(chunk):  # right padding: positions stay as built
                ids[b, :len(batch[i])] = torch.tensor(list(batch[i]), dtype=torch.long)
                mask[b, :len(batch[i])] = 1
            ids, mask = ids.to(self.device), mask.to(self.device)
            with torch.inference_mode():
                if self.full is not None:
                    res = self.full(input_ids=ids, attention_mask=mask)
                    out = res.logits if hasattr(res, "logits") else res[0]
                else:
                    hidden = self.base(input_ids=ids, attention_mask=mask).last_hidden_state
                    head_dtype = next(self.head.parameters()).dtype
                    out = self.head(hidden.to(head_dtype))
            out = out.float().cpu()
            if out.dim() == 2:  # [batch, tokens] values
                out = out[..., None]
            for b, i in enumerate(chunk):
                result[i] = out[b, :len(batch[i])]
        return result

    def close(self) -> None:
        device = self.device
        self.full = self.base = self.head = None
        gc.collect()
        if str(device).startswith("cuda"):
            import torch

            torch.cuda.empty_cache()


def _qwen_prm_head(folder: Path, hidden: int) -> Any:
    """Qwen2ForProcessRewardModel's ``score``: Linear(hidden, hidden), ReLU, Linear(hidden, 2)."""
    import torch

    sd = _read_tensors(folder, "score.")
    head = torch.nn.Sequential(torch.nn.Linear(hidden, hidden), torch.nn.ReLU(),
                               torch.nn.Linear(hidden, int(sd["2.weight"].shape[0])))
    head.load_state_dict(sd)
    return head.to(sd["0.weight"].dtype)


def _skywork_head(folder: Path, hidden: int, model: str) -> Any:
    """Skywork's ``v_head.summary``: Linear(hidden, 1) on the last hidden state."""
    import torch

    sd = _read_tensors(folder, "v_head.summary.")
    if "weight" not in sd:
        raise ValueError(f"skywork: {model} has no 'v_head.summary.weight' tensor: not a Skywork-o1-Open-PRM "
                         "checkpoint (its value head is missing)")
    head = torch.nn.Linear(hidden, 1, bias="bias" in sd)
    head.load_state_dict(sd)
    return head.to(sd["weight"].dtype)


class VLLMEngine:
    """Per-token PRM outputs from a vLLM pooling engine (``token_classify``, every token, raw).

    ``labels``: ``Qwen2ForProcessRewardModel`` runs natively, ``*ForTokenClassification`` is
    converted; ``candidates``: the causal LM is converted (``convert="classify"``, the two
    candidate rows of the LM head as the classifier); ``value``: a small model class for
    Skywork's value head is registered (in this process's vLLM registry: the engine core must
    run in this process or a forked one).
    """

    def __init__(self, model: str, fmt: PRMFormat, dtype: str, tokenizer: Any,
                 candidates: tuple[int, int] | None, trust_remote_code: bool,
                 kwargs: Mapping[str, Any]) -> None:
        import vllm
        from vllm.config import PoolerConfig

        args: dict[str, Any] = dict(
            model=model, runner="pooling", dtype=dtype, trust_remote_code=trust_remote_code, seed=0,
            pooler_config=PoolerConfig(task="token_classify", tok_pooling_type="ALL", use_activation=False),
        )
        if fmt.output == "candidates":
            assert candidates is not None
            # The causal LM becomes a token classifier whose two logits are the LM head's rows
            # for the good and bad tokens (vLLM's "no_post_processing" conversion).
            args["convert"] = "classify"
            tokens = tokenizer.convert_ids_to_tokens(list(candidates))
            args["hf_overrides"] = {"classifier_from_token": tokens, "method": "no_post_processing",
                                    "num_labels": 2}
        elif fmt.output == "value":
            _register_skywork_vllm()
            args["hf_overrides"] = {"architectures": [SKYWORK_VLLM_ARCH]}
        args.update(kwargs)
        self._llm = vllm.LLM(**args)

    def outputs(self, batch: Sequence[Sequence[int]]) -> list[Any]:
        from vllm import PoolingParams
        from vllm.inputs import TokensPrompt

        prompts = [TokensPrompt(prompt_token_ids=list(ids)) for ids in batch]
        outs = self._llm.encode(prompts, pooling_params=PoolingParams(use_activation=False),
                                pooling_task="token_classify", use_tqdm=False)
        result = []
        for ids, o in zip(batch, outs):
            data = o.outputs.data.float().cpu()
            if data.dim() == 1:
                data = data[:, None]
            if data.shape[0] != len(ids):
                raise RuntimeError(f"vLLM returned outputs for {data.shape[0]} tokens of a "
                                   f"{len(ids)}-token input")
            result.append(data)
        return result

    def close(self) -> None:
        from reasoning.backends.vllm import close_llm

        close_llm(self, "_llm", "vLLM PRM engine")


def _register_skywork_vllm() -> None:
    """Register a vLLM model for Skywork-o1-Open-PRM: Qwen2 plus a one-value linear head per token.

    The checkpoint's ``v_head.summary.{weight,bias}`` load into the head; its ``lm_head`` is
    ignored. Registered in this process only (vLLM plugins register in every process).
    """
    from vllm import ModelRegistry

    if SKYWORK_VLLM_ARCH in ModelRegistry.get_supported_archs():
        return
    from vllm.model_executor.layers.linear import ReplicatedLinear
    from vllm.model_executor.layers.pooler.tokwise import pooler_for_token_classify
    from vllm.model_executor.models.interfaces_base import default_pooling_type
    from vllm.model_executor.models.qwen2_rm import Qwen2RewardBaseModel

    @default_pooling_type(tok_pooling_type="ALL")
    class StepspecSkyworkQwen2PRM(Qwen2RewardBaseModel):
        def __init__(self, *, vllm_config: Any, prefix: str = "") -> None:
            vllm_config.model_config.hf_config.num_labels = 1
            super().__init__(vllm_config=vllm_config, prefix=prefix)
            self.score = ReplicatedLinear(self.config.hidden_size, 1, bias=True, params_dtype=self.head_dtype,
                                          return_bias=False)
            self.pooler = pooler_for_token_classify(vllm_config.model_config.pooler_config)

        def load_weights(self, weights: Any) -> set[str]:
            old = "v_head.summary."
            renamed = ((("score." + n[len(old):]) if n.startswith(old) else n, w) for n, w in weights)
            return super().load_weights(renamed)

    ModelRegistry.register_model(SKYWORK_VLLM_ARCH, StepspecSkyworkQwen2PRM)
