"""The encoder of a memory server, called over HTTP: for callers that embed text themselves.

A vector store's search by vector, MMR and a query embedded once and reused need query vectors
from the memory's own encoder; through a server, that encoder runs in the server.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ctxmem_plugin.remote.transport import Transport
from ctxmem_plugin.wire import API_PREFIX, vectors_from_json


class RemoteEncoder:
    """A :class:`~ctxmem_plugin.encoders.TextEncoder` whose vectors come from a memory server.

    Args:
        transport: the connection to the server.
        name: the server encoder's name.
        dim: its vector width.
    """

    def __init__(self, transport: Transport, name: str, dim: int) -> None:
        self._transport = transport
        self.name = name
        self.dim = dim

    def encode(self, texts: Sequence[str]) -> np.ndarray:  # (n, dim) float32
        """Encode documents (as stored turns are)."""
        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of strings; use encode_query() for one")
        answer = self._transport.request("POST", f"{API_PREFIX}/embed", {"texts": list(texts), "query": False})
        return vectors_from_json(answer["vectors"], self.dim)

    def encode_query(self, text: str) -> np.ndarray:  # (dim,) float32
        """Encode one search query."""
        answer = self._transport.request("POST", f"{API_PREFIX}/embed", {"texts": [text], "query": True})
        return vectors_from_json(answer["vectors"], self.dim)[0]
