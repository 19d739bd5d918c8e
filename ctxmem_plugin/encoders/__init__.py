"""Encoders: text -> L2-normalised vectors.

:class:`~.base.TextEncoder` is the contract; :class:`~.sentence.SentenceEncoder` runs a local
sentence-transformers model (all-MiniLM-L6-v2 by default), :class:`~.hashing.HashEncoder` is a
model-free stand-in, and :mod:`.tuned` checks the fine-tuned encoder a model directory carries.
"""

from __future__ import annotations

from pathlib import Path

from ctxmem_plugin.encoders.base import DEFAULT_MODEL, TextEncoder, resolve_device
from ctxmem_plugin.encoders.hashing import HashEncoder
from ctxmem_plugin.encoders.sentence import SentenceEncoder, default_model_path
from ctxmem_plugin.errors import InputError

__all__ = [
    "DEFAULT_MODEL", "HashEncoder", "SentenceEncoder", "TextEncoder", "default_model_path", "load_encoder", "resolve_device",
]


def load_encoder(model: str | Path | TextEncoder | None, device: str = "auto") -> TextEncoder:
    """An encoder from a model dir, ``None`` (the default model), or an encoder object."""
    if model is None or isinstance(model, (str, Path)):
        return SentenceEncoder(model, device=device)
    if isinstance(model, TextEncoder):
        return model
    raise InputError(f"model must be a local directory or an encoder object, got {type(model).__name__}")
