"""Self-supervised threads for the thread pointer, from any chat log, and its training.

A thread is made of *cues* (30-60% of a turn's content words, as :mod:`.data` makes them, or
a run of its words as said):
the referent cue is said by the user, other cues are other topics, and the assistant's short
answers, small talk and topic changes come between it and the query, in random order and
number. The query names nothing (after small talk only), carries one word of the referent
cue, or is a new cue of the referent's turn asked after other topics (it needs no thread
turn: the pointer's null slot) as a run of the turn's words. No labels are needed; the referent is known by construction.

The wording is not the benchmark's (:data:`ctxmem_plugin.evaluation.conversation.EVAL_WORDING`),
and the thread shapes are drawn at random rather than laid out as the benchmark lays them out.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ctxmem_plugin.encoders import TextEncoder
from ctxmem_plugin.errors import InputError
from ctxmem_plugin.evaluation.conversation import Thread, Wording
from ctxmem_plugin.records import Turn
from ctxmem_plugin.reranker.thread import ThreadPointer, ThreadPointerConfig, pointer_loss, thread_features
from ctxmem_plugin.retrieval.text import embed_text, query_terms
from ctxmem_plugin.training.data import Conversation, _fragment, _wordy_turns
from ctxmem_plugin.training.followups import TRAIN_TEMPLATES

TRAIN_WORDING = Wording(
    none=TRAIN_TEMPLATES,
    partial=("and {word}?", "tell me more about the {word}", "what about {word} again?",
             "back to the {word}, any details?", "the {word} one, what was it?"),
    user_small_talk=("cool", "thank you!", "oh wow", "I see.", "makes sense", "lol okay"),
    assistant_small_talk=("Of course!", "Is there more I can do?", "My pleasure.", "Got it.", "Right.", "Any time."),
)
"""The wording of training threads: none of it is the benchmark's."""


def make_threads(conv: Conversation, rng: random.Random, count: int, *, slots: int = 8, wording: Wording = TRAIN_WORDING) -> list[Thread]:
    """Up to ``count`` self-supervised threads of at most ``slots`` turns from one conversation."""
    topics = [(i, _fragment(turn.speaker_name, words, rng) if rng.random() < 0.5 else _span(turn, rng), words)
              for i, turn, words in _wordy_turns(conv, rng)]
    if len(topics) < 3:
        return []
    names = set(query_terms(" ".join({st.turn.speaker_name for st in conv.turns})))
    out: list[Thread] = []
    for n in range(count):
        target, cue, words = topics[n % len(topics)]
        others = [t for t in topics if abs(t[0] - target) > 2]
        if len(others) < 2:
            continue
        away = rng.sample(others, 3) if len(others) >= 3 else others + others[-1:]
        kind = rng.choices(("none", "partial", "switch", "self-contained"), weights=(3, 3, 3, 2))[0]
        chosen = [w for w in query_terms(cue) if w not in names and len(w) >= 4 and not any(w in query_terms(a[1]) for a in away)]
        if kind in ("partial", "switch") and not chosen:
            kind = "none"
        thread = _thread(conv, target, cue, words, away, kind, chosen, rng, slots, wording)
        if thread is not None:
            out.append(thread)
    return out


def _thread(
    conv: Conversation, target: int, cue: str, words: list[str], away: list[tuple[int, str, list[str]]], kind: str,
    chosen: list[str], rng: random.Random, slots: int, wording: Wording,
) -> Thread | None:
    def answer(ws: list[str]) -> Turn:  # a reply that carries some of the turn's words, short or long
        return Turn(role="assistant", content=" ".join(rng.sample(ws, min(len(ws), rng.randint(1, 8)))))

    def small(after: Turn | None) -> Turn:
        if after is not None and after.role == "user":
            return Turn(role="assistant", content=rng.choice(wording.assistant_small_talk))
        return Turn(role="user", content=rng.choice(wording.user_small_talk))

    lead: list[Turn] = []
    for n in range(rng.randint(0, 2)):  # earlier talk: other topics, perhaps answered, or small talk
        if rng.random() < 0.6:
            other = away[1 + n]
            lead += [Turn(role="user", content=other[1])] + ([answer(other[2])] if rng.random() < 0.5 else [])
        else:
            lead.append(small(lead[-1] if lead else None))
    if kind == "self-contained":
        turns = lead + [Turn(role="user", content=away[0][1])] + ([answer(away[0][2])] if rng.random() < 0.5 else [])
        query = _span(conv.turns[target].turn, rng)
        return Thread(conv.name, -1, kind, None, tuple(turns[-slots:]), query, frozenset({target}), None)
    depth = rng.randint(0, 4)
    after: list[Turn] = [answer(words)] if depth and rng.random() < 0.7 else []
    if kind == "switch":
        depth = max(depth, 1)
        between = rng.randint(len(after), depth - 1) if depth - 1 >= len(after) else len(after)
        after = after[:between]
        while len(after) < between:
            after.append(small(after[-1] if after else None))
        after.append(Turn(role="user", content=away[0][1]))
        if len(after) < depth and rng.random() < 0.5:
            after.append(answer(away[0][2]))
    while len(after) < depth:
        after.append(small(after[-1] if after else None))
    referent = Turn(role="user", content=cue)
    turns = (lead + [referent] + after)[-slots:]
    query = rng.choice(wording.none) if kind == "none" else rng.choice(wording.partial).format(word=rng.choice(chosen))
    return Thread(conv.name, -1, kind, len(after), tuple(turns), query, frozenset({target}), len(turns) - 1 - len(after))


