"""Several drafts per step (judge=best-of-n) wrapping a PRM and a trained router, on scripted
draft models: 4 sampled candidates a step all reach the wrapped judge in one score call, the
best-scored one is the step's draft, and the record keeps every candidate's score.

The PRM is a tiny random TRL token-classification model (as in test_prm.py), its expected scores
computed by hand from the model's raw logits; the router is the lightweight one trained on
test_router.py's synthetic rows, where the target is better exactly when the draft was unsure
(mean logprob below -1.5), so the candidate the draft was sure of is the best one.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest

from reasoning.backends.scripted import ScriptedGenerator
from reasoning.loop import LoopConfig, StepLoop
from reasoning.policies import ThresholdPolicy
from reasoning.segmenter import BlankLineSegmenter
from reasoning.types import Decision, Problem, Route
from rewards.best_of_n import BestOfNJudge
from tests.unit.router_rows import synthetic_rows

N = 4


def candidate_index(request) -> tuple[int, int]:
    """``(step, candidate)`` of a candidate request ``p/<step>/d0c<i>``."""
    _, step, tail = request.request_id.split("/")
    return int(step), int(tail.rsplit("c", 1)[1])


def picker(table):
    """A ``sample_fn`` writing ``table[step][i]`` for candidate ``i`` of a step."""
    def pick(request):
        step, i = candidate_index(request)
        return table[step][i]
    return pick


def first_max(xs) -> int:
    return max(range(len(xs)), key=lambda i: (xs[i], -i))


def run(draft, target, judge, threshold):
    loop = StepLoop(draft, target, BestOfNJudge(judge, candidates=N, temperature=0.8),
                    ThresholdPolicy(threshold), BlankLineSegmenter(), config=LoopConfig(seed=0))
    [tr] = loop.run([Problem("p", QUESTION, "2")])
    return tr


QUESTION = "q" * 40


# -- a PRM ------------------------------------------------------------------------------------------
PRM_CANDIDATES = [["Add one and one.\n\n", "One plus one is two.\n\n", "Count: 1, 2.\n\n", "It is 11.\n\n"],
                  ["So \\boxed{2}.", "The answer is \\boxed{2}.", "The answer is \\boxed{11}.", "\\boxed{3}"]]
BASE_TOKENIZER = Path.home() / ".cache" / "stepspec" / "models" / "hf" / "smollm2-135m"


@pytest.fixture(scope="module")
def tiny_trl_prm(tmp_path_factory):
    """A tiny random Qwen2ForTokenClassification PRM (TRL's format) saved to a folder."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    if not BASE_TOKENIZER.is_dir():
        pytest.skip(f"no SmolLM2 tokenizer at {BASE_TOKENIZER} (run `stepspec-models` to prepare it)")
    tok = transformers.AutoTokenizer.from_pretrained(str(BASE_TOKENIZER))
    torch.manual_seed(7)
    cfg = transformers.Qwen2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                   num_key_value_heads=1, intermediate_size=128, max_position_embeddings=1024,
                                   tie_word_embeddings=False, vocab_size=len(tok), num_labels=2,
                                   pad_token_id=tok.pad_token_id)
    model = transformers.Qwen2ForTokenClassification(cfg)
    with torch.no_grad():
        model.score.weight.normal_(0, 0.3)  # spread the scores over (0, 1)
    folder = tmp_path_factory.mktemp("bon-prm") / "trl"
    model.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder, tok, model.eval()


def trl_last_step_score(tok, model, problem: str, steps: list[str]) -> float:
    """By hand, TRL's format: [bos] + problem + each step followed by "\\n"; the last step's score
    is softmax(logits)[1] at its "\\n"."""
    import torch

    ids = ([tok.bos_token_id] if tok.bos_token_id is not None else []) + tok.encode(problem,
                                                                                  add_special_tokens=False)
    for s in steps:
        ids += tok.encode(s, add_special_tokens=False) + tok.encode("\n", add_special_tokens=False)
    with torch.inference_mode():
        logits = model(torch.tensor([ids])).logits[0, len(ids) - 1]
    return float(torch.softmax(logits, dim=-1)[1])


def test_best_of_n_over_a_prm_scores_every_candidate_in_one_call_and_keeps_the_best(tiny_trl_prm):
    from rewards.prm import PRMJudge

    folder, tok, model = tiny_trl_prm

    class Recording(PRMJudge):
        calls: list[list[str]] = []

        def score(self, requests):
            self.calls.append([r.step.text for r in requests])
            return super().score(requests)

    draft = ScriptedGenerator("draft", {"p": "G.\n\nThe answer is \\boxed{2}."},
                              sample_fn=picker(PRM_CANDIDATES))
    target = ScriptedGenerator("target", {"p": "T.\n\nThe answer is \\boxed{2}."})
    # by hand: step 0's candidates alone, then step 1's after the best of step 0 (PRMs see the
    # steps stripped of surrounding white space)
    want0 = [trl_last_step_score(tok, model, QUESTION, [c.strip()]) for c in PRM_CANDIDATES[0]]
    best0 = first_max(want0)
    want1 = [trl_last_step_score(tok, model, QUESTION, [PRM_CANDIDATES[0][best0].strip(), c.strip()])
             for c in PRM_CANDIDATES[1]]
    best1 = first_max(want1)
    for w in (want0, want1):  # distinct, unsaturated scores, or picking the best proves little
        assert len({round(x, 4) for x in w}) == N and all(1e-3 < x < 1 - 1e-3 for x in w)

    with Recording(str(folder), "trl", batch_size=8) as prm:
        tr = run(draft, target, prm, threshold=0.0)  # every best kept: the draft writes the answer
    assert Recording.calls == PRM_CANDIDATES  # one call per step, holding its 4 candidates
    assert draft.batch_sizes == [N, N]
    assert [s.best_candidate for s in tr.steps] == [best0, best1]
    assert [s.draft_text for s in tr.steps] == [PRM_CANDIDATES[0][best0], PRM_CANDIDATES[1][best1]]
    assert [s.kept for s in tr.steps] == [Route.DRAFT, Route.DRAFT]
    assert tr.text == PRM_CANDIDATES[0][best0] + PRM_CANDIDATES[1][best1]
    assert [s.score for s in tr.steps] == pytest.approx([want0[best0], want1[best1]], abs=1e-5)
    got = [[c["score"] for c in s.candidates] for s in tr.steps]
    assert [[c["text"] for c in s.candidates] for s in tr.steps] == PRM_CANDIDATES
    for g, w in zip(got, (want0, want1)):
        assert g == pytest.approx(w, abs=1e-5)


