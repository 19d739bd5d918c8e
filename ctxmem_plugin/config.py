"""The one way settings are declared and checked: frozen dataclasses validated field by field.

Every settings class (retrieval, slot memory, scorer, model, runtime, training, encoder
tuning) derives from :class:`Config`. Its fields are checked on construction against their
annotated type and the bounds in their metadata (:func:`bounded`), so a config read from a
file (a model's ``config.json``) is rejected with a one-line :class:`ConfigError` before
anything is built from it: no huge allocation from ``num_slots: 1e9``, no string where a
number belongs. :meth:`Config.from_dict` also rejects unknown keys.
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any, TypeVar, Union

from ctxmem_plugin import safejson
from ctxmem_plugin.errors import ConfigError

C = TypeVar("C", bound="Config")


def bounded(default: Any, *, low: float | None = None, high: float | None = None, choices: tuple[Any, ...] = ()) -> Any:
    """A field with a default and the range (inclusive) or the choices it must keep to."""
    return field(default=default, metadata={"low": low, "high": high, "choices": choices})


@dataclass(frozen=True)
class Config:
    """Base of every settings class: validated on construction, JSON round-trippable."""

    def __post_init__(self) -> None:
        hints = _hints(type(self))
        for f in fields(self):
            _check(type(self).__name__, f, hints[f.name], getattr(self, f.name))
        self.check()

    def check(self) -> None:
        """Checks across fields; subclasses raise :class:`ConfigError` here."""

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict (nested configs as dicts, tuples as lists)."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
        """Build from :meth:`to_dict` output; unknown or missing required keys raise :class:`ConfigError`."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{cls.__name__} must be an object, got {_kind(data)}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"unknown {cls.__name__} field(s): {', '.join(map(str, unknown))}")
        missing = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING and f.name not in data]
        if missing:
            raise ConfigError(f"missing {cls.__name__} field(s): {', '.join(missing)}")
        hints = _hints(cls)
        args = {}
        for key, value in data.items():
            sub = _config_type(hints[key])
            if sub is not None and isinstance(value, Mapping):
                value = sub.from_dict(value)
            elif _is_tuple(hints[key]) and isinstance(value, list):
                value = tuple(value)
            args[key] = value
        return cls(**args)


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _check(owner: str, f: Field[Any], hint: Any, value: Any) -> None:
    name = f"{owner}.{f.name}"
    if not _matches(hint, value):
        raise ConfigError(f"{name} must be {_describe(hint)}, got {_show(value)}")
    meta = f.metadata
    if meta.get("choices") and value not in meta["choices"]:
        raise ConfigError(f"{name} must be one of {', '.join(map(repr, meta['choices']))}, got {_show(value)}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        low, high = meta.get("low"), meta.get("high")
        if (low is not None and value < low) or (high is not None and value > high):
            span = f"in [{low:g}, {high:g}]" if low is not None and high is not None else f">= {low:g}" if low is not None else f"<= {high:g}"
            raise ConfigError(f"{name} must be {span}, got {_show(value)}")


def _matches(hint: Any, value: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        return any(_matches(h, value) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is Any:
        return True
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:  # an int is a fine float; NaN and infinities are not settings
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is str:
        return isinstance(value, str)
    if origin is tuple:
        args = typing.get_args(hint)
        return isinstance(value, tuple) and all(_matches(args[0], v) for v in value)
    if origin is dict:
        key, val = typing.get_args(hint)
        return isinstance(value, dict) and all(_matches(key, k) and _matches(val, v) for k, v in value.items())
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def _config_type(hint: Any) -> type[Config] | None:
    for h in typing.get_args(hint) or (hint,):
        if isinstance(h, type) and issubclass(h, Config):
            return h
    return None


def _is_tuple(hint: Any) -> bool:
    return typing.get_origin(hint) is tuple


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(h) for h in typing.get_args(hint))
    if hint is type(None):
        return "null"
    if origin is tuple:
        return f"a list of {_describe(typing.get_args(hint)[0])}s"
    if origin is dict:
        return "an object"
    names = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}
    return names.get(hint, f"a {getattr(hint, '__name__', hint)}")


def _kind(value: Any) -> str:
    return type(value).__name__


def _show(value: Any) -> str:
    return safejson.show(value)  # cut to 60 characters; an integer of thousands of digits by its size


def _plain(value: Any) -> Any:
    if isinstance(value, Config):
        return value.to_dict()
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value
