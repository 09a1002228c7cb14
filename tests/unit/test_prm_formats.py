"""The PRM format registry (no torch, no tokenizer download): the known families are registered,
an unknown name is refused with the known ones listed, a new family is one registered class, and
the two byte-simple formats (skywork, trl) build the ids and positions a hand computation gives
with a one-character-a-token tokenizer. The formats against real tokenizers and models are in
test_prm.py."""

from __future__ import annotations

import math

import pytest

from rewards import prm, prm_formats
from rewards.prm_formats import (
    CandidateFormat,
    LabelFormat,
    PRMFormat,
    build_inputs,
    families,
    get_format,
    read_scores,
    register,
)

KNOWN = ("qwen2.5-math-prm", "skywork", "math-shepherd", "rlhflow", "trl")
"""The families README.md and conf/judge/prm.yaml name, in that order."""


class CharTokenizer:
    """One id per character (its code point); BOS ``^`` (id 94)."""

    bos_token = "^"
    bos_token_id = 94

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return ([94] if add_special_tokens else []) + [ord(c) for c in text]


def test_the_registry_lists_the_known_families():
    assert families() == KNOWN
    assert prm.FAMILIES == prm_formats.FAMILIES == KNOWN
    assert {f: get_format(f).output for f in KNOWN} == {
        "qwen2.5-math-prm": "labels", "skywork": "value", "math-shepherd": "candidates",
        "rlhflow": "candidates", "trl": "labels"}
    assert all(get_format(f).name == f for f in KNOWN)


@pytest.mark.parametrize("call", [get_format, prm.check_family,
                                  lambda f: build_inputs(f, CharTokenizer(), "p", ["s"]),
                                  lambda f: read_scores(f, [[0.0, 0.0]], [0])])
def test_an_unknown_family_is_refused_naming_the_known_ones(call):
    with pytest.raises(ValueError) as e:
        call("skywrok")
    msg = str(e.value)
    assert msg.startswith("judge.family must be one of ")
    assert all(f in msg for f in KNOWN)
    assert "got 'skywrok'" in msg and "did you mean 'skywork'?" in msg
    with pytest.raises(ValueError) as e:
        call("zzz")
    assert all(f in str(e.value) for f in KNOWN) and "did you mean" not in str(e.value)


def test_the_judge_refuses_an_unknown_family_before_loading_anything():
    pytest.importorskip("transformers")
    with pytest.raises(ValueError, match="judge.family must be one of qwen2.5-math-prm, skywork, "):
        prm.PRMJudge("nowhere/model", "qwen")


def test_a_new_family_is_one_registered_class(monkeypatch):
    monkeypatch.setattr(prm_formats, "_FORMATS", dict(prm_formats._FORMATS))

    @register
    class Dots(LabelFormat):  # the steps joined by "." read at each "."
        name = "dots"

        def build(self, tokenizer, problem, steps):
            ids = tokenizer.encode(problem)
            positions = []
            for s in steps:
                ids += tokenizer.encode(s + ".")
                positions.append(len(ids) - 1)
            return ids, positions

    assert families() == (*KNOWN, "dots")
    assert build_inputs("dots", CharTokenizer(), "q", ["ab", "c"]) == ([113, 97, 98, 46, 99, 46], [3, 5])
    # label 1 of [0, log 3] is 3 / (1 + 3)
    assert read_scores("dots", [[9.0, 9.0], [0.0, math.log(3)]], [1]) == pytest.approx([0.75])
    with pytest.raises(ValueError, match="needs at least one step"):
        build_inputs("dots", CharTokenizer(), "q", [])
    with pytest.raises(ValueError, match="'dots' is already registered"):
        register(Dots)
    with pytest.raises(ValueError, match="output must be one of labels, value, candidates"):
        register(type("Odd", (PRMFormat,), {"name": "odd", "output": "logits"}))
    with pytest.raises(ValueError, match="has no name"):
        register(type("Nameless", (CandidateFormat,), {}))
    with pytest.raises(ValueError, match=r"'dots' is not read at candidate tokens \(only math-shepherd, "
                                         r"rlhflow are\)"):
        prm.candidate_ids("dots", CharTokenizer())


def test_skywork_and_trl_ids_and_positions_by_hand():
    tok = CharTokenizer()
    # skywork: "^" + problem + "\n", then each step and "\n"; read at each step's "\n"
    assert build_inputs("skywork", tok, "ab", ["c", "de"]) == ([94, 97, 98, 10, 99, 10, 100, 101, 10], [5, 8])
    # trl: [bos] + problem, then each step and "\n"; read at the separator's last token
    assert build_inputs("trl", tok, "ab", ["c", "de"]) == ([94, 97, 98, 99, 10, 100, 101, 10], [4, 7])
    assert get_format("trl").candidates(tok) is None
