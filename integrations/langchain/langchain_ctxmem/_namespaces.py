"""LangGraph namespace labels <-> ctxmem namespace labels.

LangGraph forbids ``.`` and NUL in labels and allows everything else, ``/`` included; ctxmem
joins labels with ``/`` and also refuses control characters and blank labels. Labels are
percent-escaped per label (``%`` -> ``%25``, ``/`` -> ``%2F``, control characters, and the
spaces of a blank label), which is injective, so the exact prefix ranges of the core keep
meaning "this tuple and its children". Ordinary labels are stored unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

from langgraph.store.base import InvalidNamespaceError

from ctxmem_plugin import namespaces as core_ns
from ctxmem_plugin.errors import NamespaceError


def _needs_escape(ch: str, blank: bool) -> bool:
    return ch in "%/" or ord(ch) < 32 or ord(ch) == 127 or (blank and ch.isspace())


def escape_label(label: str) -> str:
    """One LangGraph label as a ctxmem label (unchanged unless it holds ``%``, ``/``, controls)."""
    blank = not label.strip()
    if not any(_needs_escape(ch, blank) for ch in label):
        return label
    return "".join("".join(f"%{b:02X}" for b in ch.encode("utf-8")) if _needs_escape(ch, blank) else ch for ch in label)


def unescape_label(label: str) -> str:
    """Inverse of :func:`escape_label`."""
    if "%" not in label:
        return label
    out = bytearray()
    i = 0
    while i < len(label):
        if label[i] == "%" and _is_hex(label[i + 1 : i + 3]):
            out.append(int(label[i + 1 : i + 3], 16))
            i += 3
        else:
            out += label[i].encode("utf-8")
            i += 1
    return out.decode("utf-8")


def _is_hex(text: str) -> bool:
    return len(text) == 2 and all(c in "0123456789abcdefABCDEF" for c in text)


def to_core(root: tuple[str, ...], namespace: Sequence[str], *, allow_empty: bool) -> core_ns.Namespace:
    """``root + escaped labels``, validated by the core; errors become ``InvalidNamespaceError``."""
    labels = (*root, *(escape_label(label) for label in namespace))
    try:
        return core_ns.validate(labels, allow_empty=allow_empty)
    except NamespaceError as exc:
        raise InvalidNamespaceError(f"namespace {tuple(namespace)!r}: {exc}") from exc


def from_core(root: tuple[str, ...], namespace: core_ns.Namespace) -> tuple[str, ...]:
    """The LangGraph namespace of a core namespace under ``root``."""
    return tuple(unescape_label(label) for label in namespace[len(root) :])
