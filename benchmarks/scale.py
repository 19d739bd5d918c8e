"""Scale on one machine: search, ingest, start-up and footprint at 10k, 100k and 1M turns, against peers.

    python benchmarks/scale.py [--sizes 10000,100000,1000000] [--namespaces 1000,10000] [--max-size 10000:100000] [--work DIR]
        [--device cuda]   # the GPU variant: MiniLM and the ctxmem model on the GPU

Writes ``benchmarks/results/scale.json`` and ``docs/img/scale.png`` (latency against memory size,
one line per method) and prints the tables that docs/benchmarks.md shows. Needs the ``bench``
extra (matplotlib) for the plot.

How the memories are made. Synthetic turns (5-30 words of a Zipf vocabulary of 20,000 words)
fill ``--namespaces`` namespaces round-robin, written through ``ContextMemory.write`` in batches
that mix many namespaces, as many users writing at once would. Their vectors are computed in
bulk by the stand-in encoder (signed word hashing into 384 buckets, exactly what
``HashEncoder(384)`` gives the same text) and passed as ``NewTurn(vector=...)``; the memory
records the default encoder's name so that ``ctxmem-plugin query`` runs on it with the real
MiniLM. Each size of a series is the previous memory grown (built once, reused): at each size a
searched namespace of 1,000 turns (``t-<size>``) is written spread evenly through the turns
added since the previous size.

What is timed. Search p50/p95 of one 1,000-turn namespace per method with the stand-in encoder
(store and retrieval only: "without encoding") and with MiniLM encoding the query ("with
encoding"; the vectors it is compared with are the stand-in's, which changes no cost); the
dense search of the whole memory (a prefix of every turn: the approximate index); ingest of
real text with MiniLM against MiniLM alone on the same texts, alternated; ``ctxmem-plugin
query`` wall time in a fresh process; RSS and disk bytes per turn. Recall of the approximate
index and of float16 vectors against exact search is measured on MiniLM embeddings of LoCoMo
turns and their sentences, with LoCoMo questions as queries. The peers (LangGraph
``InMemoryStore(index=...)``, LangChain ``InMemoryVectorStore``) get the same turns, vectors
and queries at 10k and 100k.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DIM = 384
VOCAB = 20_000
TARGET = 1_000  # turns of the namespace searched at each size
QUERIES = 200
DEVICE = "cpu"  # --device: where MiniLM and the ctxmem model run (the GPU variant: --device cuda)


# -- the stand-in encoder, vectorised ---------------------------------------------------------------


class Corpus:
    """Synthetic turns as word ids, and their stand-in vectors (signed hashing, as HashEncoder(384))."""

    def __init__(self, seed: int = 0) -> None:
        self.words = [f"w{i}" for i in range(VOCAB)]
        self.weights = np.array([1.0 / (i + 1) for i in range(VOCAB)])
        self.weights /= self.weights.sum()
        h = [int.from_bytes(hashlib.blake2b(w.encode(), digest_size=8).digest(), "little") for w in self.words]
        self.bucket = np.array([x % DIM for x in h], dtype=np.int64)
        self.sign = np.array([1.0 if (x >> 32) & 1 else -1.0 for x in h], dtype=np.float32)
        self.rng = np.random.default_rng(seed)

    def sample(self, n: int) -> list[np.ndarray]:
        lengths = self.rng.integers(5, 31, size=n)
        flat = self.rng.choice(VOCAB, size=int(lengths.sum()), p=self.weights)
        return np.split(flat, np.cumsum(lengths)[:-1])

    def text(self, ids: np.ndarray) -> str:
        return " ".join(self.words[i] for i in ids)

    def vectors(self, docs: list[np.ndarray]) -> np.ndarray:
        out = np.zeros((len(docs), DIM), np.float32)  # (n, d)
        rows = np.repeat(np.arange(len(docs)), [len(d) for d in docs])
        flat = np.concatenate(docs)
        np.add.at(out, (rows, self.bucket[flat]), self.sign[flat])
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        return out / norms


class StandIn:
    """The stand-in encoder under the default model's name (the memory records that name)."""

    def __init__(self, corpus: Corpus, name: str) -> None:
        self.corpus, self.name, self.dim = corpus, name, DIM
        self.index = {w: i for i, w in enumerate(corpus.words)}

    def encode(self, texts: list[str]) -> np.ndarray:
        return self.corpus.vectors([np.array([self.index[w] for w in t.split() if w in self.index] or [0]) for t in texts])

    def encode_query(self, text: str) -> np.ndarray:
        return self.encode([text])[0]


class WithMiniLM(StandIn):
    """Queries encoded by the real MiniLM (its cost is what "with encoding" measures)."""

    def __init__(self, corpus: Corpus, name: str, minilm: Any) -> None:
        super().__init__(corpus, name)
        self.minilm = minilm

    def encode_query(self, text: str) -> np.ndarray:
        return self.minilm.encode_query(text)


# -- helpers ------------------------------------------------------------------------------------


def pct(samples: list[float]) -> dict[str, float]:
    ms = np.array(samples) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p95_ms": round(float(np.percentile(ms, 95)), 3)}


