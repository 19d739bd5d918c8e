"""Leave-one-conversation-out cross-validation of the ctxmem model on the LoCoMo dev file.

For each of the dev conversations: train on the others (their questions + self-supervised cues
from every training conversation), then rank the held-out conversation's questions (categories
1-4) and measure turn-level recall. Two models per fold, trained identically: with slots
(``ctxmem``) and without (``no-slots``, the same scorer on the same features and candidates),
next to the untrained pipelines (``bm25``, ``dense``, ``hybrid``). No figure here comes from a
conversation the model was trained on.

    python benchmarks/locomo_crossval.py [--epochs 6] [--folds all] [--out benchmarks/results/crossval.json]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from ctxmem_plugin.encoder import SentenceEncoder
from ctxmem_plugin.slots import WRITE_RULES
from ctxmem_plugin.training import TrainConfig, score_examples, train
from ctxmem_plugin.training_data import (
    Dataset,
    gather,
    load_conversations,
    load_dataset,
    save_dataset,
)

REPO = Path(__file__).resolve().parents[1]
KS = (1, 5, 10, 20)


def recall(ranked_positions: list[np.ndarray], gold: list[set[int]], k: int) -> float:
    return float(np.mean([len(g.intersection(r[:k].tolist())) / len(g) for r, g in zip(ranked_positions, gold)]))


def ranks(data: Dataset, idx: list[int], scores: list[np.ndarray]) -> list[np.ndarray]:
    out = []
    for i, s in zip(idx, scores):
        e = data.examples[i]
        out.append(e.cand[np.lexsort((e.cand, -s))])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", default=str(REPO.parent / "shared/data/locomo/locomo_dev.json"))
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    parser.add_argument("--cues", type=int, default=200, help="self-supervised cues per conversation")
    parser.add_argument("--folds", default="all", help="'all' or comma-separated sample ids")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/crossval.json"))
    parser.add_argument("--cache", default=None, help="reuse/store gathered candidates in this .npz")
    parser.add_argument("--lr", type=float, default=TrainConfig.lr)
    parser.add_argument("--seed", type=int, default=TrainConfig.seed)
    parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    parser.add_argument("--slot-refresh", type=int, default=TrainConfig.slot_refresh)
    parser.add_argument("--slot-write-rule", choices=WRITE_RULES, default=TrainConfig.slot_write_rule)
    parser.add_argument("--only", default="ctxmem,no-slots", help="which trained models to run")
    args = parser.parse_args()

    convs = load_conversations([args.file])
    started = time.perf_counter()
    if args.cache and Path(args.cache).is_file():
        data = load_dataset(Path(args.cache))
    else:
        data = gather(convs, SentenceEncoder(device="cpu"), cues_per_conversation=args.cues)
        if args.cache:
            save_dataset(data, Path(args.cache))
    gather_s = time.perf_counter() - started
    print(f"gathered {data.describe()} in {gather_s:.0f}s", flush=True)
    names = [c.name for c in convs]
    folds = names if args.folds == "all" else args.folds.split(",")
    methods = [m for m in ("ctxmem", "no-slots") if m in args.only.split(",")]
    rows = []
    for held in folds:
        train_names = set(names) - {held}
        train_data = data.subset(train_names)
        test_idx = [i for i, e in enumerate(data.examples) if data.conversations[e.conv].name == held and e.kind == "question"]
        gold = [set(data.examples[i].cand[data.examples[i].labels].tolist()) for i in test_idx]
        # Evidence outside the candidate pool still counts as missed: recall is over all evidence.
        conv_pos = names.index(held)
        full_gold = [set(p) for q, p in convs[conv_pos].questions]
        assert len(full_gold) == len(test_idx)
        row: dict[str, object] = {"held_out": held, "questions": len(test_idx)}
        base = [data.examples[i].features[:, 0] for i in test_idx]
        row["hybrid"] = {f"recall@{k}": recall(ranks(data, test_idx, base), full_gold, k) for k in KS}
        row["pool_recall"] = float(np.mean([len(g) / len(f) for g, f in zip(gold, full_gold)]))
        for name, use_slots in (("ctxmem", True), ("no-slots", False)):
            if name not in methods:
                continue
            cfg = replace(TrainConfig(), epochs=args.epochs, seed=args.seed, use_slots=use_slots, lr=args.lr, batch_size=args.batch_size,
                          slot_refresh=args.slot_refresh, slot_write_rule=args.slot_write_rule)
            t0 = time.perf_counter()
            model, log = train(train_data, cfg)
            secs = time.perf_counter() - t0
            scores = score_examples(model, data.subset({held}), list(range(len(data.subset({held}).examples))), cfg.write_chunk)
            sub = data.subset({held})
            q_idx = [i for i, e in enumerate(sub.examples) if e.kind == "question"]
            r = ranks(sub, q_idx, [scores[i] for i in q_idx])
            row[name] = {f"recall@{k}": recall(r, full_gold, k) for k in KS}
            row[name]["train_seconds"] = secs
            row[name]["seconds_per_epoch"] = secs / cfg.epochs
            row[name]["final_loss"] = log[-1]["loss"]
        rows.append(row)
        trained = "".join(
            f"| {m} R@1 {row[m]['recall@1']:.3f} R@10 {row[m]['recall@10']:.3f} {row[m]['seconds_per_epoch']:.1f}s/epoch "  # type: ignore[index]
            for m in methods
        )
        print(f"{held}: n={row['questions']:4d} pool {row['pool_recall']:.3f} | hybrid R@10 {row['hybrid']['recall@10']:.3f} {trained}", flush=True)
    summary = {}
    for method in ("hybrid", *methods):
        for k in KS:
            vals = [r[method][f"recall@{k}"] for r in rows]  # type: ignore[index]
            summary[f"{method} recall@{k}"] = {"mean": float(np.mean(vals)), "std": float(np.std(vals))}
    print("\nmean over folds (std):")
    print(f"{'method':<10}" + "".join(f"{'R@' + str(k):>16}" for k in KS))
    for method in ("hybrid", *methods):
        print(f"{method:<10}" + "".join(
            f"{summary[f'{method} recall@{k}']['mean']:>9.3f} ±{summary[f'{method} recall@{k}']['std']:.3f}" for k in KS))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"config": {**vars(args), "file": Path(args.file).name, "cache": args.cache and Path(args.cache).name, "out": Path(args.out).name}, "folds": rows, "summary": summary, "gather_seconds": gather_s, "data": data.describe()}, indent=1))


if __name__ == "__main__":
    main()
