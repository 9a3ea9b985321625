"""Who a conversation belongs to and which conversation a request continues.

Every identifier the memory stores or logs is a keyed hash (HMAC-SHA256 with
``memory.secret``), never the raw API key, header value or text.  The tenant hash is
part of every conversation key, so one tenant can neither read nor poison another's
state, even when both send the same explicit conversation id or the same opening.

Without an explicit conversation id the conversation is fingerprinted from its
opening: every message up to and including the first user message (system prompt,
developer text, an assistant greeting) and, once present, the first assistant reply
after it.  Turn 1 therefore has its own key (the *opening* key) and the tracker copies
the state to the *continuation* key when it records the first relayed reply; this keeps
two chats that merely start alike (the same app, the same "hi") from sharing state as
soon as their first replies differ.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from typing import Literal

from guard.conversation import Conversation
from guard.errors import ConfigError
from guard.settings import MemorySettings

ANONYMOUS = "anonymous"
# explicit: the client's conversation id; opening: fingerprint of a history with no
# reply yet (turn 1); continuation: fingerprint including the first relayed reply.
KeyKind = Literal["explicit", "opening", "continuation"]
_LONG = 32  # hex chars (128 bits) for identifiers shared across tenants
_SHORT = 16  # hex chars (64 bits) for per-conversation hashes of texts
_OPENING_ROLES = frozenset(("system", "developer", "assistant"))


def normalise(text: str) -> str:
    """Whitespace-insensitive form: clients and SDKs re-indent and trim messages."""
    return " ".join(text.split())


class Keyring:
    """Keyed, domain-separated hashes; the only place the memory secret is used."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ConfigError("memory.secret: must be at least 16 bytes")
        self._secret = secret

    def digest(self, domain: str, *parts: str, length: int = _LONG) -> str:
        chunks = [domain.encode(), b"\0"]
        for part in parts:
            encoded = part.encode("utf-8", "surrogatepass")
            chunks.append(len(encoded).to_bytes(8, "big"))  # unambiguous concatenation
            chunks.append(encoded)
        # One-shot C implementation: every request hashes its whole history.
        return hmac.digest(self._secret, b"".join(chunks), "sha256").hex()[:length]

    def text(self, text: str) -> str:
        """Hash of a message text, whitespace-normalised (relayed replies)."""
        return self._single(b"text\0", normalise(text))

    def prompt(self, text: str) -> str:
        """Score-cache key of a user text: exact text (a whitespace change only re-scores)."""
        return self._single(b"prompt\0", text)

    def _single(self, prefix: bytes, text: str) -> str:
        # Hot path (every message of every request): one part needs no length prefix,
        # and the NUL-terminated domain keeps it apart from every other domain.
        message = prefix + text.encode("utf-8", "surrogatepass")
        return hmac.digest(self._secret, message, "sha256").hex()[:_SHORT]


def keyring_from_settings(settings: MemorySettings) -> Keyring:
    """The configured key, or a random per-process one for the in-memory store.

    Replicas sharing Redis must derive the same hashes, so Redis requires a secret.
    """
    if settings.secret is not None:
        return Keyring(settings.secret.get_secret_value().encode())
    if settings.backend == "redis":
        raise ConfigError("memory.secret: required when memory.backend is redis")
    return Keyring(secrets.token_bytes(32))


@dataclass(frozen=True, slots=True)
class ConversationKey:
    """Where a conversation's state lives; both parts are keyed hashes."""

    tenant: str
    conversation: str
    kind: KeyKind
    opening: str | None = None  # for "continuation": the key of the opening it grew from

    @property
    def opening_storage_key(self) -> str | None:
        return None if self.opening is None else f"{self.tenant}:{self.opening}"

    @property
    def storage_key(self) -> str:
        return f"{self.tenant}:{self.conversation}"


def tenant_hash(keyring: Keyring, raw_tenant: str | None) -> str:
    return keyring.digest("tenant", raw_tenant or ANONYMOUS)


def conversation_key(
    keyring: Keyring,
    conversation: Conversation,
    *,
    tenant: str | None,
    explicit_id: str | None,
) -> ConversationKey:
    """The key of the conversation a request continues (see module docstring)."""
    tenant_id = tenant_hash(keyring, tenant)
    if explicit_id:
        conv = keyring.digest("conversation-id", tenant_id, explicit_id)
        return ConversationKey(tenant_id, conv, "explicit")
    opening: list[str] = []
    first_reply: str | None = None
    seen_user = False
    for message in conversation.messages:
        if not seen_user:
            if message.role == "user":
                seen_user = True
                opening.append(f"user\0{normalise(message.text)}")
            elif message.role in _OPENING_ROLES:
                opening.append(f"{message.role}\0{normalise(message.text)}")
        elif message.role == "assistant":
            first_reply = message.text
            break
    base = keyring.digest("opening", tenant_id, *opening)
    if first_reply is None:
        return ConversationKey(tenant_id, base, "opening")
    return ConversationKey(
        tenant_id, continuation(keyring, base, first_reply), "continuation", opening=base
    )


def continuation(keyring: Keyring, opening_key: str, first_reply: str) -> str:
    """Key of a fingerprinted conversation once its first reply is known."""
    return keyring.digest("continuation", opening_key, keyring.text(first_reply))
