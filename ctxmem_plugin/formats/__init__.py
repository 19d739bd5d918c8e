"""Readers of chat logs into validated turns, one module per format, and the memory's own JSONL.

:func:`read_paths` / :func:`read_log` read OpenAI messages, LangChain dumps, ShareGPT
(:mod:`.messages`), LoCoMo (:mod:`.locomo`) and ``Speaker: text`` transcripts (:mod:`.transcript`),
the format detected per file (:mod:`.detect`) or named. Each turn comes with the ``file:line`` it
came from; bad input raises :class:`~ctxmem_plugin.errors.FormatError` naming it, or with
``skip_invalid=True`` is left out and listed in :attr:`ParsedLog.skipped`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from ctxmem_plugin.errors import FormatError, InputError
from ctxmem_plugin.formats import locomo, messages, transcript
from ctxmem_plugin.formats.detect import detect
from ctxmem_plugin.formats.document import Document, ParsedLog, Pending, SourceTurn, build_turn, collect, open_document

__all__ = [
    "FORMATS", "LOG_SUFFIXES", "ParsedLog", "SourceTurn", "build_turn", "detect_format", "list_paths", "log_files",
    "parse_document", "read_listed", "read_log", "read_paths",
]

FORMATS = ("openai", "langchain", "sharegpt", "locomo", "transcript")


LOG_SUFFIXES = frozenset({".json", ".jsonl", ".ndjson", ".txt", ".text", ".log", ".md"})
"""File endings that :func:`read_paths` picks up when it expands a directory."""


_READERS: dict[str, Callable[[Document], Iterator[Pending]]] = {
    "openai": messages.read_openai,
    "langchain": messages.read_langchain,
    "sharegpt": messages.read_sharegpt,
    "locomo": locomo.iter_turns,
    "transcript": transcript.read_transcript,
}


def detect_format(path: Path, text: str | None = None) -> str:
    """Name the format of a chat log, one of :data:`FORMATS` (rules in the module docstring).

    Args:
        path: the file; its extension helps, and it is read when ``text`` is not given.
        text: the file's text, when already read.

    Raises:
        FormatError: the file is empty, not UTF-8, malformed JSON, or in no known format.
    """
    return detect(open_document(path, text))


def read_log(path: str | Path, fmt: str | None = None, *, skip_invalid: bool = False) -> ParsedLog:
    """Read one chat log into validated turns.

    Args:
        path: the file.
        fmt: one of :data:`FORMATS`; ``None`` (or ``"auto"``) detects it.
        skip_invalid: leave bad records out (listed in ``skipped``) instead of raising.

    Raises:
        InputError: unknown ``fmt``, or a file that cannot be read.
        FormatError: bad input, with ``source="path:line"``.
    """
    return parse_document(open_document(path, fmt=_check_format(fmt)), fmt, skip_invalid=skip_invalid)


def read_paths(
    paths: Iterable[str | Path], fmt: str | None = None, *, skip_invalid: bool = False
) -> list[ParsedLog]:
    """Read files and directories (each standing for its log files, recursively) like :func:`read_log`.

    A directory's files are read in sorted order, leaving out hidden files and folders and files
    not ending in one of :data:`LOG_SUFFIXES`; each file's format is detected on its own. With
    ``skip_invalid``, a file found in a directory that is no chat log at all (a README beside the
    logs, an empty or unreadable file) is skipped whole: its :class:`ParsedLog` has no turns,
    format ``"none"`` and the reason in ``skipped``. A file named itself must be readable.

    Raises:
        InputError: unknown ``fmt``, a missing file, or a directory without log files.
        FormatError: as :func:`read_log`.
    """
    name = _check_format(fmt)
    return [read_listed(file, found, name, skip_invalid=skip_invalid) for file, found in list_paths(paths)]


def list_paths(paths: Iterable[str | Path] | str | Path) -> list[tuple[Path, bool]]:
    """The files :func:`read_paths` reads, in its order, each with whether a directory held it.

    Raises:
        InputError: a directory without log files.
    """
    files: list[tuple[Path, bool]] = []
    for item in [paths] if isinstance(paths, (str, Path)) else paths:
        path = Path(item)
        files.extend([(f, True) for f in log_files(path)] if path.is_dir() else [(path, False)])
    return files


def read_listed(file: Path, found: bool, fmt: str | None = None, *, skip_invalid: bool = False) -> ParsedLog:
    """One file of :func:`list_paths` as :func:`read_paths` reads it (so that workers can read them apart).

    Args:
        file: the file.
        found: whether a directory held it: with ``skip_invalid``, such a file that is no chat
            log at all is skipped whole instead of failing.
        fmt: as :func:`read_log`.
        skip_invalid: as :func:`read_log`.
    """
    try:
        return read_log(file, fmt, skip_invalid=skip_invalid)
    except FormatError as error:
        if not (skip_invalid and found):
            raise
        return ParsedLog(file, "none", [], [error])


def parse_document(doc: Document, fmt: str | None, *, skip_invalid: bool = False) -> ParsedLog:
    """Run the reader of ``fmt`` (``None``: detected) over ``doc``; see :func:`read_log`."""
    fmt = _check_format(fmt) or detect(doc)
    return collect(doc, fmt, _READERS[fmt](doc), skip_invalid=skip_invalid)


def _check_format(fmt: str | None) -> str | None:
    if fmt not in (None, "auto", *FORMATS):
        raise InputError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)} (or auto)")
    return None if fmt == "auto" else fmt


def log_files(directory: Path) -> list[Path]:
    found = sorted(
        path for path in directory.rglob("*")
        if path.is_file() and path.suffix.lower() in LOG_SUFFIXES
        and not any(part.startswith(".") for part in path.relative_to(directory).parts)
    )
    if not found:
        endings = ", ".join(sorted(LOG_SUFFIXES))
        raise InputError(f"no chat logs in this directory; expected files ending in {endings}", str(directory))
    return found
