"""A short run of the crash harness (``benchmarks/crash.py``; the long one is 20 kills of each):
ingest and an ``add()`` loop SIGKILLed at random moments lose nothing acknowledged, store
nothing twice, keep the database, both full-text indexes and the doctor's checks clean, and
leave no word of a turn they do not hold on disk (issue 25, "Crash" in its "Prove it")."""

from __future__ import annotations

import sys

from helpers import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

import crash  # noqa: E402  (benchmarks/ is not a package)


def test_kills_of_ingest_and_of_an_add_loop_lose_nothing_acknowledged() -> None:
    result = crash.run(kills=3, encoder="hash", seed=7, add_delay=1.0, files=4, turns=200)
    problems = [p for r in result["rounds"] for p in r["problems"]]
    assert problems == []
    for kind in ("ingest", "add"):
        s = result[kind]
        assert s["kills"] == 3
        assert s["lost"] == 0 and s["duplicates"] == 0, s
    assert result["add"]["acknowledged"] > 0  # the kills came while the loop was writing
    assert result["ingest"]["words_checked"] + result["add"]["words_checked"] > 0
