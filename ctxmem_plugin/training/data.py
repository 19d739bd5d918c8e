"""Training examples for the ctxmem model, gathered through the real retrieval pipeline.

An example is a query, its candidates (exactly as :meth:`HybridRetriever.candidates` returns
them at search time, features included) and which candidates are relevant. Two sources:

- **supervised**: LoCoMo-format files, question -> evidence turns;
- **self-supervised** (any chat log, no labels): a *cue* made from part of a turn's content
  words must find that turn among its candidates; a *reply* cue (the next turn's text) must
  find the turn it answers. Both teach the model what a partial, reworded reference to an
  earlier turn looks like. A *followup* is a cue said as the latest turn of a new
  conversation, then a query that names nothing ("what was that again?",
  :mod:`ctxmem_plugin.training.followups`) must find the turn: only the focus slot can tell which.

Every example carries the focus its query sees: the conversation's own for questions and cues
(asked at its end), the new conversation's for follow-ups. The focus has no learned parameter,
so it is known here, and its probe widens the candidates exactly as it will at search time.
"""

from __future__ import annotations

import json
import random
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from ctxmem_plugin.encoders import TextEncoder
from ctxmem_plugin.training.followups import TRAIN_TEMPLATES
from ctxmem_plugin.formats import SourceTurn, detect_format, read_log
from ctxmem_plugin.retrieval.text import embed_text, query_terms
from ctxmem_plugin.records import Turn
from ctxmem_plugin.retrieval.features import candidate_features
from ctxmem_plugin.retrieval.hybrid import RetrievalConfig
from ctxmem_plugin.reranker.inputs import focus_probe, turn_features
from ctxmem_plugin.reranker.slots import focus_trace

FOLLOWUPS_PER_CONVERSATION = 100
"""Self-supervised follow-ups gathered per conversation by default."""


@dataclass
class Conversation:
    """One conversation to learn from: its turns and, if labelled, questions -> turn positions."""

    name: str
    turns: list[SourceTurn]
    questions: list[tuple[str, set[int]]] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)  # the gold answer of each question, if known
    categories: list[int] = field(default_factory=list)  # each question's LoCoMo category, if known


@dataclass
class ConversationTensors:
    """A conversation's turns as the slot memory sees them."""

    name: str
    vectors: np.ndarray  # (t, d) float32
    features: np.ndarray  # (t, f) float32


@dataclass
class Example:
    """One query with its candidate list; ``cand`` indexes the conversation's turns."""

    conv: int
    kind: str  # "question", "cue", "reply" or "followup"; a benchmark may add its own kinds
    query: np.ndarray  # (d,)
    features: np.ndarray  # (n, F)
    cand: np.ndarray  # (n,) int64 positions in the conversation
    labels: np.ndarray  # (n,) bool
    focus: np.ndarray  # (d,) the focus the query is asked in (zeros: none)

TRAIN_KINDS = frozenset({"question", "cue", "reply", "followup"})
"""The kinds training learns from; examples of other kinds (a benchmark's) are never trained on."""


@dataclass
class Dataset:
    """Everything training needs, independent of any memory directory."""

    conversations: list[ConversationTensors]
    examples: list[Example]
    pool: int
    encoder: str
    retrieval: dict[str, object] | None = None  # the RetrievalConfig the features were made with
    focus_rate: float = 0.0  # the focus trace the examples' focus vectors were made with
    focus_pool: int = 0  # turns near the focus probe added to each candidate list

    def subset(self, names: set[str]) -> Dataset:
        """Only the examples of the named conversations (conversation tensors are kept)."""
        keep = {i for i, c in enumerate(self.conversations) if c.name in names}
        return replace(self, examples=[e for e in self.examples if e.conv in keep])

    def describe(self) -> dict[str, int]:
        kinds: dict[str, int] = {}
        for e in self.examples:
            kinds[e.kind] = kinds.get(e.kind, 0) + 1
        return {"conversations": len(self.conversations), "examples": len(self.examples), **kinds}


