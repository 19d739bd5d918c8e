"""An encoder wrapper that embeds each distinct text once, for a training run that embeds twice."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ctxmem_plugin.encoders.base import TextEncoder


class MemoEncoder:
    """Wraps an encoder and remembers every text's vector, for one run that embeds texts twice.

    ``train`` with labelled logs gathers each conversation's turns and questions once to fit the
    fusion and again, with cues and follow-ups, to train: the second pass takes the first pass's
    vectors instead of running the model over the same texts again. Each distinct text is
    encoded once and then always gets the same vector, whichever batch asks for it.

    Args:
        encoder: the encoder to wrap; its ``name`` and ``dim`` are this one's.
    """

    def __init__(self, encoder: TextEncoder) -> None:
        self.encoder = encoder
        self.name = encoder.name
        self._vectors: dict[str, np.ndarray] = {}
        self.encoded = 0  # texts the wrapped encoder has been given
        self.reused = 0  # texts answered from memory

    @property
    def dim(self) -> int:
        """Width of the vectors."""
        return self.encoder.dim

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors of the texts, the unseen ones encoded together in one call."""
        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of strings; use encode_query() for one")
        missing = list(dict.fromkeys(t for t in texts if t not in self._vectors))
        if missing:
            for text, vector in zip(missing, self.encoder.encode(missing)):
                self._vectors[text] = vector
        self.encoded += len(missing)
        self.reused += len(texts) - len(missing)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._vectors[t] for t in texts])  # (n, d)

    def encode_query(self, text: str) -> np.ndarray:
        """Vector of one query (remembered like any other text)."""
        return self.encode([text])[0]  # (d,)
