"""Speed and size: ingest throughput, query latency, slot write cost vs history, slot compression.

    python benchmarks/speed.py [--model DIR] [--out benchmarks/results/speed.json]

Without --model, the slot measurements use an untrained model of the default size (speed and
size do not depend on the weights).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ctxmem_plugin.reranker.checkpoint import load_model
from ctxmem_plugin.encoders import SentenceEncoder
from ctxmem_plugin.formats.locomo import load_locomo
from ctxmem_plugin.memory import ContextMemory
from ctxmem_plugin.reranker.runtime import write_chunks
from ctxmem_plugin.training.trainer import TrainConfig, build_model

REPO = Path(__file__).resolve().parents[1]


def percentiles(samples: list[float]) -> dict[str, float]:
    ms = np.array(samples) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)), "mean_ms": float(ms.mean())}


def time_queries(mem: ContextMemory, questions: list[tuple[str, str]], method: str) -> dict[str, float]:
    lat = []
    for sid, q in questions:
        t = time.perf_counter()
        mem.search(q, ("bench", sid), k=10, method=method)
        lat.append(time.perf_counter() - t)
    return percentiles(lat)


def time_ingest(mem: ContextMemory, convs: list) -> tuple[int, float]:
    """``(turns, seconds)`` to ingest every conversation into its own namespace."""
    t0 = time.perf_counter()
    for c in convs:
        mem.write([st.entry(("bench", c.sample_id)) for st in c.turns])
    return sum(len(c.turns) for c in convs), time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", default=str(REPO.parent / "shared/data/locomo/locomo_dev.json"))
    parser.add_argument("--model", default=None)
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/speed.json"))
    parser.add_argument("--slots-only", action="store_true", help="only the slot write cost and state size")
    args = parser.parse_args()
    torch.set_num_threads(2)
    results: dict[str, object] = {}
    if not args.slots_only:
        time_memory(args, results)
    time_slots(args, results)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))


def time_memory(args: argparse.Namespace, results: dict[str, object]) -> None:
    """Ingest, add and query timings, with the model when one is given."""
    convs = load_locomo(args.file)
    encoder = SentenceEncoder(device="cpu")
    encoder.encode(["warm up"])
    with tempfile.TemporaryDirectory() as tmp, ContextMemory(tmp, encoder=encoder) as mem:
        turns, secs = time_ingest(mem, convs)
        results["ingest"] = {"turns": turns, "seconds": secs, "turns_per_second": turns / secs}
        print(f"ingest: {turns} turns in {secs:.1f}s = {turns / secs:.0f} turns/s (batched, MiniLM on CPU)")
        questions = [(c.sample_id, q.question) for c in convs for q in c.questions[:30]]
        for method in ("bm25", "dense", "hybrid"):
            results[f"query_{method}"] = time_queries(mem, questions, method)
            print(f"query {method}: p50 {results[f'query_{method}']['p50_ms']:.1f} ms, p95 {results[f'query_{method}']['p95_ms']:.1f} ms")
        t_single = []
        for i in range(30):
            t = time.perf_counter()
            mem.add({"role": "user", "content": f"one more message number {i}"}, ("bench", "live"))
            t_single.append(time.perf_counter() - t)
        results["add_single_turn"] = percentiles(t_single)
        print(f"add one turn (encode + commit): p50 {results['add_single_turn']['p50_ms']:.1f} ms")

    if args.model:
        # The model's own encoder: the tuned one when the model carries one.
        with tempfile.TemporaryDirectory() as tmp, ContextMemory(tmp, model=args.model, device="cpu") as mem:
            mem.encoder.encode(["warm up"])
            turns, secs = time_ingest(mem, convs)
            results["ingest_with_slots"] = {"turns": turns, "seconds": secs, "turns_per_second": turns / secs}
            print(f"ingest with slot updates: {turns / secs:.0f} turns/s")
            results["query_ctxmem"] = time_queries(mem, questions, "ctxmem")
            print(f"query ctxmem: p50 {results['query_ctxmem']['p50_ms']:.1f} ms, p95 {results['query_ctxmem']['p95_ms']:.1f} ms")


def time_slots(args: argparse.Namespace, results: dict[str, object]) -> None:
    """Slot write cost per turn at a short and a long history, and the state size."""
    model = load_model(Path(args.model)) if args.model else build_model(384, "all-MiniLM-L6-v2", TrainConfig())
    model.eval()
    chunk = TrainConfig().write_chunk
    with torch.no_grad():
        slots = model.init_slots(1)
        rng = torch.Generator().manual_seed(0)
        history = torch.nn.functional.normalize(torch.randn(10_000 + chunk * 50, 384, generator=rng), dim=-1)
        feats = torch.zeros(history.shape[0], model.config.slots.feature_dim)
        timings = {}
        for at in (10, 10_000):
            state = write_chunks(model, slots, history[:at], feats[:at], chunk)
            t = time.perf_counter()
            reps = 50
            for r in range(reps):
                new = history[at + r * chunk : at + (r + 1) * chunk]
                state = write_chunks(model, state, new, feats[: len(new)], chunk)
            per_turn = (time.perf_counter() - t) / (reps * chunk)
            timings[at] = per_turn
            print(f"slot write at history {at:>6}: {per_turn * 1e6:.1f} us per turn (chunks of {chunk})")
        results["slot_write_us_per_turn"] = {str(k): v * 1e6 for k, v in timings.items()}
    cfg = model.config.slots
    slot_bytes = model.state_slots * cfg.dim * 4  # every member's slots
    raw_bytes = 600 * cfg.dim * 4
    results["compression_600_turns"] = {"slot_state_bytes": slot_bytes, "history_embedding_bytes": raw_bytes, "ratio": raw_bytes / slot_bytes}
    print(f"slot state {slot_bytes} B vs 600 turn embeddings {raw_bytes} B: {raw_bytes / slot_bytes:.1f}x smaller")
    results["members"] = model.config.members


if __name__ == "__main__":
    main()
