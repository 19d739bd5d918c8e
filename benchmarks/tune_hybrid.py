"""Tune the hybrid fusion on the LoCoMo dev file, leave-one-conversation-out, and print the table.

For each conversation: choose the settings that maximise recall@10 on the other conversations,
report recall on the held-out one. The settings finally shipped as defaults are the ones chosen
on all dev conversations; the held-out figures say how well that choice generalises.

    python benchmarks/tune_hybrid.py [--file ../shared/data/locomo/locomo_dev.json] [--out results/tune_hybrid.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from ctxmem_plugin.evaluation.locomo import build_questions, metrics, rank_by
from ctxmem_plugin.formats.locomo import load_locomo
from ctxmem_plugin.memory import ContextMemory
from ctxmem_plugin.retrieval.hybrid import RetrievalConfig, fuse

REPO = Path(__file__).resolve().parents[1]
GRID = {
    "bm25_weight": [0.4, 0.5, 0.6, 0.7, 0.8],
    "dense_floor": [0.0, 0.1, 0.2, 0.3],
    "neighbour_weight": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5],
}


def recall_at(questions, cfg: RetrievalConfig, k: int = 10) -> float:
    ranked = []
    for q in questions:
        *_, hybrid = fuse(q.candidates.raw, cfg)
        ranked.append(rank_by(q.candidates, hybrid))
    return metrics(ranked, questions, [k])[f"recall@{k}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", default=str(REPO.parent / "shared/data/locomo/locomo_dev.json"))
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/tune_hybrid.json"))
    args = parser.parse_args()
    convs = load_locomo(args.file)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, ContextMemory(tmp) as mem:
        questions = build_questions(convs, mem, pool=200)
    print(f"{len(questions)} questions gathered in {time.perf_counter() - start:.0f}s")
    base = RetrievalConfig()
    configs = [
        replace(base, bm25_weight=b, dense_weight=1 - b, dense_floor=f, neighbour_weight=n)
        for b, f, n in itertools.product(*GRID.values())
    ]
    names = [c.sample_id for c in convs]
    by_conv = {n: [q for q in questions if q.conversation == n] for n in names}
    table = {}
    rows = []
    for held in names:
        train = [q for q in questions if q.conversation != held]
        best = max(configs, key=lambda c: recall_at(train, c))
        test = by_conv[held]
        *_, hybrid = zip(*[fuse(q.candidates.raw, best) for q in test])
        ranked = [rank_by(q.candidates, h) for q, h in zip(test, hybrid)]
        bm25 = [rank_by(q.candidates, np.where(q.candidates.raw.bm25_present, q.candidates.raw.bm25, -np.inf)) for q in test]
        dense = [rank_by(q.candidates, q.candidates.raw.dense) for q in test]
        row = {
            "held_out": held, "questions": len(test),
            "bm25": metrics(bm25, test, [1, 10]), "dense": metrics(dense, test, [1, 10]),
            "hybrid": metrics(ranked, test, [1, 10]),
            "chosen": {k: getattr(best, k) for k in GRID},
        }
        rows.append(row)
        print(f"{held}: n={len(test):4d}  bm25 R@10 {row['bm25']['recall@10']:.3f}  dense {row['dense']['recall@10']:.3f}  "
              f"hybrid {row['hybrid']['recall@10']:.3f} (R@1 {row['hybrid']['recall@1']:.3f})  chosen {row['chosen']}")
    for method in ("bm25", "dense", "hybrid"):
        for k in (1, 10):
            vals = [r[method][f"recall@{k}"] for r in rows]
            table[f"{method} recall@{k}"] = {"mean": float(np.mean(vals)), "std": float(np.std(vals))}
    overall = max(configs, key=lambda c: recall_at(questions, c))
    table["chosen_on_all_dev"] = {k: getattr(overall, k) for k in GRID}
    print(json.dumps(table, indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"folds": rows, "summary": table}, indent=1))


if __name__ == "__main__":
    main()
