"""Conversational recall, held out: the query alone, the thread concatenated, a decayed mean, the slots.

The threads are :mod:`ctxmem_plugin.evaluation.conversation`'s: each LoCoMo question is said by
the user, then after 0-4 intervening turns (the answer, small talk, another topic) a query that
needs it is asked. Leave one conversation out: for each fold, everything that is chosen or
trained (the concatenation's ``k``, the decay, the re-ranker) sees the other conversations
only, and the held-out conversation's threads are scored.

Methods (each a way to turn (thread, query) into a search; the same encoder and the same
re-ranker for all):

- ``alone``: the query alone.
- ``concat``: the last ``k`` thread turns and the query as one text (BM25 and dense), ``k``
  chosen on the training conversations' threads.
- ``decay``: the query vector plus the decayed mean of the thread's turn vectors, the decay
  chosen on the training conversations' threads (BM25 on the query alone).
- ``fuse``: ``alone`` and ``concat`` (the same ``k``), their top 20 merged by reciprocal rank
  fusion (:func:`ctxmem_plugin.retrieval.history.fuse_rankings`), exactly what
  ``search(..., k=10, history=...)`` returns by default.
- ``slots``: today's focus slot: the query alone, with the thread's focus trace (rate 0.5) as
  the model's focus (its probe widens the candidates, the scorer reads the focus features).

Each method is ranked twice: by the untrained ``hybrid`` ranking, and by the fold's trained
re-ranker (``model``; one-member models, one per seed, as ``train`` trains a member). ``k``
and the decay are chosen by the untrained ranking of the training conversations' threads, so
that no trained model scores conversations it was trained on. With ``--seeds ""`` only the
untrained rankings are scored; they come from the cache without embedding a thread.

Everything expensive is cached in ``--cache DIR`` (the memory of the conversations, the
hybrid rankings of every setting, the re-ranker's training data and each fold's models), keyed
by what it depends on.

    python benchmarks/conversation.py [--file DEV.json] [--questions 40] [--folds all]
        [--seeds 0,1,2] [--epochs 5] [--cache DIR] [--out benchmarks/results/conversation.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ctxmem_plugin.encoders import SentenceEncoder
from ctxmem_plugin.evaluation.conversation import (
    KINDS,
    Thread,
    build_threads,
    decayed_query_vector,
    recall_at,
    recall_table,
)
from ctxmem_plugin.memory import ContextMemory
from ctxmem_plugin.reranker.checkpoint import load_model
from ctxmem_plugin.reranker.inputs import focus_probe
from ctxmem_plugin.retrieval.features import candidate_features
from ctxmem_plugin.retrieval.history import concat_query, fuse_rankings
from ctxmem_plugin.retrieval.text import embed_text
from ctxmem_plugin.training.data import (
    Conversation,
    Dataset,
    Example,
    conversation_focus,
    gather,
    load_conversations,
    load_dataset,
    save_dataset,
)
from ctxmem_plugin.training.trainer import TrainConfig, score_examples, train

REPO = Path(__file__).resolve().parents[1]
KS = (1, 5, 10, 20)
TOP = 20  # positions kept per untrained ranking: enough for every cut-off
POOL = 200  # candidates from each of BM25 and dense search, as train gathers them


@dataclass(frozen=True)
class Request:
    """What one method searches with for one thread."""

    text: str
    vector: np.ndarray  # (d,) the dense query
    focus: np.ndarray  # (d,) the focus the re-ranker is given (zeros: none)
    probe: bool  # whether the focus probe widens the candidates

    def key(self) -> bytes:
        return hashlib.sha1(self.text.encode() + self.vector.tobytes() + self.focus.tobytes() + bytes([self.probe])).digest()


class Bench:
    """The conversations in one memory, their threads, and the thread turns' embeddings."""

    def __init__(self, convs: list[Conversation], threads: list[Thread], memory: ContextMemory, focus_rate: float) -> None:
        self.convs = convs
        self.threads = threads
        self.memory = memory
        self.focus_rate = focus_rate
        self.index = {c.name: i for i, c in enumerate(convs)}
        self.position: dict[int, int] = {}
        for c in convs:
            ids = [t.id for page in memory.iter_turns(space(c.name)) for t in page]
            assert len(ids) == len(c.turns)
            self.position.update((turn_id, p) for p, turn_id in enumerate(ids))
        self._vec: dict[str, np.ndarray] = {}  # thread turns and queries, embedded by prepare()
        self._encoded: dict[str, np.ndarray] = {}
        self._tops: dict[bytes, np.ndarray] = {}
        self._examples: dict[bytes, Example] = {}  # one fold's: cleared between folds

    def prepare(self, threads: Sequence[Thread]) -> None:
        """Embed the threads' turns and queries (once): only the threads a run scores are embedded."""
        texts = sorted(({embed_text(t) for th in threads for t in th.turns} | {th.query for th in threads}) - set(self._vec))
        if texts:
            self._vec.update(zip(texts, self.memory.encoder.encode(texts)))

    def turn_vectors(self, thread: Thread) -> np.ndarray:
        return np.stack([self._vec[embed_text(t)] for t in thread.turns])  # (t, d)

    def query_vector(self, thread: Thread) -> np.ndarray:
        return self._vec[thread.query]

    def encode(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Texts' query vectors, each encoded once in this run."""
        todo = sorted({t for t in texts if t not in self._encoded})
        for start in range(0, len(todo), 512):
            part = todo[start : start + 512]
            self._encoded.update(zip(part, self.memory.encoder.encode(part)))
        return {t: self._encoded[t] for t in texts}

    def candidates(self, thread: Thread, req: Request):
        probe = focus_probe(req.vector, req.focus) if req.probe else None
        return self.memory.retriever.candidates(
            req.text, req.vector, space(thread.conversation), method="hybrid", pool=POOL, probe=probe,
            probe_pool=50 if probe is not None else 0,
        )

    def hybrid_top(self, thread: Thread, req: Request) -> np.ndarray:
        key = req.key() + thread.conversation.encode()
        if key not in self._tops:  # methods often make the same request (concat-k of a thread shorter than k)
            cands = self.candidates(thread, req)
            ranked = cands.ids[np.lexsort((cands.ids, -cands.score))][:TOP]
            self._tops[key] = np.array([self.position[int(i)] for i in ranked], dtype=np.int64)
        return self._tops[key]

    def example(self, thread: Thread, req: Request) -> Example:
        """The thread's candidates and features as the re-ranker scores them."""
        key = req.key() + thread.conversation.encode()
        if key in self._examples:
            return self._examples[key]
        cands = self.candidates(thread, req)
        rows = {t.id: t for t in self.memory.get(cands.ids.tolist())}
        cand = np.array([self.position[int(i)] for i in cands.ids], dtype=np.int64)
        features = candidate_features(cands, rows, self.memory.retrieval)
        self._examples[key] = Example(self.index[thread.conversation], "thread", req.vector.astype(np.float32), features,
                                      cand, np.isin(cand, list(thread.evidence)), req.focus.astype(np.float32))
        return self._examples[key]


def space(name: str) -> tuple[str, str]:
    return ("bench", name)


# -- the methods --------------------------------------------------------------------------


def alone(bench: Bench, thread: Thread) -> Request:
    qv = bench.query_vector(thread)
    return Request(thread.query, qv, np.zeros_like(qv), False)


def concat(k: int) -> Callable[[Bench, Thread], Request]:
    def make(bench: Bench, thread: Thread) -> Request:
        text = concat_query(thread.query, [t.content for t in thread.turns], k)
        qv = bench.encode([text])[text]
        return Request(text, qv, np.zeros_like(qv), False)

    return make


def decay(d: float) -> Callable[[Bench, Thread], Request]:
    def make(bench: Bench, thread: Thread) -> Request:
        qv = decayed_query_vector(bench.query_vector(thread), bench.turn_vectors(thread), d)
        return Request(thread.query, qv, np.zeros_like(qv), False)

    return make


def slots(bench: Bench, thread: Thread) -> Request:
    qv = bench.query_vector(thread)
    focus = conversation_focus(bench.turn_vectors(thread), bench.focus_rate)
    return Request(thread.query, qv, focus, True)


def _trained(model_dir: Path, epochs: int) -> bool:
    """Whether a cached model finished all its epochs (a stopped run leaves a log of fewer)."""
    log = model_dir / "train_log.json"
    return log.is_file() and len(json.loads(log.read_text()).get("epochs", [])) == epochs


def save_top(path: Path, ranked: Sequence[np.ndarray]) -> None:
    """Each thread's first ``TOP`` positions, padded with -1, as one array."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.stack([np.pad(r[:TOP], (0, TOP - len(r[:TOP])), constant_values=-1) for r in ranked]))


def load_top(path: Path) -> list[np.ndarray]:
    return [r[r >= 0] for r in np.load(path)]


def model_settings(cfg: TrainConfig) -> dict[str, object]:
    """The training settings a cached re-ranker is keyed by (the ones that exist in every version)."""
    names = ("epochs", "batch_size", "lr", "weight_decay", "seed", "num_slots", "hidden", "use_slots", "write_chunk",
             "cue_weight", "slot_feature_dim", "max_grad_norm", "slot_refresh", "focus_rate", "focus_pool", "members")
    return {n: getattr(cfg, n) for n in names}


def fused(alone_top: Sequence[np.ndarray], joined_top: Sequence[np.ndarray]) -> list[np.ndarray]:
    """``fuse``: each thread's two top-``TOP`` rankings merged as the product merges them (ties
    by position, which orders a conversation's turns as their ids do)."""
    return [np.array([p for p, _ in fuse_rankings(a.tolist(), b.tolist())][:TOP], dtype=np.int64)
            for a, b in zip(alone_top, joined_top)]


def requests(bench: Bench, make: Callable[[Bench, Thread], Request], threads: Sequence[Thread]) -> list[Request]:
    return [make(bench, th) for th in threads]


# -- the run ------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", default=str(REPO.parent / "shared/data/locomo/locomo_dev.json"))
    parser.add_argument("--questions", type=int, default=40, help="questions per conversation made into threads")
    parser.add_argument("--thread-seed", type=int, default=0)
    parser.add_argument("--folds", default="all", help="'all' or comma-separated held-out conversations")
    parser.add_argument("--seeds", default="0,1,2", help="re-ranker seeds (one-member models)")
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    parser.add_argument("--concat-ks", default="1,2,3,4,5,6,7")
    parser.add_argument("--decays", default="0,0.25,0.5,0.75,1")
    parser.add_argument("--cost", type=int, default=0,
                        help="instead of the folds: time N held-out threads of the first fold per method (one thread of torch)")
    parser.add_argument("--cost-out", default=str(REPO / "benchmarks/results/conversation_cost.json"))
    parser.add_argument("--cache", default=str(REPO / ".cache/conversation"))
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/conversation.json"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    started = time.perf_counter()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    file_sha = hashlib.sha256(Path(args.file).read_bytes()).hexdigest()[:16]
    convs = load_conversations([args.file])
    names = [c.name for c in convs]
    threads = [th for c in convs for th in build_threads(c, questions=args.questions, seed=args.thread_seed)]
    print(f"{len(threads)} threads from {len(convs)} conversations", flush=True)
    cfg = TrainConfig()
    timings: dict[str, float] = {}

    # The conversations, one namespace each, in a memory kept in the cache.
    encoder = SentenceEncoder(device="cpu")
    mem_dir = cache / f"memory-{file_sha}"
    fresh = not mem_dir.is_dir()
    t0 = time.perf_counter()
    memory = ContextMemory(mem_dir, encoder=encoder, read_only=not fresh)  # runs may share a built memory
    if fresh:
        for c in convs:
            memory.write([st.entry(space(c.name)) for st in c.turns])
        memory.flush()
    bench = Bench(convs, threads, memory, cfg.focus_rate)
    timings["memory"] = time.perf_counter() - t0

    # Untrained rankings of every setting, for every thread: choosing k and the decay needs
    # them on the training conversations, and the held-out rows come from the same arrays.
    ks = [int(x) for x in args.concat_ks.split(",")]
    decays = [float(x) for x in args.decays.split(",")]
    settings: dict[str, Callable[[Bench, Thread], Request]] = {"alone": alone}
    settings.update({f"concat-{k}": concat(k) for k in ks})
    settings.update({f"decay-{d:g}": decay(d) for d in decays})
    key = hashlib.sha256(json.dumps([file_sha, args.questions, args.thread_seed, sorted(settings), POOL, TOP]).encode()).hexdigest()[:16]
    pass1 = cache / f"hybrid-{key}.npz"
    t0 = time.perf_counter()
    if pass1.is_file():
        with np.load(pass1) as z:
            hybrid_top = {name: z[name] for name in settings}
    else:
        hybrid_top = {}
        bench.prepare(threads)
        for name, make in settings.items():
            if name.startswith("concat"):  # one batched encode of every concatenation first
                k = int(name.split("-")[1])
                bench.encode([concat_query(th.query, [t.content for t in th.turns], k) for th in threads])
            reqs = requests(bench, make, threads)
            seen: dict[bytes, np.ndarray] = {}
            rows = []
            for th, req in zip(threads, reqs):
                rk = req.key() + th.conversation.encode()
                if rk not in seen:
                    seen[rk] = bench.hybrid_top(th, req)
                rows.append(np.pad(seen[rk], (0, TOP - len(seen[rk])), constant_values=-1))
            hybrid_top[name] = np.stack(rows)
            print(f"hybrid {name}: {time.perf_counter() - t0:.0f}s", flush=True)
        np.savez(pass1, **hybrid_top)
    timings["hybrid_rankings"] = time.perf_counter() - t0

    # The re-ranker's training data: what train gathers from these conversations.
    data_path = cache / f"train-data-{file_sha}.npz"
    t0 = time.perf_counter()
    if data_path.is_file():
        data = load_dataset(data_path)
    else:
        data = gather(convs, encoder, pool=POOL, focus_rate=cfg.focus_rate, focus_pool=cfg.focus_pool)
        save_dataset(data, data_path)
    timings["train_data"] = time.perf_counter() - t0

    folds = names if args.folds == "all" else args.folds.split(",")
    seeds = [int(s) for s in args.seeds.split(",") if s]  # none: the untrained rankings alone
    if args.cost:
        measure_cost(args, bench, data, folds[0], seeds[0], cache, file_sha)
        memory.close()
        return
    rows: list[dict[str, object]] = []
    for held in folds:
        fold_t0 = time.perf_counter()
        train_idx = [i for i, th in enumerate(threads) if th.conversation != held]
        held_idx = [i for i, th in enumerate(threads) if th.conversation == held]
        held_threads = [threads[i] for i in held_idx]
        if seeds:  # the untrained rankings come from the first pass: only the re-ranker needs the threads embedded
            bench.prepare(held_threads)
        bench._examples.clear()

        def train_recall(name: str) -> float:
            return float(np.mean([recall_at(hybrid_top[name][i], threads[i].evidence, 10) for i in train_idx]))

        chosen_k = max(ks, key=lambda k: (train_recall(f"concat-{k}"), -k))
        chosen_decay = max(decays, key=lambda d: (train_recall(f"decay-{d:g}"), -d))
        # Each method (or each seed of a learned one: "name#seed") makes one request per thread.
        variants: dict[str, Callable[[Bench, Thread], Request]] = {
            "alone": alone, "concat": concat(chosen_k), "decay": decay(chosen_decay), "slots": slots,
        }
        ranked: dict[str, list[np.ndarray]] = {}
        for name, setting in (("alone", "alone"), ("concat", f"concat-{chosen_k}"), ("decay", f"decay-{chosen_decay:g}")):
            ranked[f"hybrid {name}"] = [hybrid_top[setting][i][hybrid_top[setting][i] >= 0] for i in held_idx]
        ranked["hybrid fuse"] = fused(ranked["hybrid alone"], ranked["hybrid concat"])
        train_data = data.subset(set(names) - {held})
        seed_ranked: list[dict[str, list[np.ndarray]]] = [{} for _ in seeds]
        gathered: dict[bytes, list[Example]] = {}  # the same requests' examples, for every seed
        gather_s = train_s = 0.0
        made: dict[str, list[Request]] = {}

        def requests_of(name: str) -> list[Request]:
            if name not in made:
                made[name] = requests(bench, variants[name], held_threads)
            return made[name]

        for j, seed in enumerate(seeds):
            tcfg = replace(cfg, seed=seed, members=1, epochs=args.epochs)
            model_key = hashlib.sha256(json.dumps([file_sha, model_settings(tcfg)], sort_keys=True).encode()).hexdigest()[:12]
            model_dir = cache / "models" / f"{held}-{model_key}"
            t0 = time.perf_counter()
            if _trained(model_dir, tcfg.epochs):
                model = load_model(model_dir)
            else:
                model, _ = train(train_data, tcfg, model_dir)
            train_s += time.perf_counter() - t0
            model.to("cpu").eval()
            for name in variants:
                reqs = requests_of(name)
                # The held-out threads as the re-ranker sees them: a method's rankings by one
                # model are kept, keyed by every request and the model.
                qkey = hashlib.sha256(b"".join(r.key() for r in reqs)).digest()
                rkey = hashlib.sha256(qkey + model_key.encode()).hexdigest()[:16]
                path = cache / "rankings" / f"{held}-{name.split('#')[0]}-{rkey}.npy"
                if not path.is_file():
                    if qkey not in gathered:
                        t0 = time.perf_counter()
                        gathered[qkey] = [bench.example(th, req) for th, req in zip(held_threads, reqs)]
                        gather_s += time.perf_counter() - t0
                    examples = gathered[qkey]
                    scores = score_examples(model, replace(data, examples=examples), list(range(len(examples))), tcfg.write_chunk)
                    save_top(path, [e.cand[np.lexsort((e.cand, -s))] for e, s in zip(examples, scores)])
                seed_ranked[j][f"model {name}"] = load_top(path)
            seed_ranked[j]["model fuse"] = fused(seed_ranked[j]["model alone"], seed_ranked[j]["model concat"])
        seed_tables = [recall_table(held_threads, r, KS) for r in seed_ranked]
        row = {
            "held_out": held, "threads": len(held_threads), "chosen": {"concat_k": chosen_k, "decay": chosen_decay},
            "hybrid": recall_table(held_threads, ranked, KS), "model_seeds": seed_tables,
            "seconds": {"features": gather_s, "train": train_s, "fold": time.perf_counter() - fold_t0},
        }
        rows.append(row)
        print(f"{held}: k={chosen_k} decay={chosen_decay:g} " + " | ".join(
            f"{m} {np.mean([t[f'model {m}']['follow-ups/2-4']['recall@10'] for t in seed_tables]):.3f}"
            for m in [*variants, "fuse"] if seed_tables
        ) + f"  ({time.perf_counter() - fold_t0:.0f}s)", flush=True)
        write(args, rows, timings, started, complete=False)
    write(args, rows, timings, started, complete=True)
    memory.close()


def measure_cost(
    args: argparse.Namespace, bench: Bench, data: Dataset, held: str, seed: int, cache: Path, file_sha: str,
) -> None:
    """Milliseconds per query of each method (request, candidates, re-ranking), and per stored turn.

    The per-query stages run exactly as the benchmark runs them, one thread at a time; the
    request stage includes encoding the query (or, for ``concat``, the joined text); a stored
    thread turn costs every method its embedding, and the slots their state update as well,
    timed through ``ContextMemory.add`` into a thread namespace with and without the model.
    """
    import tempfile

    torch.set_num_threads(1)
    tcfg = replace(TrainConfig(), seed=seed, members=1, epochs=args.epochs)
    model_key = hashlib.sha256(json.dumps([file_sha, model_settings(tcfg)], sort_keys=True).encode()).hexdigest()[:12]
    model_dir = cache / "models" / f"{held}-{model_key}"
    model = load_model(model_dir).eval()
    threads = [th for th in bench.threads if th.conversation == held][: args.cost]
    bench.prepare(threads)  # the thread turns' vectors: stored ones, read (not encoded) by a search

    def encoding(make: Callable[[Bench, Thread], Request]) -> Callable[[Bench, Thread], Request]:
        """``make`` after encoding the query itself, as a search does (``concat`` encodes its joined text instead)."""
        def run(b: Bench, th: Thread) -> Request:
            b._vec[th.query] = b.memory.encoder.encode_query(th.query)
            return make(b, th)
        return run

    # fuse runs two searches (the query alone, and joined to the thread): it pays both.
    variants: dict[str, list[Callable[[Bench, Thread], Request]]] = {
        "alone": [encoding(alone)], "concat": [concat(5)], "decay": [encoding(decay(0.75))], "slots": [encoding(slots)],
        "fuse": [encoding(alone), concat(5)],
    }
    for makers in variants.values():  # warm-up, untimed: the first method measured must not pay the caches' filling
        for th in threads[:10]:
            for make in makers:
                bench._examples.clear()
                bench._encoded.clear()
                score_examples(model, replace(data, examples=[bench.example(th, make(bench, th))]), [0], tcfg.write_chunk)
    out: dict[str, dict[str, float]] = {}
    for name, makers in variants.items():
        bench._encoded.clear()  # a concatenation is encoded per query, as search encodes it
        bench._examples.clear()  # nor are another method's candidates reused
        stages: dict[str, list[float]] = {"request": [], "candidates": [], "rerank": []}
        for th in threads:
            spent = dict.fromkeys(stages, 0.0)
            for make in makers:
                bench._examples.clear()  # threads of one question share a query: each search is paid in full
                bench._encoded.clear()
                t0 = time.perf_counter()
                req = make(bench, th)
                t1 = time.perf_counter()
                example = bench.example(th, req)
                t2 = time.perf_counter()
                score_examples(model, replace(data, examples=[example]), [0], tcfg.write_chunk)
                t3 = time.perf_counter()
                spent["request"] += t1 - t0
                spent["candidates"] += t2 - t1
                spent["rerank"] += t3 - t2
            for stage, seconds in spent.items():
                stages[stage].append(seconds)
        out[name] = {f"{k} ms": 1000 * float(np.median(v)) for k, v in stages.items()}
        out[name]["total ms"] = sum(out[name].values())
        print(f"{name:<18}" + "  ".join(f"{k} {v:7.1f}" for k, v in out[name].items()), flush=True)
    # What a user without a model pays: ContextMemory.search(..., history=thread) with the hybrid
    # ranking, query encoding included, per history mode (none: no history given).
    product: dict[str, float] = {}
    for mode in ("none", "concat", "fuse"):
        times = []
        for th in threads:
            t0 = time.perf_counter()
            bench.memory.search(th.query, space(th.conversation), k=10, method="hybrid",
                                history=None if mode == "none" else list(th.turns), history_mode="concat" if mode == "none" else mode)
            times.append(time.perf_counter() - t0)
        product[f"search, hybrid, history {mode} ms"] = 1000 * float(np.median(times))
    print(product, flush=True)
    # A stored thread turn: its embedding (every method), plus the slot state update with a model.
    turns = [t for th in threads for t in th.turns][:100]
    per_turn: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, with_model in (("without model", None), ("with model", model_dir)):
            with ContextMemory(Path(tmp) / label.replace(" ", "-"), encoder=bench.memory.encoder, model=with_model) as mem:
                mem.add(turns[:1], ("thread", "warm-up"))
                times = []
                for t in turns:
                    t0 = time.perf_counter()
                    mem.add([t], ("thread", "t"))
                    times.append(time.perf_counter() - t0)
                per_turn[f"add one thread turn, {label} ms"] = 1000 * float(np.median(times))
    print(per_turn, flush=True)
    Path(args.cost_out).write_text(json.dumps({"threads": len(threads), "held_out": held, "per_query": out, "product_search": product,
                                               "per_stored_turn": per_turn, "torch_threads": 1}, indent=1))


def summarise(rows: Sequence[dict[str, object]]) -> dict[str, dict[str, dict[str, float]]]:
    """Mean and std of every method's recall per cell, over folds x seeds: the re-ranker's seeds
    (``model`` rows) and a learned method's own (``name#seed``); the untrained ranking has none."""
    values: dict[str, dict[str, dict[str, list[float]]]] = {}
    for row in rows:
        tables = [row["hybrid"], *row["model_seeds"]]  # type: ignore[list-item]
        for table in tables:
            for method, cells in table.items():  # type: ignore[attr-defined]
                for cell, figures in cells.items():
                    for metric, v in figures.items():
                        if metric != "count":
                            pooled = method.split("#")[0]
                            values.setdefault(pooled, {}).setdefault(cell, {}).setdefault(metric, []).append(v)
    return {
        method: {
            cell: {**{f"{m} mean": float(np.mean(v)) for m, v in metrics.items()},
                   **{f"{m} std": float(np.std(v)) for m, v in metrics.items()},
                   "runs": float(len(next(iter(metrics.values()))))}
            for cell, metrics in cells.items()
        }
        for method, cells in values.items()
    }


def write(args: argparse.Namespace, rows: list[dict[str, object]], timings: dict[str, float], started: float, *, complete: bool) -> None:
    config = {**vars(args), "file": Path(args.file).name, "cache": Path(args.cache).name, "out": Path(args.out).name,
              "cost_out": Path(args.cost_out).name}
    summary = summarise(rows)
    doc = {"config": config, "complete": complete, "seconds": {**timings, "total": time.perf_counter() - started},
           "summary": summary, "folds": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=1))
    if complete:
        print_table(summary)


def print_table(summary: dict[str, dict[str, dict[str, float]]]) -> None:
    cells = [f"{kind}/{d}" for kind in KINDS[:3] for d in range(5) if not (kind == "switch" and d == 0)]
    cells += ["follow-ups/0-1", "follow-ups/2-4", "self-contained", "all", "balanced"]
    print(f"\nR@10, mean ± std (hybrid: over folds; model: over folds x seeds)\n{'cell':<16}" + "".join(f"{m:>22}" for m in summary))
    for cell in cells:
        line = f"{cell:<16}"
        for method in summary:
            f = summary[method].get(cell)
            line += f"{f['recall@10 mean']:>15.3f} ±{f['recall@10 std']:.3f}" if f else f"{'-':>22}"
        print(line)


if __name__ == "__main__":
    main()
