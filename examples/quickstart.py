"""Quick start: build a memory from the example chat logs, ask it a question, build an LLM context.

Run it from anywhere::

    python examples/quickstart.py              # memory in a temporary directory, deleted at the end
    python examples/quickstart.py ./mem        # memory kept in ./mem (running again adds nothing)

The first run loads the bundled all-MiniLM-L6-v2 encoder (a few seconds); nothing is downloaded.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from ctxmem_plugin.formats import read_paths
from ctxmem_plugin.memory import ContextMemory

LOGS = Path(__file__).resolve().parent / "chat_logs"
QUESTION = "What is the name of Maya's dog?"


def main(memory_dir: Path) -> None:
    # maya.jsonl holds OpenAI-style messages, book_club.txt a "Speaker: text" transcript;
    # read_paths detects each file's format and validates every record before anything is stored.
    logs = read_paths([LOGS])
    with ContextMemory(memory_dir) as memory:
        # One namespace per conversation (named after its file): demo/maya and demo/book_club.
        report = memory.ingest(logs, ("demo",), split_conversations=True)
        print(f"ingested {report.added} turns ({report.duplicates} already present) into {memory_dir}")
        for space, count in memory.namespaces(("demo",)):
            print(f"  {'/'.join(space)}: {count} turns")

        # A search sees only its namespace prefix: the book club is not searched here.
        print(f"\nQ: {QUESTION}")
        for hit in memory.search(QUESTION, namespace=("demo", "maya"), k=5):
            print(f"  {hit.score:.3f}  {hit.speaker}: {hit.text}")

        # Prompt-ready text: the best hits that fit the budget, in the order they were said.
        print("\nContext for the LLM (max_tokens=120):")
        print(memory.context(QUESTION, namespace=("demo", "maya"), max_tokens=120))


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory(prefix="ctxmem-quickstart-") as tmp:
            main(Path(tmp))
