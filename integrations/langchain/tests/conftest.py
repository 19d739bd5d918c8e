"""Fixtures of the langchain-ctxmem tests: a fast fake encoder, a fresh memory, no network.

This directory is a package (``tests.conftest``, ``tests.test_lc_*``), so that
``pytest tests integrations/langchain/tests`` from the repository root collects both suites:
the core's rootless ``conftest`` module (which its tests import by name) stays the core's, and
module names never clash (every module here also starts with ``test_lc_``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from ctxmem_plugin.encoders.hashing import HashEncoder  # noqa: E402  (re-exported for the tests)


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


@pytest.fixture(scope="session")
def local_postgres() -> Iterator[Any]:
    """One PostgreSQL server (with pgvector) for the session, on a Unix socket in a temp dir."""
    from ctxmem_plugin.errors import BackendError, DependencyError
    from ctxmem_plugin.storage.pg_server import temporary_server

    with contextlib.ExitStack() as stack:
        try:
            server = stack.enter_context(temporary_server())
        except (DependencyError, BackendError) as exc:
            pytest.skip(f"no PostgreSQL server could start here: {exc}")
        yield server


@pytest.fixture(params=["embedded", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def new_location(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    """``new_location(name)``: a memory location of this test, a directory or a fresh PostgreSQL database."""
    made: dict[str, Any] = {}
    server = request.getfixturevalue("local_postgres") if backend == "postgres" else None

    def make(name: str = "mem") -> Any:
        if name not in made:
            made[name] = tmp_path / name if server is None else server.create_database()
        return made[name]

    yield make
    if server is not None:
        for url in made.values():
            server.drop_database(str(url))


@pytest.fixture
def memory(new_location: Any, hash_encoder: HashEncoder) -> Iterator[object]:
    """An empty ContextMemory with the fake encoder, on each backend."""
    from ctxmem_plugin.memory import ContextMemory

    with ContextMemory(new_location(), encoder=hash_encoder) as mem:
        yield mem


@pytest.fixture
def embedded_memory(tmp_path: Path, hash_encoder: HashEncoder) -> Iterator[object]:
    """An empty ContextMemory in a directory (for what only the embedded store has: TTL files)."""
    from ctxmem_plugin.memory import ContextMemory

    with ContextMemory(tmp_path / "mem", encoder=hash_encoder) as mem:
        yield mem


def loopback_only() -> None:
    """Let this test reach servers on 127.0.0.1 (a memory server it started), and nothing else."""
    import pytest_socket

    pytest_socket.enable_socket()
    pytest_socket.socket_allow_hosts(["127.0.0.1"], allow_unix_socket=True)  # undone by pytest-socket after the test


@pytest.fixture
def loopback() -> None:
    """This test may reach memory servers on 127.0.0.1 (that it started), and nothing else."""
    loopback_only()


@pytest.fixture
def make_memory(tmp_path: Path, hash_encoder: HashEncoder) -> Iterator[Callable[[str], Any]]:
    """Opens an empty memory with the fake encoder: ``"local"`` a ContextMemory, ``"remote"`` the
    client of a memory server started for the test (closed, and stopped, after it)."""
    from ctxmem_plugin.memory import ContextMemory
    from ctxmem_plugin.remote import RemoteMemory
    from ctxmem_plugin.server.testing import ServerProcess

    with contextlib.ExitStack() as stack:

        def make(kind: str) -> Any:
            if kind == "local":
                return stack.enter_context(ContextMemory(tmp_path / "mem", encoder=hash_encoder))
            loopback_only()
            server = stack.enter_context(ServerProcess(tmp_path / "served", encoder="hash"))
            return stack.enter_context(RemoteMemory(server.url))

        yield make


@pytest.fixture(scope="session")
def minilm() -> object:
    """The real default model, loaded once per test session."""
    from ctxmem_plugin.encoders import SentenceEncoder

    return SentenceEncoder(device="cpu")


@pytest.fixture
def search_calls(memory: Any, monkeypatch: pytest.MonkeyPatch) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    """Every call of ``memory.search`` as ``(args, kwargs)``; the search still runs."""
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    search = memory.search

    def recording(*args: Any, **kwargs: Any) -> Any:
        calls.append((args, kwargs))
        return search(*args, **kwargs)

    monkeypatch.setattr(memory, "search", recording)
    return calls
