"""``serve``: one memory over HTTP, for many agent processes (the extra ``[server]``)."""

from __future__ import annotations

from pathlib import Path

import click

from ctxmem_plugin.cli.app import handle_errors, main, memory_option, model_options, open_memory


@main.command()
@memory_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback needs --token.")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535), help="Port; 0 = any free one.")
@click.option("--token", default=None, envvar="CTXMEM_TOKEN",
              help="Bearer token every request must carry (env CTXMEM_TOKEN; the environment keeps it out of `ps`).")
@click.option("--timeout", default=60.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Seconds a request may run before it is answered 504.")
@click.option("--log-level", default="warning", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]), help="info logs every request.")
@model_options
@handle_errors
def serve(location: str, host: str, port: int, token: str | None, timeout: float, log_level: str,
          model: Path | None, encoder: Path | None, device: str) -> None:
    """Serve a memory over HTTP, keeping the encoder and model loaded.

    \b
    Agent processes then share the memory through the server, which is its one writer:
      from ctxmem_plugin import RemoteMemory
      memory = RemoteMemory("http://127.0.0.1:8765")   # the methods of ContextMemory
    The API is described at /docs and /openapi.json; /health answers without a token.
    Ctrl-C (or SIGTERM) stops it and closes the memory.
    """
    from ctxmem_plugin.server import check_exposure
    from ctxmem_plugin.server import serve as run_server
    from ctxmem_plugin.server.deps import require_server_deps

    check_exposure(host, token)  # before the model loads: these are said at once
    require_server_deps()
    memory = open_memory(location, read_only=False, model=model, encoder=encoder, device=device)
    run_server(memory, host=host, port=port, token=token, timeout=timeout, log_level=log_level,
               ready=lambda url: click.echo(f"serving {location} at {url} (Ctrl-C stops)"))
