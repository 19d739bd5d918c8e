"""List the held-out questions whose top-ranked turn is not labelled evidence, to read them.

LoCoMo marks one to a few evidence turns per question. Another turn can say the same thing (the
answer given twice, a question whose next turn is labelled, a near-copy of a labelled turn), and
recall counts it as a miss. This prints, for each question of a fold whose top-1 is not evidence,
the question, its reference answer, the top-1 turn as it is embedded (speaker, text, image
caption) with its date, and the evidence turns, so that a reader can judge whether the top-1
answers the question. With ``--verdicts FILE`` it also counts the verdicts recorded there for
the fold (``benchmarks/results/top1_audit.json``: question indices only, no data copied).

    python benchmarks/locomo_crossval.py ... --save-scores DIR
    python benchmarks/top1_misses.py DIR/conv-26.npz [--model ctxmem] [--verdicts FILE]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ctxmem_plugin.retrieval.text import embed_text
from ctxmem_plugin.formats.locomo import load_locomo
from ctxmem_plugin.training.data import load_conversations

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared/data/locomo/locomo_dev.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scores", help="a fold's DIR/HELD.npz written by locomo_crossval.py --save-scores")
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--model", default="ctxmem", help="whose scores to rank by (ctxmem or no-slots)")
    parser.add_argument("--verdicts", default=None, help="JSON of verdicts by question index to count")
    args = parser.parse_args()

    held = Path(args.scores).stem
    convs = {c.name: c for c in load_conversations([args.data])}
    conv = convs[held]
    # The first answer given to a question text, as the training data keeps the first asking.
    answers: dict[str, str] = {}
    for sample in load_locomo(args.data):
        if sample.sample_id == held:
            for qa in sample.questions:
                answers.setdefault(qa.question, qa.answer)
    saved = np.load(args.scores)
    kinds = saved[f"{args.model}/kind"]
    question_rows = [i for i, kind in enumerate(kinds) if kind == "question"]
    # The saved examples keep the dataset's order, which is the conversation's question order.
    assert len(question_rows) == len(conv.questions), (len(question_rows), len(conv.questions))

    misses = []
    for k, (row, (question, gold)) in enumerate(zip(question_rows, conv.questions)):
        cand, score = saved[f"{args.model}/cand/{row}"], saved[f"{args.model}/score/{row}"]
        top = int(cand[np.lexsort((cand, -score))[0]])  # ties by position, as search breaks them
        if top in gold:
            continue
        misses.append(k)
        turn = conv.turns[top].turn
        category = conv.categories[k] if conv.categories else "?"
        print(f"\n[{k}] category {category}, {turn.timestamp or 'no date'}  Q: {question}  A: {answers.get(question)}")
        print(f"   top-1: {embed_text(turn)}")
        for g in sorted(gold):
            print(f"   evidence: {embed_text(conv.turns[g].turn)}")
    hits = len(conv.questions) - len(misses)
    print(f"\n{held}: {len(conv.questions)} questions, top-1 is evidence for {hits}, not for {len(misses)}")
    if args.verdicts:
        verdicts = json.loads(Path(args.verdicts).read_text())["folds"].get(held, {})
        answering = {int(k) for kind in ("clear", "paraphrase") for k in verdicts.get(kind, [])}
        unknown = sorted(answering - set(misses))
        if unknown:
            raise SystemExit(f"{args.verdicts}: questions {unknown} of {held} are not top-1 misses of these scores")
        for kind in ("clear", "paraphrase"):
            print(f"  judged {kind}: {len(verdicts.get(kind, []))}")
        n = len(conv.questions)
        print(f"  top-1 answers the question: {hits}/{n} = {hits / n:.3f} by the labels, "
              f"{hits + len(answering)}/{n} = {(hits + len(answering)) / n:.3f} with the judged misses")


if __name__ == "__main__":
    main()
