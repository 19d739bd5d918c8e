"""What several test modules share: paths, the fast encoder, and running a script as two ranks."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from ctxmem_plugin.encoders.hashing import HashEncoder

__all__ = ["LOCOMO_DEV", "REPO", "HashEncoder", "run_two_ranks"]

REPO = Path(__file__).resolve().parents[1]
LOCOMO_DEV = REPO.parent / "shared" / "data" / "locomo" / "locomo_dev.json"


def run_two_ranks(script: str, timeout: float = 300) -> list[dict]:
    """Run ``script`` as 2 processes of one gloo group (as ``torchrun`` would start them).

    Each process must print a JSON object as its last line; returns them in rank order.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank in range(2):
        env = {**os.environ, "WORLD_SIZE": "2", "RANK": str(rank), "LOCAL_RANK": str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        procs.append(subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True))
    outs = [json.loads(p.communicate(timeout=timeout)[0].strip().splitlines()[-1]) for p in procs]
    assert all(p.returncode == 0 for p in procs), [p.returncode for p in procs]
    return outs
