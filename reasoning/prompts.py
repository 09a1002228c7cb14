"""Chat prompts: how a problem becomes the messages each model answers."""

from __future__ import annotations

from dataclasses import dataclass

from reasoning.types import ChatMessage, Problem

DEFAULT_SYSTEM = (
    "You are a careful math tutor. Solve the problem step by step. "
    "Separate the steps with a blank line. "
    "Put the final answer in \\boxed{}."
)


@dataclass(frozen=True, slots=True)
class ChatPrompt:
    """A system message (optional) and a user message built from the problem.

    Attributes:
        system: The system message, or None (or empty) for none.
        user_template: Format string for the user message; ``{question}`` is the problem.

    >>> ChatPrompt(system=None, user_template="Q: {question}").messages(Problem("1", "2+2?"))
    (ChatMessage(role='user', content='Q: 2+2?'),)
    """

    system: str | None = DEFAULT_SYSTEM
    user_template: str = "{question}"

    def __post_init__(self) -> None:
        if "{question}" not in self.user_template:
            raise ValueError(f"prompt.user_template must contain '{{question}}', got {self.user_template!r}")

    def messages(self, problem: Problem) -> tuple[ChatMessage, ...]:
        user = ChatMessage("user", self.user_template.replace("{question}", problem.question))
        return (ChatMessage("system", self.system), user) if self.system else (user,)
