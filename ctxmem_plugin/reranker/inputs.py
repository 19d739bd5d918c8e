"""What the model reads besides the turn embeddings: per-turn features of a slot write, the focus probe.

Shared by search (:mod:`.runtime`) and training data (:mod:`ctxmem_plugin.training.data`), so
that both feed the model exactly the same inputs.
"""

from __future__ import annotations

import numpy as np

TURN_FEATURES = 4
"""Per-turn inputs of a slot write besides the embedding: user?, assistant?, image?, length."""


def turn_features(roles: list[str], lengths: list[int], images: list[bool], width: int) -> np.ndarray:
    """``(t, width)`` features of turns for :meth:`SlotMemory.write` (zero-padded to ``width``)."""
    out = np.zeros((len(roles), width), dtype=np.float32)
    if width == 0:
        return out
    cols = np.stack(
        [
            np.array([r == "user" for r in roles], dtype=np.float32),
            np.array([r == "assistant" for r in roles], dtype=np.float32),
            np.array(images, dtype=np.float32),
            np.log1p(np.array(lengths, dtype=np.float32)) / 8.0,
        ],
        axis=1,
    )  # (t, 4)
    k = min(width, TURN_FEATURES)
    out[:, :k] = cols[:, :k]
    return out


def focus_probe(query_vector: np.ndarray, focus: np.ndarray | None) -> np.ndarray | None:
    """The query widened by the focus, ``normalise(q/|q| + f/|f|)``; None without a focus.

    Its nearest turns join the candidates of a query: a follow-up such as "what did she say
    about it?" names nothing, and only the focus (what was just said) can bring its referent in.
    """
    if focus is None:
        return None
    fn = float(np.linalg.norm(focus))
    qn = float(np.linalg.norm(query_vector))
    if fn < 1e-6 or qn < 1e-6:
        return None
    probe = query_vector / qn + focus / fn
    return (probe / np.linalg.norm(probe)).astype(np.float32)
