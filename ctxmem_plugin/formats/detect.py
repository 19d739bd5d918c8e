"""Which format a chat log is in, from the keys of its first records.

``sample_id`` or ``conversation.speaker_a`` -> locomo; ``conversations`` or ``from`` + ``value``
-> sharegpt; ``type`` + ``data`` -> langchain; ``role``/``content`` -> openai (``messages`` ->
what its messages are); text with ``Name: text`` lines -> transcript.
"""

from __future__ import annotations

from typing import Any

from ctxmem_plugin.errors import FormatError
from ctxmem_plugin.formats.document import TIME_STAMP, Document
from ctxmem_plugin.formats.transcript import speaker_of

_PROBE = 20  # records looked at to detect a format


_EXPECTED = (
    "OpenAI messages (role, content), LangChain messages (type, data), ShareGPT (conversations of "
    "from, value), LoCoMo (sample_id, conversation) or a 'Speaker: text' transcript"
)


def detect(doc: Document) -> str:
    if doc.layout == "text":
        for line in [line.strip() for line in doc.text.split("\n") if line.strip()][:50]:
            bracket = TIME_STAMP.fullmatch(line)
            if speaker_of(bracket["rest"] if bracket else line):
                return "transcript"
        raise FormatError(f"not a recognised chat log; expected {_EXPECTED}", f"{doc.path}:1")
    bad: FormatError | None = None
    for record in doc.records[:_PROBE]:
        if isinstance(record, FormatError):
            bad = bad or record
        elif found := _classify(record[0]):
            return found
    if bad is not None:
        raise bad
    first = doc.records[0] if doc.records else None
    where = doc.where(first[1]) if isinstance(first, tuple) else f"{doc.path}:1"
    raise FormatError(f"not a recognised chat log; expected {_EXPECTED}", where)


def _classify(value: Any, depth: int = 0) -> str | None:
    if isinstance(value, list) and depth < 3:
        return next(filter(None, (_classify(item, depth + 1) for item in value[:5])), None)
    if not isinstance(value, dict):
        return None
    conversation = value.get("conversation")
    if "sample_id" in value or (isinstance(conversation, dict) and "speaker_a" in conversation):
        return "locomo"
    if "conversations" in value or ("from" in value and "value" in value):
        return "sharegpt"
    if "type" in value and isinstance(value.get("data"), dict):
        return "langchain"
    if "messages" in value and depth < 3:
        return _classify(value["messages"], depth + 1) or "openai"
    return "openai" if "role" in value or "content" in value else None
