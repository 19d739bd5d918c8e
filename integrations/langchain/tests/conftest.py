"""Fixtures of the langchain-ctxmem tests: a fast fake encoder, a fresh memory, no network.

This directory is a package (``tests.conftest``, ``tests.test_lc_*``), so that
``pytest tests integrations/langchain/tests`` from the repository root collects both suites:
the core's rootless ``conftest`` module (which its tests import by name) stays the core's, and
module names never clash (every module here also starts with ``test_lc_``).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


class HashEncoder:
    """Bag-of-words feature hashing into ``dim`` buckets, L2-normalised.

    Texts sharing words get similar vectors, so ranking assertions mean something, and it
    costs no model load. (The core's tests have the same class; a test directory cannot
    import another's conftest.)
    """

    def __init__(self, dim: int = 64, name: str = "hash-64") -> None:
        self.dim = dim
        self.name = name

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
                out[i, h % self.dim] += 1.0 if (h >> 32) & 1 else -1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        return out / norms

    def encode_query(self, text: str) -> np.ndarray:
        return self.encode([text])[0]


@pytest.fixture(autouse=True)
def _no_network() -> Iterator[None]:
    """Every test runs offline: opening an internet socket fails the test.

    Unix sockets stay allowed: asyncio's event loop wakes itself through a socketpair.
    """
    import pytest_socket

    pytest_socket.disable_socket(allow_unix_socket=True)
    try:
        yield
    finally:
        pytest_socket.enable_socket()


@pytest.fixture
def hash_encoder() -> HashEncoder:
    return HashEncoder()


@pytest.fixture
def memory(tmp_path: Path, hash_encoder: HashEncoder) -> Iterator[object]:
    """An empty ContextMemory with the fake encoder."""
    from ctxmem_plugin.memory import ContextMemory

    with ContextMemory(tmp_path / "mem", encoder=hash_encoder) as mem:
        yield mem


@pytest.fixture(scope="session")
def minilm() -> object:
    """The real default model, loaded once per test session."""
    from ctxmem_plugin.encoder import SentenceEncoder

    return SentenceEncoder(device="cpu")
