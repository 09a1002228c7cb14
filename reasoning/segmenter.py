"""Segmenters: where a step ends, how it is cleaned, and whether it ends the solution."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

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
    """

    delimiter: str = "\n\n"
    min_step_chars: int = 0
    max_step_tokens: int = 256
    strip_think: bool = False
    final_patterns: Sequence[str] = _FINAL_PATTERNS

    def __post_init__(self) -> None:
        if not self.delimiter:
            raise ValueError("segmenter.delimiter must be a non-empty string")
        if self.max_step_tokens < 1:
            raise ValueError(f"segmenter.max_step_tokens must be >= 1, got {self.max_step_tokens}")
        if self.min_step_chars < 0:
            raise ValueError(f"segmenter.min_step_chars must be >= 0, got {self.min_step_chars}")
        object.__setattr__(self, "final_patterns", tuple(self.final_patterns))
        object.__setattr__(self, "_final_re", [re.compile(p) for p in self.final_patterns])

    @property
    def stop(self) -> tuple[str, ...]:
        return (self.delimiter,)

    def normalize(self, text: str) -> str:
        if self.strip_think and "</think>" in text:
            text = text.replace("</think>", "")
        return text

    def too_short(self, text: str) -> bool:
        return len("".join(text.split())) < self.min_step_chars

    def is_final(self, text: str) -> bool:
        for r in self._final_re:  # a plain loop: called for every step, a generator costs more
            if r.search(text):
                return True
        return False

    def split(self, text: str) -> list[str]:
        """Cut a whole answer into steps, each keeping its delimiter (the inverse of joining).

        Runs of delimiters stay with the step before them, as an engine stopping at the first
        delimiter and then continuing would produce them. Tiny steps are not merged here.
        """
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
