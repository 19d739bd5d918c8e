"""Running the memory server: bind, say where, serve until SIGINT/SIGTERM (uvicorn, one process)."""

from __future__ import annotations

import contextlib
import ipaddress
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from ctxmem_plugin.errors import InputError

if TYPE_CHECKING:
    from ctxmem_plugin.memory import ContextMemory

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
KEEP_ALIVE_S = 5
"""Seconds an idle connection is kept open (the client replaces its own before that)."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, token: str | None) -> None:
    """Refuse to listen beyond this machine without a token: anyone reaching the port could read and change the memory."""
    if not is_loopback(host) and not token:
        raise InputError(
            f"serving on {host} (not loopback) needs a bearer token (--token or CTXMEM_TOKEN): anyone who can "
            "reach the port could otherwise read and change the memory"
        )


def serve(
    memory: ContextMemory,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    token: str | None = None,
    timeout: float = 60.0,
    log_level: str = "warning",
    ready: Callable[[str], None] | None = None,
) -> None:
    """Serve ``memory`` over HTTP until interrupted; the caller closes the memory afterwards.

    The server is one process, so it is the one writer of an embedded memory: agent processes
    share the memory through it (:class:`~ctxmem_plugin.remote.RemoteMemory`).

    Args:
        memory: an open memory (its encoder is loaded here, before the first request).
        host: the address to bind; anything but loopback needs ``token``.
        port: the port; ``0`` = any free one (``ready`` is told which).
        token: the bearer token requests must carry; ``None`` = none asked (loopback only).
        timeout: seconds a request may run before it is answered 504.
        log_level: uvicorn's log level (``warning`` logs failures only, ``info`` every request).
        ready: called with the server's URL once it accepts connections.

    Raises:
        InputError: a non-loopback ``host`` without a token, or an address that cannot be bound.
        DependencyError: FastAPI or uvicorn is not installed.
    """
    check_exposure(host, token)
    from ctxmem_plugin.server.deps import require_server_deps

    require_server_deps()
    import uvicorn

    from ctxmem_plugin.server.app import create_app

    app = create_app(memory, token=token, timeout=timeout)
    memory.load()  # the encoder's weights in memory (and checked against the memory's) before the first request
    sock = _listen(host, port)
    bound = sock.getsockname()[1]
    url = f"http://[{host}]:{bound}" if ":" in host else f"http://{host}:{bound}"
    config = uvicorn.Config(
        app, log_level=log_level, access_log=log_level in ("info", "debug"), lifespan="off", timeout_keep_alive=KEEP_ALIVE_S
    )
    server = uvicorn.Server(config)
    if ready is not None:
        ready(url)  # the socket listens already: a client that connects now waits in the backlog
    with _signals_end_serving():
        try:
            server.run(sockets=[sock])
        finally:
            sock.close()


def _listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port``.

    Made with the protocol named (``IPPROTO_TCP``), not 0 as ``socket.create_server`` does:
    asyncio turns Nagle's algorithm off only on sockets that say they are TCP, and with it on,
    every answer written in two parts (headers, body) waits ~40 ms for a delayed ACK.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(socket.SOMAXCONN)
    except OSError as exc:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


@contextlib.contextmanager
def _signals_end_serving() -> Iterator[None]:
    """SIGINT/SIGTERM end :func:`serve` normally, so that its caller closes the memory.

    uvicorn shuts down gracefully on them, then raises the signal again for the handlers it
    found; these handlers take it, instead of a KeyboardInterrupt or an abrupt exit.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
