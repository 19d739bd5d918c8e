"""Readers beside a writer: processes searching a memory while another adds, deletes and forgets.

    nice -n 10 python benchmarks/readers.py [--seconds 60] [--readers 3] [--seed 0]
        [--out benchmarks/results/readers.json]

One writer process adds batches (1 to 10 turns) to three ``churn`` namespaces, replaces a keyed
turn, deletes two turns and every fourth round forgets one of the namespaces, as fast as it can,
with an (untrained, small) model so that its writes update slot states too. Each reader process
opens the memory read-only, half of them with that model, and searches in turn with every method
(``bm25``, ``dense``, ``hybrid``, and ``ctxmem`` when it has the model) under a random prefix.
Counted: searches, errors (any exception), hits outside the prefix searched, and ids returned
that the memory never held (every id the writer stored is recorded; the others are the turns
stored before the run). The encoder is the model-free hashing one (``hash-64``): the work
measured is the store's, not the encoder's.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from tempfile import TemporaryDirectory

from ctxmem_plugin.encoders.hashing import HashEncoder
from ctxmem_plugin.memory import ContextMemory
from ctxmem_plugin.storage.ann import IndexConfig

REPO = Path(__file__).resolve().parents[1]
WORDS = "dog cat paris guitar pottery lisbon tea coffee running chess garden bakery violin river cafe".split()
PREFIXES = [(), ("keep",), ("keep", "a"), ("churn",), ("churn", "0"), ("churn", "1"), ("churn", "2")]
METHODS = ("bm25", "dense", "hybrid", "ctxmem")
# The approximate index takes over from 200 turns of a prefix: the run goes through both dense paths.
INDEX = IndexConfig(exact_limit=200)

CHILD = """
import sys
sys.path.insert(0, {bench!r})
import readers
readers.{role}(*{args!r})
"""


def sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9)))


def save_small_model(directory: Path) -> None:
    """An untrained model of the hashing encoder's width (what the tests use)."""
    from ctxmem_plugin.reranker.checkpoint import save_model
    from ctxmem_plugin.reranker.model import CtxMemModel, ModelConfig
    from ctxmem_plugin.reranker.scorer import ScorerConfig
    from ctxmem_plugin.reranker.slots import SlotConfig
    from ctxmem_plugin.retrieval.features import FEATURE_NAMES

    config = ModelConfig(
        slots=SlotConfig(dim=64, num_slots=4, feature_dim=8),
        scorer=ScorerConfig(num_features=len(FEATURE_NAMES), dim=64, hidden=8, bilinear_rank=4),
        encoder="hash-64", feature_names=FEATURE_NAMES,
    )
    save_model(CtxMemModel(config), directory, extra={"runtime": {"pool": 50, "write_chunk": 4}})


def started(out: str) -> float:
    """Say this process is ready (``OUT.ready``), wait for the go (``go`` beside it); the end time."""
    Path(out + ".ready").touch()
    go = Path(out).parent / "go"
    while not go.exists():
        time.sleep(0.01)
    return float(go.read_text())


def writer(memory: str, model: str, seed: int, out: str) -> None:
    """Add, replace, delete and forget until the end time; record every id stored."""
    rng = random.Random(seed)
    ids: list[int] = []
    counts: Counter[str] = Counter()
    seconds: Counter[str] = Counter()  # time spent in each kind of write
    with ContextMemory(memory, encoder=HashEncoder(), model=model, index=INDEX) as mem:
        end = started(out)
        i = 0
        while time.time() < end:
            space = ("churn", str(i % 3))
            t0 = time.perf_counter()
            ids += [t for t in mem.add([{"role": "user", "content": sentence(rng)} for _ in range(rng.randint(1, 10))], space) if t >= 0]
            ids += [t for t in mem.add({"content": sentence(rng), "key": "profile"}, space) if t >= 0]
            counts["adds"] += 2
            t1 = time.perf_counter()
            victims = [t.id for t in mem.list_turns(("churn",), limit=2, offset=rng.randint(0, 5))]
            counts["deleted"] += len(mem.delete(victims))
            t2 = time.perf_counter()
            seconds["add"] += t1 - t0
            seconds["delete"] += t2 - t1
            if i % 4 == 3:
                counts["forgotten"] += mem.forget(("churn", str(rng.randint(0, 2))))
                counts["forgets"] += 1
                seconds["forget"] += time.perf_counter() - t2
            i += 1
        counts["rounds"] = i
    Path(out).write_text(json.dumps({"ids": ids, **counts, "seconds": {k: round(v, 2) for k, v in seconds.items()}}))


