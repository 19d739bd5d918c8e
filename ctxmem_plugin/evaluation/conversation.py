"""The conversational recall benchmark: threads in which the query leans on an earlier turn.

Built from any LoCoMo-shaped file (conversations, and questions with evidence turns and gold
answers). Each labelled question becomes the *referent*: the user says it in a running thread,
then, after ``depth`` intervening turns (0-4), asks a query that needs it. The query's targets
are the question's evidence turns in the stored conversation. Every thread opens with an
exchange on another topic of the same conversation (its question, then its answer), so that
the referent is never the whole thread. The kinds of thread (:data:`KINDS`):

- ``none``: the query names nothing ("And what did she say about it?"); the intervening turns
  are the assistant's answer to the referent, then small talk.
- ``partial``: the query carries one content word of the question ("And the painting?");
  the same intervening turns.
- ``switch``: a ``partial`` query after the thread changed topic: the intervening turns hold
  another question of the conversation (and its answer), so the last turns are not the
  referent. Depth 1-4 (at depth 0 it is ``partial``).
- ``self-contained``: the question itself is the query, after two exchanges on other topics:
  what the history does to a query that needs none. No referent, no depth.

The other topics are questions whose evidence is neither the target's evidence nor next to
it, and that do not hold the query's word, so a thread never says the answer turn and never
points two ways. Queries, follow-up wordings and small talk come from a :class:`Wording`;
:data:`EVAL_WORDING` is the benchmark's, and a method trained on threads must use another.

:func:`recall_table` scores rankings by kind and depth. :func:`decayed_query_vector` is the
benchmark's non-learned recurrent baseline (the query vector plus a decayed mean of the
thread's vectors); the product's conversational search is :mod:`ctxmem_plugin.retrieval.history`.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ctxmem_plugin.errors import InputError
from ctxmem_plugin.records import Turn
from ctxmem_plugin.retrieval.text import query_terms
from ctxmem_plugin.training.data import Conversation

KINDS: tuple[str, ...] = ("none", "partial", "switch", "self-contained")
"""The kinds of thread, in the order tables show them."""

DEPTHS: tuple[int, ...] = (0, 1, 2, 3, 4)
"""Intervening turns between the referent and the query."""

BALANCED: tuple[str, ...] = ("follow-ups/0-1", "follow-ups/2-4", "self-contained")
"""The groups the ``balanced`` cell of :func:`recall_table` averages: how the product's default
conversational mode is chosen (:mod:`ctxmem_plugin.retrieval.history`)."""

WH_WORDS = frozenset({"what", "when", "where", "who", "which", "how", "why"})


@dataclass(frozen=True)
class Wording:
    """The words of a thread besides the conversation's own questions and answers.

    Attributes:
        none: follow-ups that name nothing.
        partial: follow-ups with a ``{word}`` slot (one content word of the question) and
            optionally ``{wh}`` (the question's wh-word, capitalised).
        user_small_talk, assistant_small_talk: turns that say nothing about any topic.
    """

    none: tuple[str, ...]
    partial: tuple[str, ...]
    user_small_talk: tuple[str, ...]
    assistant_small_talk: tuple[str, ...]


EVAL_WORDING = Wording(
    none=(
        "And what did she say about it?",
        "What else was mentioned about that?",
        "Can you remind me about it?",
        "Do you remember the details there?",
        "How did that go?",
        "What was said on this?",
    ),
    partial=(
        "And the {word}?",
        "{wh} was that {word} thing again?",
        "What about the {word}?",
        "Remind me about the {word}?",
    ),
    user_small_talk=("Thanks!", "Ok, got it.", "Haha, nice.", "Interesting.", "Alright, cool.", "Hmm, let me think."),
    assistant_small_talk=(
        "You're welcome!", "Anything else?", "Happy to help.", "Sure thing.", "Glad that helps.", "No problem at all.",
    ),
)
"""The benchmark's wording."""


@dataclass(frozen=True)
class Thread:
    """A running thread and the query asked after it.

    Attributes:
        conversation: the conversation's name (the namespace searched holds its turns).
        question: index of the referent question in the conversation's questions.
        kind: one of :data:`KINDS`.
        depth: turns between the referent and the query; ``None`` for ``self-contained``.
        turns: the thread before the query, oldest first.
        query: what the user asks now.
        evidence: positions of the conversation's turns that answer it.
        referent: index in ``turns`` of the turn the query leans on; ``None`` when it leans
            on none (``self-contained``).
    """

    conversation: str
    question: int
    kind: str
    depth: int | None
    turns: tuple[Turn, ...]
    query: str
    evidence: frozenset[int]
    referent: int | None


def build_threads(
    conv: Conversation,
    *,
    questions: int | None = None,
    seed: int = 0,
    wording: Wording = EVAL_WORDING,
) -> list[Thread]:
    """Every kind of thread at every depth for the conversation's questions.

    Args:
        conv: a conversation with questions, evidence and answers (``load_conversations`` on a
            LoCoMo-shaped file).
        questions: use this many of its questions, drawn at random (``None``: all).
        seed: the draw of questions, other topics, words and wordings.
        wording: the follow-ups and small talk.

    Returns:
        15 threads per question used (``none`` and ``partial`` at depths 0-4, ``switch`` at
        1-4, one ``self-contained``); a question without a usable word or two other topics is
        left out.

    Raises:
        InputError: the conversation has no questions or lacks answers for them.
    """
    if not conv.questions:
        raise InputError(f"{conv.name}: no labelled questions to build threads from")
    if len(conv.answers) != len(conv.questions) or not all(str(a).strip() for a in conv.answers):
        raise InputError(f"{conv.name}: every question needs its gold answer (the assistant's turn of a thread)")
    rng = random.Random(f"{seed}:{conv.name}")
    chosen = list(range(len(conv.questions)))
    if questions is not None and questions < len(chosen):
        chosen = sorted(rng.sample(chosen, questions))
    names = {w for st in conv.turns for w in query_terms(st.turn.speaker_name)}
    out: list[Thread] = []
    for j in chosen:
        text, evidence = conv.questions[j]
        word = _content_word(text, names, rng)
        others = _other_topics(conv, j, word, rng)
        if word is None or len(others) < 2:
            continue
        lead, away = others
        out += _threads_for(conv, j, word, lead, away, rng, wording)
    return out


def _content_word(question: str, names: set[str], rng: random.Random) -> str | None:
    """One content word of the question that is not a speaker's name (the partial query's)."""
    words = [w for w in query_terms(question) if w not in names and w not in WH_WORDS and len(w) >= 4 and not w.isdigit()]
    return rng.choice(words) if words else None


def _other_topics(conv: Conversation, j: int, word: str | None, rng: random.Random) -> list[int]:
    """Two other questions: evidence apart from question ``j``'s, and not holding its word."""
    text, evidence = conv.questions[j]
    near = {p + step for p in evidence for step in (-2, -1, 0, 1, 2)}
    fits = [
        i for i, (other, ev) in enumerate(conv.questions)
        if i != j and other.strip().lower() != text.strip().lower() and not (ev & near)
        and (word is None or word not in query_terms(f"{other} {conv.answers[i]}"))
    ]
    if len(fits) < 2:
        return fits
    first = rng.choice(fits)
    # The two other topics must be apart from each other too, or the lead would say the switch.
    rest = [i for i in fits if not ({p + s for p in conv.questions[first][1] for s in (-2, -1, 0, 1, 2)} & conv.questions[i][1])]
    return [first, rng.choice(rest)] if rest else [first]


def _small_talk(after: Turn, rng: random.Random, wording: Wording) -> Turn:
    """A turn that says nothing, by the other party than the turn before it."""
    if after.role == "user":
        return Turn(role="assistant", content=rng.choice(wording.assistant_small_talk))
    return Turn(role="user", content=rng.choice(wording.user_small_talk))


def _threads_for(
    conv: Conversation, j: int, word: str, lead: int, away: int, rng: random.Random, wording: Wording
) -> list[Thread]:
    text, evidence = conv.questions[j]
    ev = frozenset(evidence)

    def exchange(i: int) -> list[Turn]:
        return [Turn(role="user", content=conv.questions[i][0]), Turn(role="assistant", content=str(conv.answers[i]))]

    opening = exchange(lead)
    referent = Turn(role="user", content=text)
    answer = Turn(role="assistant", content=str(conv.answers[j]))
    first = text.split()[0].lower().strip("?,.") if text.split() else ""
    wh = (first if first in WH_WORDS else "what").capitalize()
    out: list[Thread] = []
    for kind in ("none", "partial", "switch"):
        for depth in DEPTHS:
            if kind == "switch" and depth == 0:
                continue  # a switch needs a turn after the referent
            if kind == "switch":
                after = ([answer] if depth >= 2 else []) + exchange(away)[: 1 if depth <= 2 else 2]
            else:
                after = [answer][:depth]
            while len(after) < depth:
                after.append(_small_talk(after[-1], rng, wording))
            if kind == "none":
                query = rng.choice(wording.none)
            else:
                query = rng.choice(wording.partial).format(word=word, wh=wh)
            turns = (*opening, referent, *after)
            out.append(Thread(conv.name, j, kind, depth, turns, query, ev, len(opening)))
    out.append(Thread(conv.name, j, "self-contained", None, (*opening, *exchange(away)), text, ev, None))
    return out


def cell_of(thread: Thread) -> str:
    """The table cell a thread is reported in: ``"none/2"``, ``"self-contained"``."""
    return thread.kind if thread.depth is None else f"{thread.kind}/{thread.depth}"


def recall_at(ranked: np.ndarray, evidence: Iterable[int], k: int) -> float:
    """Share of the evidence positions among the first ``k`` of ``ranked`` (best first)."""
    gold = set(evidence)
    return len(gold.intersection(ranked[:k].tolist())) / len(gold)


def recall_table(
    threads: Sequence[Thread], ranked: Mapping[str, Sequence[np.ndarray]], ks: Sequence[int] = (1, 10)
) -> dict[str, dict[str, dict[str, float]]]:
    """Recall@k of each method by cell (kind/depth), by depth group and overall.

    Args:
        threads: the threads, in the order of every ranking.
        ranked: per method, each thread's conversation positions, best first.
        ks: the cut-offs.

    Returns:
        ``{method: {cell: {"recall@k": ..., "count": n}}}``; besides the kind/depth cells,
        ``"<kind>/0-1"`` and ``"<kind>/2-4"`` pool a kind's shallow and deep threads,
        ``"follow-ups/0-1"`` and ``"follow-ups/2-4"`` pool every kind but ``self-contained``,
        ``"all"`` every thread, and ``"balanced"`` is the mean of the follow-ups at depth 0-1,
        at depth 2-4 and the self-contained questions (each counted once: the benchmark holds
        14 follow-up threads per self-contained one, a mix no user's traffic is known to have).
    """
    groups: dict[str, list[int]] = {}
    for i, t in enumerate(threads):
        keys = [cell_of(t), "all"]
        if t.depth is not None:
            span = "0-1" if t.depth <= 1 else "2-4"
            keys += [f"{t.kind}/{span}", f"follow-ups/{span}"]
        for key in keys:
            groups.setdefault(key, []).append(i)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for method, ranks in ranked.items():
        if len(ranks) != len(threads):
            raise InputError(f"{method}: {len(ranks)} rankings for {len(threads)} threads")
        out[method] = {
            key: {
                "count": float(len(idx)),
                **{f"recall@{k}": float(np.mean([recall_at(ranks[i], threads[i].evidence, k) for i in idx])) for k in ks},
            }
            for key, idx in groups.items()
        }
        parts = [out[method][g] for g in BALANCED if g in out[method]]
        if len(parts) == len(BALANCED):
            out[method]["balanced"] = {
                "count": float(sum(p["count"] for p in parts)),
                **{f"recall@{k}": float(np.mean([p[f"recall@{k}"] for p in parts])) for k in ks},
            }
    return out


# -- the non-learned recurrent baseline ------------------------------------------------------


def decay_weights(count: int, decay: float) -> np.ndarray:
    """``(count,)`` weights ``decay ** age``, age 0 for the latest turn, summing to 1.

    ``decay`` 0 keeps the latest turn alone; 1 is the plain mean.
    """
    if not 0.0 <= decay <= 1.0:
        raise InputError(f"decay must be in [0, 1], got {decay}")
    age = np.arange(count - 1, -1, -1, dtype=np.float64)  # (t,): the last turn is age 0
    w = np.power(decay, age)  # 0 ** 0 == 1: with decay 0 the latest turn keeps its weight
    return (w / w.sum()).astype(np.float32) if count else w.astype(np.float32)


def decayed_query_vector(query_vector: np.ndarray, history_vectors: np.ndarray, decay: float) -> np.ndarray:
    """``normalise(q/|q| + m/|m|)``, ``m`` the :func:`decay_weights` mean of the thread's vectors.

    Args:
        query_vector: ``(d,)`` the query's embedding.
        history_vectors: ``(t, d)`` the thread's turn embeddings, oldest first.
        decay: weight ratio of a turn to the one after it.

    Returns:
        ``(d,)`` unit float32; the query's own direction when the thread is empty (or its
        mean is zero).
    """
    q = np.asarray(query_vector, dtype=np.float32)  # (d,)
    qn = q / max(float(np.linalg.norm(q)), 1e-12)
    if len(history_vectors) == 0:
        return qn
    m = decay_weights(len(history_vectors), decay) @ np.asarray(history_vectors, dtype=np.float32)  # (d,)
    norm = float(np.linalg.norm(m))
    if norm < 1e-6:
        return qn
    v = qn + m / norm  # (d,)
    return (v / np.linalg.norm(v)).astype(np.float32)