# -- a trained router ---------------------------------------------------------------------------------
# each candidate's token probability; the router was trained on "the target is better when the
# mean logprob is below -1.5" (p < e^-1.5 = 0.223)
ROUTER_CANDIDATES = [["A0 a.\n\n", "B0.\n\n", "C0 c c.\n\n", "D0.\n\n"],
                     ["A1.\n\n", "B1.\n\n", "C1.\n\n", "D1.\n\n"],
                     ["So \\boxed{2}.", "\\boxed{2}", "The answer is \\boxed{2}.", "It is \\boxed{3}."]]
PROBS = [[0.05, 0.95, 0.1, 0.02],  # only candidate 1 is sure: the best, kept
         [0.04, 0.06, 0.03, 0.05],  # all unsure: the best is rejected, the target writes the step
         [0.1, 0.03, 0.9, 0.08]]  # only candidate 2 is sure: kept, the answer
ROUTER_TOKENS = [[4, 2, 6, 2], [2, 2, 2, 2], [3, 1, 7, 5]]  # runs of space / non-space characters


class SampledProbs(ScriptedGenerator):
    """A scripted draft whose sampled candidate ``(step, i)`` reports token probability ``PROBS[step][i]``."""

    def generate(self, requests):
        out = super().generate(requests)
        done = []
        for r, c in zip(requests, out):
            if r.params.temperature > 0 and c.logprobs is not None:
                step, i = candidate_index(r)
                lp = math.log(PROBS[step][i])
                c = replace(c, logprobs=(lp,) * c.num_tokens,
                            top_logprobs=tuple({t: lp for t in d} for d in c.top_logprobs or ()) or None)
            done.append(c)
        return done


def test_best_of_n_over_a_router_scores_every_candidate_in_one_call_and_keeps_the_best(tmp_path):
    pytest.importorskip("sklearn")
    from routers.features import FEATURES
    from routers.judge import RouterJudge
    from routers.train import train_lightweight

    trained = train_lightweight(synthetic_rows(), seed=0)
    folder = trained.save(tmp_path / "router")

    class Recording(RouterJudge):
        calls: list[list[str]] = []

        def score(self, requests):
            self.calls.append([r.step.text for r in requests])
            return super().score(requests)

    judge = Recording(str(folder))
    assert judge.needs_logprobs == 5
    draft = SampledProbs("draft", {"p": "G0.\n\nG1.\n\nThe answer is \\boxed{2}."},
                         sample_fn=picker(ROUTER_CANDIDATES))
    target = ScriptedGenerator("target", {"p": "T0.\n\nT1.\n\nThe answer is \\boxed{2}."})
    tr = run(draft, target, judge, threshold=0.5)

    # every candidate asked for the router's top-5 logprobs, and judged in one call per step
    assert draft.batch_sizes == [N, N, N] and {r.params.logprobs for r in draft.requests} == {5}
    assert Recording.calls == ROUTER_CANDIDATES
    # by hand, each candidate's features: mean = min logprob = log p, entropy 0 (one alternative a
    # token), its token count, the step index, 40 problem characters; score = 1 - P(target better)
    feats = {"first_token_entropy": 0.0, "problem_chars": 40}
    want = [[1.0 - p for p in trained.predict([[dict(feats, mean_logprob=math.log(q), min_logprob=math.log(q),
                                                      step_tokens=n, step_index=k)[f] for f in FEATURES]
                                                for q, n in zip(PROBS[k], ROUTER_TOKENS[k])])]
            for k in range(3)]
    got = [[c["score"] for c in s.candidates] for s in tr.steps]
    for g, w in zip(got, want):
        assert g == pytest.approx(w, abs=1e-9)
    assert [[c["tokens"] for c in s.candidates] for s in tr.steps] == ROUTER_TOKENS
    # the sure candidates score above 0.5, the unsure ones below
    assert [[x > 0.5 for x in g] for g in got] == [[q > 0.5 for q in row] for row in PROBS]
    best1 = first_max(want[1])
    assert [s.best_candidate for s in tr.steps] == [1, best1, 2]
    assert [s.draft_text for s in tr.steps] == ["B0.\n\n", ROUTER_CANDIDATES[1][best1],
                                                "The answer is \\boxed{2}."]
    assert [s.score for s in tr.steps] == pytest.approx([want[0][1], want[1][best1], want[2][2]], abs=1e-9)
    assert [s.decision for s in tr.steps] == [Decision.ACCEPT, Decision.REJECT, Decision.ACCEPT]
    assert tr.text == "B0.\n\nT1.\n\nThe answer is \\boxed{2}."