def disk_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file())


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def one_thread() -> None:
    import torch

    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"


# -- building -----------------------------------------------------------------------------------


def grow(path: Path, corpus: Corpus, have: int, size: int, spaces: int, log: Any, model_dir: Path | None = None) -> dict[str, float]:
    """Grow the memory at ``path`` from ``have`` to ``size`` turns; ``t-<size>`` gets 1,000 of them, spread.

    With a model, ``c-<size>`` (for the ``ctxmem`` method) then gets 1,000 turns written with it,
    so that its slot state is kept as a memory used with a model keeps it.
    """
    from ctxmem_plugin import ContextMemory, NewTurn, Turn
    from ctxmem_plugin.encoders import DEFAULT_MODEL

    new = size - have
    target_at = set(np.linspace(0, new - 1, TARGET).astype(int).tolist())
    t0 = time.perf_counter()
    written = 0
    batch = 20_000
    with ContextMemory(path, encoder=StandIn(corpus, DEFAULT_MODEL)) as mem:
        for start in range(0, new, batch):
            n = min(batch, new - start)
            docs = corpus.sample(n)
            vecs = corpus.vectors(docs)
            entries = []
            for j in range(n):
                pos = start + j
                space = ("t-%d" % size,) if pos in target_at else ("user-%d" % ((have + pos) % spaces), "s")
                entries.append(NewTurn(space, Turn.model_construct(role="user", content=corpus.text(docs[j]), speaker=None,
                                                                   timestamp=None, metadata={}, key=None), vector=vecs[j]))
            mem.write(entries, dedupe=False)
            written += n
            log(f"  {path.name}: {have + written:,} turns ({(time.perf_counter() - t0):.0f} s)")
    secs = time.perf_counter() - t0
    if model_dir is not None:
        docs = corpus.sample(TARGET)
        vecs = corpus.vectors(docs)
        with ContextMemory(path, encoder=StandIn(corpus, DEFAULT_MODEL), model=model_dir, device=DEVICE) as mem:
            mem.write([NewTurn(("c-%d" % size,), Turn(role="user", content=corpus.text(d)), vector=v) for d, v in zip(docs, vecs)],
                      dedupe=False)
    return {"turns_written": new, "seconds": round(secs, 1), "turns_per_second": round(new / secs, 1)}


# -- measurements -----------------------------------------------------------------------------


def time_search(path: Path, corpus: Corpus, size: int, minilm: Any, model_dir: Path | None, queries: list[str]) -> dict[str, Any]:
    from ctxmem_plugin import ContextMemory
    from ctxmem_plugin.encoders import DEFAULT_MODEL

    out: dict[str, Any] = {}
    space = ("t-%d" % size,)
    for label, encoder in (("store", StandIn(corpus, DEFAULT_MODEL)), ("with_encoding", WithMiniLM(corpus, DEFAULT_MODEL, minilm))):
        with ContextMemory(path, encoder=encoder, read_only=True) as mem:
            for method in ("bm25", "dense", "hybrid"):
                mem.search(queries[0], space, k=10, method=method)  # warm: the first read of the namespace's pages
                lat = []
                for q in queries:
                    t = time.perf_counter()
                    mem.search(q, space, k=10, method=method)
                    lat.append(time.perf_counter() - t)
                out[f"{method}_{label}"] = pct(lat)
            if label == "store":
                lat = []
                for q in queries[:50]:  # every turn of the memory: the approximate index above 20,000
                    t = time.perf_counter()
                    mem.search(q, (), k=10, method="dense")
                    lat.append(time.perf_counter() - t)
                out["dense_whole_memory_store"] = pct(lat)
    if model_dir is not None:
        for label, encoder in (("store", StandIn(corpus, DEFAULT_MODEL)), ("with_encoding", WithMiniLM(corpus, DEFAULT_MODEL, minilm))):
            with ContextMemory(path, encoder=encoder, model=model_dir, read_only=True, device=DEVICE) as mem:
                own = ("c-%d" % size,)
                mem.search(queries[0], own, k=10, method="ctxmem")
                lat = []
                for q in queries[:100]:
                    t = time.perf_counter()
                    mem.search(q, own, k=10, method="ctxmem")
                    lat.append(time.perf_counter() - t)
                out[f"ctxmem_{label}"] = pct(lat)
    return out


def query_encoding(minilm: Any, queries: list[str]) -> dict[str, float]:
    lat = []
    for q in queries:
        t = time.perf_counter()
        minilm.encode_query(q)
        lat.append(time.perf_counter() - t)
    return pct(lat)


