"""Leave-one-conversation-out cross-validation of the ctxmem model on the LoCoMo dev file.

For each of the dev conversations: train on the others (their questions, self-supervised cues
and follow-ups from every training conversation), then rank the held-out conversation's
questions (categories 1-4) and measure turn-level recall. Two models per fold, trained
identically: with slots (``ctxmem``) and without (``no-slots``, the same scorer on the same
features and candidates), next to the untrained ``hybrid`` ranking. No figure here comes from a
conversation the model was trained on.

Questions asked in a running thread (follow-ups at several depths, topic changes) are the
conversational benchmark's: ``benchmarks/conversation.py``.

``--tune-encoder`` measures what ``ctxmem-plugin train`` does with labelled logs: in each fold
the encoder is first fine-tuned on the training conversations' (question, evidence) pairs
alone, and every conversation is then gathered with that fold's encoder (about 7 min more per
fold on 2 CPU cores). ``--fold-cache DIR`` keeps each fold's gathered candidates there, keyed
by the data file and every setting they depend on, so that a later run that changes only the
scorer's settings skips the tuning and the gathering. The fold's tuned encoder is kept there
too, keyed by the settings it depends on alone: data gathered again with another version's
features reuses it.

``--fit-fusion`` (with ``--tune-encoder``) measures the fusion refit that ``train`` makes with
labelled logs: in each fold the fusion is chosen on the training conversations' questions
(``fusion_fit.fit_fusion``), and every conversation is gathered again with it before the models
are trained. The untrained ``hybrid`` row is then the refit fusion; ``hybrid-shipped`` is the
shipped one on the same encoder. About 4 min more per fold (plus the encoder's tuning again
when the fold cache does not hold it: tuning is deterministic, and the re-gathered questions'
candidates and cosines are checked against the first gathering's).

``--scorer-seeds 0,1,2`` trains each model once per seed on the same candidates (the encoder,
the fusion and the gathering keep ``--seed``). A fold's row then holds the mean over the seeds
under the model's name and each seed's figures under ``"<model> seeds"``, so that a change to
the scorer can be told from the luck of one initialisation. ``"<model> ensemble"`` then ranks
by the mean of the seeds' scores.

``--members N`` (default: ``train``'s, 3) trains each model as ``train`` does: N members from
seeds SEED..SEED+N-1, scored by their mean. Member k is trained exactly as a one-member model
with seed SEED+k (tested), so ``--members 1 --scorer-seeds 0,1,2`` gives the 3-member model's
ranking as its ``ensemble`` row, beside each member's own figures. With ``--members N``,
repeats that share no member take seeds N apart (``--scorer-seeds 0,3,6`` for 3).

``--device cuda`` runs the encoders (mining, tuning, gathering) and the scorers' training on
a GPU; scoring the held-out examples stays on the CPU. A GPU rounds differently from the CPU,
so its figures are compared with runs on the same device (its fold-cache keys are its own).

``--save-scores DIR`` writes each fold's held-out examples (their kind, candidates and each
trained model's score, the seeds' mean) to ``DIR/HELD.npz``, to study the ranking afterwards
without training again.

    python benchmarks/locomo_crossval.py [--epochs 5] [--folds all] [--cache DATA.npz]
        [--scorer-seeds 0,1,2] [--members 3] [--cue-weight 0.3]
        [--tune-encoder [--encoder-epochs 2] [--encoder-lr 2e-5] [--encoder-hard-negatives K]
                        [--fold-cache DIR] [--fit-fusion]]
        [--device cpu|cuda] [--save-scores DIR] [--out benchmarks/results/crossval.json]"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from ctxmem_plugin.encoders import DEFAULT_MODEL, SentenceEncoder
from ctxmem_plugin.training.encoder_tuning import EncoderTuneConfig
from ctxmem_plugin.training.pipeline import PipelineOptions, training_encoder
from ctxmem_plugin.encoders.tuned import ENCODER_DIR
from ctxmem_plugin.training.fusion_fit import fit_fusion
from ctxmem_plugin.retrieval.features import FEATURE_NAMES
from ctxmem_plugin.retrieval.hybrid import RetrievalConfig
from ctxmem_plugin.training.trainer import TrainConfig, score_examples, train
from ctxmem_plugin.training.data import (
    FOLLOWUPS_PER_CONVERSATION,
    Dataset,
    gather,
    load_conversations,
    load_dataset,
    save_dataset,
)

REPO = Path(__file__).resolve().parents[1]
KS = (1, 5, 10, 20)
DENSE = FEATURE_NAMES.index("dense")  # the candidate's cosine to the query, a feature column


def this_version(path: Path) -> bool:
    """Whether a fold cache's gathering has this version's feature columns (its log says)."""
    return json.loads(path.with_suffix(".json").read_text()).get("features") == list(FEATURE_NAMES)


def recall(ranked_positions: list[np.ndarray], gold: list[set[int]], k: int) -> float:
    return float(np.mean([len(g.intersection(r[:k].tolist())) / len(g) for r, g in zip(ranked_positions, gold)]))


def by_category(ranked: list[np.ndarray], gold: list[set[int]], categories: list[int]) -> dict[str, dict[str, float]]:
    """Recall of each LoCoMo question category (1 multi-hop, 2 temporal, 3 open-domain, 4 single-hop)."""
    out: dict[str, dict[str, float]] = {}
    for cat in sorted(set(categories)):
        sel = [j for j, c in enumerate(categories) if c == cat]
        out[str(cat)] = {"count": len(sel), **{f"recall@{k}": recall([ranked[j] for j in sel], [gold[j] for j in sel], k) for k in KS}}
    return out


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
    parser.add_argument("--scorer-seeds", default=None,
                        help="comma-separated seeds: train each model once per seed and report their mean (default: --seed)")
    parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    parser.add_argument("--cue-weight", type=float, default=TrainConfig.cue_weight,
                        help="weight of the self-supervised examples' loss where a batch holds questions")
    parser.add_argument("--members", type=int, default=TrainConfig.members,
                        help="members per model (seeds SEED..SEED+N-1, scores averaged), as train --members")
    parser.add_argument("--slot-refresh", type=int, default=TrainConfig.slot_refresh)
    parser.add_argument("--only", default="ctxmem,no-slots", help="which trained models to run")
    parser.add_argument("--followups", type=int, default=FOLLOWUPS_PER_CONVERSATION, help="self-supervised follow-ups per conversation")
    parser.add_argument("--focus-rate", type=float, default=TrainConfig.focus_rate)
    parser.add_argument("--focus-pool", type=int, default=TrainConfig.focus_pool)
    parser.add_argument("--tune-encoder", action="store_true",
                        help="fine-tune the encoder on each fold's training conversations first")
    parser.add_argument("--encoder-epochs", type=int, default=EncoderTuneConfig.epochs)
    parser.add_argument("--encoder-lr", type=float, default=EncoderTuneConfig.lr, help="learning rate of encoder tuning")
    parser.add_argument("--encoder-negatives", type=int, default=EncoderTuneConfig.hard_negative_pool,
                        help="hard negatives drawn from each question's top-N non-evidence turns (0: none)")
    parser.add_argument("--encoder-hard-negatives", type=int, default=EncoderTuneConfig.hard_negatives,
                        help="hard negatives each question brings to encoder tuning")
    parser.add_argument("--fold-cache", default=None,
                        help="with --tune-encoder: reuse/store each fold's gathered candidates in this directory")
    parser.add_argument("--fit-fusion", action="store_true",
                        help="with --tune-encoder: refit the fusion on each fold's training questions, as train does")
    parser.add_argument("--device", default="cpu",
                        help="where encoders run and tune and scorers train (cpu, cuda); scoring stays on the CPU")
    parser.add_argument("--save-scores", default=None,
                        help="write each fold's held-out candidates and trained models' scores (seeds averaged) to DIR/HELD.npz")
    args = parser.parse_args()
    if args.tune_encoder and args.cache:
        parser.error("--cache cannot be used with --tune-encoder: each fold gathers with its own encoder (see --fold-cache)")
    if args.fold_cache and not args.tune_encoder:
        parser.error("--fold-cache goes with --tune-encoder; without it, --cache keeps the one gathered dataset")
    if args.fit_fusion and not args.tune_encoder:
        parser.error("--fit-fusion goes with --tune-encoder")

    config = {**vars(args), "file": Path(args.file).name, "cache": args.cache and Path(args.cache).name,
              "fold_cache": args.fold_cache and Path(args.fold_cache).name, "out": Path(args.out).name}
    convs = load_conversations([args.file])
    names = [c.name for c in convs]
    kinds = {"question": "questions"}
    file_sha = hashlib.sha256(Path(args.file).read_bytes()).hexdigest()

    def fold_cache_path(held: str, retrieval: RetrievalConfig | None = None, *, encoder_only: bool = False) -> Path:
        # Everything a fold's gathered data depends on; a scorer setting is not among them.
        # ``encoder_only``: what its tuned encoder depends on, which names the encoder's directory.
        depends: dict[str, object] = {"file": file_sha, "held_out": held, "seed": args.seed, "encoder_epochs": args.encoder_epochs,
                   "encoder_negatives": args.encoder_negatives,
                   "cues": args.cues, "followups": args.followups, "focus_rate": args.focus_rate,
                   "focus_pool": args.focus_pool, "encoder": DEFAULT_MODEL}
        if args.encoder_hard_negatives != 1:  # added later: caches made before it keep their keys
            depends["encoder_hard_negatives"] = args.encoder_hard_negatives
        if args.encoder_lr != EncoderTuneConfig.lr:  # likewise
            depends["encoder_lr"] = args.encoder_lr
        if args.device != "cpu":  # another device rounds differently: its data is its own
            depends["device"] = args.device
        if retrieval is not None and retrieval != RetrievalConfig():
            depends["retrieval"] = retrieval.to_dict()
        if not encoder_only:  # gathered features change with the version; a tuned encoder does not
            depends["features"] = list(FEATURE_NAMES)
        key = hashlib.sha256(json.dumps(depends, sort_keys=True).encode()).hexdigest()[:16]
        return Path(args.fold_cache) / f"{held}-{key}.npz"

    def collect(encoder: SentenceEncoder, retrieval: RetrievalConfig | None = None) -> Dataset:
        return gather(
            convs, encoder, retrieval=retrieval, cues_per_conversation=args.cues, followups_per_conversation=args.followups,
            focus_rate=args.focus_rate, focus_pool=args.focus_pool,
        )

    def save_fold(data: Dataset, path: Path, log: dict[str, object]) -> None:
        # The .npz is renamed into place last: an interrupted run leaves no half-written fold.
        path.parent.mkdir(parents=True, exist_ok=True)
        # The feature columns, for the scripts that pick a fold's gathering by its log.
        path.with_suffix(".json").write_text(json.dumps({**log, "features": list(FEATURE_NAMES)}))
        partial = path.with_name(path.stem + ".partial.npz")
        save_dataset(data, partial)
        partial.replace(path)

    def tune_fold_encoder(held: str, directory: Path) -> tuple[SentenceEncoder, dict[str, object]]:
        """The fold's encoder, tuned as train tunes it on its training conversations alone, kept in ``directory``."""
        tune_cfg = EncoderTuneConfig(epochs=args.encoder_epochs, lr=args.encoder_lr, seed=args.seed,
                                     hard_negative_pool=args.encoder_negatives, hard_negatives=args.encoder_hard_negatives)
        options = PipelineOptions(device=args.device, tune_encoder=True, encoder_tuning=tune_cfg)
        t0 = time.perf_counter()
        encoder, _, tuned = training_encoder([c for c in convs if c.name != held], directory, options, args.device)
        entry = tuned["encoder_tuning"]
        log = {"pairs": entry["pairs"], "hard_negatives": entry["hard_negatives"], "losses": entry["losses"],
               "tune_seconds": entry["seconds"], "seconds": time.perf_counter() - t0, "name": entry["name"]}
        print(f"{held} encoder: {entry['pairs']} pairs, loss {entry['losses'][-1]:.3f}, tuned in {entry['seconds']:.0f}s", flush=True)
        assert isinstance(encoder, SentenceEncoder)
        return encoder, log

    def fold_encoder(held: str, tmp: Path) -> tuple[SentenceEncoder, dict[str, object]]:
        """The fold's tuned encoder: from the fold cache when it holds it, else tuned (and kept there)."""
        if args.fold_cache:
            # Named by what the encoder depends on alone: data gathered with other features reuses it.
            base = fold_cache_path(held, encoder_only=True)
            directory, meta = base.with_suffix(".encoder"), base.with_suffix(".json")
            if (directory / ENCODER_DIR).is_dir() and meta.is_file() and "name" in json.loads(meta.read_text()):
                name = json.loads(meta.read_text())["name"]
                return SentenceEncoder(directory / ENCODER_DIR, device=args.device, name=name), {"cached": True}
            encoder, log = tune_fold_encoder(held, directory)
            # Its tuning log, with its name, beside it (merged into the log of data gathered before).
            meta.write_text(json.dumps({**(json.loads(meta.read_text()) if meta.is_file() else {}), **log}))
            return encoder, log
        return tune_fold_encoder(held, tmp)

    def untrained(data: Dataset, held: str) -> dict[str, dict[str, object]]:
        """Pool recall, ``hybrid`` and ``dense`` recall of the held-out questions."""
        sub = data.subset({held})
        # Evidence outside the candidate pool still counts as missed: recall is over all evidence.
        full_gold = [set(p) for q, p in convs[names.index(held)].questions]
        categories = convs[names.index(held)].categories
        out: dict[str, dict[str, object]] = {}
        for kind, key in kinds.items():
            idx = [i for i, e in enumerate(sub.examples) if e.kind == kind]
            if not idx:
                continue
            assert len(idx) == len(full_gold)
            part: dict[str, object] = {"count": len(idx)}
            gold = [set(sub.examples[i].cand[sub.examples[i].labels].tolist()) for i in idx]
            part["pool_recall"] = float(np.mean([len(g) / len(f) for g, f in zip(gold, full_gold)]))
            base = ranks(sub, idx, [sub.examples[i].features[:, 0] for i in idx])
            part["hybrid"] = {f"recall@{k}": recall(base, full_gold, k) for k in KS}
            cosine = ranks(sub, idx, [sub.examples[i].features[:, DENSE] for i in idx])
            part["dense"] = {f"recall@{k}": recall(cosine, full_gold, k) for k in KS}
            if categories:
                part["by_category"] = {"hybrid": by_category(base, full_gold, categories),
                                       "dense": by_category(cosine, full_gold, categories)}
            out[key] = part
        return out

    started = time.perf_counter()
    data: Dataset | None = None
    if args.cache and Path(args.cache).is_file():
        data = load_dataset(Path(args.cache))
    elif not args.tune_encoder:
        data = collect(SentenceEncoder(device=args.device))
        if args.cache:
            save_dataset(data, Path(args.cache))
    gather_s = time.perf_counter() - started
    if data is not None:
        print(f"gathered {data.describe()} in {gather_s:.0f}s", flush=True)
    folds = names if args.folds == "all" else args.folds.split(",")
    methods = [m for m in ("ctxmem", "no-slots") if m in args.only.split(",")]
    scorer_seeds = [int(x) for x in args.scorer_seeds.split(",")] if args.scorer_seeds else [args.seed]
    rows = []
    for held in folds:
        train_names = set(names) - {held}
        tuning: dict[str, object] = {}
        cached = fold_cache_path(held) if args.fold_cache else None
        if cached is not None and cached.is_file():
            data = load_dataset(cached)
            # The figures of the run that tuned and gathered it, so the row reads as that run's.
            tuning = {**json.loads(cached.with_suffix(".json").read_text()), "cached": True}
            print(f"{held} encoder: tuned and gathered data read from {cached}", flush=True)
        elif args.tune_encoder:
            # The held-out conversation's pairs never reach the encoder.
            with tempfile.TemporaryDirectory(prefix="ctxmem-cv-encoder-") as tmp:
                encoder, tuning = fold_encoder(held, Path(tmp))
                t0 = time.perf_counter()
                data = collect(encoder)
            tuning["gather_seconds"] = time.perf_counter() - t0
            print(f"{held} gathered in {tuning['gather_seconds']:.0f}s", flush=True)
            if cached is not None:
                save_fold(data, cached, tuning)
        assert data is not None
        row: dict[str, object] = {"held_out": held}
        saved: dict[str, np.ndarray] = {}
        if tuning:
            row["encoder"] = tuning
        if args.fit_fusion:
            # Chosen on the training conversations' questions alone, as train chooses it.
            fit = fit_fusion(data.subset(train_names), convs, min_questions=1)
            assert fit is not None
            shipped = untrained(data, held)
            refit_path = fold_cache_path(held, fit.config) if args.fold_cache else None
            if refit_path is not None and refit_path.is_file():
                refit = load_dataset(refit_path)
                fusion_log: dict[str, object] = {**json.loads(refit_path.with_suffix(".json").read_text()), "cached": True}
            else:
                with tempfile.TemporaryDirectory(prefix="ctxmem-cv-encoder-") as tmp:
                    encoder, retune = fold_encoder(held, Path(tmp))
                    t0 = time.perf_counter()
                    refit = collect(encoder, fit.config)
                fusion_log = {**fit.describe(), "gather_seconds": time.perf_counter() - t0, "encoder": retune}
                # Candidates do not depend on the fusion, so the questions' candidates and cosines must
                # be the first gathering's: this also shows the encoder was rebuilt exactly.
                for a, b in zip(data.examples, refit.examples):
                    if a.kind == "question":
                        assert np.array_equal(a.cand, b.cand) and np.allclose(a.features[:, DENSE], b.features[:, DENSE], atol=1e-5)
                if refit_path is not None:
                    save_fold(refit, refit_path, fusion_log)
            data = refit
            row["fusion"] = fusion_log
            print(f"{held} fusion refit: {fit.describe()['chosen']}", flush=True)
        train_data = data.subset(train_names)
        sub = data.subset({held})
        full_gold = [set(p) for q, p in convs[names.index(held)].questions]
        categories = convs[names.index(held)].categories
        idx = {kind: [i for i, e in enumerate(sub.examples) if e.kind == kind] for kind in kinds}
        row["questions"] = len(idx["question"])
        row.update(untrained(data, held))
        if args.fit_fusion:
            for key, part in shipped.items():
                row[key]["hybrid-shipped"] = part["hybrid"]  # type: ignore[index]
        for name, use_slots in (("ctxmem", True), ("no-slots", False)):
            if name not in methods:
                continue
            per_seed: dict[str, list[dict[str, float]]] = {key: [] for key in kinds.values() if key in row}
            per_seed_cat: dict[str, list[dict[str, dict[str, float]]]] = {key: [] for key in per_seed}
            secs, losses = 0.0, []
            seed_scores: list[list[np.ndarray]] = []
            for scorer_seed in scorer_seeds:
                cfg = replace(TrainConfig(), epochs=args.epochs, seed=scorer_seed, use_slots=use_slots, lr=args.lr,
                              batch_size=args.batch_size, cue_weight=args.cue_weight,
                              slot_refresh=args.slot_refresh,
                              focus_rate=args.focus_rate, focus_pool=args.focus_pool, members=args.members)
                t0 = time.perf_counter()
                model, log = train(train_data, cfg, device=args.device)
                secs += time.perf_counter() - t0
                model.to("cpu")  # score_examples batches on the CPU
                losses.append(log[-1]["loss"])
                scores = score_examples(model, sub, list(range(len(sub.examples))), cfg.write_chunk)
                seed_scores.append(scores)
                for kind, key in kinds.items():
                    if key in per_seed:
                        r = ranks(sub, idx[kind], [scores[i] for i in idx[kind]])
                        per_seed[key].append({f"recall@{k}": recall(r, full_gold, k) for k in KS})
                        if categories:
                            per_seed_cat[key].append(by_category(r, full_gold, categories))
            for key, seeds_figures in per_seed.items():
                row[key][name] = {m: float(np.mean([f[m] for f in seeds_figures])) for m in seeds_figures[0]}  # type: ignore[index]
                if categories:  # each category's recall, mean over the seeds
                    cats_of = per_seed_cat[key]
                    row[key]["by_category"][name] = {  # type: ignore[index]
                        c: {m: cats_of[0][c][m] if m == "count" else float(np.mean([f[c][m] for f in cats_of])) for m in cats_of[0][c]}
                        for c in cats_of[0]
                    }
                if len(scorer_seeds) > 1:
                    row[key][f"{name} seeds"] = seeds_figures  # type: ignore[index]
            # The seeds' scorers as one ensemble: each candidate's scores averaged over the seeds.
            mean_scores = [np.mean([s[i] for s in seed_scores], axis=0) for i in range(len(sub.examples))]
            if len(scorer_seeds) > 1:
                for kind, key in kinds.items():
                    if key in per_seed:
                        r = ranks(sub, idx[kind], [mean_scores[i] for i in idx[kind]])
                        row[key][f"{name} ensemble"] = {f"recall@{k}": recall(r, full_gold, k) for k in KS}  # type: ignore[index]
                        if categories:
                            row[key]["by_category"][f"{name} ensemble"] = by_category(r, full_gold, categories)  # type: ignore[index]
            if args.save_scores:
                # Every held-out example's candidates and score (mean over the seeds), to study the
                # ranking later without training again; kinds and question order as in the dataset.
                saved[f"{name}/kind"] = np.array([e.kind for e in sub.examples])
                for i, e in enumerate(sub.examples):
                    saved[f"{name}/cand/{i}"] = e.cand
                    saved[f"{name}/score/{i}"] = mean_scores[i].astype(np.float32)
            runs = len(scorer_seeds) * args.epochs
            row[name] = {"train_seconds": secs, "seconds_per_epoch": secs / runs, "final_loss": float(np.mean(losses)),
                         "scorer_seeds": scorer_seeds}
        if args.save_scores:
            Path(args.save_scores).mkdir(parents=True, exist_ok=True)
            np.savez_compressed(Path(args.save_scores) / f"{held}.npz", **saved)
        rows.append(row)
        # Written after every fold, so that an interrupted run keeps what it measured.
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"config": config, "folds": rows, "complete": False}, indent=1))
        for key in kinds.values():
            if key not in row:
                continue
            part = row[key]  # type: ignore[assignment]
            trained = "".join(
                f"| {m} R@1 {part[m]['recall@1']:.3f} R@10 {part[m]['recall@10']:.3f} "  # type: ignore[index]
                for m in methods
            )
            print(f"{held} {key:<10}: n={part['count']:4d} pool {part['pool_recall']:.3f} | hybrid R@1 {part['hybrid']['recall@1']:.3f} "  # type: ignore[index]
                  f"R@10 {part['hybrid']['recall@10']:.3f} {trained}", flush=True)  # type: ignore[index]
        print(f"{held} epoch seconds: " + ", ".join(f"{m} {row[m]['seconds_per_epoch']:.1f}" for m in methods), flush=True)  # type: ignore[index]
    summary: dict[str, dict[str, float]] = {}
    for key in kinds.values():
        have = [r for r in rows if key in r]
        if not have:
            continue
        print(f"\n{key}: mean over folds (std)")
        print(f"{'method':<14}" + "".join(f"{'R@' + str(k):>16}" for k in KS))
        for method in ("dense", "hybrid-shipped", "hybrid", *methods, *(f"{m} ensemble" for m in methods)):
            if any(method not in r[key] for r in have):  # type: ignore[operator]
                continue
            for k in KS:
                vals = [r[key][method][f"recall@{k}"] for r in have]  # type: ignore[index]
                summary[f"{key} {method} recall@{k}"] = {"mean": float(np.mean(vals)), "std": float(np.std(vals))}
            print(f"{method:<14}" + "".join(
                f"{summary[f'{key} {method} recall@{k}']['mean']:>9.3f} ±{summary[f'{key} {method} recall@{k}']['std']:.3f}" for k in KS))
        if len(scorer_seeds) > 1:
            # Each seed's mean over the folds: how far one initialisation moves the table.
            for method in methods:
                for j, scorer_seed in enumerate(scorer_seeds):
                    for k in KS:
                        vals = [r[key][f"{method} seeds"][j][f"recall@{k}"] for r in have]  # type: ignore[index]
                        summary[f"{key} {method} seed {scorer_seed} recall@{k}"] = {"mean": float(np.mean(vals)), "std": float(np.std(vals))}
                    print(f"{method + ' s' + str(scorer_seed):<14}" + "".join(
                        f"{summary[f'{key} {method} seed {scorer_seed} recall@{k}']['mean']:>9.3f}       " for k in KS))
        with_cats = [r for r in have if "by_category" in r[key]]  # type: ignore[operator]
        if with_cats:
            # Pooled over the folds' questions (each fold's recall weighted by its count).
            print(f"\n{key} by LoCoMo category (1 multi-hop, 2 temporal, 3 open-domain, 4 single-hop), R@1 / R@10")
            for method in with_cats[0][key]["by_category"]:  # type: ignore[index]
                cells = []
                for cat in ("1", "2", "3", "4"):
                    parts = [r[key]["by_category"][method][cat] for r in with_cats if cat in r[key]["by_category"][method]]  # type: ignore[index]
                    n = sum(p["count"] for p in parts)
                    if not n:
                        continue
                    pooled = {f"recall@{k}": sum(p["count"] * p[f"recall@{k}"] for p in parts) / n for k in KS}
                    summary[f"{key} {method} category {cat}"] = {"count": n, **pooled}
                    cells.append(f"{cat}: {pooled['recall@1']:.3f} / {pooled['recall@10']:.3f} (n={n})")
                print(f"{method:<18}" + "   ".join(cells))
    Path(args.out).write_text(json.dumps({"config": config, "folds": rows, "summary": summary, "gather_seconds": gather_s, "data": data.describe() if data is not None else None}, indent=1))


if __name__ == "__main__":
    main()
