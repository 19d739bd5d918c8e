"""Cross-fitting the tuned encoder for the scorer's training candidates, on some folds.

Per held-out conversation: the 6 training conversations are split in two halves A and B;
encoder_A is tuned on A, encoder_B on B, encoder_full on all 6. A's candidates are gathered with
encoder_B, B's with encoder_A (never an encoder tuned on their own questions); the held-out
conversation with encoder_full, as in the product. The product does not cross-fit; this
measures whether it should. The encoders are tuned as ``train`` tunes them
(``EncoderTuneConfig()``); ``--mixed-no-negatives`` tunes them as it did when this was first
measured (batches across conversations, no hard negatives; compare with
crossval_tuned_encoder_inbatch.json), otherwise compare with crossval_tuned_encoder.json.
``--fold-cache DIR`` (a ``locomo_crossval.py --tune-encoder --fold-cache`` directory made with
the same tuning) takes the held-out conversation's candidates from there instead of tuning
encoder_full again: they are exactly what it would gather.

    python benchmarks/crossfit_encoder.py conv-26,conv-42,conv-44 [--out FILE.json] [--fold-cache DIR]

About 15 min per fold on 2 CPU cores with the fold cache (879-941 s measured)."""
import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from locomo_crossval import KS, REPO, ranks, recall, this_version

from ctxmem_plugin.encoders import DEFAULT_MODEL, SentenceEncoder, default_model_path
from ctxmem_plugin.training.encoder_tuning import EncoderTuneConfig, evidence_pairs, tune_encoder
from ctxmem_plugin.training.trainer import TrainConfig, score_examples, train
from ctxmem_plugin.training.data import (
    Dataset,
    gather,
    load_conversations,
    load_dataset,
)

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("folds", help="comma-separated sample ids to hold out")
parser.add_argument("--file", default=str(REPO.parent / "shared/data/locomo/locomo_dev.json"))
parser.add_argument("--out", default=None, help="default: results/crossfit_encoder.json with --mixed-no-negatives, "
                    "results/crossfit_encoder_2ep.json without")
parser.add_argument("--mixed-no-negatives", action="store_true", help="tune as first measured: mixed batches, no hard negatives")
parser.add_argument("--fold-cache", default=None, help="take the held-out conversation's candidates from this fold cache")
args = parser.parse_args()
# Each tuning keeps its own results file: a rerun of one must not overwrite the other's.
args.out = args.out or str(REPO / "benchmarks/results" / ("crossfit_encoder.json" if args.mixed_no_negatives else "crossfit_encoder_2ep.json"))
TUNING = EncoderTuneConfig(by_conversation=False, hard_negative_pool=0) if args.mixed_no_negatives else EncoderTuneConfig()
MINER = SentenceEncoder(device="cpu") if TUNING.hard_negative_pool else None
torch.set_num_threads(2)
convs = load_conversations([args.file])
names = [c.name for c in convs]
folds = args.folds.split(",")
out = []

def collect(cs: list, enc: SentenceEncoder) -> Dataset:
    return gather(cs, enc, cues_per_conversation=200, followups_per_conversation=100, focus_rate=0.5, focus_pool=50,
                  benchmark_followups=True, followup_context="question")

def merge(parts: list[Dataset]) -> Dataset:
    """One dataset of several gathered ones (example indices shifted to the joined conversations)."""
    first = parts[0]
    convs_, exs = [], []
    for p in parts:
        off = len(convs_)
        convs_ += p.conversations
        exs += [replace(e, conv=e.conv + off) for e in p.examples]
    return replace(first, conversations=convs_, examples=exs)

def cached_held_out(held: str) -> Dataset:
    """The held-out conversation alone, as a ``locomo_crossval.py --fold-cache`` run gathered it."""
    (path,) = [p for p in Path(args.fold_cache).glob(f"{held}-*.npz") if not p.name.endswith(".partial.npz") and this_version(p)]
    data = load_dataset(path)
    (pos,) = [i for i, c in enumerate(data.conversations) if c.name == held]
    return replace(data, conversations=[data.conversations[pos]], examples=[replace(e, conv=0) for e in data.examples if e.conv == pos])

for held in folds:
    t0 = time.perf_counter()
    train_c = [c for c in convs if c.name != held]
    a, b = train_c[0::2], train_c[1::2]
    with tempfile.TemporaryDirectory() as tmp:
        encs = {}
        for key, group in (("A", a), ("B", b), ("full", train_c)):
            if key == "full" and args.fold_cache:
                continue
            pairs = evidence_pairs(group, miner=MINER, pool=TUNING.hard_negative_pool, seed=TUNING.seed)
            r = tune_encoder(pairs, Path(tmp) / key, base=default_model_path(), base_name=DEFAULT_MODEL, cfg=TUNING)
            encs[key] = SentenceEncoder(Path(tmp) / key, device="cpu", name=r.name)
        held_data = cached_held_out(held) if args.fold_cache else collect([c for c in convs if c.name == held], encs["full"])
        data = merge([collect(a, encs["B"]), collect(b, encs["A"]), held_data])
    held_idx = len(train_c)
    train_data = replace(data, examples=[e for e in data.examples if e.conv != held_idx])
    sub = replace(data, examples=[e for e in data.examples if e.conv == held_idx])
    full_gold = [set(p) for q, p in convs[names.index(held)].questions]
    row = {"held_out": held, "seconds_prep": time.perf_counter() - t0}
    for kind, key in (("question", "questions"), ("followup-eval", "follow-ups")):
        idx = [i for i, e in enumerate(sub.examples) if e.kind == kind]
        row[key] = {"idx": idx}
    for name, use_slots in (("ctxmem", True), ("no-slots", False)):
        model, log = train(train_data, replace(TrainConfig(), use_slots=use_slots))
        scores = score_examples(model, sub, list(range(len(sub.examples))), 32)
        for key in ("questions", "follow-ups"):
            idx = row[key]["idx"]
            r = ranks(sub, idx, [scores[i] for i in idx])
            row[key][name] = {f"recall@{k}": recall(r, full_gold, k) for k in KS}
    for key in ("questions", "follow-ups"):
        del row[key]["idx"]
    print(held, json.dumps({k: row[k] for k in ("questions", "follow-ups")}), f"{time.perf_counter() - t0:.0f}s", flush=True)
    out.append(row)
    Path(args.out).write_text(json.dumps({"folds": out}, indent=1))  # after every fold: a long run keeps what it did
