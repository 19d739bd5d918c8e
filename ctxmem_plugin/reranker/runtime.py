"""The trained model at work inside a memory: slot states per namespace, re-scoring, explain.

Slots are written in fixed chunks of ``write_chunk`` turns, the same chunks as in training, so
a namespace's slots depend only on its turns, never on how they were batched into ``add``
calls. Full chunks are folded into the persisted state; the turns of a last, partial chunk are
written on the fly when the slots are read. Either way a write costs the same at turn 10 as at
turn 10,000: the state is ``members x num_slots x dim`` whatever the history length.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ctxmem_plugin import namespaces as ns
from ctxmem_plugin.config import Config, bounded
from ctxmem_plugin.encoders import DEFAULT_MODEL, TextEncoder, resolve_device
from ctxmem_plugin.encoders.tuned import bundled_encoder
from ctxmem_plugin.errors import CheckpointError, ConfigError, MemoryCorruptError
from ctxmem_plugin.records import StoredTurn
from ctxmem_plugin.reranker.checkpoint import CONFIG_NAME, load_checkpoint, read_config
from ctxmem_plugin.reranker.inputs import focus_probe, turn_features
from ctxmem_plugin.reranker.model import CtxMemModel
from ctxmem_plugin.reranker.slots import focus_trace
from ctxmem_plugin.retrieval.features import FEATURE_NAMES, candidate_features
from ctxmem_plugin.retrieval.hybrid import Candidates, RetrievalConfig
from ctxmem_plugin.storage.base import MemoryStore

@dataclass(frozen=True)
class RuntimeSettings(Config):
    """How the model is used; saved under ``extra["runtime"]`` in the model's config.json.

    Attributes:
        pool: candidates taken from each of BM25 and dense search for the model to re-rank.
        write_chunk: turns folded into the slots per write (as in training).
        retrieval: the retrieval settings the model's features were computed with
            (:class:`RetrievalConfig` fields); None: the defaults.
        focus_pool: how many turns nearest to :func:`focus_probe` join a query's candidates
            (0: none; the candidates are then exactly the hybrid pipeline's).
    """

    pool: int = bounded(200, low=1, high=100_000)
    write_chunk: int = bounded(8, low=1, high=4096)
    retrieval: dict[str, Any] | None = None
    focus_pool: int = bounded(0, low=0, high=100_000)

    def check(self) -> None:
        if self.retrieval is not None:
            RetrievalConfig.from_dict(self.retrieval)  # unknown keys and bad values fail here, on load

    @classmethod
    def from_extra(cls, extra: dict[str, Any]) -> RuntimeSettings:
        """The settings in a model's ``extra`` (defaults for what a model saved before them lacks)."""
        data = extra.get("runtime")
        return cls() if data is None else cls.from_dict(data)


def write_chunks(model: CtxMemModel, slots: torch.Tensor, vectors: torch.Tensor, feats: torch.Tensor, chunk: int) -> torch.Tensor:
    """Fold turns into slots ``chunk`` at a time; slots ``(1, members * m, d)``, vectors ``(t, d)``."""
    for start in range(0, vectors.shape[0], chunk):
        v = vectors[start : start + chunk].unsqueeze(0)  # (1, c, d)
        f = feats[start : start + chunk].unsqueeze(0)  # (1, c, f)
        slots = model.write(slots, v, None, f if f.shape[-1] else None)  # (1, members * m, d)
    return slots


class Reranker:
    """A trained model at work in one memory: its slot states, re-scoring, explain.

    Args:
        model: the trained model (eval mode).
        settings: pool size, write chunk, retrieval settings it was trained with.
        model_id: identifies the weights (slot states made by other weights are recomputed).
        store: the memory's store.
        device: where the model runs.
    """

    def __init__(self, model: CtxMemModel, settings: RuntimeSettings, model_id: str, store: MemoryStore | None, device: str) -> None:
        self.model = model
        self.settings = settings
        self.model_id = model_id
        self.store = store  # type: ignore[assignment]  # bound by ContextMemory once opened
        self.device = device
        self.path: Path | None = None
        cfg = model.config
        unknown = [name for name in cfg.feature_names if name not in FEATURE_NAMES]
        if unknown:
            raise CheckpointError(f"model features {unknown} are not computed by this version ({list(FEATURE_NAMES)}); retrain it")
        # A model trained before some features existed reads the columns it knows, in its order.
        self.columns = np.array([FEATURE_NAMES.index(name) for name in cfg.feature_names], dtype=np.int64)

    @classmethod
    def load(cls, directory: Path, store: MemoryStore | None = None, *, device: str = "auto") -> Reranker:
        """Load a model directory (safetensors + JSON only); ``store`` may be bound later.

        Its runtime settings are checked before its weights are read.
        """
        dev = resolve_device(device)
        _, extra = read_config(directory)
        try:
            settings = RuntimeSettings.from_extra(extra)
        except ConfigError as exc:
            raise CheckpointError(f"cannot load model from {directory}: {CONFIG_NAME}: extra.runtime: {exc}") from None
        loaded = load_checkpoint(directory, map_location=dev)
        runtime = cls(loaded.model.eval(), settings, loaded.weights_sha256[:16], store, dev)
        runtime.path = directory
        return runtime

    @property
    def pool(self) -> int:
        return self.settings.pool

    def retrieval_config(self, base: RetrievalConfig) -> RetrievalConfig:
        """The retrieval settings the model was trained with (its features depend on them)."""
        return RetrievalConfig.from_dict({**base.to_dict(), **self.settings.retrieval}) if self.settings.retrieval else base

    @property
    def bundles_encoder(self) -> bool:
        """Whether the model directory carries its own (fine-tuned) encoder."""
        return self.model.config.encoder_dir is not None

    def encoder_for(self, device: str) -> str | TextEncoder | None:
        """The encoder the model was trained with: its own tuned one (loaded on first use),
        ``None`` for the default model, else the directory it was trained with."""
        cfg = self.model.config
        if cfg.encoder_dir is not None:
            return bundled_encoder(self.path, cfg.encoder_dir, cfg.encoder, device)
        return None if cfg.encoder == DEFAULT_MODEL else cfg.encoder

    def describe(self) -> dict[str, Any]:
        cfg = self.model.config
        return {
            "path": str(self.path), "id": self.model_id, "slots": cfg.slots.num_slots, "members": cfg.members, "dim": cfg.slots.dim,
            "use_slots": cfg.scorer.use_slots, "pool": self.pool, "encoder": cfg.encoder,
        }

    # -- slot states ------------------------------------------------------------------------

    def _features_of(self, ids: list[int]) -> torch.Tensor:
        rows = self.store.get(ids)
        f = turn_features(
            [r.role for r in rows], [len(r.content) for r in rows], [bool(r.metadata.get("image_caption")) for r in rows],
            self.model.config.slots.feature_dim,
        )
        return torch.from_numpy(f).to(self.device)

    def _state(self, namespace: ns.Namespace) -> tuple[torch.Tensor, int, int]:
        """``(slots (1, members * m, d), last folded id, folded count)`` as stored, or the initial state."""
        state = self.store.get_slot_state(namespace)
        if state is not None and state[0] == self.model_id:
            slots = torch.from_numpy(self._state_array(namespace, state[3])).to(self.device)  # (1, members * m, d)
            return slots, state[1], state[2]
        return self.model.init_slots(1).to(self.device), 0, 0

    @torch.no_grad()
    def _fold(self, namespace: ns.Namespace, ids: np.ndarray, vectors: np.ndarray) -> tuple[torch.Tensor, int, int]:
        """Slots after folding the full chunks of ``ids`` into the stored state; returns
        ``(slots, last folded id, folded count)`` without saving."""
        chunk = self.settings.write_chunk
        slots, last, count = self._state(namespace)
        # Everything after the last folded turn: pending turns of a partial chunk plus new ones.
        pending_ids, pending_vecs = self._after(namespace, last, ids, vectors)
        full = (len(pending_ids) // chunk) * chunk
        if full:
            v = torch.from_numpy(pending_vecs[:full]).to(self.device)
            f = self._features_of(pending_ids[:full])
            slots = write_chunks(self.model, slots, v, f, chunk)
            last, count = int(pending_ids[full - 1]), count + full
        return slots, last, count

    def _state_array(self, namespace: ns.Namespace, blob: bytes) -> np.ndarray:
        """A stored slot state as ``(1, members * m, d)`` float32, or :class:`MemoryCorruptError`
        if it cannot be one this model wrote (wrong size, NaN or infinite values)."""
        dim, m = self.model.config.slots.dim, self.model.state_slots
        where = f"{self.store.location}: the slot state of namespace {ns.format_namespace(namespace)!r}"
        fix = f"`ctxmem-plugin doctor --memory {self.store.location} --repair` rebuilds it from the turns"
        if len(blob) != m * dim * 4:
            raise MemoryCorruptError(f"{where} has {len(blob):,} bytes, this model's {m * dim * 4:,} (damaged); {fix}")
        state = np.frombuffer(blob, dtype=np.float32).reshape(1, m, dim)
        if not np.isfinite(state).all():
            raise MemoryCorruptError(f"{where} holds NaN or infinite values (damaged); {fix}")
        return state.copy()

    def _after(self, namespace: ns.Namespace, last: int, ids: np.ndarray, vectors: np.ndarray) -> tuple[list[int], np.ndarray]:
        """Ids and vectors of the namespace's turns after ``last`` (the ones given are not read again)."""
        dim = self.model.config.slots.dim
        known = dict(zip(ids.tolist(), vectors))
        pending = self.store.ids_after(namespace, last)
        missing = [i for i in pending if i not in known]
        if missing:
            known.update(zip(missing, self.store.vectors(missing, dim)))
        vecs = np.stack([known[i] for i in pending]) if pending else np.zeros((0, dim), np.float32)
        return pending, vecs

    def update(self, namespace: ns.Namespace, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Fold newly inserted turns into the namespace's state (inside the add transaction)."""
        slots, last, count = self._fold(namespace, ids, vectors)
        blob = slots.detach().to("cpu", torch.float32).numpy().tobytes()
        self.store.put_slot_state(namespace, self.model_id, last, count, blob)

    @torch.no_grad()
    def update_many(self, groups: list[tuple[ns.Namespace, np.ndarray, np.ndarray]]) -> None:
        """:meth:`update` for many namespaces at once: their chunks go through the model together.

        Step ``s`` writes the ``s``-th new chunk of every namespace that has one, as one batch
        (``(b, write_chunk, d)``); a namespace with fewer chunks is masked out of the later steps,
        which leaves its slots exactly as they were. Each namespace still gets the chunks it
        would get alone.
        """
        if len(groups) <= 1:
            for space, ids, vectors in groups:
                self.update(space, ids, vectors)
            return
        chunk, dim = self.settings.write_chunk, self.model.config.slots.dim
        starts, pending = [], []
        for space, ids, vectors in groups:
            slots, last, count = self._state(space)
            p_ids, p_vecs = self._after(space, last, ids, vectors)
            full = (len(p_ids) // chunk) * chunk
            starts.append((slots, last, count))
            pending.append((p_ids[:full], p_vecs[:full]))
        steps = max(len(p) // chunk for p, _ in pending)
        slots = torch.cat([s for s, _, _ in starts], dim=0)  # (b, members * m, d)
        if steps:
            every = [i for p, _ in pending for i in p]
            feats_all = self._features_of(every) if every else None  # (n, f)
            fdim = feats_all.shape[-1] if feats_all is not None else 0
            offset, offsets = 0, []
            for p, _ in pending:
                offsets.append(offset)
                offset += len(p)
            b = len(groups)
            for step in range(steps):
                v = torch.zeros(b, chunk, dim, device=self.device)  # (b, c, d)
                f = torch.zeros(b, chunk, fdim, device=self.device)  # (b, c, f)
                mask = torch.zeros(b, chunk, dtype=torch.bool, device=self.device)  # (b, c)
                for row, ((p_ids, p_vecs), at) in enumerate(zip(pending, offsets)):
                    lo = step * chunk
                    if lo < len(p_ids):
                        v[row] = torch.from_numpy(np.ascontiguousarray(p_vecs[lo : lo + chunk])).to(self.device)
                        if fdim:
                            f[row] = feats_all[at + lo : at + lo + chunk]  # type: ignore[index]
                        mask[row] = True
                slots = self.model.write(slots, v, mask, f if fdim else None)  # (b, members * m, d)
        for row, ((space, _, _), (_, last, count), (p_ids, _)) in enumerate(zip(groups, starts, pending)):
            if len(p_ids):
                last, count = int(p_ids[-1]), count + len(p_ids)
            blob = slots[row : row + 1].detach().to("cpu", torch.float32).numpy().tobytes()
            self.store.put_slot_state(space, self.model_id, last, count, blob)

    @torch.no_grad()
    def slots_for(self, namespace: ns.Namespace) -> torch.Tensor:
        """The namespace's current slot state ``(1, members * m, d)``, the partial last chunk included."""
        empty = np.zeros(0, np.int64), np.zeros((0, self.model.config.slots.dim), np.float32)
        slots, last, _ = self._fold(namespace, *empty)
        pending_ids, pending_vecs = self._after(namespace, last, *empty)
        if pending_ids:
            v = torch.from_numpy(pending_vecs).to(self.device)
            slots = write_chunks(self.model, slots, v, self._features_of(pending_ids), self.settings.write_chunk)
        return slots

    def focus_of(self, namespace: ns.Namespace, slots: torch.Tensor | None = None) -> np.ndarray | None:
        """The namespace's focus (a trace of its latest turns), or None without one or any turn.

        ``slots``: the namespace's slots if already computed (:meth:`slots_for`).
        """
        if not self.model.config.slots.has_focus:
            return None
        slots = self.slots_for(namespace) if slots is None else slots
        focus = self.model.focus(slots)[0].cpu().numpy()  # type: ignore[index]
        return focus if float(np.linalg.norm(focus)) > 1e-6 else None

    @torch.no_grad()
    def focus_of_turns(self, vectors: np.ndarray) -> np.ndarray | None:
        """The focus after a thread given as turn embeddings ``(t, d)``, oldest first, written from an
        empty one (as :meth:`focus_of` would find it had they been stored); None without a focus or turns."""
        if not self.model.config.slots.has_focus or len(vectors) == 0:
            return None
        turns = torch.from_numpy(np.ascontiguousarray(vectors, np.float32)).to(self.device).unsqueeze(0)  # (1, t, d)
        start = torch.zeros(1, turns.shape[-1], device=self.device)  # (1, d)
        focus = focus_trace(start, turns, None, self.model.config.slots.focus_rate)[0].cpu().numpy()  # (d,)
        return focus if float(np.linalg.norm(focus)) > 1e-6 else None

    def probe(self, query_vector: np.ndarray, focus: np.ndarray | None) -> np.ndarray | None:
        """The vector whose ``settings.focus_pool`` nearest turns join a query's candidates, or None."""
        return focus_probe(query_vector, focus) if self.settings.focus_pool else None

    # -- retrieval --------------------------------------------------------------------------

    @torch.no_grad()
    def rescore(
        self, cands: Candidates, rows: Mapping[int, StoredTurn], config: RetrievalConfig, focus: np.ndarray | None = None,
        known: dict[ns.Namespace, torch.Tensor] | None = None,
    ) -> Candidates:
        """Score candidates with the model; candidates from several namespaces use each one's slots.

        Args:
            cands: the retriever's candidates (all of them, not a top k: the features compare them).
            rows: every candidate's stored turn, by id.
            config: the retrieval settings the candidates were fused with.
            focus: the focus the query follows up on (another namespace's); by default each
                namespace's own.
            known: slots already computed in this search, by namespace.
        """
        if len(cands) == 0:
            return cands
        features = candidate_features(cands, rows, config)  # (n, F)
        score = np.zeros(len(cands))
        residual = np.zeros(len(cands))
        groups: dict[ns.Namespace, list[int]] = {}
        for j, i in enumerate(cands.ids.tolist()):
            groups.setdefault(rows[i].namespace, []).append(j)
        q = torch.from_numpy(cands.query_vector.astype(np.float32)).to(self.device).unsqueeze(0)  # (1, d)
        given = None if focus is None else torch.from_numpy(focus.astype(np.float32)).to(self.device).unsqueeze(0)  # (1, d)
        for space, members in groups.items():
            feats = torch.from_numpy(features[np.ix_(members, self.columns)]).to(self.device).unsqueeze(0)  # (1, n, F)
            cand = torch.from_numpy(cands.vectors[members]).to(self.device).unsqueeze(0)  # (1, n, d)
            slots = known[space] if known and space in known else self.slots_for(space)  # (1, members * m, d)
            out = self.model(feats, None, q, cand, slots, given)[0].double().cpu().numpy()  # (n,)
            score[members] = out
            residual[members] = out - features[members, 0]
        signals = [{**s, "ctxmem": {"score": float(score[j]), "slots_residual": float(residual[j])}} for j, s in enumerate(cands.signals)]
        return replace(cands, score=score, signals=signals)

    @torch.no_grad()
    def explain(self, query_vector: np.ndarray, namespace: ns.Namespace, store: MemoryStore, *, top_turns: int = 3) -> dict[str, Any]:
        """Slot attention of a query, and for the most attended slots the turns closest to them.

        With several members, the first member's: each member's slots are its own, and slot
        ``i`` of one member has nothing to do with slot ``i`` of another.
        """
        slots = self.model.member_slots(self.slots_for(namespace))[0]  # (1, m, d)
        q = torch.from_numpy(query_vector.astype(np.float32)).to(self.device).unsqueeze(0)
        _, attention = self.model.slots.read(slots, q)  # (1, m)
        att = attention[0].cpu().numpy()
        id_array, allv = store.namespace_vectors(namespace, self.model.config.slots.dim)  # (t,), (t, d)
        ids = id_array.tolist()
        slot_np = slots[0].cpu().numpy()
        out_slots = []
        if ids:
            sn = slot_np / np.linalg.norm(slot_np, axis=1, keepdims=True).clip(1e-6)
            sim = allv @ sn.T  # (t, m)
            for s in np.argsort(-att)[: min(4, len(att))]:
                best = np.argsort(-sim[:, s])[:top_turns]
                rows = {t.id: t for t in store.get([ids[b] for b in best])}
                out_slots.append({
                    "slot": int(s), "attention": float(att[s]),
                    "focus": bool(self.model.config.slots.has_focus and s == len(att) - 1),
                    "turns": [{"id": ids[b], "similarity": float(sim[b, s]), "speaker": rows[ids[b]].speaker or rows[ids[b]].role,
                               "text": rows[ids[b]].content} for b in best],
                })
        return {"namespace": list(namespace), "attention": [float(a) for a in att], "entropy": float(-(att * np.log(att + 1e-12)).sum() / math.log(len(att))), "top_slots": out_slots}
