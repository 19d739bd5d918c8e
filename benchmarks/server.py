"""The memory server: latency it adds over the in-process call, and searches from 1, 2 and 4 client processes.

    python benchmarks/server.py [--copies 10] [--queries 300] [--adds 200] [--out benchmarks/results/server.json]

The data are those of ``benchmarks/deployment.py``: the LoCoMo dev conversations, encoded once
with the bundled all-MiniLM-L6-v2, each given to ``--copies`` tenants (``t<c>/<conversation>``),
and LoCoMo questions (the same shuffled sample) asked of a random tenant's copy of their
conversation. The encoder answers from a table of vectors computed beforehand, in this process
and in the server alike, so the difference between the two is what HTTP and the server add.
Searches alternate between a read-only memory in this process and the server (which holds the
writer lock), so both see the same load from the rest of the machine. Then the same memory is
served by ``ctxmem-plugin serve`` itself, with the model loaded, for searches whose query the
server embeds (``--real-queries`` of them), against the same in-process.
"""

from __future__ import annotations

import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ctxmem_plugin.encoders import SentenceEncoder
from ctxmem_plugin.formats.locomo import load_locomo
from ctxmem_plugin.memory import ContextMemory
from ctxmem_plugin.records import NewTurn, Turn
from ctxmem_plugin.remote import RemoteMemory
from ctxmem_plugin.retrieval.text import embed_text
from ctxmem_plugin.server.testing import ServerProcess

REPO = Path(__file__).resolve().parents[1]


class TableEncoder:
    """The real encoder's name and width, answering queries and documents from vectors computed beforehand."""

    def __init__(self, name: str, dim: int, table: dict[str, np.ndarray]) -> None:
        self.name, self.dim, self.table = name, dim, table

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([self.table[t] for t in texts]) if texts else np.zeros((0, self.dim), np.float32)  # (n, d)

    def encode_query(self, text: str) -> np.ndarray:
        return self.table[text]

    @classmethod
    def load(cls, path: str) -> TableEncoder:
        data = np.load(path)
        keys = json.loads(Path(path).with_suffix(".json").read_text(encoding="utf-8"))
        return cls(keys["name"], int(keys["dim"]), dict(zip(keys["texts"], data["vectors"], strict=True)))

    def save(self, path: Path) -> None:
        texts = list(self.table)
        np.savez(path, vectors=np.stack([self.table[t] for t in texts]))
        path.with_suffix(".json").write_text(json.dumps({"name": self.name, "dim": self.dim, "texts": texts}), encoding="utf-8")


# The server for the table encoder: ctxmem's serve() with that encoder, as `ctxmem-plugin serve` runs it.
TABLE_SERVER = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[3])
    from server import TableEncoder
    from ctxmem_plugin.memory import ContextMemory
    from ctxmem_plugin.server import serve
    with ContextMemory(sys.argv[1], encoder=TableEncoder.load(sys.argv[2])) as memory:
        serve(memory, port=0, ready=lambda url: print(url, flush=True))
""")

# One client process: warm up, say ready, wait for "go", run every search, print the timings.
CLIENT = textwrap.dedent("""
    import json, sys, time
    from ctxmem_plugin.remote import RemoteMemory
    asks = json.loads(open(sys.argv[2], encoding="utf-8").read())
    with RemoteMemory(sys.argv[1]) as memory:
        memory.search(asks[0][0], tuple(asks[0][1]), k=10)
        print("ready", flush=True)
        sys.stdin.readline()
        lat, start = [], time.time()
        for question, prefix in asks:
            t = time.perf_counter()
            memory.search(question, tuple(prefix), k=10, method="hybrid")
            lat.append(time.perf_counter() - t)
        end = time.time()
    print(json.dumps({"start": start, "end": end, "lat": lat}))
