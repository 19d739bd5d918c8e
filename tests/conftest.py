"""Shared fixtures: a fast deterministic encoder for property tests, the real model for the rest."""

from __future__ import annotations

import contextlib
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


# -- backends: every store test runs against the embedded store and a real PostgreSQL --------

BACKENDS = ["embedded", "postgres"]


@pytest.fixture(scope="session")
def local_postgres():
    """One PostgreSQL server (with pgvector) for the whole session, on a Unix socket in a temp dir."""
    from ctxmem_plugin.errors import BackendError, DependencyError
    from ctxmem_plugin.storage.pg_server import temporary_server

    with contextlib.ExitStack() as stack:
        try:
            server = stack.enter_context(temporary_server())
        except (DependencyError, BackendError) as exc:
            pytest.skip(f"no PostgreSQL server could start here: {exc}")
        yield server


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def new_location(backend: str, tmp_path: Path, request: pytest.FixtureRequest):
    """``new_location(name)``: the location of a memory of this test (a directory, or a fresh database).

    The same name gives the same location, so a test can close and reopen a memory.
    """
    made: dict[str, str | Path] = {}
    server = request.getfixturevalue("local_postgres") if backend == "postgres" else None

    def make(name: str = "mem") -> str | Path:
        if name not in made:
            made[name] = tmp_path / name if server is None else server.create_database()
        return made[name]

    yield make
    if server is not None:
        for url in made.values():
            server.drop_database(str(url))


@pytest.fixture
def location(new_location):
    """The location of this test's memory."""
    return new_location("mem")