def time_ingest(path: Path, minilm: Any, texts: list[str], rounds: int = 2) -> dict[str, float]:
    """Turns/s of ``ContextMemory.write`` with MiniLM against MiniLM alone on the same texts, alternated;
    and the seconds ``forget`` of those turns takes, its scrub included."""
    from ctxmem_plugin import ContextMemory, NewTurn, Turn

    bare: list[float] = []
    ours: list[float] = []
    forget: list[float] = []
    for r in range(rounds):
        t = time.perf_counter()
        minilm.encode(texts)
        bare.append(len(texts) / (time.perf_counter() - t))
        with ContextMemory(path, encoder=minilm) as mem:
            entries = [NewTurn(("ingest", str(r)), Turn(role="user", content=x)) for x in texts]
            t = time.perf_counter()
            mem.write(entries)
            ours.append(len(texts) / (time.perf_counter() - t))
            t = time.perf_counter()
            mem.forget(("ingest",))  # with the scrub that leaves none of their words in the files
            forget.append(time.perf_counter() - t)
    b, o = statistics.median(bare), statistics.median(ours)
    return {"encoder_turns_per_second": round(b, 1), "ingest_turns_per_second": round(o, 1), "ratio": round(o / b, 3),
            "forget_seconds": [round(x, 2) for x in forget], "forgotten_turns": len(texts)}


def time_cli(path: Path, namespace: str, runs: int = 3) -> dict[str, float]:
    cmd = [sys.executable, "-m", "ctxmem_plugin.cli", "query", "what did they say about w12 and w7", "--memory", str(path),
           "--namespace", namespace, "--json", "--device", DEVICE]
    walls = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        walls.append(time.perf_counter() - t)
    return {"wall_s": round(statistics.median(walls), 3), "runs": runs}


def startup() -> dict[str, float]:
    """What a CLI query pays before it searches: the imports, and loading the encoder."""
    code = (
        "import time; t = time.perf_counter(); import ctxmem_plugin.cli, ctxmem_plugin.memory; a = time.perf_counter() - t;"
        f"from ctxmem_plugin.encoders import SentenceEncoder; t = time.perf_counter(); e = SentenceEncoder(device={DEVICE!r});"
        "e.encode_query('hello'); b = time.perf_counter() - t; print(a, b)"
    )
    runs = [subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split() for _ in range(3)]
    imports = statistics.median(float(r[0]) for r in runs)
    encoder = statistics.median(float(r[1]) for r in runs)
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ctxmem_plugin.cli", "--help"], check=True, capture_output=True)
    return {"imports_s": round(imports, 3), "encoder_load_and_first_query_s": round(encoder, 3),
            "help_wall_s": round(time.perf_counter() - t, 3)}


RSS_CODE = """
import json, sys, numpy as np
sys.path.insert(0, {bench!r})
from scale import Corpus, StandIn, rss_bytes
from ctxmem_plugin import ContextMemory
from ctxmem_plugin.encoders import DEFAULT_MODEL
corpus = Corpus(1)
before = rss_bytes()
with ContextMemory({path!r}, encoder=StandIn(corpus, DEFAULT_MODEL), read_only=True) as mem:
    for q in {queries!r}:
        for m in ("bm25", "dense", "hybrid"):
            mem.search(q, ({space!r},), k=10, method=m)
        mem.search(q, (), k=10, method="dense")
    print(json.dumps({{"rss_bytes": rss_bytes(), "rss_before_open": before, "turns": mem.stats()["turns"]}}))
"""


def measure_rss(path: Path, space: str, queries: list[str]) -> dict[str, float]:
    code = RSS_CODE.format(bench=str(Path(__file__).parent), path=str(path), queries=queries[:20], space=space)
    out = json.loads(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout)
    return {**out, "rss_bytes_per_turn": round(out["rss_bytes"] / out["turns"], 1),
            "rss_growth_per_turn": round((out["rss_bytes"] - out["rss_before_open"]) / out["turns"], 1)}


# -- recall on real text --------------------------------------------------------------------------


def real_texts(locomo: Path, sentences: bool = True) -> tuple[list[str], list[str]]:
    """LoCoMo turns and (with ``sentences``) each of their sentences (real text), and the questions."""
    from ctxmem_plugin.formats.locomo import load_locomo
    from ctxmem_plugin.retrieval.text import embed_text

    convs = load_locomo(locomo)
    texts: list[str] = []
    for c in convs:
        for st in c.turns:
            whole = embed_text(st.turn)
            texts.append(whole)
            parts = [p for p in re.split(r"(?<=[.!?])\s+", st.turn.content) if len(p.split()) >= 4]
            if sentences and len(parts) > 1:
                texts += [f"{st.turn.speaker_name}: {p}" for p in parts]
    questions = [q.question for c in convs for q in c.questions]
    return texts, questions