""")


def percentiles(samples: list[float]) -> dict[str, float]:
    ms = np.array(samples) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2), "p95_ms": round(float(np.percentile(ms, 95)), 2),
            "mean_ms": round(float(ms.mean()), 2)}


def timed(calls: Sequence[Callable[[], Any]]) -> tuple[dict[str, float], list[Any]]:
    lat, out = [], []
    for call in calls:
        t = time.perf_counter()
        out.append(call())
        lat.append(time.perf_counter() - t)
    return percentiles(lat), out


def interleaved(local: Any, remote: Any, calls: Callable[[Any], list[Callable[[], Any]]]) -> dict[str, Any]:
    """The same calls on a memory in this process and through the server, alternating which goes first.

    Alternating spreads the machine's other load over both sides alike.
    """
    lat: dict[str, list[float]] = {"local": [], "remote": []}
    out: dict[str, list[Any]] = {"local": [], "remote": []}
    for i, pair in enumerate(zip(calls(local), calls(remote), strict=True)):
        order = [("local", pair[0]), ("remote", pair[1])] if i % 2 == 0 else [("remote", pair[1]), ("local", pair[0])]
        for side, call in order:
            t = time.perf_counter()
            out[side].append(call())
            lat[side].append(time.perf_counter() - t)
    assert out["local"] == out["remote"], "the server must answer as the memory does"
    return {"in_process": percentiles(lat["local"]), "server": percentiles(lat["remote"])}


def searches(asks: list[tuple[str, tuple[str, ...]]]) -> Callable[[Any], list[Callable[[], Any]]]:
    return lambda mem: [lambda q=q, p=p: [h.id for h in mem.search(q, p, k=10, method="hybrid")] for q, p in asks]


def concurrent_clients(url: str, asks_file: Path, clients: int) -> dict[str, Any]:
    """``clients`` processes searching at once; their latencies and the server's throughput."""
    procs = [subprocess.Popen([sys.executable, "-c", CLIENT, url, str(asks_file)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for _ in range(clients)]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    runs = []
    for proc in procs:
        out, _ = proc.communicate(timeout=1800)
        assert proc.returncode == 0
        runs.append(json.loads(out.strip().splitlines()[-1]))
    lat = [x for run in runs for x in run["lat"]]
    wall = max(r["end"] for r in runs) - min(r["start"] for r in runs)
    return {"clients": clients, "searches": len(lat), "seconds": round(wall, 2),
            "searches_per_second": round(len(lat) / wall, 1), **percentiles(lat)}


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", default=str(REPO.parent / "shared/data/locomo/locomo_dev.json"))
    parser.add_argument("--conversations", type=int, default=None, help="only the first N (a quick check)")
    parser.add_argument("--copies", type=int, default=10)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--adds", type=int, default=200)
    parser.add_argument("--real-queries", type=int, default=100)
    parser.add_argument("--batch", type=int, default=500, help="turns per write while filling the memory")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/server.json"))
    args = parser.parse_args()
    rng = random.Random(0)

    # The data of benchmarks/deployment.py, drawn the same way.
    convs = load_locomo(args.file)[: args.conversations]
    real = SentenceEncoder(device="cpu")
    texts = [embed_text(st.turn) for c in convs for st in c.turns]
    vectors = real.encode(texts)  # (n, d)
    questions = [(c.sample_id, q.question) for c in convs for q in c.questions]
    rng.shuffle(questions)
    questions = questions[: args.queries]
    entries: list[NewTurn] = []
    for copy in range(args.copies):
        j = 0
        for c in convs:
            for st in c.turns:
                entry = st.entry((f"t{copy}", c.sample_id))
                entries.append(NewTurn(entry.namespace, entry.turn, entry.position, vectors[j]))
                j += 1
    asks = [(q, (f"t{rng.randrange(args.copies)}", sid)) for sid, q in questions]
    adds = [st.turn for c in convs for st in c.turns][: args.adds]
    table = {q: real.encode_query(q) for _, q in questions}
    table.update(zip((embed_text(t) for t in adds), real.encode([embed_text(t) for t in adds]), strict=True))
    encoder = TableEncoder(real.name, real.dim, table)

    results: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "load_average_at_start": [round(x, 1) for x in os.getloadavg()],
        "turns": len(entries), "tenants": args.copies, "queries": len(asks), "adds": len(adds),
    }
    with tempfile.TemporaryDirectory() as tmp:
        where = Path(tmp) / "mem"
        with ContextMemory(where, encoder=encoder) as mem:
            for i in range(0, len(entries), args.batch):
                mem.write(entries[i : i + args.batch])
            # Adds change the memory: measured here, and through the server below (not interleaved).
            results["in_process_add_one"], _ = timed([lambda t=t: mem.add(t, ("bench-add", "in-process")) for t in adds])
        table_file = Path(tmp) / "table.npz"
        encoder.save(table_file)
        asks_file = Path(tmp) / "asks.json"
        asks_file.write_text(json.dumps(asks), encoding="utf-8")
        command = [sys.executable, "-c", TABLE_SERVER, str(where), str(table_file), str(Path(__file__).parent)]
        with ServerProcess(where, command=command) as server, RemoteMemory(server.url) as remote, \
                ContextMemory(where, encoder=encoder, read_only=True) as local:  # the server holds the writer lock
            for name, calls in (("search_hybrid", searches(asks)),
                                ("generation", lambda mem: [lambda: mem.generation for _ in asks])):
                both = interleaved(local, remote, calls)
                results[f"in_process_{name}"], results[f"server_{name}"] = both["in_process"], both["server"]
            results["server_add_one"], _ = timed([lambda t=t: remote.add(t, ("bench-add", "served")) for t in adds])
            for clients in (1, 2, 4):
                results[f"clients_{clients}"] = concurrent_clients(server.url, asks_file, clients)
                print(f"{clients} client processes: {results[f'clients_{clients}']}")
        for name in ("search_hybrid", "add_one", "generation"):
            results[f"added_{name}_p50_ms"] = round(results[f"server_{name}"]["p50_ms"] - results[f"in_process_{name}"]["p50_ms"], 2)
            print(f"{name}: in-process {results[f'in_process_{name}']}, through the server {results[f'server_{name}']}")

        # The product as deployed: `ctxmem-plugin serve` with the model loaded; the query embedded there.
        cli = [sys.executable, "-m", "ctxmem_plugin.cli", "serve", "--memory", str(where), "--port", "0", "--device", "cpu"]
        with ServerProcess(where, command=cli, start_timeout=600) as server, RemoteMemory(server.url) as remote, \
                ContextMemory(where, encoder=real, read_only=True) as local:
            both = interleaved(local, remote, searches(asks[: args.real_queries]))
        results["in_process_search_minilm"], results["server_search_minilm"] = both["in_process"], both["server"]
        results["added_search_minilm_p50_ms"] = round(
            results["server_search_minilm"]["p50_ms"] - results["in_process_search_minilm"]["p50_ms"], 2)
        print(f"with the model: in-process {results['in_process_search_minilm']}, served {results['server_search_minilm']}")
    results["load_average_at_end"] = [round(x, 1) for x in os.getloadavg()]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(markdown(results))


def markdown(r: dict[str, Any]) -> str:
    """The table of docs/deployment.md."""
    def ms(x: dict[str, float]) -> str:
        return f"{x['p50_ms']:.1f} / {x['p95_ms']:.1f}"

    rows = ["| call | in-process p50 / p95 ms | through the server p50 / p95 ms | added at p50 |", "|---|---|---|---|"]
    for name, label in (("generation", "a no-op read (`generation`)"), ("search_hybrid", "search, hybrid"),
                        ("add_one", "add one message")):
        rows.append(f"| {label} | {ms(r['in_process_' + name])} | {ms(r['server_' + name])} | "
                    f"{r[f'added_{name}_p50_ms']:+.1f} ms |")
    rows.append(f"| search, hybrid, the query embedded by all-MiniLM-L6-v2 | {ms(r['in_process_search_minilm'])} | "
                f"{ms(r['server_search_minilm'])} | {r['added_search_minilm_p50_ms']:+.1f} ms |")
    rows += ["", "| client processes | searches | searches/s (all clients) | p50 / p95 ms per search |", "|---|---|---|---|"]
    for n in (1, 2, 4):
        c = r[f"clients_{n}"]
        rows.append(f"| {n} | {c['searches']} | {c['searches_per_second']:.1f} | {ms(c)} |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
