"""docs/cli.md, written from the commands' own ``--help``: ``python -m ctxmem_plugin.cli.reference > docs/cli.md``.

The reference is generated, never edited by hand, so it cannot drift from the commands; a test
compares the file with :func:`render` and fails when a command changed without it.
"""

from __future__ import annotations

from collections.abc import Iterator

import click

from ctxmem_plugin.cli import main

INTRO = """# Command line

`ctxmem-plugin` is installed with the package; `python -m ctxmem_plugin.cli` runs the same.
Every command has `-h`/`--help`, and this page is their `--help`, generated with
`python -m ctxmem_plugin.cli.reference > docs/cli.md`.

- Errors are one line on stderr starting with `Error:`. The exit code is 2 for bad input or
  usage (a malformed log, a memory that does not exist or is damaged, a model directory that
  does not load, a bad option) and 1 for other failures. `ctxmem-plugin --verbose COMMAND ...`
  lists every finding behind an error (each problem of a model directory), one per line. The
  inputs known to have broken a command, and the error each gets now, are the corpus in
  `tests/data/bad/`.
- Namespaces are written as labels joined by `/` (`user-42/session-7`); a search or an export
  takes a prefix (`user-42` covers every session of that user).
- Wherever `--memory` is accepted, the environment variable `CTXMEM_MEMORY` can give it instead.
  It is a directory (the embedded store) or `postgresql://user@host/database` (the PostgreSQL
  store, extra `[postgres]`; see [deployment.md](deployment.md)).
- `--help`, `stats`, `forget`, `upgrade`, `doctor` and `export` answer at once; commands that
  embed text first load the encoder (a few seconds).
"""


def commands(group: click.Group = main, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    """Every command with its path below the root (the root itself first), in the order ``--help`` lists them."""
    yield path, group
    ctx = click.Context(group, info_name="ctxmem-plugin")
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is None or command.hidden:
            continue
        if isinstance(command, click.Group):
            yield from commands(command, (*path, name))
        else:
            yield (*path, name), command


def help_text(path: tuple[str, ...], command: click.Command) -> str:
    """What ``ctxmem-plugin PATH --help`` prints, at a fixed width so the page does not depend on the terminal."""
    parent = click.Context(main, info_name="ctxmem-plugin", terminal_width=100, max_content_width=100, **main.context_settings)
    ctx = parent
    for name in path:
        ctx = click.Context(command if name == path[-1] else ctx.command.get_command(ctx, name),  # type: ignore[union-attr]
                            info_name=name, parent=ctx, terminal_width=100, max_content_width=100)
    return command.get_help(ctx)


def render() -> str:
    """The whole page."""
    parts = [INTRO]
    for path, command in commands():
        title = " ".join(("ctxmem-plugin", *path))
        parts.append(f"## `{title}`\n\n```text\n{help_text(path, command).rstrip()}\n```\n")
    return "\n".join(parts)


if __name__ == "__main__":
    print(render(), end="")
