"""The conversation as the engine sees it: roles and plain text, nothing of HTTP.

Front doors turn an OpenAI chat request into a :class:`Conversation`; the engine and
the conversation memory work only on these types.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]
ROLES: frozenset[str] = frozenset(("system", "developer", "user", "assistant", "tool", "function"))


@dataclass(frozen=True, slots=True)
class Message:
    """One message, its content flattened to the text a classifier can read."""

    role: str
    text: str


@dataclass(frozen=True, slots=True)
class Conversation:
    """The messages of one chat request, oldest first."""

    messages: tuple[Message, ...]

    @property
    def last_user_text(self) -> str:
        for message in reversed(self.messages):
            if message.role == "user":
                return message.text
        return ""

    @property
    def user_turns(self) -> tuple[str, ...]:
        return tuple(m.text for m in self.messages if m.role == "user")

    @property
    def instruction_turns(self) -> tuple[str, ...]:
        """The system and developer messages' texts."""
        return tuple(m.text for m in self.messages if m.role in ("system", "developer"))

    @property
    def assistant_turns(self) -> tuple[str, ...]:
        return tuple(m.text for m in self.messages if m.role == "assistant")


def content_text(content: Any) -> str:
    """Flatten OpenAI message content (a string, or a list of content parts) to text.

    Non-text parts (images, audio, files) contribute nothing but are never an error.
    """
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        parts: list[str] = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, Mapping):
                text = part.get("text")
                if isinstance(text, str) and part.get("type", "text") in ("text", "input_text"):
                    parts.append(text)
                refusal = part.get("refusal")
                if isinstance(refusal, str):
                    parts.append(refusal)
        return "\n".join(parts)
    return ""


def message_text(message: Mapping[str, Any]) -> str:
    """Text of one OpenAI message, including tool-call arguments an assistant sent."""
    text = content_text(message.get("content"))
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal:
        text = f"{text}\n{refusal}" if text else refusal
    tool_calls = message.get("tool_calls")
    functions = (
        [call.get("function") for call in tool_calls if isinstance(call, Mapping)]
        if (isinstance(tool_calls, Sequence) and not isinstance(tool_calls, str))
        else []
    )
    # The deprecated ``function_call`` carries arguments the same way, and servers still
    # answer with it when a client sends ``functions``.
    functions.append(message.get("function_call"))
    for function in functions:
        if isinstance(function, Mapping):
            arguments = function.get("arguments")
            name = function.get("name")
            piece = f"{name}({arguments})" if isinstance(arguments, str) else str(name)
            text = f"{text}\n{piece}" if text else piece
    return text
