"""Crash harness: SIGKILL ``ctxmem-plugin ingest`` and an ``add()`` loop at random moments.

    nice -n 10 python benchmarks/crash.py [--kills 20] [--encoder hash|minilm] [--seed 0]
        [--out benchmarks/results/crash.json]

Ingest: each round ingests several log files into a fresh memory, is killed at a random moment
of its writing, and the memory is checked; then the same ingest runs again to completion and
must leave every turn exactly once. The add loop: one memory for all rounds; a process adds
batches (1 to 16 turns, three namespaces) and now and then adds to a scratch namespace and
forgets it, printing what each call stored once it returned (acknowledged); it is killed after a
random delay and the memory checked. After every kill:

- the memory opens for writing (which finishes a scrub a kill interrupted);
- ``PRAGMA integrity_check`` is ``ok`` and FTS5's ``integrity-check`` passes on both full-text
  indexes;
- ``ctxmem_plugin.storage.integrity.check()`` (what ``ctxmem-plugin doctor`` runs: FTS, BM25
  statistics, the approximate index's cells against the turns, ...) finds nothing;
- every turn acknowledged in any round so far is there with its text, no text is stored twice,
  nothing an acknowledged forget removed is back, each log file is all there or not at all;
- once closed, no file of the memory holds a word of a turn the memory does not hold (forgotten,
  or written by a transaction the kill cut short).

``--encoder hash`` (default) uses the model-free hashing encoder so that a round takes seconds;
``minilm`` the bundled all-MiniLM-L6-v2 (the kills then land mostly while it encodes).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from tempfile import TemporaryDirectory

from ctxmem_plugin.encoders import TextEncoder, load_encoder
from ctxmem_plugin.encoders.hashing import HashEncoder
from ctxmem_plugin.memory import ContextMemory
from ctxmem_plugin.storage import integrity

REPO = Path(__file__).resolve().parents[1]
SPACES = [("u1",), ("u2", "s1"), ("u2", "s2")]
SCRATCH = ("scratch",)
_CONSONANTS = "bcdfghjklmnpqrtvwxz"

# Code run first in each child: the encoder it uses (the hashing one replaces the sentence encoder).
PRELUDE = {
    "hash": (
        "import ctxmem_plugin.encoders as _e\n"
        "from ctxmem_plugin.encoders.hashing import HashEncoder as _H\n"
        "_e.SentenceEncoder = lambda model=None, **_: _H()\n"
    ),
    "minilm": "",
}

ADD_LOOP = """
import json, random, sys
from ctxmem_plugin.memory import ContextMemory
from ctxmem_plugin.encoders import load_encoder
sys.path.insert(0, {bench!r})
from crash import text
rng = random.Random({seed})
n = {start}
with ContextMemory({memory!r}, encoder=load_encoder(None)) as mem:
    print(json.dumps({{"ready": True}}), flush=True)
    while True:
        if rng.random() < 0.1:
            size = rng.randint(1, 8)
            mem.add([{{"content": text(n + j)}} for j in range(size)], {scratch!r})
            n += size
            mem.forget({scratch!r})
            print(json.dumps({{"forgot": list(range(n - size, n))}}), flush=True)  # acknowledged: forget returned
            continue
        size = rng.randint(1, 16)
        space = rng.choice({spaces!r})
        ids = mem.add([{{"role": "user", "content": text(n + j)}} for j in range(size)], space)
        print(json.dumps({{"ids": ids, "n": list(range(n, n + size))}}), flush=True)  # acknowledged: add returned
        n += size
"""


def word(n: int) -> str:
    """A word for turn ``n``: 10 consonants and 2 digits, so that no stemmer changes it and two
    words rarely share more than a few leading letters (FTS5 stores terms prefix-compressed)."""
    digest = hashlib.blake2b(str(n).encode(), digest_size=16).digest()
    return "".join(_CONSONANTS[b % len(_CONSONANTS)] for b in digest[:10]) + f"{digest[10] % 100:02d}"


def text(n: int) -> str:
    return f"note {n} about {word(n)}"


def probe(n: int) -> bytes:
    """The bytes looked for on disk: the word's last 8 characters (its first ones may be shared)."""
    return word(n)[-8:].encode()


