"""A tuned encoder kept inside a model directory: its name, and the checks before it is loaded.

A model trained with a fine-tuned encoder (:mod:`ctxmem_plugin.training.encoder_tuning`) is only
meaningful with that encoder, so the model directory carries it in ``encoder/``: a
sentence-transformers directory with ``model.safetensors``, JSON configs and tokenizer files.
Its name is the base encoder's name plus the hash of its weights (``all-MiniLM-L6-v2+tuned-
3f9a...``): a memory records it, so a memory built with one tuned encoder is never read with
another, and moving the model directory changes nothing.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ctxmem_plugin.encoders.safety import encoder_problems
from ctxmem_plugin.encoders.sentence import SentenceEncoder

ENCODER_DIR = "encoder"
"""Where a model directory keeps its tuned encoder."""

TUNED_MARK = "+tuned-"
"""Joins the base encoder's name and the tuned weights' fingerprint."""

WEIGHTS = "model.safetensors"


def weights_fingerprint(directory: Path) -> str:
    """The first 16 hex digits of the SHA-256 of ``model.safetensors`` in ``directory``."""
    digest = hashlib.sha256()
    with open(directory / WEIGHTS, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def tuned_name(base_name: str, directory: Path) -> str:
    """The tuned encoder's name: the base's name, ``+tuned-`` and its weights' fingerprint."""
    return f"{base_name}{TUNED_MARK}{weights_fingerprint(directory)}"


def encoder_dir_problems(directory: Path, name: str) -> list[str]:
    """Why ``directory`` is not the safe, intact tuned encoder called ``name`` (empty: it is).

    Checked: what every encoder directory must pass (:func:`~.safety.encoder_problems`: no file
    that loads through pickle or is code, only sentence-transformers module classes, safetensors
    weights); it holds ``modules.json`` and ``model.safetensors``; the weights' hash is the one
    in ``name``.
    """
    label = directory.name
    if not directory.is_dir():
        return [f"missing encoder directory {label}/"]
    problems = encoder_problems(directory, label)
    if not (directory / "modules.json").is_file():
        problems.append(f"missing file {label}/modules.json")
    if not (directory / WEIGHTS).is_file():
        problems.append(f"missing file {label}/{WEIGHTS}")
    elif TUNED_MARK not in name:
        problems.append(f"encoder name {name!r} carries no weights fingerprint")
    elif not name.endswith(TUNED_MARK + weights_fingerprint(directory)):
        problems.append(f"{label}/{WEIGHTS} does not match the fingerprint in {name!r} (corrupt or replaced)")
    return problems


def bundled_encoder(model_dir: Path, encoder_dir: str, name: str, device: str) -> SentenceEncoder:
    """The tuned encoder a model directory carries, under its recorded name (loaded on first use)."""
    return SentenceEncoder(Path(model_dir) / encoder_dir, device=device, name=name)
