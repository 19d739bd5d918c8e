"""The exceptions the library raises.

Every error a caller can act on is one of these; the CLI turns them into one-line messages
with exit code 2 (bad input or usage) or 1 (anything else that went wrong).
"""

from __future__ import annotations


class CtxMemError(Exception):
    """Base class of every error raised on purpose by ctxmem-plugin.

    The message is one line. ``details`` holds the full list when there are several findings
    (every problem of a model directory, say); the CLI prints it with ``--verbose``.
    """

    exit_code: int = 1
    details: tuple[str, ...] = ()


class InputError(CtxMemError):
    """Bad input from a user: a malformed log record, a bad argument, a bad namespace.

    Args:
        message: what was expected and what was found.
        source: where the bad input is, e.g. ``"chat.jsonl:17"``; empty when there is no file.
    """

    exit_code = 2

    def __init__(self, message: str, source: str = "") -> None:
        self.message = message
        self.source = source
        super().__init__(f"{source}: {message}" if source else message)


class NamespaceError(InputError):
    """A namespace tuple or label that is not allowed (empty, or containing ``/``)."""


class FormatError(InputError):
    """A chat log that does not match the format it claims or was detected as."""


class MemoryNotFoundError(CtxMemError):
    """A memory directory that does not exist was opened for reading."""

    exit_code = 2


class MemoryLockedError(CtxMemError):
    """Another process holds the writer lock of a memory directory."""


class ModelMismatchError(CtxMemError):
    """The memory was built with another encoder (name or dimension) than the one given."""

    exit_code = 2


class CheckpointError(CtxMemError):
    """A model directory that is missing files, corrupt, or does not match its config.

    The message names the first problem and how many more there are; ``details`` lists them all.
    """

    exit_code = 2

    def __init__(self, message: str, details: tuple[str, ...] | list[str] = ()) -> None:
        super().__init__(message)
        self.details = tuple(details)


class MemoryCorruptError(CtxMemError):
    """A memory directory whose files are damaged or altered: not a database, a truncated file,
    a schema version that does not match its tables, a meta value or slot state that cannot be
    what this code wrote. ``ctxmem-plugin doctor --memory DIR [--repair]`` says more."""

    exit_code = 2


class DependencyError(CtxMemError):
    """An optional dependency (faiss, sentence-transformers) is not installed."""


class ServerError(CtxMemError):
    """A memory server could not be reached, did not answer in time, or failed on its side."""


class AuthError(CtxMemError):
    """A memory server refused the request: its bearer token is missing or wrong."""

    exit_code = 2


class ConfigError(InputError, ValueError):
    """Settings that are out of range, of the wrong type, unknown, or inconsistent with each other.

    A :class:`ValueError` too, as bad arguments to a constructor are in Python.
    """


class BackendError(CtxMemError):
    """The storage backend failed or cannot be reached (a database server down, refused, misnamed)."""
