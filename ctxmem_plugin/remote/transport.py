"""HTTP to a memory server with the standard library: kept-alive connections, a bearer token, timeouts.

Each thread keeps its own connection (``http.client`` connections are not thread-safe, and the
async twins run calls in worker threads). A connection left idle longer than the server keeps it
open is replaced before use; one that the server closed anyway is retried once, on a fresh one.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

from ctxmem_plugin.errors import InputError, ServerError
from ctxmem_plugin.wire import dumps, error_from_json

IDLE_REUSE_S = 4.0
"""A connection idle longer than this is replaced: the server closes idle ones after 5 s
(``ctxmem_plugin.server.run.KEEP_ALIVE_S``)."""

_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


def is_server_url(location: object) -> bool:
    """Whether ``location`` names a memory server (``http://`` or ``https://``) rather than a directory."""
    return isinstance(location, str) and location.lower().startswith(("http://", "https://"))


class Transport:
    """JSON requests to one server.

    Args:
        url: ``http(s)://host:port``, optionally with a path prefix (behind a reverse proxy).
        token: the server's bearer token, or ``None``.
        timeout: seconds to wait for the connection and for each answer.
    """

    def __init__(self, url: str, token: str | None, timeout: float) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InputError(f"a memory server URL is http(s)://host[:port], got {url!r}")
        if parts.query or parts.fragment or parts.username:
            raise InputError(f"a memory server URL has no query, fragment or user part: {url!r}")
        if not timeout > 0:
            raise InputError(f"timeout must be > 0 seconds, got {timeout}")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._prefix = parts.path.rstrip("/")
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._local = threading.local()
        self._all: list[http.client.HTTPConnection] = []
        self._all_lock = threading.Lock()

    # -- connections ----------------------------------------------------------------------

    def _open(self) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        conn = cls(self._host, self._port, timeout=self.timeout)
        with self._all_lock:
            self._all.append(conn)
        return conn

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        """This thread's connection and whether it was used before (then it may have gone stale)."""
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is not None and time.monotonic() - self._local.used > IDLE_REUSE_S:
            self._discard(conn)
            conn = None
        if conn is not None:
            return conn, True
        conn = self._local.conn = self._open()
        return conn, False

    def _discard(self, conn: http.client.HTTPConnection) -> None:
        conn.close()
        with self._all_lock:
            if conn in self._all:
                self._all.remove(conn)
        if getattr(self._local, "conn", None) is conn:
            self._local.conn = None

    def close(self) -> None:
        """Close every connection (of every thread)."""
        with self._all_lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()

    # -- requests -------------------------------------------------------------------------

    def _send(
        self, method: str, path: str, body: Any, dedicated: bool = False
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        data = None if body is None else dumps(body)
        for attempt in (1, 2):
            conn, reused = (self._open(), False) if dedicated else self._connection()
            try:
                if conn.sock is None:
                    conn.connect()
                    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conn.request(method, self._prefix + path, body=data, headers=self._headers)
                return conn, conn.getresponse()
            except _STALE as exc:
                self._discard(conn)
                if reused and attempt == 1:
                    continue  # the server closed a kept-alive connection before reading this request
                raise ServerError(f"the memory server at {self.url} closed the connection: {exc}") from None
            except TimeoutError:
                self._discard(conn)
                raise ServerError(f"the memory server at {self.url} did not answer within {self.timeout:g} s") from None
            except OSError as exc:
                self._discard(conn)
                raise ServerError(f"cannot reach the memory server at {self.url}: {exc.strerror or exc}") from None
            except http.client.HTTPException as exc:
                self._discard(conn)
                raise ServerError(f"{self.url} did not answer in HTTP: {type(exc).__name__}") from None
        raise AssertionError("unreachable")  # the loop returns or raises

    def _read(self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse) -> bytes:
        try:
            payload = response.read()
        except TimeoutError:
            self._discard(conn)
            raise ServerError(f"the memory server at {self.url} did not answer within {self.timeout:g} s") from None
        except (OSError, http.client.HTTPException) as exc:
            self._discard(conn)
            raise ServerError(f"the memory server at {self.url} broke off its answer: {type(exc).__name__}") from None
        self._local.used = time.monotonic()
        if response.will_close:
            self._discard(conn)
        return payload

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """Send ``body`` as JSON; the decoded JSON answer, or the error it stands for raised."""
        conn, response = self._send(method, path, body)
        payload = self._read(conn, response)
        if response.status >= 400:
            raise error_from_json(response.status, payload, self.url + path)
        try:
            return json.loads(payload)
        except ValueError:
            raise ServerError(f"{self.url}{path}: the answer is not JSON (is this a ctxmem server?)") from None

    def stream(self, path: str, body: Any) -> Iterator[Any]:
        """POST ``body``; yield each JSON line of the answer as it arrives.

        The answer comes on a connection of its own (closed at the end), so the caller can make
        other requests while it reads, as an export does between pages.
        """
        conn, response = self._send("POST", path, body, dedicated=True)
        try:
            if response.status >= 400:
                raise error_from_json(response.status, response.read(), self.url + path)
            while True:
                try:
                    line = response.readline()
                except TimeoutError:
                    raise ServerError(f"the memory server at {self.url} did not answer within {self.timeout:g} s") from None
                if not line:
                    return
                if line.strip():
                    yield json.loads(line)
        finally:
            self._discard(conn)
