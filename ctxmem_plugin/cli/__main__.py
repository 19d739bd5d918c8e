"""``python -m ctxmem_plugin.cli``: the command line, for launchers that run modules (``torchrun``)."""

from ctxmem_plugin.cli import main

main()
