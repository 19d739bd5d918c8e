"""The LoCoMo benchmark's data: its conversations as turns, and its questions with evidence.

A LoCoMo file (``locomo10.json`` or a split of it) is a JSON array of samples::

    {"sample_id": "conv-1",
     "conversation": {"speaker_a": "Ann", "speaker_b": "Bo",
                      "session_1_date_time": "1:56 pm on 8 May, 2023",
                      "session_1": [{"speaker": "Ann", "dia_id": "D1:1", "text": "...",
                                     "blip_caption": "...", "query": "..."}, ...], ...},
     "qa": [{"question": "...", "answer": "...", "evidence": ["D1:3"], "category": 2}, ...]}

This module is the one LoCoMo parser: :mod:`ctxmem_plugin.formats` reads the ``locomo`` format
through :func:`iter_turns`, and :func:`load_locomo` adds the speakers and questions that
evaluation and training need.

Turns: LoCoMo is two people talking, but a memory needs roles, so ``speaker_a`` is ``user`` and
``speaker_b`` is ``assistant``; ``speaker`` keeps the name. A turn's timestamp is its session's
``session_N_date_time``. ``metadata`` holds ``dia_id`` (``"D1:3"``), ``session`` (int),
``conversation`` (the sample id) and, for turns that shared a photo, ``image_caption`` (the BLIP
caption) and ``image_query``. Sessions are read in numeric order (``session_10`` after
``session_9``); ``session_N_date_time`` keys without a ``session_N`` are ignored (the released
file has some).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ctxmem_plugin.errors import FormatError
from ctxmem_plugin.formats.document import (
    Document,
    KeyPath,
    Pending,
    SourceTurn,
    build_turn,
    collect,
    open_document,
)
from ctxmem_plugin.records import Turn

# Numbers of at most 9 digits: a longer one is no session or turn number (and int() of thousands
# of digits raises).
_SESSION = re.compile(r"session_(\d{1,9})")
# Tolerates the released file's slips: "D8:6; D9:17", "D:11:26", "D 1:3".
_EVIDENCE = re.compile(r"D\s*:?\s*(\d{1,9})\s*:\s*(\d{1,9})(?!\d)", re.IGNORECASE)


@dataclass(frozen=True)
class LocomoQuestion:
    """A question about one conversation, with the turns that answer it.

    Attributes:
        question: the question.
        answer: the gold answer as text (numbers in the file become strings); empty for the
            adversarial questions (category 5) that have no answer in the conversation.
        evidence: ``dia_id``s of the turns holding the answer, cleaned to ``"D<n>:<m>"``.
        category: LoCoMo's question category (5: adversarial, i.e. unanswerable).
        adversarial_answer: for category 5, the plausible but wrong answer the file gives.
    """

    question: str
    answer: str
    evidence: tuple[str, ...]
    category: int
    adversarial_answer: str | None = None


@dataclass(frozen=True)
class LocomoConversation:
    """One LoCoMo sample: a two-person conversation over many sessions, and its questions.

    Attributes:
        sample_id: e.g. ``"conv-26"``; also each turn's ``conversation`` and metadata.
        speakers: ``(speaker_a, speaker_b)``, i.e. the names of the ``user`` and ``assistant``.
        turns: the turns of every session in order.
        questions: the questions about this conversation.
    """

    sample_id: str
    speakers: tuple[str, str]
    turns: list[SourceTurn]
    questions: list[LocomoQuestion]

    def by_dia_id(self) -> dict[str, SourceTurn]:
        """The turns keyed by ``dia_id``, to look up a question's evidence."""
        return {item.turn.metadata["dia_id"]: item for item in self.turns}


def load_locomo(path: str | Path) -> list[LocomoConversation]:
    """Read a LoCoMo file: every sample's turns, speakers and questions.

    Raises:
        InputError: the file cannot be read.
        FormatError: anything in it that is not LoCoMo-shaped, naming ``file:line``.
    """
    doc = open_document(path, fmt="locomo")
    grouped = collect(doc, "locomo", iter_turns(doc)).conversations()
    conversations: list[LocomoConversation] = []
    seen: set[str] = set()
    for record in doc.records:
        if isinstance(record, FormatError):
            raise record  # unreachable: parse_document raised it already
        sample, keypath = record
        sample_id, speakers = _header(sample, doc.where(keypath))
        if sample_id in seen:
            raise FormatError(f"duplicate sample_id {sample_id!r}", doc.where(keypath))
        seen.add(sample_id)
        questions = parse_questions(sample, lambda sub: doc.where((*keypath, *sub)))
        conversations.append(
            LocomoConversation(sample_id, speakers, grouped.get(sample_id, []), questions)
        )
    return conversations