def load_conversations(paths: Sequence[str | Path]) -> list[Conversation]:
    """Conversations from log files of any supported format; LoCoMo files bring their questions."""
    from ctxmem_plugin.formats import log_files
    from ctxmem_plugin.formats.locomo import load_locomo

    files: list[Path] = []
    for p in map(Path, paths):
        files += log_files(p) if p.is_dir() else [p]
    out: list[Conversation] = []
    for path in files:
        if detect_format(path) == "locomo":
            for conv in load_locomo(path):
                pos = {st.turn.metadata.get("dia_id"): i for i, st in enumerate(conv.turns)}
                qs = [
                    (q.question, {pos[e] for e in q.evidence if e in pos}, q.answer, q.category)
                    for q in conv.questions
                    if q.category in (1, 2, 3, 4)
                ]
                qs = [q for q in qs if q[1]]
                out.append(Conversation(conv.sample_id, list(conv.turns), [(t, e) for t, e, _, _ in qs],
                                        [a for _, _, a, _ in qs], [c for _, _, _, c in qs]))
        else:
            for name, turns in read_log(path).conversations().items():
                out.append(Conversation(f"{path.name}:{name}", turns))
    return out


def _fragment(speaker: str, words: list[str], rng: random.Random) -> str:
    """30-60% of a turn's content words in their order, half the time after the speaker's name."""
    k = max(2, round(len(words) * rng.uniform(0.3, 0.6)))
    text = " ".join(words[j] for j in sorted(rng.sample(range(len(words)), k)))
    return f"{speaker} {text}" if rng.random() < 0.5 else text


def _wordy_turns(conv: Conversation, rng: random.Random) -> Iterator[tuple[int, Turn, list[str]]]:
    """``(position, turn, content words)`` of the turns with 4+ content words, in random order."""
    order = list(range(len(conv.turns)))
    rng.shuffle(order)
    for i in order:
        turn = conv.turns[i].turn
        words = query_terms(turn.content)
        if len(words) >= 4:
            yield i, turn, words


def make_cues(conv: Conversation, rng: random.Random, max_cues: int) -> list[tuple[str, str, set[int]]]:
    """Self-supervised queries ``(kind, text, positive positions)`` for one conversation."""
    cues: list[tuple[str, str, set[int]]] = []
    for i, turn, words in _wordy_turns(conv, rng):
        if len(cues) >= max_cues:
            break
        if rng.random() < 0.7 or i + 1 >= len(conv.turns):
            cues.append(("cue", _fragment(turn.speaker_name, words, rng), {i}))
        else:
            cues.append(("reply", conv.turns[i + 1].turn.content, {i}))
    return cues


FollowUp = tuple[list[Turn], str, set[int]]
"""``(context turns, query, positive positions)``: the context opens a new conversation."""

def make_followups(conv: Conversation, rng: random.Random, count: int) -> list[FollowUp]:
    """Self-supervised follow-ups for one conversation: a cue as the one user turn, then a template."""
    out: list[FollowUp] = []
    for i, turn, words in _wordy_turns(conv, rng):
        if len(out) >= count:
            break
        out.append(([Turn(role="user", content=_fragment(turn.speaker_name, words, rng))], rng.choice(TRAIN_TEMPLATES), {i}))
    return out


def conversation_focus(vectors: np.ndarray, rate: float) -> np.ndarray:
    """The focus after the given turns, written from an empty one (``rate`` 0: zeros)."""
    dim = vectors.shape[1]
    if rate <= 0 or len(vectors) == 0:
        return np.zeros(dim, np.float32)
    with torch.no_grad():
        f = focus_trace(torch.zeros(1, dim), torch.from_numpy(np.ascontiguousarray(vectors, np.float32)).unsqueeze(0), None, rate)
    return f[0].numpy()


