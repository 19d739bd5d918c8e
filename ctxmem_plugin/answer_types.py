"""What kind of answer a query asks for, and whether a turn holds one.

"When did Caroline go to the support group?" is answered by the turn that says "I went to a
support group yesterday", not by the five other turns about the support group: lexical and
dense scores cannot tell them apart, a time expression can. On the LoCoMo dev file, 82% of the
evidence turns of "when" questions hold a time expression, against 14% of all turns; 20% of
evidence turns hold a question mark, against 30% of all turns (a question is rarely the answer).

These are cheap, English-only surface marks (regular expressions, no model), given to the
learned scorer as features: it decides how much they count.
"""

from __future__ import annotations

import functools
import re

_UNITS = r"(?:day|days|week|weeks|weekend|weekends|month|months|year|years|night|morning|afternoon|evening|summer|winter|spring|fall|autumn|season)"
_WEEKDAYS = r"(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday)s?"

# Relative and absolute time expressions in a turn ("yesterday", "last week", "two years ago",
# "in 2019", "on Friday", "May 7"). Month names are matched capitalised only: "may" and "march"
# are also common verbs.
_TIME_ANY_CASE = re.compile(
    rf"\b(?:yesterday|today|tonight|tomorrow|recently|lately|ago|"
    rf"(?:last|next|this|past|coming|previous|upcoming) (?:{_UNITS}|{_WEEKDAYS})|"
    rf"(?:a|one|two|three|four|five|six|few|couple of|\d+) {_UNITS}|"
    rf"the other day|{_WEEKDAYS}|(?:19|20)\d\d|\d{{1,2}}/\d{{1,2}}(?:/\d{{2,4}})?)\b",
    re.IGNORECASE,
)
_MONTH = re.compile(r"\b(?:January|February|March|April|May|June|July|August|September|October|November|December)\b")

_NUMBER = re.compile(
    r"\d|\b(?:one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|twenty|thirty|forty|fifty|"
    r"sixty|seventy|eighty|ninety|hundred|hundreds|thousand|thousands|million|dozen|dozens|couple|"
    r"several|twice|thrice)\b",
    re.IGNORECASE,
)

_ASKS_TIME = re.compile(
    rf"\bwhen\b|\bhow long ago\b|\b(?:what|which) (?:{_UNITS}|date|time|day of the week|{_WEEKDAYS})\b",
    re.IGNORECASE,
)
_ASKS_COUNT = re.compile(r"\bhow (?:many|much|often|long)\b|\bnumber of\b", re.IGNORECASE)

QUERY_MARK_NAMES: tuple[str, ...] = ("query_asks_time", "query_asks_count")
TURN_MARK_NAMES: tuple[str, ...] = ("turn_has_time", "turn_has_number", "turn_is_question")
MATCH_NAMES: tuple[str, ...] = ("time_match", "count_match")
FEATURE_NAMES: tuple[str, ...] = QUERY_MARK_NAMES + TURN_MARK_NAMES + MATCH_NAMES
"""The feature columns :func:`answer_features` returns, in order."""


@functools.lru_cache(maxsize=4096)
def query_marks(query: str) -> tuple[float, float]:
    """``(asks for a time, asks for a count or duration)`` as 0/1."""
    return float(bool(_ASKS_TIME.search(query))), float(bool(_ASKS_COUNT.search(query)))


@functools.lru_cache(maxsize=65536)
def turn_marks(content: str) -> tuple[float, float, float]:
    """``(holds a time expression, holds a number, holds a question)`` as 0/1."""
    has_time = bool(_TIME_ANY_CASE.search(content) or _MONTH.search(content))
    return float(has_time), float(bool(_NUMBER.search(content))), float("?" in content)


def answer_features(query: str, content: str) -> tuple[float, ...]:
    """The :data:`FEATURE_NAMES` columns of one (query, candidate turn) pair.

    The two ``*_match`` columns are the products of what the query asks and what the turn
    holds, so that a small scorer need not learn the interaction itself.
    """
    asks_time, asks_count = query_marks(query)
    has_time, has_number, is_question = turn_marks(content)
    return asks_time, asks_count, has_time, has_number, is_question, asks_time * has_time, asks_count * has_number
