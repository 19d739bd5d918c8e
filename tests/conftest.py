"""Shared fixtures: a fast deterministic encoder for property tests, the real model for the rest."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from helpers import LOCOMO_DEV, HashEncoder  # noqa: E402  (after the offline switches)


@pytest.fixture
def hash_encoder() -> HashEncoder:
    return HashEncoder()


@pytest.fixture(scope="session")
def minilm():
    """The real default model, loaded once per test session."""
    from ctxmem_plugin.encoders import SentenceEncoder

    return SentenceEncoder(device="cpu")


@pytest.fixture
def locomo_dev() -> Path:
    if not LOCOMO_DEV.is_file():
        pytest.skip(f"LoCoMo dev file not found at {LOCOMO_DEV}")
    return LOCOMO_DEV
