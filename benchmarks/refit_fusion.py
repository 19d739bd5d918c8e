"""Refit the hybrid fusion to each fold's tuned encoder, leave-one-conversation-out.

The fusion weights shipped (``RetrievalConfig``) were chosen for the base encoder. With the
encoder tuned, dense scores mean more. This reads the candidates of a
``locomo_crossval.py --tune-encoder --fold-cache DIR`` run and, per fold, chooses the fusion
(BM25 weight, dense floor, neighbour weight; dense weight = 1 - BM25 weight) that maximises
recall@10 on the 6 training conversations' questions, then reports the held-out
conversation's recall with it and with the shipped weights. The hybrid score is recomputed
from the candidates' cached features (``fuse`` in ``retrieval.py``, exactly; checked against
the cached hybrid column for the shipped weights). No model is trained here.

    python benchmarks/refit_fusion.py --fold-cache DIR [--out benchmarks/results/refit_fusion.json]

About 5 minutes on one CPU core."""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np

from ctxmem_plugin.retrieval import FEATURE_NAMES, RetrievalConfig
from ctxmem_plugin.training_data import Example, load_conversations, load_dataset

REPO = Path(__file__).resolve().parents[1]
COL = {name: FEATURE_NAMES.index(name) for name in FEATURE_NAMES}
GRID = list(itertools.product(
    [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8],  # BM25 weight
    [0.0, 0.1, 0.2, 0.3],  # dense floor
    [0.0, 0.1, 0.2, 0.3, 0.4, 0.5],  # neighbour weight
))
SHIPPED = (RetrievalConfig().bm25_weight, RetrievalConfig().dense_floor, RetrievalConfig().neighbour_weight)


def hybrid(f: np.ndarray) -> np.ndarray:
    """``(len(GRID), n)`` hybrid scores of one candidate list under every fusion of the grid."""
    bm25, dense = f[:, COL["bm25_norm"]].astype(np.float64), f[:, COL["dense"]].astype(np.float64)
    # A neighbour outside the candidates has 0 in both columns, and fuses to 0 as in fuse().
    nb_bm25 = f[:, [COL["prev_bm25_norm"], COL["next_bm25_norm"]]].astype(np.float64)  # (n, 2)
    nb_dense = f[:, [COL["prev_dense"], COL["next_dense"]]].astype(np.float64)  # (n, 2)
    out = []
    for bw, floor, nw in GRID:
        span = max(float(dense.max()) - floor, 1e-6)
        fused = bw * bm25 + (1 - bw) * np.clip((dense - floor) / span, 0.0, None)
        nb = bw * nb_bm25 + (1 - bw) * np.clip((nb_dense - floor) / span, 0.0, None) * (nb_dense != 0)
        out.append(fused + nw * nb.max(axis=1))
    return np.stack(out)


def recalls(e: Example, gold: set[int], ks: tuple[int, ...]) -> np.ndarray:
    """``(len(ks), len(GRID))`` recall@k of one question under every fusion."""
    scores = hybrid(e.features)
    out = np.zeros((len(ks), len(GRID)))
    for g, s in enumerate(scores):
        ranked = e.cand[np.lexsort((e.cand, -s))]
        for i, k in enumerate(ks):
            out[i, g] = len(gold.intersection(ranked[:k].tolist())) / len(gold)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", default=str(REPO.parent / "shared/data/locomo/locomo_dev.json"))
    parser.add_argument("--fold-cache", required=True, help="a locomo_crossval.py --tune-encoder --fold-cache directory")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/refit_fusion.json"))
    args = parser.parse_args()
    convs = load_conversations([args.file])
    names = [c.name for c in convs]
    shipped = GRID.index(SHIPPED)
    rows = []
    for held in names:
        (path,) = [p for p in Path(args.fold_cache).glob(f"{held}-*.npz") if not p.name.endswith(".partial.npz")]
        data = load_dataset(path)
        per_conv: dict[str, np.ndarray] = {}
        for ci, tensors in enumerate(data.conversations):
            questions = [e for e in data.examples if e.conv == ci and e.kind == "question"]
            golds = [set(p) for _, p in convs[names.index(tensors.name)].questions]
            assert len(questions) == len(golds)
            for e in questions:
                # The recomputation must give the cached hybrid column for the shipped weights.
                assert np.allclose(hybrid(e.features)[shipped], e.features[:, 0], atol=1e-5)
            per_conv[tensors.name] = np.stack([recalls(e, g, (1, 10)) for e, g in zip(questions, golds)])  # (q, 2, G)
        train = np.concatenate([per_conv[n] for n in names if n != held]).mean(axis=0)  # (2, G)
        best = int(np.argmax(train[1]))
        test = per_conv[held].mean(axis=0)  # (2, G)
        row = {
            "held_out": held, "chosen": dict(zip(("bm25_weight", "dense_floor", "neighbour_weight"), GRID[best])),
            "held_out_refit": {"recall@1": test[0, best], "recall@10": test[1, best]},
            "held_out_shipped": {"recall@1": test[0, shipped], "recall@10": test[1, shipped]},
            "held_out_best_possible_recall@10": test[1].max(),
            "training_refit_recall@10": train[1, best], "training_shipped_recall@10": train[1, shipped],
        }
        rows.append(row)
        print(f"{held}: chosen {GRID[best]} | held-out R@1 / R@10 shipped {test[0, shipped]:.3f} / {test[1, shipped]:.3f}, "
              f"refit {test[0, best]:.3f} / {test[1, best]:.3f} (best possible R@10 {test[1].max():.3f})", flush=True)
    summary = {
        f"{which} recall@{k}": {"mean": float(np.mean([r[which][f"recall@{k}"] for r in rows])),
                                "std": float(np.std([r[which][f"recall@{k}"] for r in rows]))}
        for which in ("held_out_shipped", "held_out_refit") for k in (1, 10)
    }
    for key, value in summary.items():
        print(f"{key}: {value['mean']:.3f} ± {value['std']:.3f}")
    Path(args.out).write_text(json.dumps({"fold_cache": Path(args.fold_cache).name, "grid": GRID, "folds": rows, "summary": summary},
                                         indent=1, default=float))


if __name__ == "__main__":
    main()
