"""Segmenters: where a step ends, how it is cleaned, and whether it ends the solution."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from reasoning.types import Phase

_FINAL_PATTERNS: tuple[str, ...] = (
    r"\\boxed\s*\{",
    r"[Tt]he (?:final )?answer is",
    r"(?m)^\s*####\s*\S",
)


@dataclass(frozen=True)
class BlankLineSegmenter:
    """A step ends at a blank line (``"\\n\\n"``), the usual paragraph break of chain of thought.

    The stop string is kept at the end of each step, so that steps concatenate back into the
    exact answer text.

    Attributes:
        delimiter: The stop string that ends a step.
        min_step_chars: A step with fewer non-space characters than this is too short to stand
            alone and is merged with the next one (0 = never merge).
        max_step_tokens: Most tokens one step may take; a longer step is cut and marked
            ``truncated`` in its record.
        strip_think: Remove ``</think>`` tags from kept steps (off by default). A thinking
            model's ``</think>`` is text it wrote: stripping it feeds the model a context it
            never wrote (and its text is re-encoded instead of reusing its ids). Turn it on only
            for a model that emits stray tags you want out of the answer.
        final_patterns: Regular expressions; a step matching any of them gives the final answer.
        thinking: Know a thinking model's two phases (``<think> ... </think>`` then the answer;
            ``segmenter=thinking``): inside the thinking, steps end at ``delimiter`` or right
            after ``think_end``, and no step is final (a thinking model says "the answer is" and
            thinks on); after ``think_end`` the answer phase is one segment, written with no
            stop string up to the model's end of sequence or ``answer_max_tokens``, and final
            when it matches ``final_patterns``. ``think_end`` stays in the text exactly as the
            model wrote it (it ends the last thinking step). A model whose chat template opens
            the thinking itself (``<think>`` in the prompt) starts in the thinking all the same.
        think_end: The tag that closes the thinking.
        answer_max_tokens: Most tokens of the answer phase's segment (its step limit).

    >>> seg = BlankLineSegmenter()
    >>> seg.stop
    ('\\n\\n',)
    >>> seg.split("First.\\n\\nSecond.\\n\\nSo the answer is \\\\boxed{4}.")
    ['First.\\n\\n', 'Second.\\n\\n', 'So the answer is \\\\boxed{4}.']
    >>> seg.is_final("So the answer is \\\\boxed{4}.")
    True
    >>> seg.normalize("Done.</think>\\n\\n")  # kept: what the model wrote
    'Done.</think>\\n\\n'
    >>> BlankLineSegmenter(strip_think=True).normalize("Done.</think>\\n\\n")
    'Done.\\n\\n'
    >>> think = BlankLineSegmenter(thinking=True)
    >>> think.split("<think>One.\\n\\nTwo.\\n\\n</think>\\n\\nThe answer is 4.\\n\\nDone.")
    ['<think>One.\\n\\n', 'Two.\\n\\n', '</think>', '\\n\\nThe answer is 4.\\n\\nDone.']
    >>> think.stop_in(Phase.THINK), think.stop_in(Phase.ANSWER)
    (('\\n\\n', '</think>'), ())
    >>> think.phase_after(Phase.THINK, "Two.</think>"), think.is_final_step("The answer is 4.", Phase.THINK)
    (<Phase.ANSWER: 'answer'>, False)
    """

    delimiter: str = "\n\n"
    min_step_chars: int = 0
    max_step_tokens: int = 256
    strip_think: bool = False
    final_patterns: Sequence[str] = _FINAL_PATTERNS
    thinking: bool = False
    think_end: str = "</think>"
    answer_max_tokens: int = 1024

    def __post_init__(self) -> None:
        if not self.delimiter:
            raise ValueError("segmenter.delimiter must be a non-empty string")
        if self.thinking and not self.think_end:
            raise ValueError("segmenter.think_end must be a non-empty string with segmenter.thinking")
        if self.thinking and self.strip_think:
            raise ValueError("segmenter.thinking needs the model's </think> to find the answer phase: "
                             "set strip_think=false")
        if self.answer_max_tokens < 1:
            raise ValueError(f"segmenter.answer_max_tokens must be >= 1, got {self.answer_max_tokens}")
        if self.max_step_tokens < 1:
            raise ValueError(f"segmenter.max_step_tokens must be >= 1, got {self.max_step_tokens}")
        if self.min_step_chars < 0:
            raise ValueError(f"segmenter.min_step_chars must be >= 0, got {self.min_step_chars}")
        object.__setattr__(self, "final_patterns", tuple(self.final_patterns))
        object.__setattr__(self, "_final_re", [re.compile(p) for p in self.final_patterns])

    @property
    def stop(self) -> tuple[str, ...]:
        """The stop strings of a step (of a thinking step, with ``thinking``)."""
        return (self.delimiter, self.think_end) if self.thinking else (self.delimiter,)

    # -- phases (thinking) -------------------------------------------------------------------
    @property
    def phases(self) -> tuple[Phase, ...]:
        """The phases of an answer in order, the first the one it starts in; () for one phase."""
        return (Phase.THINK, Phase.ANSWER) if self.thinking else ()

    def phase_after(self, phase: Phase | None, text: str) -> Phase | None:
        """The phase the answer is in after a step ``text`` written in ``phase``."""
        if phase is Phase.THINK and self.think_end in text:
            return Phase.ANSWER
        return phase

    def stop_in(self, phase: Phase | None) -> tuple[str, ...]:
        """The stop strings of a step written in ``phase``: none in the answer phase (one segment)."""
        return () if phase is Phase.ANSWER else self.stop

    def max_tokens_in(self, phase: Phase | None) -> int:
        """The step token limit in ``phase``: ``answer_max_tokens`` in the answer phase."""
        return self.answer_max_tokens if phase is Phase.ANSWER else self.max_step_tokens

    def is_final_step(self, text: str, phase: Phase | None) -> bool:
        """Whether a step written in ``phase`` gives the final answer: never inside the thinking,
        else :meth:`is_final`."""
        return phase is not Phase.THINK and self.is_final(text)

    def normalize(self, text: str) -> str:
        if self.strip_think and "</think>" in text:
            text = text.replace("</think>", "")
        return text

    def too_short(self, text: str) -> bool:
        if self.thinking and self.think_end in text:
            return False  # it ends the thinking: merged with the answer it would cross phases
        return len("".join(text.split())) < self.min_step_chars

    def is_final(self, text: str) -> bool:
        for r in self._final_re:  # a plain loop: called for every step, a generator costs more
            if r.search(text):
                return True
        return False

    def split(self, text: str) -> list[str]:
        """Cut a whole answer into steps, each keeping its delimiter (the inverse of joining).

        Runs of delimiters stay with the step before them, as an engine stopping at the first
        delimiter and then continuing would produce them. Tiny steps are not merged here. With
        ``thinking``, the thinking is cut into steps (the last one ends with ``think_end``) and
        everything after ``think_end`` is one segment.
        """
        if self.thinking:
            i = text.find(self.think_end)
            if i >= 0:
                end = i + len(self.think_end)
                return self._split(text[:end]) + ([text[end:]] if end < len(text) else [])
        return self._split(text)

    def _split(self, text: str) -> list[str]:
        steps: list[str] = []
        start = 0
        d = self.delimiter
        while True:
            i = text.find(d, start)
            if i < 0:
                break
            end = i + len(d)
            while text.startswith(d, end):
                end += len(d)
            steps.append(text[start:end])
            start = end
        if start < len(text):
            steps.append(text[start:])
        return steps