@dataclass
class Round:
    kind: str
    delay_s: float
    acknowledged: int = 0
    present: int = 0
    lost: int = 0
    duplicates: int = 0
    words_checked: int = 0
    problems: list[str] = field(default_factory=list)
    mid_write: bool = False
    lost_turns: list[int] = field(default_factory=list)


def child(encoder: str, code: str, *args: str) -> list[str]:
    return [sys.executable, "-c", PRELUDE[encoder] + code, *args]


def database_checks(directory: Path) -> list[str]:
    """``PRAGMA integrity_check`` and FTS5's integrity-check of both full-text indexes."""
    problems = []
    db = sqlite3.connect(directory / "memory.sqlite3", isolation_level=None)
    try:
        rows = [r[0] for r in db.execute("PRAGMA integrity_check").fetchall()]
        if rows != ["ok"]:
            problems.append(f"integrity_check: {rows[:3]}")
        for table, command in (("turns_fts", "'integrity-check', 1"), ("turns_nsfts", "'integrity-check'")):
            db.execute("BEGIN")
            try:
                cols = f"{table}, rank" if command.endswith("1") else table
                db.execute(f"INSERT INTO {table}({cols}) VALUES ({command})")
            except sqlite3.DatabaseError as exc:
                problems.append(f"{table} integrity-check: {exc}")
            finally:
                db.execute("ROLLBACK")
    finally:
        db.close()
    return problems


def inspect(directory: Path, encoder: TextEncoder) -> tuple[list[str], dict[str, list[int]]]:
    """Open the memory, run the checks; returns (problems, ids of each stored text)."""
    problems = database_checks(directory)
    by_text: dict[str, list[int]] = {}
    with ContextMemory(directory, encoder=encoder) as mem:
        for turn in mem.list_turns(()):
            by_text.setdefault(turn.content, []).append(turn.id)
    problems += database_checks(directory)
    problems += [f"doctor: {f}" for f in integrity.check(directory)]
    return problems, by_text


def leaked(directory: Path, absent: list[int]) -> dict[int, list[str]]:
    """The turns among ``absent`` whose word some file of ``directory`` still holds, with those files."""
    blobs = {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}
    found = {n: [name for name, blob in blobs.items() if probe(n) in blob] for n in absent}
    return {n: names for n, names in found.items() if names}


def kill_after(proc: subprocess.Popen, delay: float) -> None:
    time.sleep(delay)
    proc.kill()
    proc.wait()


# -- ingest ------------------------------------------------------------------------------------


def write_logs(root: Path, files: int, turns: int) -> list[tuple[Path, list[int]]]:
    """Log files of OpenAI-style messages, each ``turns`` long; with the turn numbers in each."""
    logs = []
    for f in range(files):
        numbers = list(range(10_000_000 + f * turns, 10_000_000 + (f + 1) * turns))
        messages = [{"role": "user" if i % 2 else "assistant", "content": text(n)} for i, n in enumerate(numbers)]
        path = root / f"log{f}.json"
        path.write_text(json.dumps(messages))
        logs.append((path, numbers))
    return logs


INGEST = "from ctxmem_plugin.cli import main\nmain()\n"


def ingest_cmd(encoder: str, memory: Path, logs: list[tuple[Path, list[int]]]) -> list[str]:
    return child(encoder, INGEST, "ingest", *[str(p) for p, _ in logs], "--memory", str(memory), "-n", "crash", "--json")


