"""The ``ctxmem-plugin`` command line (click), thin over the library."""

from ctxmem_plugin.cli.commands import main

__all__ = ["main"]
