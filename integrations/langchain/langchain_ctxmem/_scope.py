"""Whose memory a run may touch: the namespace template filled from the run's context/config.

The user id comes from the run (``runtime.context`` first, then ``config["configurable"]``),
never from the model or the messages, and a missing value is an error: falling back to a
shared namespace would leak one user's memories to another.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from string import Formatter
from typing import Any

from langgraph.config import get_config

from ctxmem_plugin import namespaces as core_ns
from langchain_ctxmem._namespaces import escape_label


class MissingScopeError(ValueError):
    """A namespace template names a value (e.g. ``user_id``) the run did not provide."""


def context_values(context: Any) -> dict[str, Any]:
    """The fields of a runtime context: a mapping, a dataclass, a pydantic model or an object."""
    if context is None:
        return {}
    if isinstance(context, Mapping):
        return dict(context)
    if dataclasses.is_dataclass(context) and not isinstance(context, type):
        return {f.name: getattr(context, f.name) for f in dataclasses.fields(context)}
    if hasattr(context, "model_dump"):
        return dict(context.model_dump())
    return dict(vars(context)) if hasattr(context, "__dict__") else {}


def configurable(config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``config["configurable"]`` of the given config, else of the running graph (``{}`` outside one)."""
    if config is None:
        try:
            config = get_config()
        except RuntimeError:  # called outside a runnable context: there is no config
            return {}
    return dict(config.get("configurable") or {})


def fields_of(template: Sequence[str]) -> list[str]:
    """The ``{names}`` a namespace template uses."""
    return [name for label in template for _, name, _, _ in Formatter().parse(label) if name]


def resolve(template: Sequence[str], context: Any = None, config: Mapping[str, Any] | None = None) -> core_ns.Namespace:
    """Fill ``template`` (e.g. ``("users", "{user_id}")``) from the run's context and config."""
    values = {**configurable(config), **context_values(context)}  # the typed context wins
    labels = []
    for label in template:
        try:
            labels.append(label.format_map(values))
        except KeyError as exc:
            raise MissingScopeError(
                f"memory namespace {tuple(template)!r} needs {exc.args[0]!r}: pass it in the run's context "
                f"(agent.invoke(..., context={{{exc.args[0]!r}: ...}})) or config['configurable']"
            ) from None
    return core_ns.validate(labels)


def thread_id(runtime: Any, config: Mapping[str, Any] | None = None) -> str | None:
    """The conversation thread of the run, if it has one (checkpointed runs do)."""
    info = getattr(runtime, "execution_info", None)
    if info is not None and getattr(info, "thread_id", None):
        return str(info.thread_id)
    value = configurable(config).get("thread_id")
    return None if value is None else str(value)


def thread_namespace(space: core_ns.Namespace, thread: str) -> core_ns.Namespace:
    """Where a thread's turns live under the user's namespace: one escaped label more.

    The middleware saves a thread there (its recall and the ``search_memory`` tool take the
    thread's messages from the run itself, as the search's ``history``).
    """
    return (*space, escape_label(thread))
