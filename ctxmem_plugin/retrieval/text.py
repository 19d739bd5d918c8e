"""What text of a turn gets indexed, and which words of a query BM25 searches for.

Speaker names, image captions and the session date go into the indexed text: questions name
people ("What did Maya adopt?") and times ("in May"), and a turn's own words rarely do.
"""

from __future__ import annotations

import re
from datetime import datetime

from ctxmem_plugin.records import Turn

_WORD = re.compile(r"\w+", re.UNICODE)

# Function words that carry no topic: dropping them keeps OR-queries short and BM25 sharp.
STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further had
    has have having he her here hers herself him himself his how i if in into is it its itself just
    me more most my myself no nor not now of off on once only or other our ours ourselves out over own
    same she should so some such than that the their theirs them themselves then there these they
    this those through to too under until up very was we were what when where which while who whom
    why will with would you your yours yourself yourselves s t d ll m re ve""".split()
)


def caption_of(turn: Turn) -> str:
    """Text describing an image shared in the turn, if any (LoCoMo ``blip_caption``)."""
    caption = turn.metadata.get("image_caption")
    return str(caption) if caption else ""


def embed_text(turn: Turn) -> str:
    """The text a turn's dense vector is computed from: ``"Speaker: content [image: ...]"``."""
    text = f"{turn.speaker_name}: {turn.content}"
    caption = caption_of(turn)
    return f"{text} [image: {caption}]" if caption else text


def date_words(timestamp: str | None) -> str:
    """``"2023-05-08T13:56"`` -> ``"8 May 2023"``: the words a question about time would use."""
    if not timestamp:
        return ""
    try:
        when = datetime.fromisoformat(timestamp)
    except ValueError:
        return ""
    return f"{when.day} {when.strftime('%B')} {when.year}"


def index_text(turn: Turn) -> str:
    """The text BM25 sees: the embedded text plus the date the turn was said."""
    date = date_words(turn.timestamp)
    return f"{embed_text(turn)} ({date})" if date else embed_text(turn)


def query_terms(query: str) -> list[str]:
    """Lower-cased content words of a query, in order, without duplicates."""
    seen: dict[str, None] = {}
    for word in _WORD.findall(query.lower()):
        if word not in STOPWORDS and word not in seen:
            seen[word] = None
    return list(seen)


def match_terms(query: str) -> list[str]:
    """The words BM25 searches for: the query's content words, or all its words if it has none."""
    terms = query_terms(query)
    if not terms:  # only stopwords: use them rather than return nothing
        terms = list(dict.fromkeys(_WORD.findall(query.lower())))
    return terms

