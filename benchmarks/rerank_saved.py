"""Re-rank saved held-out rankings after the fact: diversity, and a top-1 question swapped for its reply.

Two cheap rules that could follow the trained model, measured on the scores that
``locomo_crossval.py --save-scores DIR`` wrote, without training again:

- **diversity** (maximal marginal relevance): the top ``--top`` candidates are re-ordered
  greedily, each next pick maximising ``z(score) - lambda * max cosine to the turns already
  picked``, where ``z`` standardises the scores over those candidates and the cosines are those of
  the fold's tuned encoder (from the ``locomo_crossval.py --fold-cache`` directory). The first
  pick never changes, so R@1 cannot move; the aim is R@10 on questions whose evidence is several
  turns. ``lambda = 0`` is the model's own ranking.
- **question swap**: when the top-1 turn ends with a question mark, the next turn is the other
  speaker's and ranks in the top 5, the two change places. It counts how often that helps and
  hurts R@1.

    python benchmarks/rerank_saved.py DIR/conv-26.npz DIR/conv-30.npz ... --fold-cache CACHE [--out FILE]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from ctxmem_plugin.encoders import SentenceEncoder
from ctxmem_plugin.retrieval.text import embed_text
from ctxmem_plugin.training.data import Conversation, load_conversations

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared/data/locomo/locomo_dev.json"


def ranked(cand: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Candidate turn indices best first; ties by position, as search breaks them."""
    return cand[np.lexsort((cand, -score))]


def head_of(order: np.ndarray, score_of: dict[int, float], vecs: np.ndarray, top: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The top candidates, their standardised scores and their pairwise cosines (once per question)."""
    head = order[:top]
    s = np.array([score_of[int(t)] for t in head], dtype=np.float64)
    s = (s - s.mean()) / (s.std() + 1e-9)  # so that lambda means the same for every query
    return head, s, vecs[head] @ vecs[head].T


def diversify(head: np.ndarray, s: np.ndarray, sim: np.ndarray, lam: float, k: int) -> list[int]:
    chosen, nearest = [0], sim[0].copy()
    left = list(range(1, len(head)))
    while left and len(chosen) < k:
        j = left.pop(int(np.argmax([s[i] - lam * nearest[i] for i in left])))
        chosen.append(j)
        nearest = np.maximum(nearest, sim[j])
    return [int(head[i]) for i in chosen]


def question_swap(conv: Conversation, order: np.ndarray) -> int:
    """The turn to put first under the swap rule (the top-1 itself when the rule does not apply)."""
    top = int(order[0])
    turn, nxt = conv.turns[top].turn, top + 1
    if (
        turn.content.rstrip().endswith("?")
        and nxt < len(conv.turns)
        and conv.turns[nxt].turn.speaker != turn.speaker
        and nxt in set(order[:5].tolist())
    ):
        return nxt
    return top


def recall(gold: set[int], turns: list[int], k: int) -> float:
    return len(gold & set(turns[:k])) / len(gold)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scores", nargs="+", help="DIR/HELD.npz files written by locomo_crossval.py --save-scores")
    parser.add_argument("--fold-cache", required=True, help="the locomo_crossval.py fold cache holding each fold's tuned encoder")
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--model", default="ctxmem")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--lambdas", default="0,0.5,1,2,3,5")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    lambdas = [float(x) for x in args.lambdas.split(",")]

    convs = {c.name: c for c in load_conversations([args.data])}
    # (lambda, group, k) -> recalls; group is "all", a category or a fold
    diverse: dict[tuple[float, str, int], list[float]] = defaultdict(list)
    swap = {"questions": 0, "top1_is_question": 0, "top1_question_is_evidence": 0, "swapped": 0,
            "swap_helps": 0, "swap_hurts": 0, "r1": 0.0, "r1_swapped": 0.0}
    for path in args.scores:
        held = Path(path).stem
        conv = convs[held]
        encoders = sorted(Path(args.fold_cache).glob(f"{held}-*.encoder"))
        if len(encoders) != 1:
            raise SystemExit(f"{args.fold_cache}: expected one encoder for {held}, found {len(encoders)}")
        vecs = SentenceEncoder(encoders[0], device="cpu").encode([embed_text(st.turn) for st in conv.turns])
        saved = np.load(path)
        rows = [i for i, kind in enumerate(saved[f"{args.model}/kind"]) if kind == "question"]
        if len(rows) != len(conv.questions):
            raise SystemExit(f"{path}: {len(rows)} questions saved, {held} has {len(conv.questions)}")
        for q, (row, (_, gold)) in enumerate(zip(rows, conv.questions)):
            cand, score = saved[f"{args.model}/cand/{row}"], saved[f"{args.model}/score/{row}"]
            order = ranked(cand, score)
            score_of = {int(c): float(s) for c, s in zip(cand, score)}
            gold_set = set(gold)
            category = str(conv.categories[q]) if conv.categories else "?"
            head, z, sim = head_of(order, score_of, vecs, args.top)
            for lam in lambdas:
                turns = diversify(head, z, sim, lam, 10)
                for k in (1, 5, 10):
                    for group in ("all", f"category {category}", held):
                        diverse[(lam, group, k)].append(recall(gold_set, turns, k))
            top, first = int(order[0]), question_swap(conv, order)
            swap["questions"] += 1
            if conv.turns[top].turn.content.rstrip().endswith("?"):
                swap["top1_is_question"] += 1
                swap["top1_question_is_evidence"] += top in gold_set
            if first != top:
                swap["swapped"] += 1
                swap["swap_helps"] += first in gold_set and top not in gold_set
                swap["swap_hurts"] += top in gold_set and first not in gold_set
            swap["r1"] += (top in gold_set) / len(gold_set)
            swap["r1_swapped"] += (first in gold_set) / len(gold_set)

    groups = sorted({g for (_, g, _) in diverse}, key=lambda g: (g != "all", not g.startswith("category"), g))
    table = {
        str(lam): {g: {f"recall@{k}": round(float(np.mean(diverse[(lam, g, k)])), 4) for k in (1, 5, 10)} for g in groups}
        for lam in lambdas
    }
    folds = [Path(p).stem for p in args.scores]
    for lam in lambdas:  # the mean over the folds, as locomo_crossval.py's summary reports it
        table[str(lam)]["fold mean"] = {
            key: round(float(np.mean([table[str(lam)][f][key] for f in folds])), 4) for key in table[str(lam)]["all"]
        }
    swap["r1"] = round(swap["r1"] / swap["questions"], 4)
    swap["r1_swapped"] = round(swap["r1_swapped"] / swap["questions"], 4)
    for lam in lambdas:
        row = table[str(lam)]
        print(f"lambda {lam:g}: fold mean R@5 {row['fold mean']['recall@5']:.3f} R@10 {row['fold mean']['recall@10']:.3f} | "
              "pooled R@10 " + "  ".join(f"{g}: {row[g]['recall@10']:.3f}" for g in groups))
    print("question swap:", swap)
    if args.out:
        Path(args.out).write_text(json.dumps({
            "command": "python benchmarks/rerank_saved.py " + " ".join(Path(p).name for p in args.scores)
            + f" --top {args.top} --lambdas {args.lambdas} --model {args.model}",
            "diversity": table, "question_swap": swap}, indent=1) + "\n")


if __name__ == "__main__":
    main()
