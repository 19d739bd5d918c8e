"""The encoder contract: what a memory needs from a text encoder, and where it runs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

DEFAULT_MODEL = "all-MiniLM-L6-v2"


@runtime_checkable
class TextEncoder(Protocol):
    """What the memory needs from an encoder; any object with these members can be passed in.

    Vectors must be L2-normalised float32, so that inner product is cosine similarity.
    """

    name: str
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray:  # (n, dim) float32
        """Encode documents (stored turns)."""
        ...

    def encode_query(self, text: str) -> np.ndarray:  # (dim,) float32
        """Encode one search query."""
        ...


def resolve_device(device: str) -> str:
    """``"auto"`` -> ``"cuda"`` when torch sees a GPU, else ``"cpu"``; anything else as given."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
