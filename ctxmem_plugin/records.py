"""The records that flow through the library: :class:`Turn` in, :class:`Hit` out."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ctxmem_plugin import safejson
from ctxmem_plugin.errors import InputError
from ctxmem_plugin.namespaces import Namespace

Role = Literal["user", "assistant", "system", "tool"]

# Spellings seen in the wild for the four roles; anything else is an unknown role.
ROLE_ALIASES: dict[str, Role] = {
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "ai": "assistant",
    "gpt": "assistant",
    "bot": "assistant",
    "model": "assistant",
    "chatgpt": "assistant",
    "system": "system",
    "tool": "tool",
    "function": "tool",
}

MAX_CONTENT_CHARS = 1_000_000
"""Longest message accepted (characters). Longer ones are almost always a pasted file or a
broken log, and would dominate the index; they are rejected with a clear error instead."""

_TIME_FORMATS = (
    "%I:%M %p on %d %B, %Y",  # LoCoMo: "1:56 pm on 8 May, 2023"
    "%I:%M %p on %d %b, %Y",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%d",
)


def parse_timestamp(value: Any) -> str | None:
    """Normalise an event time to ISO-8601, or raise ``ValueError`` naming what is accepted.

    Accepts ``datetime``, epoch seconds, ISO-8601 strings and LoCoMo's ``"1:56 pm on 8 May, 2023"``.
    """
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            seconds = float(value)
            if not math.isfinite(seconds):
                raise OverflowError
            return datetime.fromtimestamp(seconds, tz=timezone.utc).isoformat()
        except (OverflowError, OSError, ValueError):
            raise ValueError(
                f"timestamp {safejson.show(value)} is out of range; expected epoch seconds of a date in years 1 to 9999"
            ) from None
    if isinstance(value, str):
        text = value.strip()
        try:
            return datetime.fromisoformat(text.replace("Z", "+00:00")).isoformat()
        except ValueError:
            pass
        for fmt in _TIME_FORMATS:
            try:
                return datetime.strptime(text, fmt).isoformat()
            except ValueError:
                continue
    raise ValueError(
        f"timestamp {safejson.show(value)} is not ISO-8601, epoch seconds, or like '1:56 pm on 8 May, 2023'"
    )


class Turn(BaseModel):
    """One message of a conversation, as validated on the way in.

    Attributes:
        role: ``user``, ``assistant``, ``system`` or ``tool`` (common aliases are mapped).
        content: the text of the message.
        speaker: the name of who spoke (defaults to the role); it is indexed with the text.
        timestamp: event time (when it was said), ISO-8601; ``None`` when unknown.
        metadata: JSON extra fields, filterable in :meth:`ContextMemory.search`: nested at most
            :data:`~ctxmem_plugin.safejson.MAX_DEPTH` levels, integers within 64 bits, finite
            numbers, valid Unicode text.
        key: optional caller-chosen identifier, unique within a namespace; adding a turn with an
            existing key replaces the old one (upsert).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Role = "user"
    content: str = Field(min_length=1, max_length=MAX_CONTENT_CHARS)
    speaker: str | None = None
    timestamp: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    key: str | None = None

    @field_validator("role", mode="before")
    @classmethod
    def _role(cls, value: Any) -> str:
        if isinstance(value, str) and value.strip().lower() in ROLE_ALIASES:
            return ROLE_ALIASES[value.strip().lower()]
        raise ValueError(f"unknown role {safejson.show(value)}; expected one of user, assistant, system, tool")

    @field_validator("content")
    @classmethod
    def _content(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("content is empty")
        return value

    @field_validator("content", "speaker", "key")
    @classmethod
    def _unicode(cls, value: str | None) -> str | None:
        if value is not None and not safejson.is_unicode(value):
            raise ValueError("not valid Unicode text (a lone surrogate)")
        return value

    @field_validator("timestamp", mode="before")
    @classmethod
    def _timestamp(cls, value: Any) -> str | None:
        return parse_timestamp(value)

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, Any]) -> dict[str, Any]:
        found = safejson.problem(value)
        if found is not None:
            raise ValueError(f"not storable as JSON: {found}")
        return value

    @property
    def speaker_name(self) -> str:
        """The name indexed with the text: the speaker, else the role."""
        return self.speaker or self.role

    def content_hash(self, position: str | None = None) -> str:
        """SHA-256 over what identifies this turn; ``position`` tells repeated messages apart."""
        payload = json.dumps(
            [self.role, self.speaker, self.content, self.timestamp, self.metadata, position],
            sort_keys=True,
            ensure_ascii=False,
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class StoredTurn:
    """A turn as kept in the store, with its id, namespace and ingest times."""

    id: int
    namespace: Namespace
    role: str
    speaker: str | None
    content: str
    timestamp: str | None
    created_at: float
    updated_at: float
    metadata: dict[str, Any]
    key: str | None = None


@dataclass(frozen=True)
class Hit:
    """One search result.

    Attributes:
        id: the turn's id (stable; use it with ``get``/``delete``).
        text: the turn's content.
        score: the fused score (higher is better; comparable within one search only).
        namespace: the namespace the turn belongs to.
        metadata: the turn's metadata.
        signals: which retrieval signal found it and with what score and rank, e.g.
            ``{"bm25": {"score": 7.1, "rank": 1}, "dense": {"score": 0.62, "rank": 4}}``.
        speaker, role, timestamp: as stored.
    """

    id: int
    text: str
    score: float
    namespace: Namespace
    metadata: dict[str, Any]
    signals: dict[str, dict[str, float]] = field(default_factory=dict)
    speaker: str | None = None
    role: str = "user"
    timestamp: str | None = None


Message = Turn | Mapping[str, Any]
"""What ``ContextMemory.add`` takes: a :class:`Turn` or an OpenAI-style message dict."""


def to_turn(message: Message, where: str = "") -> Turn:
    """Validate one message (a :class:`Turn` or an OpenAI-style dict) into a :class:`Turn`.

    A dict may name the speaker ``speaker`` or ``name``. Raises :class:`InputError` naming the
    field and what was expected.
    """
    if isinstance(message, Turn):
        return message
    if not isinstance(message, Mapping):
        raise InputError(f"a message must be a dict or Turn, got {type(message).__name__}", where)
    data = dict(message)
    if "speaker" not in data and "name" in data:
        data["speaker"] = data.pop("name")
    try:
        return Turn.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "message"
        text = err["msg"].removeprefix("Value error, ")
        raise InputError(f"{loc}: {text}", where) from None


@dataclass(frozen=True)
class NewTurn:
    """One turn for :meth:`ContextMemory.write`, the bulk write every other write goes through.

    Attributes:
        namespace: where it is stored.
        turn: the validated turn.
        position: what tells it apart from the same message said elsewhere, e.g. its
            conversation and index in a log (``"chat#17"``). With ``dedupe``, a turn whose
            content and position are both already stored in the namespace is skipped; ``None``
            identifies it by content alone.
        vector: its embedding by the memory's encoder, ``(dim,)`` float32, when the caller has
            it already (an export with vectors); ``None`` = encoded on write.
    """

    namespace: Namespace
    turn: Turn
    position: str | None = None
    vector: np.ndarray | None = None

    @property
    def content_hash(self) -> str:
        """The identity used to skip duplicates (see :meth:`Turn.content_hash`)."""
        return self.turn.content_hash(self.position)


@dataclass
class IngestReport:
    """What an ingest did: turns added, duplicates skipped, invalid records skipped (with sources)."""

    added: int = 0
    duplicates: int = 0
    invalid: list[str] = field(default_factory=list)
    seconds: float = 0.0
