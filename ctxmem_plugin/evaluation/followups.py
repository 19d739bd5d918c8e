"""The follow-up benchmark: each labelled question said in a new conversation, then a query that names nothing.

The query is one of :data:`EVAL_TEMPLATES`, worded unlike any training follow-up
(:data:`ctxmem_plugin.training.followups.TRAIN_TEMPLATES`), so a model cannot score by having
seen the phrasing; the targets are the question's evidence turns. Gathered beside the training
examples (``gather(extra_followups=...)``) as ``followup-eval`` examples that training never sees.
"""

from __future__ import annotations

from ctxmem_plugin.records import Turn
from ctxmem_plugin.training.data import Conversation, FollowUp

EVAL_TEMPLATES: tuple[str, ...] = (
    "And what did she say about it?",
    "What else was mentioned about that?",
    "Can you remind me about it?",
    "Do you remember the details there?",
    "How did that go?",
    "What was said on this?",
)
"""Follow-ups the benchmark asks with; none of them is a training template."""

FOLLOWUP_CONTEXTS = ("question", "answered")
"""What a benchmark follow-up comes after: the question alone, or the question and its answer."""


def eval_followups(conv: Conversation, context: str = "question") -> list[FollowUp]:
    """Benchmark follow-ups: each question as the user's turn, then an unseen template.

    ``context="answered"`` puts the question's gold answer after it as the assistant's turn, as
    in an exchange where the user follows up on the assistant's reply.
    """
    if context not in FOLLOWUP_CONTEXTS:
        raise ValueError(f"context must be one of {FOLLOWUP_CONTEXTS}, got {context!r}")
    if context == "answered" and len(conv.answers) != len(conv.questions):
        raise ValueError(f"{conv.name}: context='answered' needs an answer for every question")
    out: list[FollowUp] = []
    for j, (q, ev) in enumerate(conv.questions):
        turns = [Turn(role="user", content=q)]
        if context == "answered":
            turns.append(Turn(role="assistant", content=conv.answers[j]))
        out.append((turns, EVAL_TEMPLATES[j % len(EVAL_TEMPLATES)], ev))
    return out
