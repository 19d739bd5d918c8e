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


@pytest.fixture
def memory(make_memory: Callable[[str], Any]) -> object:
    """An empty ContextMemory with the fake encoder (a module can override it with a ``remote`` param too)."""
    return make_memory("local")


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
