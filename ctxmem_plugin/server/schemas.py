"""The bodies of the memory server's requests and answers (they make its OpenAPI schema).

Requests are checked here for shape (types, unknown fields refused); what a value means (a
namespace label, a filter, ``k >= 0``) is checked by the memory itself, so an answer's error is
the one ``ContextMemory`` raises in-process. Answers are written as plain JSON; their models
below document them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

Labels = list[str] | str
"""A namespace: its labels, or the CLI spelling ``"user-42/session-7"``."""


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- requests ---------------------------------------------------------------------------------


class AddIn(Body):
    messages: list[dict[str, Any]]
    namespace: Labels
    dedupe: bool = False


class EntryIn(Body):
    namespace: Labels
    turn: dict[str, Any]
    position: str | None = None
    vector: list[float] | None = None


class WriteIn(Body):
    entries: list[EntryIn]
    dedupe: bool = True


class IdsIn(Body):
    ids: list[int]


class NamespaceIn(Body):
    namespace: Labels


class PrefixIn(Body):
    prefix: Labels = Field(default_factory=list)


class KeyIn(Body):
    namespace: Labels
    key: str


class ListIn(Body):
    namespace: Labels = Field(default_factory=list)
    filters: dict[str, Any] | None = None
    limit: int | None = None
    offset: int = 0
    order: str = "id"


class IterIn(Body):
    namespace: Labels = Field(default_factory=list)
    batch: int = Field(1000, ge=1, le=100_000)


class SearchIn(Body):
    query: str
    namespace: Labels = Field(default_factory=list)
    k: int = 10
    filters: dict[str, Any] | None = None
    method: str = "auto"
    offset: int = 0
    history: Labels | list[dict[str, Any]] | None = None
    history_mode: str = "auto"


class VectorSearchIn(Body):
    vector: list[float]
    namespace: Labels = Field(default_factory=list)
    k: int = 10
    filters: dict[str, Any] | None = None


class ContextIn(Body):
    query: str
    namespace: Labels = Field(default_factory=list)
    max_tokens: int = 1000
    k: int = 20
    history: Labels | list[dict[str, Any]] | None = None


class ExplainIn(Body):
    query: str
    namespace: Labels
    top_turns: int = 3


class ReembedIn(Body):
    batch: int = Field(256, ge=1, le=100_000)


class EmbedIn(Body):
    texts: list[str] = Field(max_length=10_000)
    query: bool = False


class Empty(Body):
    pass


# -- answers ----------------------------------------------------------------------------------


class TurnOut(BaseModel):
    id: int
    namespace: list[str]
    role: str
    speaker: str | None
    content: str
    timestamp: str | None
    created_at: float
    updated_at: float
    metadata: dict[str, Any]
    key: str | None


class HitOut(BaseModel):
    id: int
    text: str
    score: float
    namespace: list[str]
    metadata: dict[str, Any]
    signals: dict[str, dict[str, float]]
    speaker: str | None
    role: str
    timestamp: str | None


class IdsOut(BaseModel):
    ids: list[int] = Field(description="One per message or entry, in order; -1 for one skipped as already stored.")


class CountOut(BaseModel):
    count: int


class TurnsOut(BaseModel):
    turns: list[TurnOut]


class MaybeTurnOut(BaseModel):
    turn: TurnOut | None


class NamespaceCount(BaseModel):
    namespace: list[str]
    turns: int


class NamespacesOut(BaseModel):
    namespaces: list[NamespaceCount]


class HitsOut(BaseModel):
    hits: list[HitOut]


class VectorsOut(BaseModel):
    ids: list[int]
    vectors: list[list[float]]


class EmbedOut(BaseModel):
    vectors: list[list[float]]


class TextOut(BaseModel):
    text: str


class GenerationOut(BaseModel):
    generation: int


class InfoOut(BaseModel):
    version: str
    encoder: str
    dim: int
    read_only: bool
    model: dict[str, Any] | None
    timeout_s: float


class HealthOut(BaseModel):
    status: str
    version: str


class ErrorDetail(BaseModel):
    type: str = Field(description="The exception class in ctxmem_plugin.errors, e.g. NamespaceError.")
    message: str = Field(description="One line: what was expected and what was found.")
    source: str = Field("", description="Where bad input was found, when it has a place.")


class ErrorOut(BaseModel):
    error: ErrorDetail
