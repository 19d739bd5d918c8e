"""Deleted words leave every file of the memory, even when the process dies right after the
delete commits (issue 25, defect 5b; "Forget" in its "Prove it").

FTS5 deletes by adding "delete" entries: the words stay in older segments until a merge. The
transaction that deletes records a pending scrub (meta ``scrub_pending``); ``forget`` scrubs at
once, ``delete`` and key replacements when the writer closes, and a writer that opens a memory
with the mark still set (a crash came between) scrubs before anything else.
"""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from ctxmem_plugin.memory import ContextMemory
from ctxmem_plugin.storage.integrity import check
from ctxmem_plugin.storage.sqlite import SCRUB_PENDING

from helpers import REPO, HashEncoder

# Words no other text in the memory shares a prefix with, so FTS5's prefix-compressed leaves keep them whole.
SECRET_WORDS = ("zanzibarquokka", "xylemvortex7731")
SECRET = " ".join(SECRET_WORDS)

# The child stands in for a process killed between the delete's commit and its scrub: the
# store's scrub is replaced by a SIGKILL of the process itself, so the kill lands exactly there.
CHILD = """
import os, signal, sys
sys.path[:0] = [{tests!r}]
from helpers import HashEncoder
from ctxmem_plugin.memory import ContextMemory
from ctxmem_plugin.storage.sqlite import LongTermStore
with ContextMemory({memory!r}, encoder=HashEncoder()) as mem:
    mem.add([{{"content": f"{secret} {{i}}"}} for i in range(30)], ("secret",))
    mem.add([{{"content": f"{secret} replaced", "key": "k"}}], ("other",))
    mem.add([{{"content": "keep this note about tea"}}], ("other",))
    LongTermStore.scrub = lambda self: os.kill(os.getpid(), signal.SIGKILL)
    {action}
    os.kill(os.getpid(), signal.SIGKILL)  # delete() scrubs at close: die before it
"""


def leaks(directory: Path) -> list[str]:
    """Files of ``directory`` holding any of the secret words."""
    return [p.name for p in sorted(directory.iterdir()) if p.is_file() and any(w.encode() in p.read_bytes() for w in SECRET_WORDS)]


def killed_child(memory: Path, action: str) -> None:
    script = CHILD.format(tests=str(REPO / "tests"), memory=str(memory), secret=SECRET, action=action)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr


def pending(memory: Path) -> bool:
    with sqlite3.connect(f"file:{memory / 'memory.sqlite3'}?mode=ro", uri=True) as db:
        return db.execute("SELECT count(*) FROM meta WHERE key = ?", (SCRUB_PENDING,)).fetchone()[0] == 1


def scrubbed_on_next_open(memory: Path) -> None:
    assert leaks(memory), "the kill left no words behind: the test would prove nothing"
    assert pending(memory)
    with ContextMemory(memory, encoder=HashEncoder()) as mem:
        assert leaks(memory) == []  # scrubbed by the open itself, before any write
        assert sorted(t.content for t in mem.list_turns(("other",))) == ["keep this note about tea", "tea"]
        assert mem.search("zanzibarquokka", (), method="bm25") == []
    assert leaks(memory) == []
    assert not pending(memory)
    assert check(memory) == []


def test_forget_killed_between_commit_and_scrub_leaves_nothing_after_the_next_open(tmp_path: Path) -> None:
    memory = tmp_path / "mem"
    killed_child(memory, 'mem.add([{"content": "tea", "key": "k"}], ("other",)); mem.forget(("secret",))')
    scrubbed_on_next_open(memory)


def test_delete_and_key_replacement_killed_before_close_leave_nothing_after_the_next_open(tmp_path: Path) -> None:
    memory = tmp_path / "mem"
    action = ('mem.delete([t.id for t in mem.list_turns(("secret",))]); '
              'mem.add([{"content": "tea", "key": "k"}], ("other",))')
    killed_child(memory, action)
    scrubbed_on_next_open(memory)
    with ContextMemory(memory, encoder=HashEncoder()) as mem:
        assert mem.get_by_key(("other",), "k").content == "tea"


def test_delete_and_key_replacement_leave_no_words_once_closed(tmp_path: Path) -> None:
    memory = tmp_path / "mem"
    with ContextMemory(memory, encoder=HashEncoder()) as mem:
        ids = mem.add([{"content": f"{SECRET} {i}"} for i in range(20)] + [{"content": "keep"}], ("u",))
        mem.add({"content": SECRET, "key": "k"}, ("v",))
        mem.delete(ids[:20])
        mem.add({"content": "new text", "key": "k"}, ("v",))
        assert mem.search("zanzibarquokka", (), method="bm25") == []
    assert leaks(memory) == []
    with ContextMemory(memory, encoder=HashEncoder()) as mem:
        assert [t.content for t in mem.list_turns(())] == ["keep", "new text"]
    assert check(memory) == []


def test_repeated_forgets_between_writes_leave_no_word_in_any_page(tmp_path: Path) -> None:
    """SQLite leaves bytes of deleted rows in the unused middle of pages it rebuilds: with this
    seed a forgotten word stayed in a live page of ``turns_nsfts_data`` after the FTS merge,
    until the scrub rewrote the file (``VACUUM``)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from crash import SCRATCH, SPACES, probe, text

    rng = random.Random(8)
    n, forgotten, forgets = 0, [], 0
    with ContextMemory(tmp_path, encoder=HashEncoder()) as mem:
        while forgets < 45:
            if rng.random() < 0.1:
                size = rng.randint(1, 8)
                mem.add([{"content": text(n + j)} for j in range(size)], SCRATCH)
                forgotten += range(n, n + size)
                n += size
                mem.forget(SCRATCH)
                forgets += 1
                blobs = [p.read_bytes() for p in tmp_path.iterdir() if p.is_file()]
                assert not [m for m in forgotten if any(probe(m) in b for b in blobs)], forgets
            else:
                size = rng.randint(1, 16)
                mem.add([{"role": "user", "content": text(n + j)} for j in range(size)], rng.choice(SPACES))
                n += size