def calibrate_ingest(encoder: str, root: Path, logs: list[tuple[Path, list[int]]]) -> float:
    """Seconds from the database's creation to the end of a whole ingest (the window kills fall in)."""
    memory = root / "calibrate"
    proc = subprocess.Popen(ingest_cmd(encoder, memory, logs), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while proc.poll() is None and not (memory / "memory.sqlite3").exists():
        time.sleep(0.005)
    began = time.monotonic()
    _, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"ingest failed: {err.decode()[-2000:]}")
    return time.monotonic() - began


def ingest_round(encoder: str, enc: TextEncoder, memory: Path, logs: list[tuple[Path, list[int]]],
                 window: float, rng: random.Random) -> Round:
    proc = subprocess.Popen(ingest_cmd(encoder, memory, logs), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None and not (memory / "memory.sqlite3").exists():
        time.sleep(0.005)
    delay = rng.uniform(0, window)
    kill_after(proc, delay)
    result = Round("ingest", round(delay, 3))
    if not (memory / "memory.sqlite3").exists():
        result.problems.append("the ingest ended before its database was created")
        return result
    problems, by_text = inspect(memory, enc)
    whole = 0
    for _, numbers in logs:
        found = sum(text(n) in by_text for n in numbers)
        if found == len(numbers):
            whole += 1
        elif found:
            problems.append(f"a log file is stored in part: {found} of {len(numbers)} turns")
    result.acknowledged = result.present = sum(len(ids) for ids in by_text.values())
    result.mid_write = 0 < whole < len(logs)
    every = [n for _, numbers in logs for n in numbers]
    absent = [n for n in every if text(n) not in by_text]
    result.words_checked = len(absent)
    if absent and (leaks := leaked(memory, absent)):
        problems.append(f"{len(leaks)} word(s) of turns not stored are in the memory's files: {leaks}")
    rerun = subprocess.run(ingest_cmd(encoder, memory, logs), capture_output=True, text=True)
    if rerun.returncode != 0:
        problems.append(f"the re-run failed: {rerun.stderr.strip()[-300:]}")
    again, by_text = inspect(memory, enc)
    problems += [f"after the re-run: {p}" for p in again]
    result.lost = sum(text(n) not in by_text for n in every)
    result.duplicates = sum(len(ids) - 1 for ids in by_text.values())
    result.problems = problems
    return result


# -- add loop ----------------------------------------------------------------------------------


class Acks:
    """What the add loop printed: acknowledged turns (number -> id) and forgets."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.turns: dict[int, int] = {}
        self.forgotten: list[int] = []
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self.thread.start()

    def _read(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            try:
                msg = json.loads(line)
            except json.JSONDecodeError:
                return  # a line cut by the kill: not acknowledged
            if msg.get("ready"):
                self.ready.set()
            elif "forgot" in msg:
                self.forgotten += msg["forgot"]
            else:
                self.turns.update(zip(msg["n"], msg["ids"]))


def add_round(encoder: str, enc: TextEncoder, memory: Path, index: int, max_delay: float,
              rng: random.Random, acked: dict[int, int]) -> Round:
    start = 1_000_000 * (index + 1)
    code = ADD_LOOP.format(bench=str(REPO / "benchmarks"), seed=rng.randrange(2**32), start=start,
                           memory=str(memory), scratch=SCRATCH, spaces=SPACES)
    proc = subprocess.Popen(child(encoder, code), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    acks = Acks(proc)
    if not acks.ready.wait(120):
        proc.kill()
        return Round("add", 0.0, problems=[f"the add loop did not start: {proc.stderr.read()[-300:]}"])
    delay = rng.uniform(0.0, max_delay)
    kill_after(proc, delay)
    acks.thread.join(10)
    acked.update(acks.turns)
    result = Round("add", round(delay, 3), acknowledged=len(acks.turns))
    problems, by_text = inspect(memory, enc)
    stored = {int(ids[0]): t for t, ids in by_text.items() if len(ids) == 1}
    result.lost_turns = sorted(n for n, turn_id in acked.items() if stored.get(turn_id) != text(n))
    result.lost = len(result.lost_turns)
    back = [n for n in acks.forgotten if text(n) in by_text]
    if back:
        problems.append(f"{len(back)} turn(s) an acknowledged forget removed are back")
    result.duplicates = sum(len(ids) - 1 for ids in by_text.values())
    result.present = sum(len(ids) for ids in by_text.values())
    result.mid_write = bool(acks.turns)
    top = max([*acks.turns, *acks.forgotten], default=start)
    written = range(start, top + 17)  # what the round could have stored: the acknowledged and the batch cut short
    absent = [n for n in written if text(n) not in by_text]
    result.words_checked = len(absent)
    if absent and (leaks := leaked(memory, absent)):
        kinds = {n: "forgotten" if n in acks.forgotten else "not acknowledged" for n in leaks}
        problems.append(f"{len(leaks)} word(s) of turns not stored are in the memory's files: {leaks} {kinds}")
    result.problems = problems
    return result


# -- report ------------------------------------------------------------------------------------


def summary(rounds: list[Round]) -> dict[str, int]:
    """Totals over the rounds; the add loop's rounds share one memory, so a turn lost counts once."""
    shared = bool(rounds) and rounds[0].kind == "add"
    return {
        "kills": len(rounds),
        "mid_write": sum(r.mid_write for r in rounds),
        "acknowledged": sum(r.acknowledged for r in rounds),
        "lost": len({n for r in rounds for n in r.lost_turns}) if shared else sum(r.lost for r in rounds),
        "duplicates": sum(r.duplicates for r in rounds),
        "words_checked": sum(r.words_checked for r in rounds),
        "problems": sum(len(r.problems) for r in rounds),
    }


def run(kills: int, encoder: str, seed: int, add_delay: float, files: int, turns: int) -> dict:
    rng = random.Random(seed)
    enc = HashEncoder() if encoder == "hash" else load_encoder(None)
    with TemporaryDirectory(prefix="ctxmem-crash-") as tmp:
        root = Path(tmp)
        logs = write_logs(root, files, turns)
        window = calibrate_ingest(encoder, root, logs)
        ingest = [ingest_round(encoder, enc, root / f"ingest{i}", logs, window, rng) for i in range(kills)]
        acked: dict[int, int] = {}
        adds = [add_round(encoder, enc, root / "adds", i, add_delay, rng, acked) for i in range(kills)]
    return {
        "encoder": encoder, "seed": seed, "ingest_files": files, "turns_per_file": turns,
        "ingest_window_s": round(window, 3), "add_max_delay_s": add_delay,
        "ingest": summary(ingest), "add": summary(adds),
        "rounds": [asdict(r) for r in ingest + adds],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=20, help="kills of each kind")
    parser.add_argument("--encoder", choices=sorted(PRELUDE), default="hash")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--add-delay", type=float, default=2.0, help="longest wait before killing the add loop (s)")
    parser.add_argument("--files", type=int, default=12)
    parser.add_argument("--turns", type=int, default=300, help="turns per log file")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "crash.json")
    args = parser.parse_args()
    began = time.perf_counter()
    result = run(args.kills, args.encoder, args.seed, args.add_delay, args.files, args.turns)
    result["seconds"] = round(time.perf_counter() - began, 1)
    print(f"{'':8}{'kills':>7}{'mid-write':>11}{'acknowledged':>14}{'lost':>6}{'duplicates':>12}{'words checked':>15}{'problems':>10}")
    for kind in ("ingest", "add"):
        s = result[kind]
        print(f"{kind:8}{s['kills']:>7}{s['mid_write']:>11}{s['acknowledged']:>14}{s['lost']:>6}{s['duplicates']:>12}"
              f"{s['words_checked']:>15}{s['problems']:>10}")
    for r in result["rounds"]:
        for p in r["problems"]:
            print(f"  {r['kind']} kill at {r['delay_s']} s: {p}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out} ({result['seconds']} s)")


if __name__ == "__main__":
    main()
