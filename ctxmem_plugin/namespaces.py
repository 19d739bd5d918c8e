"""Namespaces: tuples of labels that partition memory between users, agents and sessions.

A namespace is stored as its labels joined by ``/`` plus a trailing ``/`` (``"user-42/s-7/"``).
Because no label may contain ``/``, every namespace under a prefix ``P`` sorts inside the
half-open range ``[P + "/", P + "0")`` (``"0"`` is the character after ``"/"``), so a prefix
search is an exact, index-friendly SQL range instead of a ``LIKE`` that could be fooled.
The root (everything) ends at :data:`ROOT_HIGH`, which sorts after every key a label of at most
:data:`MAX_LABEL_LENGTH` characters can start: no label, whatever its characters, falls outside.
Code-point order is the order SQLite compares the keys in (UTF-8 bytes), as labels must be valid
Unicode text (no lone surrogates).
"""

from __future__ import annotations

from collections.abc import Sequence

from ctxmem_plugin.errors import NamespaceError
from ctxmem_plugin.safejson import is_unicode

Namespace = tuple[str, ...]

SEPARATOR = "/"
MAX_LABEL_LENGTH = 256

ROOT_HIGH = chr(0x10FFFF) * (MAX_LABEL_LENGTH + 1)
"""Upper bound of the root range. A key's first label is at most ``MAX_LABEL_LENGTH`` characters,
each at most U+10FFFF, followed by ``/`` (below U+10FFFF): every key sorts before this."""


def validate(namespace: Sequence[str] | str, *, allow_empty: bool = False) -> Namespace:
    """Return ``namespace`` as a tuple of labels, or raise :class:`NamespaceError`.

    Args:
        namespace: a tuple/list of labels, or the CLI spelling ``"user-42/session-7"``.
        allow_empty: whether the empty tuple (the root, i.e. everything) is accepted;
            reads may use it as a prefix, writes never.
    """
    if isinstance(namespace, str):
        labels: tuple[str, ...] = tuple(namespace.split(SEPARATOR)) if namespace else ()
    elif isinstance(namespace, (tuple, list)):
        labels = tuple(namespace)
    else:
        raise NamespaceError(f"a namespace is a tuple of labels or 'a/b' text, got {type(namespace).__name__}")
    if not labels and not allow_empty:
        raise NamespaceError("namespace must have at least one label, e.g. ('user-42',)")
    for label in labels:  # all types first: the messages below join the labels
        if not isinstance(label, str):
            raise NamespaceError(f"namespace labels must be strings, got {type(label).__name__}")
    for label in labels:
        if not is_unicode(label):  # first: the messages below show labels as they are
            raise NamespaceError(f"namespace label {label!r} is not valid Unicode text (a lone surrogate)")
        if not label or not label.strip():
            raise NamespaceError(f"namespace '{SEPARATOR.join(labels)}' has an empty label")
        if SEPARATOR in label:
            raise NamespaceError(f"namespace label '{label}' contains '/', which separates labels")
        if len(label) > MAX_LABEL_LENGTH:
            raise NamespaceError(f"namespace label longer than {MAX_LABEL_LENGTH} characters")
        if any(ord(ch) < 32 for ch in label):
            raise NamespaceError(f"namespace label {label!r} contains a control character")  # repr shows which
    return labels


def to_key(namespace: Namespace) -> str:
    """The stored form: labels joined by ``/`` with a trailing ``/`` (``""`` for the root)."""
    return "".join(label + SEPARATOR for label in namespace)


def from_key(key: str) -> Namespace:
    """Inverse of :func:`to_key`."""
    return tuple(key.split(SEPARATOR)[:-1]) if key else ()


def prefix_range(prefix: Namespace) -> tuple[str, str]:
    """The half-open key range ``[low, high)`` holding every namespace under ``prefix``."""
    low = to_key(prefix)
    if not low:
        return "", ROOT_HIGH
    return low, low[:-1] + chr(ord(SEPARATOR) + 1)


def format_namespace(namespace: Namespace) -> str:
    """The CLI spelling: ``user-42/session-7``."""
    return SEPARATOR.join(namespace)
