"""How much a fine-tuned encoder would add: leave-one-conversation-out on the LoCoMo dev file.

The shipped model re-ranks candidates found with the fixed all-MiniLM-L6-v2 vectors, and its
cross-validated R@10 on questions stays near 0.80 whatever features it is given
(docs/training.md). This benchmark measures the next lever before it is built into the
product: for each dev conversation, all-MiniLM-L6-v2 is fine-tuned on the *other*
conversations' (question, evidence turn) pairs, with the other pairs of a batch as negatives,
then the held-out conversation is evaluated exactly as ``ctxmem-plugin eval locomo`` does
(bm25, dense, hybrid; no trained scorer), with the base and the fine-tuned encoder.

    python benchmarks/encoder_finetune.py [--epochs 1] [--folds all]
        [--out benchmarks/results/encoder_finetune.json]

About 2.5 min per fold per epoch on 2 CPU cores. The hybrid fusion weights are the shipped
ones, chosen on the dev file for the base encoder (in-sample for it, not retuned here)."""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ctxmem_plugin.encoders import SentenceEncoder, default_model_path
from ctxmem_plugin.training.encoder_tuning import evidence_pairs
from ctxmem_plugin.evaluation.locomo import evaluate_locomo
from ctxmem_plugin.training.data import load_conversations

REPO = Path(__file__).resolve().parents[1]
KS = (1, 5, 10, 20)


def fine_tune(pairs: list[tuple[str, str]], epochs: int, seed: int, out: Path) -> list[float]:
    """Fine-tune the bundled model with in-batch negatives; save it to ``out``; mean loss per epoch.

    The measurement that led to ``ctxmem_plugin.training.encoder_tuning``, kept as it was run. The
    product's version also masks in-batch false negatives (the same turn, or another evidence
    turn of the same question); its effect is measured by ``locomo_crossval.py --tune-encoder``.
    """
    from sentence_transformers import SentenceTransformer

    torch.manual_seed(seed)
    rng = random.Random(seed)
    model = SentenceTransformer(str(default_model_path()), device="cpu", local_files_only=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5)
    batch_size, scale = 32, 20.0
    # sentence-transformers 5 renamed tokenize() to preprocess(); either gives the model inputs.
    prepare = getattr(model, "preprocess", None) or model.tokenize
    losses = []
    for _ in range(epochs):
        order = list(pairs)
        rng.shuffle(order)
        model.train()
        total, steps = 0.0, 0
        for i in range(0, len(order) - batch_size + 1, batch_size):
            batch = order[i : i + batch_size]
            q = F.normalize(model(prepare([a for a, _ in batch]))["sentence_embedding"], dim=-1)  # (b, d)
            d = F.normalize(model(prepare([b for _, b in batch]))["sentence_embedding"], dim=-1)  # (b, d)
            # The i-th question's positive is the i-th turn; the batch's other turns are negatives.
            loss = F.cross_entropy(q @ d.T * scale, torch.arange(len(batch)))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, steps = total + float(loss.detach()), steps + 1
        losses.append(total / max(steps, 1))
    model.eval()
    model.save(str(out))
    return losses


def recalls(result: Any) -> dict[str, dict[str, float]]:
    return {m: {f"recall@{k}": result.methods[m][f"recall@{k}"] for k in KS} for m in ("bm25", "dense", "hybrid")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", default=str(REPO.parent / "shared/data/locomo/locomo_dev.json"))
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--folds", default="all", help="'all' or comma-separated sample ids")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/encoder_finetune.json"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    convs = load_conversations([args.file])
    names = [c.name for c in convs]
    folds = names if args.folds == "all" else args.folds.split(",")
    base = SentenceEncoder(device="cpu")
    rows = []
    for held in folds:
        pairs = [(p.question, p.turn) for p in evidence_pairs([c for c in convs if c.name != held])]
        with tempfile.TemporaryDirectory(prefix="ctxmem-ft-") as tmp:
            t0 = time.perf_counter()
            losses = fine_tune(pairs, args.epochs, args.seed, Path(tmp))
            secs = time.perf_counter() - t0
            tuned = recalls(evaluate_locomo(args.file, encoder=SentenceEncoder(tmp, device="cpu"), conversations=[held]))
        plain = recalls(evaluate_locomo(args.file, encoder=base, conversations=[held]))
        row = {"held_out": held, "pairs": len(pairs), "train_seconds": secs, "losses": losses, "base": plain, "tuned": tuned}
        rows.append(row)
        print(f"{held}: {len(pairs)} pairs, {secs:.0f}s | " + " | ".join(
            f"{m} R@1 {plain[m]['recall@1']:.3f}->{tuned[m]['recall@1']:.3f} R@10 {plain[m]['recall@10']:.3f}->{tuned[m]['recall@10']:.3f}"
            for m in ("dense", "hybrid")), flush=True)
    summary: dict[str, dict[str, float]] = {}
    print(f"\n{'encoder / method':<18}" + "".join(f"{'R@' + str(k):>16}" for k in KS))
    for enc in ("base", "tuned"):
        for m in ("bm25", "dense", "hybrid"):
            if enc == "tuned" and m == "bm25":
                continue  # BM25 does not use the encoder
            cells = []
            for k in KS:
                vals = [r[enc][m][f"recall@{k}"] for r in rows]
                summary[f"{enc} {m} recall@{k}"] = {"mean": float(np.mean(vals)), "std": float(np.std(vals))}
                cells.append(f"{np.mean(vals):>9.3f} ±{np.std(vals):.3f}")
            print(f"{enc + ' ' + m:<18}" + "".join(cells))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    config = {**vars(args), "file": Path(args.file).name, "out": Path(args.out).name}
    Path(args.out).write_text(json.dumps({"config": config, "folds": rows, "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