def gather(
    conversations: Sequence[Conversation],
    encoder: TextEncoder,
    *,
    retrieval: RetrievalConfig | None = None,
    pool: int = 200,
    cues_per_conversation: int = 200,
    followups_per_conversation: int = FOLLOWUPS_PER_CONVERSATION,
    focus_rate: float = 0.5,
    focus_pool: int = 50,
    slot_feature_dim: int = 8,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> Dataset:
    """Ingest the conversations into a throw-away memory and collect every example's candidates.

    ``focus_rate`` and ``focus_pool`` must be the model's (``TrainConfig``): with a focus,
    each query's candidates include the ``focus_pool`` turns nearest to its focus probe.
    """
    from ctxmem_plugin.memory import ContextMemory

    rng = random.Random(seed)
    tensors: list[ConversationTensors] = []
    examples: list[Example] = []
    with tempfile.TemporaryDirectory(prefix="ctxmem-train-") as tmp, ContextMemory(tmp, encoder=encoder, retrieval=retrieval) as mem:
        for ci, conv in enumerate(conversations):
            space = ("train", f"c{ci}")
            ids = mem.write([st.entry(space) for st in conv.turns])
            if min(ids, default=0) < 0:
                # Identical turns at identical positions cannot happen within one conversation.
                raise AssertionError("duplicate turn in a fresh training memory")
            dim = encoder.dim
            stored = mem.vectors(ids)
            vectors = np.stack([stored[i] for i in ids]) if ids else np.zeros((0, dim), np.float32)  # (t, d)
            rows = [st.turn for st in conv.turns]
            feats = turn_features(
                [t.role for t in rows], [len(t.content) for t in rows], [bool(t.metadata.get("image_caption")) for t in rows],
                slot_feature_dim,
            )
            tensors.append(ConversationTensors(conv.name, vectors, feats))
            position = {turn_id: p for p, turn_id in enumerate(ids)}
            own = conversation_focus(vectors, focus_rate)  # questions and cues come at the end
            queries = [("question", q, ev, own) for q, ev in conv.questions]
            queries += [(kind, text, ev, own) for kind, text, ev in make_cues(conv, rng, cues_per_conversation)]
            follow = make_followups(conv, rng, followups_per_conversation) if focus_rate > 0 else []
            if follow:
                # The context turns open a new conversation: the focus is their trace alone, each
                # turn embedded as a memory embeds a stored turn.
                contexts = encoder.encode([embed_text(t) for turns, _, _ in follow for t in turns])
                start = 0
                for turns, text, ev in follow:
                    cv = contexts[start : start + len(turns)]
                    start += len(turns)
                    queries.append(("followup", text, ev, conversation_focus(cv, focus_rate)))
            qvecs = encoder.encode([q for _, q, _, _ in queries]) if queries else np.zeros((0, dim), np.float32)
            for (kind, text, positives, focus), qv in zip(queries, qvecs):
                probe = focus_probe(qv, focus) if focus_pool else None
                cands = mem.retriever.candidates(text, qv, space, method="hybrid", pool=pool, probe=probe, probe_pool=focus_pool)
                cand = np.array([position[int(i)] for i in cands.ids], dtype=np.int64)
                labels = np.isin(cand, list(positives))
                rows = {t.id: t for t in mem.get(cands.ids.tolist())}
                features = candidate_features(cands, rows, mem.retrieval)
                examples.append(Example(ci, kind, qv, features, cand, labels, focus.astype(np.float32)))
                if progress is not None:
                    progress(1)
    return Dataset(tensors, examples, pool, encoder.name, mem.retrieval.to_dict(), focus_rate, focus_pool if focus_rate > 0 else 0)


def save_dataset(data: Dataset, path: Path, *, compress: bool = False) -> None:
    """Write a dataset as one ``.npz`` of plain arrays (no pickle), to reuse across runs."""
    arrays: dict[str, np.ndarray] = {
        "meta": np.frombuffer(
            json.dumps({
                "pool": data.pool, "encoder": data.encoder, "retrieval": data.retrieval,
                "focus_rate": data.focus_rate, "focus_pool": data.focus_pool,
                "names": [c.name for c in data.conversations],
                "kinds": [e.kind for e in data.examples], "convs": [e.conv for e in data.examples],
            }).encode(), dtype=np.uint8,
        )
    }
    for i, c in enumerate(data.conversations):
        arrays[f"c{i}_vectors"], arrays[f"c{i}_features"] = c.vectors, c.features
    for i, e in enumerate(data.examples):
        arrays[f"e{i}_query"], arrays[f"e{i}_features"] = e.query, e.features
        arrays[f"e{i}_cand"], arrays[f"e{i}_labels"] = e.cand, e.labels
        arrays[f"e{i}_focus"] = e.focus
    (np.savez_compressed if compress else np.savez)(path, **arrays)


def load_dataset(path: Path) -> Dataset:
    """Read what :func:`save_dataset` wrote."""
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(z["meta"].tobytes().decode())
        convs = [ConversationTensors(n, z[f"c{i}_vectors"], z[f"c{i}_features"]) for i, n in enumerate(meta["names"])]
        names = set(z.files)
        examples = [
            Example(
                c, k, z[f"e{i}_query"], z[f"e{i}_features"], z[f"e{i}_cand"], z[f"e{i}_labels"],
                z[f"e{i}_focus"] if f"e{i}_focus" in names else np.zeros_like(z[f"e{i}_query"]),
            )
            for i, (k, c) in enumerate(zip(meta["kinds"], meta["convs"]))
        ]
    return Dataset(
        convs, examples, meta["pool"], meta["encoder"], meta.get("retrieval"),
        float(meta.get("focus_rate", 0.0)), int(meta.get("focus_pool", 0)),
    )
