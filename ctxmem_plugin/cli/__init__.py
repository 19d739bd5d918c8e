"""The ``ctxmem-plugin`` command line (click), thin over the library: one module per group of commands."""

from ctxmem_plugin.cli import doctor, evaluate, ingest, manage, search, serve, train  # noqa: F401  (they register their commands)
from ctxmem_plugin.cli.app import main

__all__ = ["main"]
