"""Encoder tuning, epoch by epoch: held-out dense recall after each epoch, leave one conversation out.

For each dev conversation, the encoder is tuned as ``train`` tunes it (``encoder_tuning``:
hard negatives mined by the base encoder, batches from one conversation) on the *other*
conversations' questions, and after every epoch the held-out conversation's questions rank all
of its turns by cosine alone. Epoch 0 is the base encoder. The learning rate is constant, so
the model after epoch k is the one ``--encoder-epochs k`` would save: one run of N epochs
measures every count up to N. This is the encoder's own contribution, before the hybrid
fusion, the candidate pool and the trained scorer (``locomo_crossval.py --tune-encoder``
measures those, for one epoch count at a time).

    python benchmarks/encoder_epochs.py [--epochs 6] [--lr 2e-5] [--hard-negatives 1]
        [--folds all] [--device cpu|cuda] [--out benchmarks/results/encoder_epochs.json]

About 3 min per fold per epoch on 2 CPU cores; 68-71 s per fold for 6 epochs on one NVIDIA H200
shared by 14 such runs.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from locomo_crossval import KS, by_category, recall

from ctxmem_plugin.encoders import DEFAULT_MODEL, SentenceEncoder, default_model_path
from ctxmem_plugin.training.encoder_tuning import EncoderTuneConfig, evidence_pairs, tune_encoder
from ctxmem_plugin.retrieval.text import embed_text
from ctxmem_plugin.training.data import Conversation, load_conversations

REPO = Path(__file__).resolve().parents[1]


def dense_recall(vectors: Any, conv: Conversation) -> dict[str, Any]:
    """Recall@k of ``conv``'s questions ranking all its turns by cosine, overall and by category.

    ``vectors(texts)`` gives unit-length rows; ties keep turn order.
    """
    turns = vectors([embed_text(st.turn) for st in conv.turns])  # (n, d)
    questions = vectors([q for q, _ in conv.questions])  # (q, d)
    ranked = list(np.argsort(-(questions @ turns.T), axis=1, kind="stable"))
    gold = [set(ev) for _, ev in conv.questions]
    out: dict[str, Any] = {f"recall@{k}": recall(ranked, gold, k) for k in KS}
    if conv.categories:
        out["by_category"] = by_category(ranked, gold, conv.categories)
    return out


def epoch_meter(held: str, conv: Conversation, measured: list[dict[str, Any]]) -> Callable[[int, SentenceEncoder], None]:
    """``tune_encoder``'s ``on_epoch``: appends the held-out figures of the model after each epoch."""

    def measure(epochs_done: int, encoder: SentenceEncoder) -> None:
        measured.append({"epoch": epochs_done, **dense_recall(encoder.encode, conv)})
        print(f"{held} epoch {epochs_done}: dense R@1 {measured[-1]['recall@1']:.3f} R@10 {measured[-1]['recall@10']:.3f}",
              flush=True)

    return measure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", default=str(REPO.parent / "shared/data/locomo/locomo_dev.json"))
    parser.add_argument("--epochs", type=int, default=6, help="tune this many epochs, measuring after each")
    parser.add_argument("--lr", type=float, default=EncoderTuneConfig.lr)
    parser.add_argument("--hard-negatives", type=int, default=EncoderTuneConfig.hard_negatives)
    parser.add_argument("--seed", type=int, default=EncoderTuneConfig.seed)
    parser.add_argument("--folds", default="all", help="'all' or comma-separated sample ids")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/encoder_epochs.json"))
    args = parser.parse_args()

    convs = load_conversations([args.file])
    names = [c.name for c in convs]
    folds = names if args.folds == "all" else args.folds.split(",")
    cfg = EncoderTuneConfig(epochs=args.epochs, lr=args.lr, seed=args.seed, hard_negatives=args.hard_negatives)
    base = SentenceEncoder(device=args.device)
    rows = []
    for held in folds:
        conv = convs[names.index(held)]
        measured = [{"epoch": 0, **dense_recall(base.encode, conv)}]

        began = time.perf_counter()
        # The held-out conversation's pairs never reach the encoder.
        pairs = evidence_pairs([c for c in convs if c.name != held], miner=base, pool=cfg.hard_negative_pool,
                               seed=cfg.seed, per_question=cfg.hard_negatives)
        with tempfile.TemporaryDirectory(prefix="ctxmem-encoder-epochs-") as tmp:
            report = tune_encoder(pairs, Path(tmp) / "encoder", base=default_model_path(), base_name=DEFAULT_MODEL,
                                  cfg=cfg, device=args.device,
                                  on_epoch=epoch_meter(held, conv, measured))
        rows.append({"held_out": held, "questions": len(conv.questions), "pairs": report.pairs,
                     "losses": list(report.losses), "seconds": time.perf_counter() - began, "epochs": measured})
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"config": {**vars(args), "file": Path(args.file).name}, "folds": rows}, indent=1))

    summary = {}
    print(f"\nheld-out questions, dense over all turns: mean over {len(rows)} folds")
    for e in range(args.epochs + 1):
        figures = {f"recall@{k}": float(np.mean([r["epochs"][e][f"recall@{k}"] for r in rows])) for k in KS}
        higher = sum(r["epochs"][e]["recall@10"] > r["epochs"][0]["recall@10"] for r in rows)
        summary[str(e)] = figures
        print(f"epoch {e}: " + "  ".join(f"R@{k} {figures[f'recall@{k}']:.3f}" for k in KS) + f"  (R@10 above the base in {higher} folds)")
    Path(args.out).write_text(json.dumps({"config": {**vars(args), "file": Path(args.file).name}, "folds": rows, "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