def _span(turn: Turn, rng: random.Random) -> str:
    """5-12 consecutive words of a turn, function words kept, half the time after the speaker's name."""
    words = turn.content.split()
    size = min(len(words), rng.randint(5, 12))
    start = rng.randint(0, len(words) - size)
    text = " ".join(words[start : start + size])
    return f"{turn.speaker_name} {text}" if rng.random() < 0.5 else text


@dataclass
class PointerData:
    """Threads as the pointer reads them: ``(n, M, F)`` slot features, ``(n, G)`` null features, ``(n,)`` targets."""

    turns: np.ndarray
    null: np.ndarray
    target: np.ndarray


def pointer_data(threads: Sequence[Thread], encoder: TextEncoder, slots: int) -> PointerData:
    """Each thread's pointer inputs; the target indexes ``[null, slot 1 .. M]``."""
    texts = sorted({embed_text(t) for th in threads for t in th.turns} | {th.query for th in threads})
    vec = dict(zip(texts, encoder.encode(texts)))
    turns, null, target = [], [], []
    for th in threads:
        f, g = thread_features(th.query, vec[th.query], [t.content for t in th.turns], [t.role for t in th.turns],
                               np.stack([vec[embed_text(t)] for t in th.turns]), slots)
        turns.append(f)
        null.append(g)
        age = None if th.referent is None else len(th.turns) - 1 - th.referent
        target.append(0 if age is None or age >= slots else slots - age)
    return PointerData(np.stack(turns), np.stack(null), np.array(target, dtype=np.int64))


POINTER_THREADS = 300
"""Self-supervised threads made per conversation to train the pointer."""


def train_thread_pointer(
    conversations: Sequence[Conversation], encoder: TextEncoder, *, seed: int = 0, per_conversation: int = POINTER_THREADS,
    config: ThreadPointerConfig | None = None,
) -> tuple[ThreadPointer, dict[str, float]]:
    """The thread pointer ``train`` keeps beside the model: learned from each conversation's threads.

    Returns:
        The pointer and its log entry (threads, how often it points at the referent of its
        training threads, seconds).

    Raises:
        InputError: no conversation has enough turns with content to make threads from.
    """
    began = time.perf_counter()
    cfg = config or ThreadPointerConfig()
    threads = [th for c in conversations for th in make_threads(c, random.Random(f"{seed}:{c.name}"), per_conversation, slots=cfg.slots)]
    if not threads:
        raise InputError("no threads to train the thread pointer: the logs hold too few turns with content")
    data = pointer_data(threads, encoder, cfg.slots)
    pointer = train_pointer(data, cfg, seed=seed)
    with torch.no_grad():
        mask = torch.from_numpy(data.turns).abs().sum(-1) > 0  # (n, M)
        chosen = pointer(torch.from_numpy(data.turns), torch.from_numpy(data.null), mask).argmax(-1).numpy()  # (n,)
    log = {"threads": float(len(threads)), "train_accuracy": float((chosen == data.target).mean()),
           "seconds": time.perf_counter() - began}
    return pointer, log


def train_pointer(data: PointerData, config: ThreadPointerConfig, *, seed: int = 0, epochs: int = 30,
                  batch_size: int = 64, lr: float = 3e-3) -> ThreadPointer:
    """Fit the pointer to the threads' referents (minibatch AdamW, order from ``seed``)."""
    torch.manual_seed(seed)
    reader = ThreadPointer(config)
    optimiser = torch.optim.AdamW(reader.parameters(), lr=lr, weight_decay=1e-4)
    turns = torch.from_numpy(data.turns)  # (n, M, F)
    null = torch.from_numpy(data.null)  # (n, G)
    target = torch.from_numpy(data.target)  # (n,)
    mask = turns.abs().sum(-1) > 0  # (n, M): the age column is 1 in every real slot
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(len(target))
        for start in range(0, len(order), batch_size):
            idx = torch.from_numpy(order[start : start + batch_size])
            loss = pointer_loss(reader(turns[idx], null[idx], mask[idx]), target[idx])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
    return reader.eval()
