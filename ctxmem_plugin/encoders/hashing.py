"""A model-free encoder: bag-of-words feature hashing.

For tests, demos and machines where loading a transformer is not wanted: texts that share words
get similar vectors, so keyword-level retrieval works, but there is no semantics. It satisfies
:class:`ctxmem_plugin.encoder.TextEncoder`, so it can be passed as ``ContextMemory(..., encoder=)``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np

_WORD = re.compile(r"\w+")


class HashEncoder:
    """Signed feature hashing of lower-cased words into ``dim`` buckets, L2-normalised.

    Args:
        dim: vector width.
        name: recorded in the memory; a memory refuses an encoder with another name.
    """

    def __init__(self, dim: int = 64, name: str = "hash-64") -> None:
        self.dim = dim
        self.name = name

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)  # (n, d)
        for i, text in enumerate(texts):
            for word in _WORD.findall(text.lower()):
                h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
                out[i, h % self.dim] += 1.0 if (h >> 32) & 1 else -1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        return out / norms

    def encode_query(self, text: str) -> np.ndarray:
        return self.encode([text])[0]  # (d,)