def iter_turns(doc: Document) -> Iterator[Pending]:
    """Yield ``(sample_id, turn, source)`` for every turn of every sample, or the error of a
    bad sample or turn (the reader behind ``formats.read_log(path, "locomo")``)."""
    for record in doc.records:
        if isinstance(record, FormatError):
            yield record
            continue
        sample, keypath = record
        try:
            sample_id, speakers = _header(sample, doc.where(keypath))
        except FormatError as error:
            yield error
            continue
        conversation = sample["conversation"]
        for number in session_numbers(conversation):
            key = f"session_{number}"
            base: KeyPath = (*keypath, "conversation", key)
            session = conversation[key]
            if not isinstance(session, list):
                yield FormatError(f"{key!r} must be an array of turns", doc.where(base))
                continue
            date = conversation.get(f"{key}_date_time")
            for index, raw in enumerate(session):
                source = doc.where((*base, index))
                try:
                    turn = _turn(raw, speakers, sample_id, number, date, source)
                except FormatError as error:
                    yield error
                else:
                    yield sample_id, turn, source


def session_numbers(conversation: dict[str, Any]) -> list[int]:
    """The session numbers of a sample's ``conversation``, in numeric order."""
    return sorted(int(match[1]) for key in conversation if (match := _SESSION.fullmatch(key)))


def parse_questions(sample: dict[str, Any], where: Callable[[KeyPath], str]) -> list[LocomoQuestion]:
    """The sample's ``qa`` list as :class:`LocomoQuestion`s; ``where`` maps a key path below
    the sample to ``"file:line"`` for errors."""
    items = sample.get("qa", [])
    if not isinstance(items, list):
        raise FormatError("'qa' must be an array of questions", where(("qa",)))
    questions = []
    for index, item in enumerate(items):
        source = where(("qa", index))
        if not isinstance(item, dict) or not isinstance(item.get("question"), str):
            raise FormatError("expected a question object with 'question', 'answer', 'evidence', 'category'", source)
        category, evidence = item.get("category"), item.get("evidence", [])
        if not isinstance(category, int) or isinstance(category, bool):
            raise FormatError(f"question 'category' must be an integer, found {category!r:.40}", source)
        if not isinstance(evidence, list):
            raise FormatError(f"question 'evidence' must be an array of dia_ids, found {evidence!r:.40}", source)
        answer, adversarial = item.get("answer"), item.get("adversarial_answer")
        questions.append(
            LocomoQuestion(
                question=item["question"],
                answer="" if answer is None else str(answer),
                evidence=normalise_evidence(evidence),
                category=category,
                adversarial_answer=None if adversarial is None else str(adversarial),
            )
        )
    return questions


def normalise_evidence(values: Iterable[Any]) -> tuple[str, ...]:
    """Clean evidence ids to ``"D<session>:<turn>"``, split joined ones, drop ones without
    numbers (the file has a bare ``"D"``), and keep the first of repeats.

    >>> normalise_evidence(["D8:6; D9:17", "D:11:26", " D1:3", "D"])
    ('D8:6', 'D9:17', 'D11:26', 'D1:3')
    """
    ids: list[str] = []
    for value in values:
        for match in _EVIDENCE.finditer(str(value)):
            ident = f"D{int(match[1])}:{int(match[2])}"
            if ident not in ids:
                ids.append(ident)
    return tuple(ids)


def _header(sample: Any, where: str) -> tuple[str, tuple[str, str]]:
    if not isinstance(sample, dict) or not isinstance(sample.get("conversation"), dict):
        raise FormatError("expected a LoCoMo sample with 'sample_id' and a 'conversation' object", where)
    if sample.get("sample_id") is None:
        raise FormatError("LoCoMo sample has no 'sample_id'", where)
    conversation = sample["conversation"]
    speakers = (conversation.get("speaker_a"), conversation.get("speaker_b"))
    if not all(isinstance(name, str) and name.strip() for name in speakers):
        raise FormatError("LoCoMo conversation needs 'speaker_a' and 'speaker_b' names", where)
    return str(sample["sample_id"]), (speakers[0], speakers[1])


def _turn(raw: Any, speakers: tuple[str, str], sample_id: str, session: int, date: Any, source: str) -> Turn:
    if not isinstance(raw, dict):
        raise FormatError("expected a LoCoMo turn object with 'speaker', 'dia_id', 'text'", source)
    speaker, dia_id, text = raw.get("speaker"), raw.get("dia_id"), raw.get("text")
    if not isinstance(dia_id, str) or not dia_id.strip():
        raise FormatError(f"LoCoMo turn needs a 'dia_id' like 'D{session}:1', found {dia_id!r:.40}", source)
    if not isinstance(text, str):
        raise FormatError(f"LoCoMo turn 'text' must be a string, found {text!r:.40}", source)
    if speaker not in speakers:
        raise FormatError(
            f"speaker {speaker!r:.40} is neither speaker_a {speakers[0]!r} nor speaker_b {speakers[1]!r}", source
        )
    metadata: dict[str, Any] = {"dia_id": dia_id.strip(), "session": session, "conversation": sample_id}
    if raw.get("blip_caption"):
        metadata["image_caption"] = raw["blip_caption"]
    if raw.get("query"):
        metadata["image_query"] = raw["query"]
    role = "user" if speaker == speakers[0] else "assistant"
    return build_turn(source, role=role, content=text, speaker=speaker, timestamp=date, metadata=metadata)
