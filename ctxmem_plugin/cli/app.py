"""The ``ctxmem-plugin`` command group and what its commands share: options, errors, opening a memory.

Heavy imports (torch, sentence-transformers, faiss) happen inside the commands that need them,
so ``--help``, ``stats`` and ``forget`` answer at once.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ctxmem_plugin import __version__
from ctxmem_plugin.errors import CtxMemError

if TYPE_CHECKING:
    from ctxmem_plugin.memory import ContextMemory

F = TypeVar("F", bound=Callable[..., Any])


class UsageFailure(click.ClickException):
    """A one-line error with exit code 2 (bad input or usage), as click's own usage errors."""

    exit_code = 2


def handle_errors(func: F) -> F:
    """Turn library errors into one-line click errors; the exit code comes from the error.

    With ``ctxmem-plugin --verbose``, an error's details (every problem of a model directory,
    say) follow it, one per line. A database error that means a damaged or busy memory is
    reported as one too (:func:`ctxmem_plugin.storage.opening.as_memory_error`).
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except CtxMemError as exc:
            raise _click_error(exc) from None
        except Exception as exc:  # only a database error that means a damaged or busy memory is turned
            from ctxmem_plugin.storage.opening import as_memory_error

            error = as_memory_error(exc, kwargs.get("memory_dir") or "the memory")
            if error is None:
                raise
            raise _click_error(error) from None

    return wrapper  # type: ignore[return-value]


def _click_error(exc: CtxMemError) -> click.ClickException:
    message = " ".join(str(exc).split("\n"))
    context = click.get_current_context(silent=True)
    if exc.details and context is not None and context.find_root().params.get("verbose"):
        message += "".join(f"\n  - {line}" for line in exc.details)
    return UsageFailure(message) if exc.exit_code == 2 else click.ClickException(message)


class MemoryLocation(click.ParamType):
    """``--memory``: a directory (the embedded store) or ``postgresql://user@host/db``; given back as a string."""

    name = "DIR|URL"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value)
        if "://" not in text and Path(text).exists() and not Path(text).is_dir():
            self.fail(f"{text!r} is a file; expected a memory directory or postgresql://user@host/database", param, ctx)
        return text


def memory_option(func: F) -> F:
    return click.option(
        "--memory", "-m", "location", required=True, type=MemoryLocation(), envvar="CTXMEM_MEMORY",
        help="Memory directory, or postgresql://user@host/database (env CTXMEM_MEMORY).",
    )(func)


def namespace_option(default: str | None = "default", help_text: str = "Namespace, labels joined by '/'.") -> Callable[[F], F]:
    def deco(func: F) -> F:
        return click.option("--namespace", "-n", default=default, show_default=default is not None, help=help_text)(func)

    return deco


def model_options(func: F) -> F:
    func = click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N.")(func)
    func = click.option(
        "--encoder", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
        help="Local sentence-transformers model dir (default: bundled all-MiniLM-L6-v2).",
    )(func)
    return click.option(
        "--model", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
        help="Trained ctxmem model dir (config.json + model.safetensors).",
    )(func)


def open_memory(
    location: str, *, read_only: bool, create: bool = True, model: Path | None = None, encoder: Path | None = None,
    device: str = "auto",
) -> ContextMemory:
    """Open a memory (a directory or a database URL) that the command's context closes when the command ends."""
    from ctxmem_plugin.memory import ContextMemory

    memory = ContextMemory(location, read_only=read_only, create=create, model=model, encoder=encoder, device=device)
    click.get_current_context().call_on_close(memory.close)
    return memory


def parse_namespace(text: str, *, allow_empty: bool = False) -> tuple[str, ...]:
    from ctxmem_plugin.namespaces import validate

    return validate(text, allow_empty=allow_empty)


def nothing_under(memory: ContextMemory, space: tuple[str, ...]) -> str | None:
    """``None`` if ``space`` holds turns; else a sentence saying it does not, with the nearest namespaces."""
    from ctxmem_plugin.namespaces import format_namespace

    if memory.namespaces(space):
        return None
    where = format_namespace(space) or "the memory"
    known = [format_namespace(s) for s, _ in memory.namespaces(())]
    if not known:
        return f"nothing is stored under {where}: the memory is empty"
    prefixes = sorted({"/".join(k.split("/")[: max(len(space), 1)]) for k in known})
    near = difflib.get_close_matches(format_namespace(space), prefixes, n=3, cutoff=0.0)
    return f"nothing is stored under {where}; nearest namespaces: {', '.join(near)}"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ctxmem-plugin")
@click.option("--verbose", "-v", is_flag=True, help="On an error, also list every problem found (one per line).")
def main(verbose: bool) -> None:
    """Offline long-term memory for LLM agents.

    \b
    Build a memory from chat logs, then ask it:
      ctxmem-plugin ingest examples/chat_logs --memory ./mem --namespace maya
      ctxmem-plugin query "what is the name of Maya's dog?" --memory ./mem --namespace maya
    """
