"""A memory server in a child process, for tests of code that talks to one.

>>> with ServerProcess(tmp_path / "mem") as server:  # doctest: +SKIP
...     memory = RemoteMemory(server.url)

By default the child embeds with :class:`~ctxmem_plugin.HashEncoder` (no model to load, so it
starts in about a second); ``encoder=None`` gives it the default model, and a directory any
local sentence-transformers model. It listens on a free port of 127.0.0.1 only. Run as
``python -m ctxmem_plugin.server.testing DIR [--encoder SPEC] [--timeout S]``, it is that child
(the token, if any, comes in the environment variable ``CTXMEM_TOKEN``, never in its arguments).
"""

from __future__ import annotations

import argparse
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ctxmem_plugin.errors import ServerError
from ctxmem_plugin.remote.memory import TOKEN_ENV

_URL = re.compile(r"http://[^\s]+:\d+")

HASH = "hash"
"""Encoder spec of the model-free encoder; ``hash:DIM`` gives its width (default 64)."""


class ServerProcess:
    """Start ``ctxmem-plugin``'s memory server in a child process; stop it on exit.

    Args:
        memory_dir: the memory directory the server opens (created if missing).
        encoder: ``"hash"``/``"hash:DIM"`` (model-free), ``None`` (the default model) or a
            local sentence-transformers directory.
        token: the bearer token the server asks for; ``None`` = none.
        timeout: the server's per-request timeout, seconds.
        start_timeout: seconds to wait for the server to listen.
        command: run this instead of the default child (a script serving a memory with an
            encoder of its own, say); it must print the server's URL, as
            :func:`~ctxmem_plugin.server.serve` does with ``ready=print`` and ``ctxmem-plugin
            serve`` does in its first line. The other arguments
            but ``token`` are then not used.
    """

    def __init__(
        self,
        memory_dir: str | Path,
        *,
        encoder: str | None = HASH,
        token: str | None = None,
        timeout: float = 60.0,
        start_timeout: float = 120.0,
        command: Sequence[str] | None = None,
    ) -> None:
        self.memory_dir = Path(memory_dir)
        self.encoder = encoder
        self.token = token
        self.timeout = timeout
        self.start_timeout = start_timeout
        self.command = None if command is None else list(command)
        self.url = ""
        self._proc: subprocess.Popen[str] | None = None

    def start(self) -> str:
        """Start the child and wait until it listens; returns its URL."""
        args = [sys.executable, "-m", "ctxmem_plugin.server.testing", str(self.memory_dir), "--timeout", str(self.timeout)]
        if self.encoder is not None:
            args += ["--encoder", self.encoder]
        if self.command is not None:
            args = self.command
        env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
        if self.token is not None:
            env[TOKEN_ENV] = self.token
        self._proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=env)
        deadline = time.monotonic() + self.start_timeout
        assert self._proc.stdout is not None
        while True:
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([self._proc.stdout], [], [], max(remaining, 0))
            if not ready:
                self.stop()
                raise ServerError(f"the memory server for {self.memory_dir} did not start within {self.start_timeout:g} s")
            line = self._proc.stdout.readline()
            if not line:
                code = self._proc.wait()
                raise ServerError(f"the memory server for {self.memory_dir} exited with code {code} before listening")
            found = _URL.search(line)
            if found:
                self.url = found.group(0)
                return self.url

    def stop(self) -> int:
        """Stop the child as Ctrl-C would (it saves the index and releases the memory); returns its exit code."""
        proc, self._proc = self._proc, None
        if proc is None:
            return 0
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        return proc.returncode

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    """The child: open the memory, serve it on a free loopback port, print the URL, close the memory at the end."""
    parser = argparse.ArgumentParser(prog="python -m ctxmem_plugin.server.testing")
    parser.add_argument("memory_dir")
    parser.add_argument("--encoder", default=None, help="hash, hash:DIM or a sentence-transformers directory")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    from ctxmem_plugin.encoders import HashEncoder
    from ctxmem_plugin.memory import ContextMemory
    from ctxmem_plugin.server import serve

    encoder = None
    if args.encoder is not None and args.encoder.split(":")[0] == HASH:
        dim = int(args.encoder.split(":")[1]) if ":" in args.encoder else 64
        encoder = HashEncoder(dim, name=f"hash-{dim}")
    elif args.encoder is not None:
        encoder = args.encoder
    with ContextMemory(args.memory_dir, encoder=encoder) as memory:
        serve(memory, port=0, token=os.environ.get(TOKEN_ENV) or None, timeout=args.timeout,
              ready=lambda url: print(url, flush=True))


if __name__ == "__main__":
    main()
