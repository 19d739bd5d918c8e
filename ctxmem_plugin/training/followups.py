"""Follow-up queries: questions that name nothing and lean on what was just said.

"And what did she say about it?" has no content word to search for; only the conversation going
on (the focus slot of the slot memory) says what "it" is. Training teaches the model such
queries with self-supervised examples built from any log: a *context* turn mentions a turn of
the history (some of its content words), then one of :data:`TRAIN_TEMPLATES` must find it.

The conversational benchmark (:mod:`ctxmem_plugin.evaluation.conversation`) asks with other
wordings, so a model cannot score by having seen the exact phrasing.
"""

from __future__ import annotations

TRAIN_TEMPLATES: tuple[str, ...] = (
    "what did they say about it?",
    "tell me more about that",
    "and what about that?",
    "remind me what was said about this",
    "what was that again?",
    "any details on that?",
    "what happened with it?",
    "can you recall that part?",
    "who brought that up?",
    "when was that?",
    "what did he mean by that?",
    "go on, what else about it?",
)
"""Follow-ups the model is trained with."""
