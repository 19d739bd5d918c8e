"""From hits to prompt-ready text: one line per memory, packed into a token budget.

:meth:`ContextMemory.context`, the LangChain middleware and the legacy chain memory all pack
with :func:`pack_hits`, so a budget means the same everywhere. Tokens are estimated as
characters / 4 (rounded up, plus one for the line break): no tokenizer is loaded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ctxmem_plugin.records import Hit


def format_hit(hit: Hit) -> str:
    """``[2023-05-08 13:56] Caroline: text`` (the time left out when unknown)."""
    when = f"[{hit.timestamp.replace('T', ' ')[:16]}] " if hit.timestamp else ""
    return f"{when}{hit.speaker or hit.role}: {hit.text}"


def estimate_tokens(text: str) -> int:
    """The budget a line of ``text`` uses: characters / 4, rounded up, plus one for its line break."""
    return math.ceil(len(text) / 4) + 1


def pack_hits(hits: Sequence[Hit], max_tokens: int, *, reserved: int = 0) -> list[Hit]:
    """The best hits that fit in ``max_tokens`` (``reserved`` of it already spent), oldest first.

    Hits are taken best first while they fit (a long one that does not fit is passed over, a
    shorter one after it may still be taken), then put in the order they were said (by id).
    """
    chosen: list[Hit] = []
    used = reserved
    for hit in hits:
        cost = estimate_tokens(format_hit(hit))
        if used + cost <= max_tokens:
            chosen.append(hit)
            used += cost
    return sorted(chosen, key=lambda h: h.id)  # ids follow the order things were said


def render_hits(hits: Sequence[Hit], max_tokens: int, *, header: str | None = None) -> str:
    """The packed hits as lines, under ``header`` if given (``""`` when none fits)."""
    reserved = estimate_tokens(header) if header else 0
    lines = [format_hit(h) for h in pack_hits(hits, max_tokens, reserved=reserved)]
    if not lines:
        return ""
    return "\n".join([header, *lines] if header else lines)
