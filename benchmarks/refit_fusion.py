"""Refit the hybrid fusion to each fold's tuned encoder, leave-one-conversation-out.

The fusion weights shipped (``RetrievalConfig``) were chosen for the base encoder. With the
encoder tuned, dense scores mean more. This reads the candidates of a
``locomo_crossval.py --tune-encoder --fold-cache DIR`` run and, per fold, chooses the fusion
(BM25 weight, dense floor, neighbour weight; dense weight = 1 - BM25 weight) that maximises
recall@10 on the 6 training conversations' questions, as ``train`` chooses it
(``fusion_fit.fit_fusion``), then reports the held-out conversation's recall with it and with
the shipped weights. The hybrid score is recomputed from the candidates' cached features
(``fusion_fit.grid_hybrid``: ``fuse`` in ``retrieval.py`` exactly, checked against the cached
hybrid column). No model is trained and nothing is gathered here.

    python benchmarks/refit_fusion.py --fold-cache DIR [--out benchmarks/results/refit_fusion.json]

About 2 minutes on one CPU core."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from locomo_crossval import this_version

from ctxmem_plugin.training.fusion_fit import (
    FUSION_GRID,
    fit_fusion,
    grid_recalls,
    question_examples,
)
from ctxmem_plugin.retrieval.hybrid import RetrievalConfig
from ctxmem_plugin.training.data import load_conversations, load_dataset

REPO = Path(__file__).resolve().parents[1]
SHIPPED = RetrievalConfig()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", default=str(REPO.parent / "shared/data/locomo/locomo_dev.json"))
    parser.add_argument("--fold-cache", required=True, help="a locomo_crossval.py --tune-encoder --fold-cache directory")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/refit_fusion.json"))
    args = parser.parse_args()
    convs = load_conversations([args.file])
    names = [c.name for c in convs]
    shipped = FUSION_GRID.index((SHIPPED.bm25_weight, SHIPPED.dense_weight, SHIPPED.dense_floor, SHIPPED.neighbour_weight))
    rows = []
    for held in names:
        # The fold gathered with the shipped fusion (a refit gathering's log names its chosen fusion).
        (path,) = [p for p in Path(args.fold_cache).glob(f"{held}-*.npz") if not p.name.endswith(".partial.npz")
                   and "chosen" not in json.loads(p.with_suffix(".json").read_text()) and this_version(p)]
        data = load_dataset(path)
        fit = fit_fusion(data.subset(set(names) - {held}), convs, min_questions=1)
        assert fit is not None
        best = FUSION_GRID.index((fit.config.bm25_weight, fit.config.dense_weight, fit.config.dense_floor, fit.config.neighbour_weight))
        test = np.mean([grid_recalls(e, gold, FUSION_GRID) for e, gold in question_examples(data.subset({held}), convs)], axis=0)
        row = {
            "held_out": held, **{k: v for k, v in fit.describe().items() if k != "grid_size"},
            "held_out_refit": {"recall@1": test[0, best], "recall@10": test[1, best]},
            "held_out_shipped": {"recall@1": test[0, shipped], "recall@10": test[1, shipped]},
            "held_out_best_possible_recall@10": test[1].max(),
        }
        rows.append(row)
        print(f"{held}: chosen {FUSION_GRID[best]} | held-out R@1 / R@10 shipped {test[0, shipped]:.3f} / {test[1, shipped]:.3f}, "
              f"refit {test[0, best]:.3f} / {test[1, best]:.3f} (best possible R@10 {test[1].max():.3f})", flush=True)
    summary = {
        f"{which} recall@{k}": {"mean": float(np.mean([r[which][f"recall@{k}"] for r in rows])),
                                "std": float(np.std([r[which][f"recall@{k}"] for r in rows]))}
        for which in ("held_out_shipped", "held_out_refit") for k in (1, 10)
    }
    for key, value in summary.items():
        print(f"{key}: {value['mean']:.3f} ± {value['std']:.3f}")
    Path(args.out).write_text(json.dumps({"fold_cache": Path(args.fold_cache).name, "grid": FUSION_GRID, "folds": rows,
                                          "summary": summary}, indent=1, default=float))


if __name__ == "__main__":
    main()