def locomo_latency(work: Path, minilm: Any, locomo: Path) -> dict[str, Any]:
    """Search p50/p95 per method on the LoCoMo turns (4,124 turns, 7 namespaces), as the targets state them.

    The turns' MiniLM vectors come from the recall cache (the same texts); "store" times search
    with the question's vector already computed, "with_encoding" lets MiniLM encode it.
    """
    from ctxmem_plugin import ContextMemory, NewTurn
    from ctxmem_plugin.encoders import DEFAULT_MODEL
    from ctxmem_plugin.formats.locomo import load_locomo
    from ctxmem_plugin.retrieval.text import embed_text

    sentences = (work / "recall_vectors.npz").is_file()
    data = np.load(work / ("recall_vectors.npz" if sentences else "recall_turn_vectors.npz"))
    texts, _ = real_texts(locomo, sentences)
    at = {t: i for i, t in reversed(list(enumerate(texts)))}
    convs = load_locomo(locomo)
    questions = [(c.sample_id, q.question) for c in convs for q in c.questions[:30]]
    qvecs = {q: minilm.encode_query(q) for _, q in questions}

    class Cached:
        name, dim = DEFAULT_MODEL, DIM

        def encode(self, xs: list[str]) -> np.ndarray:
            return minilm.encode(xs)

        def encode_query(self, text: str) -> np.ndarray:
            return qvecs[text]

    path = work / "locomo-4k"
    want = sum(len(c.turns) for c in convs)
    with ContextMemory(path, encoder=Cached()) as mem:  # (re)filled unless it holds every turn
        if mem.stats()["turns"] != want:
            for space in mem.namespaces():
                mem.forget(space)
            tv = data["tv"]  # read once: each data["tv"] reads the whole array again, and a row kept keeps it alive
            mem.write([NewTurn(("locomo", c.sample_id), st.turn, st.position, tv[at[embed_text(st.turn)]])
                       for c in convs for st in c.turns])
        if mem.stats()["turns"] != want:
            raise SystemExit(f"{path}: {mem.stats()['turns']} turns stored, {want} expected")
    out: dict[str, Any] = {"turns": want}
    for label, encoder in (("store", Cached()), ("with_encoding", minilm)):
        with ContextMemory(path, encoder=encoder, read_only=True) as mem:
            for method in ("bm25", "dense", "hybrid"):
                mem.search(questions[0][1], ("locomo", questions[0][0]), k=10, method=method)
                lat, cpu = [], []
                for sid, q in questions:
                    t, c = time.perf_counter(), time.process_time()
                    hits = mem.search(q, ("locomo", sid), k=10, method=method)
                    lat.append(time.perf_counter() - t)
                    cpu.append(time.process_time() - c)
                    if method != "bm25" and len(hits) != 10:  # a search of an empty memory would time nothing
                        raise SystemExit(f"{method} found {len(hits)} hits for {q!r}")
                out[f"{method}_{label}"] = pct(lat)
                out[f"{method}_{label}_cpu"] = pct(cpu)
    out["query_encoding_minilm"] = query_encoding(minilm, [q for _, q in questions])
    out["hybrid_minus_encoding_ms"] = round(out["hybrid_with_encoding"]["p50_ms"] - out["query_encoding_minilm"]["p50_ms"], 3)
    return out


