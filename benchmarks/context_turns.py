"""Turn vectors with the previous turn as context: held-out dense recall, plain against contextual.

A question's evidence is often the answer to a turn that the question echoes ("How long have
you been married?" -> "5 years already!"): the answer alone shares little with the question.
This measures, on held-out conversations, how dense search ranks the evidence when each turn is
also embedded with the turn before it (``"Prev: ... → Speaker: ..."``, within one LoCoMo
session), before anything of it goes into the product.

Text schemes scored (the question is always embedded alone):
- ``plain``: the turn as a memory embeds it today (:func:`embed_text`);
- ``context``: the previous turn and the turn, one text;
- ``mean``: the mean of the two cosines;
- ``sum``: the cosine to the normalised sum of the two vectors (one vector per turn, as a
  memory could store it).

Encoders (``--variants``):
- ``base``: all-MiniLM-L6-v2 untouched, on every conversation (nothing is fitted);
- ``plain``: tuned as ``train`` tunes it, on the other conversations' (question, evidence) pairs
  (``--fold-cache DIR`` reuses a ``locomo_crossval.py --tune-encoder`` fold's encoder, which is
  that same tuning);
- ``both``: tuned the same way on those pairs plus the same questions paired with their
  evidence turns' contextual texts (hard negatives mined likewise, among contextual texts).

    python benchmarks/context_turns.py --folds conv-26,conv-44 [--variants base,plain,both]
        [--fold-cache DIR] [--out benchmarks/results/context_turns.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from ctxmem_plugin.encoders import (
    DEFAULT_MODEL,
    SentenceEncoder,
    TextEncoder,
    default_model_path,
)
from ctxmem_plugin.training.encoder_tuning import (
    EncoderTuneConfig,
    evidence_pairs,
    tune_encoder,
)
from ctxmem_plugin.retrieval.text import embed_text
from ctxmem_plugin.training.data import Conversation, load_conversations

REPO = Path(__file__).resolve().parents[1]
KS = (1, 5, 10, 20)
ARROW = " \u2192 "


def context_texts(conv: Conversation) -> list[str]:
    """Each turn after the turn before it in the same session (the first of a session alone)."""
    plain = [embed_text(st.turn) for st in conv.turns]
    session = [str(st.turn.metadata.get("dia_id", "")).split(":")[0] for st in conv.turns]
    return [plain[i - 1] + ARROW + plain[i] if i and session[i] == session[i - 1] else plain[i] for i in range(len(plain))]


def recall(sims: np.ndarray, gold: Sequence[set[int]]) -> dict[str, float]:
    order = np.argsort(-sims, axis=1, kind="stable")
    return {f"recall@{k}": float(np.mean([len(g.intersection(order[j, :k].tolist())) / len(g) for j, g in enumerate(gold)])) for k in KS}


def schemes(encoder: TextEncoder, conv: Conversation) -> dict[str, dict[str, float]]:
    """Dense recall of the conversation's questions under each text scheme."""
    plain = encoder.encode([embed_text(st.turn) for st in conv.turns])
    context = encoder.encode(context_texts(conv))
    q = encoder.encode([question for question, _ in conv.questions])
    both = plain + context
    both /= np.linalg.norm(both, axis=1, keepdims=True)
    gold = [g for _, g in conv.questions]
    return {
        "plain": recall(q @ plain.T, gold),
        "context": recall(q @ context.T, gold),
        "mean": recall((q @ plain.T + q @ context.T) / 2, gold),
        "sum": recall(q @ both.T, gold),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", default=str(REPO.parent / "shared/data/locomo/locomo_dev.json"))
    parser.add_argument("--folds", default="all", help="'all' or comma-separated sample ids held out")
    parser.add_argument("--variants", default="base,plain,both")
    parser.add_argument("--fold-cache", default=None, help="take the 'plain' encoders from this locomo_crossval fold cache")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/context_turns.json"))
    args = parser.parse_args()
    convs = load_conversations([args.file])
    names = [c.name for c in convs]
    folds = names if args.folds == "all" else args.folds.split(",")
    variants = args.variants.split(",")
    base = SentenceEncoder(default_model_path(), device="cpu", name=DEFAULT_MODEL)
    cfg = EncoderTuneConfig()
    result: dict[str, object] = {"config": {**vars(args), "file": Path(args.file).name, "out": Path(args.out).name,
                                         "fold_cache": args.fold_cache and Path(args.fold_cache).name}, "folds": {}}

    def save() -> None:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1))

    if "base" in variants:  # nothing fitted: every conversation is held out
        result["base"] = {c.name: schemes(base, c) for c in convs}
        save()
    for held in folds:
        train_convs = [c for c in convs if c.name != held]
        conv = convs[names.index(held)]
        row: dict[str, object] = {}
        for variant in [v for v in variants if v != "base"]:
            cached = sorted(Path(args.fold_cache).glob(f"{held}-*.encoder")) if args.fold_cache and variant == "plain" else []
            with tempfile.TemporaryDirectory(prefix="ctxmem-context-") as tmp:
                if cached:
                    encoder, log = SentenceEncoder(cached[0], device="cpu"), {"from": cached[0].name}
                else:
                    t0 = time.perf_counter()
                    pairs = evidence_pairs(train_convs, miner=base, pool=cfg.hard_negative_pool, seed=cfg.seed, per_question=cfg.hard_negatives)
                    if variant == "both":  # the contextual pairs batch apart from the plain ones: groups of their own
                        pairs += [replace(p, group=p.group + len(train_convs)) for p in evidence_pairs(
                            train_convs, miner=base, pool=cfg.hard_negative_pool, seed=cfg.seed,
                            per_question=cfg.hard_negatives, turn_texts=context_texts)]
                    mined = time.perf_counter() - t0
                    report = tune_encoder(pairs, Path(tmp) / "encoder", base=default_model_path(), base_name=DEFAULT_MODEL, cfg=cfg)
                    encoder = SentenceEncoder(Path(tmp) / "encoder", device="cpu")
                    log = {"pairs": len(pairs), "losses": list(report.losses), "mine_seconds": mined, "tune_seconds": report.seconds}
                row[variant] = {"encoder": log, **schemes(encoder, conv)}
            figures = row[variant]
            print(f"{held} {variant:<6} " + "  ".join(
                f"{s} {figures[s]['recall@1']:.3f}/{figures[s]['recall@10']:.3f}" for s in ("plain", "context", "mean", "sum")), flush=True)  # type: ignore[index]
            result["folds"][held] = row  # type: ignore[index]
            save()
    summary: dict[str, dict[str, float]] = {}
    done = result["folds"]  # type: ignore[assignment]
    for variant in [v for v in variants if v != "base"]:
        for scheme in ("plain", "context", "mean", "sum"):
            for k in KS:
                summary[f"{variant} {scheme} recall@{k}"] = float(np.mean([done[h][variant][scheme][f"recall@{k}"] for h in done]))  # type: ignore[index]
    if "base" in result:
        for scheme in ("plain", "context", "mean", "sum"):
            for k in KS:
                summary[f"base {scheme} recall@{k}"] = float(np.mean([f[scheme][f"recall@{k}"] for f in result["base"].values()]))  # type: ignore[union-attr]
    result["summary"] = summary
    save()
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
