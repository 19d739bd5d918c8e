"""Reader of plain transcripts: ``Speaker: text`` lines.

``Name: text`` starts a turn (a name of several words capitalises each, so ``She said: yes`` is
prose); other non-blank lines continue the turn (joined with newlines); blank lines are ignored.
A line ``## <time>`` or ``[<time>]``, ``<time>`` starting with a digit and accepted by
:func:`~ctxmem_plugin.records.parse_timestamp` (``2024-03-01``, ``2024-03-01 10:00``), sets the
timestamp of the turns that follow; ``[<time>] Name: text`` also starts a turn; other ``# ``
lines are headings. Speakers named like a role (User, Human, Assistant, AI, System...) get it;
the first other speaker is ``user`` unless a user-named one came first, later ones ``assistant``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from ctxmem_plugin.errors import FormatError
from ctxmem_plugin.formats.document import TIME_STAMP, Document, Pending
from ctxmem_plugin.formats.messages import convert_record, openai_turn
from ctxmem_plugin.records import ROLE_ALIASES, parse_timestamp

_SPEAKER = re.compile(r"(?P<name>[^\W\d_][\w .'’-]{0,39}?)\s*:(?:\s+(?P<text>.*))?")


_HEADING = re.compile(r"#+\s+(?P<text>.*)")


def read_transcript(doc: Document) -> Iterator[Pending]:
    roles: dict[str, str] = {}
    stamp: str | None = None
    current: tuple[str, int, str | None, list[str]] | None = None  # name, line, time, text lines

    def finish(name: str, number: int, time: str | None, lines: list[str]) -> Iterator[Pending]:
        key = name.lower()
        if key not in roles:
            roles[key] = ROLE_ALIASES.get(key) or ("assistant" if "user" in roles.values() else "user")
        message = {"role": roles[key], "content": "\n".join(lines).strip(), "speaker": name, "timestamp": time}
        return convert_record(openai_turn, message, doc.path.stem, f"{doc.path}:{number}")

    for number, raw in enumerate(doc.text.split("\n"), 1):
        line = raw.strip()
        heading, bracket = _HEADING.fullmatch(line), TIME_STAMP.fullmatch(line)
        if heading and not heading["text"][:1].isdigit():
            continue  # a title, not a time
        time = heading["text"] if heading else bracket["time"] if bracket else None
        if time is not None:
            try:
                stamp = parse_timestamp(time)
            except ValueError as exc:
                yield FormatError(str(exc), f"{doc.path}:{number}")
            line = bracket["rest"] if bracket else ""
        speaker = speaker_of(line) if line else None
        if speaker:
            if current:
                yield from finish(*current)
            current = (speaker[0], number, stamp, [speaker[1]])
        elif line and current:
            current[3].append(line)
        elif line:
            yield FormatError(f"expected 'Speaker: text', found {line!r:.60}", f"{doc.path}:{number}")
    if current:
        yield from finish(*current)


def speaker_of(line: str) -> tuple[str, str] | None:
    """``(name, text)`` of a ``Name: text`` line; several-word names must capitalise each word."""
    match = _SPEAKER.fullmatch(line)
    words = match["name"].split() if match else []
    if not match or (len(words) > 1 and (len(words) > 4 or not all(word[0].isupper() for word in words))):
        return None
    return " ".join(words), match["text"] or ""