def recall(work: Path, minilm: Any, locomo: Path, log: Any, sentences: bool = True) -> dict[str, Any]:
    from ctxmem_plugin import ContextMemory, NewTurn, Turn
    from ctxmem_plugin.storage.ann import IndexConfig

    cache = work / ("recall_vectors.npz" if sentences else "recall_turn_vectors.npz")
    texts, questions = real_texts(locomo, sentences)
    questions = questions[:: max(1, len(questions) // 400)][:400]
    if cache.is_file():
        data = np.load(cache)
        tv, qv = data["tv"], data["qv"]
    else:
        log(f"  encoding {len(texts):,} real texts with MiniLM (once; cached in {cache})")
        tv = minilm.encode(texts)
        qv = np.stack([minilm.encode_query(q) for q in questions])
        np.savez(cache, tv=tv, qv=qv)

    class Fixed:
        def __init__(self, name: str) -> None:
            self.name, self.dim = name, tv.shape[1]

        def encode(self, xs: list[str]) -> np.ndarray:
            raise AssertionError("vectors are given")

        def encode_query(self, text: str) -> np.ndarray:
            raise AssertionError("queries are vectors")

    out: dict[str, Any] = {"turns": len(texts), "queries": len(qv)}
    paths = {dtype: work / f"recall-{dtype}{'' if sentences else '-turns'}" for dtype in ("float32", "float16")}
    for dtype, path in paths.items():
        if not (path / "memory.sqlite3").is_file():
            with ContextMemory(path, encoder=Fixed("minilm-real"), vector_dtype=dtype, index=IndexConfig(exact_limit=2_000)) as mem:
                # Two namespaces in one prefix, interleaved: ("real", "a") holds every other turn.
                entries = [NewTurn(("real", "ab"[i % 2]), Turn(role="user", content=t), position=str(i), vector=tv[i])
                           for i, t in enumerate(texts)]
                mem.write(entries, dedupe=False)

    def top(mem: Any, prefix: tuple[str, ...]) -> tuple[list[list[int]], float]:
        res, lat = [], []
        for q in qv:
            t = time.perf_counter()
            res.append([h.id for h in mem.search_by_vector(q, prefix, k=10)])
            lat.append(time.perf_counter() - t)
        return res, float(np.percentile(np.array(lat) * 1000, 50))

    def score(got: list[list[int]], want: list[list[int]]) -> float:
        return round(float(np.mean([len(set(g) & set(w)) / max(len(w), 1) for g, w in zip(got, want)])), 4)

    with ContextMemory(paths["float32"], encoder=Fixed("minilm-real"), read_only=True, index=IndexConfig(exact_limit=10**9)) as mem:
        exact = {p: top(mem, p) for p in (("real",), ("real", "a"))}
    sweep = []
    settings = [IndexConfig(exact_limit=2_000)] + [
        IndexConfig(exact_limit=2_000, nprobe=n, min_scored=1) for n in (4, 8, 16, 32, 48, 64)
    ]
    for cfg in settings:
        with ContextMemory(paths["float32"], encoder=Fixed("minilm-real"), read_only=True, index=cfg) as mem:
            cents = mem.store.ann.centroids(mem.store.db)
            for prefix in (("real",), ("real", "a")):
                got, p50 = top(mem, prefix)
                sweep.append({"nprobe": cfg.nprobe, "min_scored": cfg.min_scored, "prefix": "/".join(prefix),
                              "cells": int(cents.vectors.shape[0]), "recall@10": score(got, exact[prefix][0]), "p50_ms": round(p50, 3)})
    out["ivf"] = sweep
    with ContextMemory(paths["float16"], encoder=Fixed("minilm-real"), read_only=True, index=IndexConfig(exact_limit=10**9)) as mem:
        got, p50 = top(mem, ("real",))
        out["float16_exact_recall@10"] = score(got, exact[("real",)][0])
    out["disk_bytes_per_turn"] = {d: round(disk_bytes(p) / len(texts), 1) for d, p in paths.items()}
    return out


def recall_large(work: Path, size: int, log: Any, noise: float = 0.55, mix: bool = False) -> dict[str, Any]:
    """Recall@10 of the approximate index at the defaults against exact search, one namespace of ``size`` turns.

    Real text embeddings at a size MiniLM cannot embed here in a session (168 turns/s), made
    from the MiniLM vectors of the 4,124 LoCoMo turns (the ``recall`` cache), so the index meets
    the real vectors' clusters and anisotropy, not uniform random points:

    - copies (default): each vector a paraphrase-like copy of one turn,
      ``normalise(v + noise * g / sqrt(d))`` with ``g`` standard normal (``noise`` 0.55: a
      copy's cosine to its turn is about 0.88). A query's 10 nearest are then mostly copies of
      one or two turns, which sit in the same few cells: easier than a million distinct texts.
    - ``mix``: each vector a blend of two turns of the same conversation block,
      ``normalise(a * v_i + (1 - a) * v_j + 0.2 * g / sqrt(d))``, ``a`` uniform in [0, 1]: points
      spread along and between the real turns, so a query's nearest are distinct blends from
      many cells.

    The queries: 200 LoCoMo questions embedded by MiniLM (the same cache). Exact search: numpy
    over every vector.
    """
    from ctxmem_plugin import ContextMemory, NewTurn, Turn
    from ctxmem_plugin.storage.ann import IndexConfig

    data = np.load(work / "recall_turn_vectors.npz")
    tv, qv = data["tv"].astype(np.float32), data["qv"].astype(np.float32)  # (n, d), (q, d)
    rng = np.random.default_rng(0)
    vecs = np.empty((size, tv.shape[1]), np.float32)
    src = rng.integers(0, len(tv), size)  # the turn each vector is made from
    other = np.clip(src + rng.integers(-50, 51, size), 0, len(tv) - 1)  # a turn near it in the file (mix)
    for start in range(0, size, 100_000):
        part = slice(start, start + 100_000)
        base = tv[src[part]]
        if mix:
            a = rng.random((len(base), 1), dtype=np.float32)
            base = a * base + (1 - a) * tv[other[part]]
        v = base + (0.2 if mix else noise) * rng.standard_normal(base.shape).astype(np.float32) / np.sqrt(tv.shape[1])
        vecs[start : start + len(base)] = v / np.linalg.norm(v, axis=1, keepdims=True)
    copy_cosine = float(np.mean(np.sum(vecs[:10_000] * tv[src[:10_000]], axis=1)))

    class Fixed:
        name, dim = "minilm-real-copies", tv.shape[1]

        def encode(self, xs: list[str]) -> np.ndarray:
            raise AssertionError("vectors are given")

        def encode_query(self, text: str) -> np.ndarray:
            raise AssertionError("queries are vectors")

    path = work / f"recall-{'mix' if mix else 'copies'}-{size}"
    ids_file = path / "ids.npy"
    t0 = time.perf_counter()
    if not ids_file.is_file():
        ids: list[int] = []
        with ContextMemory(path, encoder=Fixed()) as mem:
            for start in range(0, size, 20_000):
                chunk = range(start, min(size, start + 20_000))
                ids += mem.write([NewTurn(("real",), Turn(role="user", content=f"copy {i}"), vector=vecs[i]) for i in chunk],
                                 dedupe=False)
                log(f"  {path.name}: {start + len(chunk):,} turns ({time.perf_counter() - t0:.0f} s)")
        np.save(ids_file, np.array(ids, dtype=np.int64))
    ids_arr = np.load(ids_file)
    exact = []
    for q in qv:
        scores = vecs @ q
        best = np.argpartition(-scores, 10)[:10]
        exact.append(set(ids_arr[best].tolist()))
    out: dict[str, Any] = {"turns": size, "queries": len(qv), "construction": "mix" if mix else "copies", "noise": 0.2 if mix else noise,
                           "cosine_to_its_first_turn": round(copy_cosine, 3),
                           "build_seconds": round(time.perf_counter() - t0, 1)}
    settings = [("defaults", IndexConfig())] + [(f"nprobe {n}, min_scored 1", IndexConfig(nprobe=n, min_scored=1)) for n in (16, 32)]
    for label, cfg in settings:
        with ContextMemory(path, encoder=Fixed(), read_only=True, index=cfg) as mem:
            cells = int(mem.store.ann.centroids(mem.store.db).vectors.shape[0])
            got, lat = [], []
            for q in qv:
                t = time.perf_counter()
                got.append({h.id for h in mem.search_by_vector(q, ("real",), k=10)})
                lat.append(time.perf_counter() - t)
        out[label] = {"cells": cells, "recall@10": round(float(np.mean([len(g & w) / 10 for g, w in zip(got, exact)])), 4),
                      **pct(lat)}
        log(f"  recall at {size:,} turns, {label}: {out[label]}")
    return out


# -- peers ----------------------------------------------------------------------------------------


def peers(corpus_seed: int, size: int, spaces: int, queries: list[str], minilm: Any, ours: dict[str, Any], log: Any) -> dict[str, Any]:
    """LangGraph InMemoryStore(index=...) and LangChain InMemoryVectorStore on the same turns, vectors and queries."""
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings
    from langchain_core.vectorstores import InMemoryVectorStore
    from langgraph.store.memory import InMemoryStore

    corpus = Corpus(corpus_seed)
    standin = StandIn(corpus, "stand-in")

    class Emb(Embeddings):
        def __init__(self, query_encoder: Any) -> None:
            self.query_encoder = query_encoder

        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return standin.encode(texts).tolist()

        def embed_query(self, text: str) -> list[float]:
            return self.query_encoder.encode_query(text).tolist()

    docs = corpus.sample(size)
    target_at = set(np.linspace(0, size - 1, TARGET).astype(int).tolist())
    rows = [(("t",) if j in target_at else ("user-%d" % (j % spaces), "s"), corpus.text(d)) for j, d in enumerate(docs)]
    out: dict[str, Any] = {}
    for label, query_encoder in (("store", standin), ("with_encoding", minilm)):
        emb = Emb(query_encoder)
        store = InMemoryStore(index={"dims": DIM, "embed": emb, "fields": ["text"]})
        vs = InMemoryVectorStore(emb)
        t = time.perf_counter()
        for start in range(0, size, 5_000):
            chunk = rows[start : start + 5_000]
            from langgraph.store.base import PutOp

            store.batch([PutOp(space, str(start + j), {"text": text}) for j, (space, text) in enumerate(chunk)])
        lg_ingest = time.perf_counter() - t
        t = time.perf_counter()
        for start in range(0, size, 5_000):
            chunk = rows[start : start + 5_000]
            vs.add_documents([Document(page_content=text, metadata={"ns": "/".join(space)}) for space, text in chunk])
        lc_ingest = time.perf_counter() - t
        lat_lg, lat_lc = [], []
        for q in queries[:100]:
            t = time.perf_counter()
            store.search(("t",), query=q, limit=10)
            lat_lg.append(time.perf_counter() - t)
            t = time.perf_counter()
            vs.similarity_search(q, k=10, filter=lambda d: d.metadata["ns"] == "t")
            lat_lc.append(time.perf_counter() - t)
        out[f"langgraph_{label}"] = pct(lat_lg)
        out[f"langchain_{label}"] = pct(lat_lc)
        if label == "store":
            out["langgraph_ingest_turns_per_second"] = round(size / lg_ingest, 1)
            out["langchain_ingest_turns_per_second"] = round(size / lc_ingest, 1)
        del store, vs
        gc.collect()
    for peer in ("langgraph", "langchain"):
        for label in ("store", "with_encoding"):
            mine = ours.get(f"dense_{label}", {}).get("p50_ms")
            if mine:
                out[f"{peer}_{label}_p50_over_ours_dense"] = round(out[f"{peer}_{label}"]["p50_ms"] / mine, 2)
    log(f"  peers at {size:,}: " + ", ".join(f"{k} {v['p50_ms']:.1f} ms" for k, v in out.items() if isinstance(v, dict)))
    return out


def cpu_costs(work: Path, queries: list[str], out: Path, log: Any) -> dict[str, Any]:
    """CPU seconds of the process per search (``time.process_time``) in every memory built in ``work``.

    On a machine shared with other jobs, wall time measures the queue for the cores as much as
    the work; the CPU time a search takes is what it costs. One thread (set by ``one_thread``).
    """
    from ctxmem_plugin import ContextMemory
    from ctxmem_plugin.encoders import DEFAULT_MODEL

    res: dict[str, Any] = {}
    for path in sorted(work.glob("mem-*-*"), key=lambda p: (int(p.name.split("-")[1]), int(p.name.split("-")[2]))):
        if not (path / "built.json").is_file():
            continue
        spaces, size = (int(x) for x in path.name.split("-")[1:])
        corpus = Corpus(seed=spaces + size)
        row: dict[str, Any] = {"namespaces": spaces, "size": size}
        with ContextMemory(path, encoder=StandIn(corpus, DEFAULT_MODEL), read_only=True) as mem:
            for method in ("bm25", "dense", "hybrid"):
                mem.search(queries[0], ("t-%d" % size,), k=10, method=method)
                cpu = []
                for q in queries:
                    t = time.process_time()
                    mem.search(q, ("t-%d" % size,), k=10, method=method)
                    cpu.append(time.process_time() - t)
                row[method] = pct(cpu)
        res[path.name] = row
        log(f"CPU per search, {size:,} turns over {spaces:,} namespaces: " + ", ".join(f"{m} {row[m]['p50_ms']:.2f}/{row[m]['p95_ms']:.2f} ms" for m in ("bm25", "dense", "hybrid")))
    out.write_text(json.dumps(res, indent=1))
    return res


# -- the plot ---------------------------------------------------------------------------------------


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for series in results["series"]:
        sizes = [m["size"] for m in series["sizes"]]
        for method in ("bm25", "dense", "hybrid", "ctxmem"):
            key = f"{method}_store"
            ys = [m["search"].get(key, {}).get("p50_ms") for m in series["sizes"]]
            if all(y is not None for y in ys):
                ax.plot(sizes, ys, marker="o", label=f"{method}, {series['namespaces']:,} namespaces",
                        linestyle="-" if series["namespaces"] == 1_000 else "--")
        ys = [m["search"]["dense_whole_memory_store"]["p50_ms"] for m in series["sizes"]]
        ax.plot(sizes, ys, marker="x", color="grey", linestyle="-" if series["namespaces"] == 1_000 else "--",
                label=f"dense over the whole memory, {series['namespaces']:,} namespaces")
    ax.set_xscale("log")
    ax.set_xlabel("turns in the memory")
    ax.set_ylabel("search p50, ms (without query encoding)")
    ax.set_title("One 1,000-turn namespace searched as the memory grows (2 CPU cores)")
    ax.legend(fontsize=6.5, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)


# -- main ---------------------------------------------------------------------------------------------


def untrained_model(work: Path) -> Path:
    from ctxmem_plugin.reranker.checkpoint import save_model
    from ctxmem_plugin.training.trainer import TrainConfig, build_model

    path = work / "model-untrained"
    if not (path / "config.json").is_file():
        import torch

        torch.manual_seed(0)
        save_model(build_model(DIM, "all-MiniLM-L6-v2", TrainConfig()).eval(), path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--namespaces", default="1000,10000")
    parser.add_argument("--peer-sizes", default="10000,100000")
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "ctxmem-scale"), help="memories built once, reused")
    parser.add_argument("--locomo", default=str(REPO.parent / "shared/data/locomo/locomo_dev.json"))
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/scale.json"))
    parser.add_argument("--plot", default=str(REPO / "docs/img/scale.png"))
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: recall,peers,ingest,cli,ctxmem")
    parser.add_argument("--max-size", default="10000:100000", help="largest size per namespace count, e.g. 10000:100000")
    parser.add_argument("--build-only", action="store_true", help="build the memories (in --work) and stop")
    parser.add_argument("--recall-texts", default="sentences", choices=["sentences", "turns"],
                        help="recall set: LoCoMo turns and their sentences (about 12,500 texts), or the turns alone (4,124)")
    parser.add_argument("--cpu-only", action="store_true", help="CPU time per search in the memories built in --work (scale_cpu.json)")
    parser.add_argument("--recall-size", type=int, default=0,
                        help="also measure the approximate index's recall in one namespace of this many turns (paraphrase-like copies of real vectors)")
    parser.add_argument("--only-recall-size", action="store_true", help="measure --recall-size alone (recall_large.json)")
    parser.add_argument("--recall-mix", action="store_true", help="--recall-size vectors blended from two turns (default: noisy copies of one)")
    parser.add_argument("--only-locomo", action="store_true", help="measure the LoCoMo latencies alone (scale_locomo.json)")
    parser.add_argument("--device", default="cpu", help="where MiniLM and the model run: cpu, or cuda for the GPU variant")
    parser.add_argument("--merge", default="", help="comma-separated result files of earlier runs to combine into --out (no run)")
    args = parser.parse_args()
    if args.merge:
        merged: dict[str, Any] = {"series": []}
        for part in args.merge.split(","):
            data = json.loads(Path(part).read_text())
            merged["series"] += data.pop("series", [])
            merged.update({k: v for k, v in data.items() if v})
        Path(args.out).write_text(json.dumps(merged, indent=1))
        plot(merged, Path(args.plot))
        return
    global DEVICE
    DEVICE = args.device
    skip = set(filter(None, args.skip.split(",")))
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    one_thread()
    if args.only_locomo:
        from ctxmem_plugin.encoders import SentenceEncoder

        enc = SentenceEncoder(device=DEVICE)
        enc.encode_query("warm up")
        res = locomo_latency(work, enc, Path(args.locomo))
        print(json.dumps(res))
        Path(args.out).with_name("scale_locomo.json").write_text(json.dumps(res, indent=1))
        return
    if args.only_recall_size:
        res = recall_large(work, args.recall_size, print, mix=args.recall_mix)
        Path(args.out).with_name(f"recall_large{'_mix' if args.recall_mix else ''}.json").write_text(json.dumps(res, indent=1))
        return
    if args.cpu_only:
        qc = Corpus(seed=99)
        qs = [qc.text(d[: random.Random(i).randint(1, 4)]) for i, d in enumerate(qc.sample(QUERIES))]
        cpu_costs(work, qs, Path(args.out).with_name("scale_cpu.json"), print)
        return
    from ctxmem_plugin.encoders import SentenceEncoder

    def log(msg: str) -> None:
        print(msg, flush=True)

    minilm = None if args.build_only else SentenceEncoder(device=DEVICE)
    if minilm is not None:
        minilm.encode_query("warm up")
    qcorpus = Corpus(seed=99)
    queries = [qcorpus.text(d[: random.Random(i).randint(1, 4)]) for i, d in enumerate(qcorpus.sample(QUERIES))]
    sizes = [int(s) for s in args.sizes.split(",")]
    max_size = {int(a): int(b) for a, b in (x.split(":") for x in args.max_size.split(",") if x)}
    min_spaces = min([int(s) for s in args.namespaces.split(",") if s] or [0])
    peer_sizes = {int(s) for s in args.peer_sizes.split(",") if s}
    results: dict[str, Any] = {"machine": f"{os.cpu_count()} CPU cores", "device": DEVICE, "series": []}
    if minilm is not None:
        results["query_encoding_minilm"] = query_encoding(minilm, queries[:100])
        log(f"MiniLM query encoding: p50 {results['query_encoding_minilm']['p50_ms']:.1f} ms")
    model_dir = None if "ctxmem" in skip else untrained_model(work)
    real = real_texts(Path(args.locomo))[0][:600] if Path(args.locomo).is_file() else queries * 3
    if "cli" not in skip and not args.build_only:
        results["startup"] = startup()
        log(f"start-up: {results['startup']}")
        small = work / "cli-1k"
        if not (small / "memory.sqlite3").is_file():
            grow(small, Corpus(7), 0, TARGET, 1, log)
        results["cli_1k"] = time_cli(small, "t-%d" % TARGET)
        log(f"query CLI at 1,000 turns: {results['cli_1k']['wall_s']:.2f} s")
    for spaces in (int(s) for s in args.namespaces.split(",") if s):
        series: dict[str, Any] = {"namespaces": spaces, "sizes": []}
        for size in sizes:
            if size > max_size.get(spaces, size):
                continue
            path = work / f"mem-{spaces}-{size}"
            entry: dict[str, Any] = {"size": size}
            if not (path / "built.json").is_file():  # built once, reused by later runs
                log(f"building {size:,} turns over {spaces:,} namespaces in {path}")
                entry["build"] = grow(path, Corpus(seed=spaces + size), 0, size, spaces, log, model_dir)
                (path / "built.json").write_text(json.dumps(entry["build"]))
            else:
                entry["build"] = json.loads((path / "built.json").read_text())
            if args.build_only:
                continue
            corpus = Corpus(seed=spaces + size)
            entry["search"] = time_search(path, corpus, size, minilm, model_dir, queries)
            s = entry["search"]
            log(f"{size:>9,} turns, {spaces:,} namespaces: " + ", ".join(f"{k} {v['p50_ms']:.1f}/{v['p95_ms']:.1f}" for k, v in s.items()))
            files = disk_bytes(path)
            entry["disk_bytes_per_turn"] = round(files / size, 1)
            entry["rss"] = measure_rss(path, "t-%d" % size, queries)
            log(f"  disk {entry['disk_bytes_per_turn']:.0f} B/turn, RSS {entry['rss']['rss_bytes'] / 1e6:.0f} MB "
                f"({entry['rss']['rss_bytes_per_turn']:.0f} B/turn)")
            if "cli" not in skip:
                entry["cli"] = time_cli(path, "t-%d" % size)
                log(f"  query CLI: {entry['cli']['wall_s']:.2f} s")
            if "ingest" not in skip and ((size == 10_000 and spaces == min_spaces) or size == 1_000_000):
                entry["ingest"] = time_ingest(path, minilm, real)
                log(f"  ingest: {entry['ingest']}")
            if "peers" not in skip and size in peer_sizes and spaces == min_spaces:
                entry["peers"] = peers(1, size, spaces, queries, minilm, s, log)
            series["sizes"].append(entry)
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps({**results, "series": results["series"] + [series]}, indent=1))
        results["series"].append(series)
    if args.build_only:
        return
    if "recall" not in skip and Path(args.locomo).is_file():
        results["recall"] = recall(work, minilm, Path(args.locomo), log, sentences=args.recall_texts == "sentences")
        log(f"recall: {json.dumps(results['recall'])}")
        results["locomo"] = locomo_latency(work, minilm, Path(args.locomo))
        log(f"LoCoMo, 4,124 turns: {json.dumps(results['locomo'])}")
    Path(args.out).write_text(json.dumps(results, indent=1))
    try:
        plot(results, Path(args.plot))
    except ImportError:
        log("matplotlib is not installed (pip install 'ctxmem-plugin[bench]'): no plot")


if __name__ == "__main__":
    main()