def reader(memory: str, model: str | None, seed: int, out: str) -> None:
    """Search with every method until the end time; count what went wrong."""
    rng = random.Random(seed)
    methods = METHODS if model else METHODS[:3]
    searches: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    outside = 0
    returned: set[int] = set()
    with ContextMemory(memory, encoder=HashEncoder(), model=model, read_only=True, index=INDEX) as mem:
        mem.search("warm up", ("keep",), k=1, method=methods[-1])  # the model's first use loads it
        end = started(out)
        while time.time() < end:
            for method in methods:
                prefix = rng.choice(PREFIXES)
                try:
                    hits = mem.search(sentence(rng), prefix, k=10, method=method)
                except Exception as exc:  # counted: what this benchmark measures
                    errors[f"{method}: {type(exc).__name__}: {str(exc)[:120]}"] += 1
                    continue
                finally:
                    searches[method] += 1
                outside += sum(h.namespace[: len(prefix)] != prefix for h in hits)
                returned.update(h.id for h in hits)
    Path(out).write_text(json.dumps({"model": bool(model), "searches": searches, "errors": errors,
                                     "outside": outside, "returned": sorted(returned)}))


def spawn(role: str, *args: object) -> subprocess.Popen:
    code = CHILD.format(bench=str(REPO / "benchmarks"), role=role, args=args)
    return subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)


def run(seconds: float, readers: int, seed: int) -> dict:
    rng = random.Random(seed)
    with TemporaryDirectory(prefix="ctxmem-readers-") as tmp:
        root = Path(tmp)
        memory, model = root / "memory", root / "model"
        save_small_model(model)
        with ContextMemory(memory, encoder=HashEncoder(), model=model, index=INDEX) as mem:
            for space in (("keep", "a"), ("keep", "b")):
                mem.add([{"role": "user", "content": sentence(rng)} for _ in range(150)], space)
            before = {t.id for t in mem.list_turns(())}
        procs = [spawn("writer", str(memory), str(model), seed, str(root / "writer.json"))]
        procs += [spawn("reader", str(memory), str(model) if r % 2 == 0 else None, seed + r + 1,
                        str(root / f"reader{r}.json")) for r in range(readers)]
        while len(list(root.glob("*.ready"))) < len(procs) and all(p.poll() is None for p in procs):
            time.sleep(0.05)
        (root / "go.tmp").write_text(str(time.time() + seconds))
        (root / "go.tmp").rename(root / "go")
        failed = []
        for proc in procs:
            _, err = proc.communicate()
            if proc.returncode != 0:
                failed.append(err.strip().splitlines()[-1] if err.strip() else f"exit {proc.returncode}")
        written = json.loads((root / "writer.json").read_text()) if (root / "writer.json").exists() else {"ids": []}
        reads = [json.loads((root / f"reader{r}.json").read_text()) for r in range(readers)
                 if (root / f"reader{r}.json").exists()]
        with ContextMemory(memory, encoder=HashEncoder(), read_only=True) as mem:
            kept = {t.id for t in mem.list_turns(("keep",))}
            final = mem.stats()["turns"]
    held = before | set(written["ids"])
    searches: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    for r in reads:
        searches.update(r["searches"])
        errors.update(r["errors"])
    return {
        "seconds": seconds, "readers": readers, "readers_with_model": sum(r["model"] for r in reads), "seed": seed,
        "searches": sum(searches.values()), "searches_by_method": dict(searches),
        "errors": sum(errors.values()), "error_kinds": dict(errors.most_common(10)),
        "outside_namespace": sum(r["outside"] for r in reads),
        "unknown_ids": len({i for r in reads for i in r["returned"]} - held),
        "keep_intact": kept == before,
        "writer": {k: v for k, v in written.items() if k != "ids"} | {"turns_stored": len(written["ids"]),
                                                                     "turns_at_end": final},
        "process_failures": failed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--readers", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "readers.json")
    args = parser.parse_args()
    result = run(args.seconds, args.readers, args.seed)
    w = result["writer"]
    print(f"{result['readers']} readers ({result['readers_with_model']} with a model) beside a writer for {args.seconds:g} s")
    print(f"writer: {w.get('rounds', 0)} rounds, {w.get('turns_stored', 0)} turns stored, {w.get('deleted', 0)} deleted, "
          f"{w.get('forgets', 0)} forgets ({w.get('forgotten', 0)} turns); seconds in "
          + ", ".join(f"{k} {v}" for k, v in w.get("seconds", {}).items()))
    print("searches: " + ", ".join(f"{m} {n}" for m, n in sorted(result["searches_by_method"].items()))
          + f" (total {result['searches']})")
    print(f"errors {result['errors']}, hits outside the namespace {result['outside_namespace']}, "
          f"unknown ids {result['unknown_ids']}, process failures {len(result['process_failures'])}")
    for kind, n in result["error_kinds"].items():
        print(f"  {n} x {kind}")
    for line in result["process_failures"]:
        print(f"  {line}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
