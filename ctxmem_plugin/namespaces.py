"""Namespaces: tuples of labels that partition memory between users, agents and sessions.

A namespace is stored as its labels joined by ``/`` plus a trailing ``/`` (``"user-42/s-7/"``).
Because no label may contain ``/``, every namespace under a prefix ``P`` sorts inside the
half-open range ``[P + "/", P + "0")`` (``"0"`` is the character after ``"/"``), so a prefix
search is an exact, index-friendly SQL range instead of a ``LIKE`` that could be fooled.
"""

from __future__ import annotations

from collections.abc import Sequence

from ctxmem_plugin.errors import NamespaceError

Namespace = tuple[str, ...]

SEPARATOR = "/"
MAX_LABEL_LENGTH = 256


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
    for label in labels:
        if not isinstance(label, str):
            raise NamespaceError(f"namespace labels must be strings, got {type(label).__name__}")
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
        return "", "\U0010ffff"
    return low, low[:-1] + chr(ord(SEPARATOR) + 1)


def format_namespace(namespace: Namespace) -> str:
    """The CLI spelling: ``user-42/session-7``."""
    return SEPARATOR.join(namespace)
