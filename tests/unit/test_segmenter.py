"""Segmenter rules, with property tests for split / join / normalise."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reasoning.segmenter import BlankLineSegmenter

SEG = BlankLineSegmenter()
# pieces, not characters: "</think>" whole, so that texts hold the tag often
texts = st.lists(st.sampled_from(list("ab 1.\n\\{}<>/") + ["</think>", "\n\n"]), max_size=40).map("".join)


@given(texts)
def test_split_is_lossless(text):
    assert "".join(SEG.split(text)) == text


@given(texts)
def test_every_step_but_the_last_ends_at_the_delimiter_and_holds_no_other(text):
    steps = SEG.split(text)
    for s in steps[:-1]:
        assert s.endswith("\n\n")
        body = s.rstrip("\n")
        assert "\n\n" not in body
    if steps:
        assert "\n\n" not in steps[-1].rstrip("\n") or steps[-1].endswith("\n\n")
    assert all(s for s in steps)


@given(texts)
def test_by_default_normalize_keeps_the_text_the_model_wrote(text):
    assert SEG.normalize(text) == text


def test_by_default_a_real_think_tag_is_kept():
    assert BlankLineSegmenter().normalize("Done.</think>\n\n") == "Done.</think>\n\n"


@given(texts)
def test_strip_think_is_idempotent_and_only_drops_think_tags(text):
    seg = BlankLineSegmenter(strip_think=True)
    once = seg.normalize(text)
    assert seg.normalize(once) == once
    assert "</think>" not in once
    assert once == text.replace("</think>", "")


@given(st.lists(st.text(alphabet="abc .", min_size=1, max_size=10), min_size=1, max_size=6))
def test_split_recovers_steps_joined_with_the_delimiter(parts):
    steps = [p + "\n\n" for p in parts[:-1]] + [parts[-1]]
    assert SEG.split("".join(steps)) == steps


@pytest.mark.parametrize("text,final", [
    ("So the answer is \\boxed{18}.", True),
    ("\\boxed {x+1}", True),
    ("The answer is 42.", True),
    ("The final answer is $3$.", True),
    ("#### 72", True),
    ("Total: 5\n#### 5", True),
    ("We need the answer to be even.", False),
    ("Let 3 # 4 denote ...", False),
    ("Step 1: compute 16 - 3 = 13.\n\n", False),
])
def test_final_step_detection(text, final):
    assert SEG.is_final(text) is final


def test_too_short_counts_non_space_characters():
    seg = BlankLineSegmenter(min_step_chars=4)
    assert seg.too_short("Ok.\n\n") and not seg.too_short("Okay.\n\n")
    assert not BlankLineSegmenter().too_short("")


@pytest.mark.parametrize("kw", [{"delimiter": ""}, {"max_step_tokens": 0}, {"min_step_chars": -1}])
def test_bad_settings_are_refused(kw):
    with pytest.raises(ValueError):
        BlankLineSegmenter(**kw)


def test_custom_delimiter():
    seg = BlankLineSegmenter(delimiter="\n")
    assert seg.stop == ("\n",) and seg.split("a\nb") == ["a\n", "b"]
