"""Shared fixtures: a fast deterministic encoder for property tests, the real model for the rest."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from ctxmem_plugin.hashing import HashEncoder  # noqa: E402  (re-exported for the tests)

REPO = Path(__file__).resolve().parents[1]
LOCOMO_DEV = REPO.parent / "shared" / "data" / "locomo" / "locomo_dev.json"


@pytest.fixture
def hash_encoder() -> HashEncoder:
    return HashEncoder()


@pytest.fixture(scope="session")
def minilm():
    """The real default model, loaded once per test session."""
    from ctxmem_plugin.encoder import SentenceEncoder

    return SentenceEncoder(device="cpu")


@pytest.fixture
def locomo_dev() -> Path:
    if not LOCOMO_DEV.is_file():
        pytest.skip(f"LoCoMo dev file not found at {LOCOMO_DEV}")
    return LOCOMO_DEV
