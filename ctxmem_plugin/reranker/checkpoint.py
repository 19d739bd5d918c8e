"""Saving and loading a model directory: ``config.json`` + ``model.safetensors``.

Weights are stored with safetensors only (never pickle, so loading a model cannot run code).
``config.json`` holds the :class:`~ctxmem_plugin.model.ModelConfig` under ``"model"``, the
SHA-256 of the weights file, and the caller's ``"extra"`` dict::

    {"model": {"slots": {...}, "scorer": {...}, "encoder": "...", "feature_names": [...],
               "version": 1, "encoder_dir": null, "members": 3},
     "weights_sha256": "9f2c...",
     "extra": {...}}

A model trained with a fine-tuned encoder keeps it in ``encoder/`` (``"encoder_dir":
"encoder"``, see :mod:`ctxmem_plugin.encoders.tuned`); loading checks it too.

The weights of member ``k`` are named ``members.<k>.slots.*`` and ``members.<k>.scorer.*``.
A model saved before members existed (no ``members`` field, tensors named ``slots.*`` and
``scorer.*``) loads as one member.

The hash ties the two files together: a corrupted weights file, or a save interrupted between
the two file replacements, is reported instead of silently loading mismatched weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

from ctxmem_plugin.errors import CheckpointError
from ctxmem_plugin.reranker.model import MODEL_VERSION, CtxMemModel, ModelConfig
from ctxmem_plugin.reranker.scorer import ScorerConfig
from ctxmem_plugin.reranker.slots import SlotConfig
from ctxmem_plugin.encoders.tuned import encoder_dir_problems

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
_TOP_LEVEL_KEYS = ("model", "weights_sha256", "extra")
# Fields that configs saved by earlier versions lack; their defaults rebuild those models.
_ADDED_FIELDS = {"model.members"}


def save_model(model: CtxMemModel, directory: Path, *, extra: dict[str, Any] | None = None) -> None:
    """Write ``config.json`` and ``model.safetensors`` into ``directory`` (created if needed).

    Each file is written to a temporary name and moved into place with ``os.replace``, so a
    reader never sees a half-written file. Weights go first: a crash between the two moves
    leaves new weights with the old config, which :func:`load_model` detects by the hash.

    Args:
        model: the model to save; its tensors are copied to the CPU.
        directory: the model directory.
        extra: JSON-serialisable metadata stored under ``"extra"`` (training run, metrics, ...).
    """
    directory = Path(directory)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    blob = st_save(tensors, metadata={"format": "pt"})
    document = {
        "model": model.config.to_dict(),
        "weights_sha256": hashlib.sha256(blob).hexdigest(),
        "extra": dict(extra or {}),
    }
    # Serialise before touching the disk, so a non-JSON ``extra`` writes nothing.
    text = json.dumps(document, indent=2, sort_keys=False) + "\n"
    directory.mkdir(parents=True, exist_ok=True)
    _atomic_write(directory / WEIGHTS_NAME, blob)
    _atomic_write(directory / CONFIG_NAME, text.encode("utf-8"))


def read_config(directory: Path) -> tuple[ModelConfig, dict[str, Any]]:
    """Read and validate a model directory's ``config.json`` without loading weights.

    Args:
        directory: the model directory.

    Returns:
        ``(config, extra)``.

    Raises:
        CheckpointError: listing every problem found in ``config.json``.
    """
    directory = Path(directory)
    _require_directory(directory)
    problems: list[str] = []
    config, extra, _ = _read_config(directory, problems)
    if problems or config is None:
        raise _error(directory, problems)
    return config, extra


def load_model(directory: Path, *, map_location: str = "cpu") -> CtxMemModel:
    """Rebuild a model from its directory and load its weights.

    Args:
        directory: a directory written by :func:`save_model`.
        map_location: device to put the model on, e.g. ``"cpu"`` or ``"cuda:0"``.

    Returns:
        The model, in eval mode.

    Raises:
        CheckpointError: listing every problem found (missing files, bad JSON, unknown or missing
            config fields, a corrupt weights file, missing/unexpected tensors, shape mismatches,
            a bundled encoder that is missing, corrupt or not safetensors-only).
    """
    directory = Path(directory)
    _require_directory(directory)
    problems: list[str] = []
    config, _, expected_sha = _read_config(directory, problems)
    tensors = _read_weights(directory / WEIGHTS_NAME, expected_sha, problems)
    model = CtxMemModel(config) if config is not None else None
    if tensors is not None and config is not None and config.members == 1:
        tensors = _single_member_layout(tensors)
    if model is not None and tensors is not None:
        problems += _compare_state(model.state_dict(), tensors)
    if config is not None and config.encoder_dir is not None:
        problems += encoder_dir_problems(directory / config.encoder_dir, config.encoder)
    if problems or model is None or tensors is None:
        raise _error(directory, problems)
    model.load_state_dict(tensors, strict=True)
    return model.to(map_location).eval()


def _single_member_layout(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """Weights saved before models had members (``slots.*``, ``scorer.*``) as member 0's."""
    if any(key.startswith("members.") for key in tensors):
        return tensors
    return {f"members.0.{key}": value for key, value in tensors.items()}


def _require_directory(directory: Path) -> None:
    if not directory.is_dir():
        raise CheckpointError(f"model directory {directory} does not exist or is not a directory")


def _error(directory: Path, problems: list[str]) -> CheckpointError:
    lines = "\n".join(f"  - {p}" for p in problems)
    return CheckpointError(
        f"cannot load model from {directory}: {len(problems)} problem(s):\n{lines}"
    )


def _read_config(
    directory: Path, problems: list[str]
) -> tuple[ModelConfig | None, dict[str, Any], str | None]:
    """Parse ``config.json``, appending every problem found; ``(None, {}, None)`` if unusable."""
    path = directory / CONFIG_NAME
    if not path.is_file():
        problems.append(f"missing file {CONFIG_NAME}")
        return None, {}, None
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"cannot read {CONFIG_NAME}: {exc}")
        return None, {}, None
    except json.JSONDecodeError as exc:
        problems.append(f"{CONFIG_NAME} is not valid JSON: {exc}")
        return None, {}, None
    if not isinstance(document, dict):
        problems.append(f"{CONFIG_NAME} must hold a JSON object, found {type(document).__name__}")
        return None, {}, None

    before = len(problems)
    for key in sorted(set(document) - set(_TOP_LEVEL_KEYS)):
        problems.append(f"{CONFIG_NAME}: unknown key {key!r}")
    sha = document.get("weights_sha256")
    if sha is not None and not isinstance(sha, str):
        problems.append(f"{CONFIG_NAME}: weights_sha256 must be a string")
        sha = None
    extra = document.get("extra", {})
    if not isinstance(extra, dict):
        problems.append(f"{CONFIG_NAME}: extra must be an object")
        extra = {}
    model = document.get("model")
    if not isinstance(model, dict):
        problems.append(f"{CONFIG_NAME}: missing or non-object key 'model'")
        return None, extra, sha

    model = _without_retired(model, problems)
    _check_fields(model, ModelConfig, "model", problems)
    for section, cls in (("slots", SlotConfig), ("scorer", ScorerConfig)):
        if isinstance(model.get(section), dict):
            _check_fields(model[section], cls, f"model.{section}", problems)
        elif section in model:
            problems.append(f"{CONFIG_NAME}: model.{section} must be an object")
    version = model.get("version")
    if isinstance(version, int) and version > MODEL_VERSION:
        problems.append(
            f"{CONFIG_NAME}: model version {version} is newer than this code supports "
            f"({MODEL_VERSION})"
        )
    if len(problems) > before:
        return None, extra, sha
    try:
        config = ModelConfig.from_dict(model)
    except (ValueError, TypeError) as exc:
        problems.append(f"{CONFIG_NAME}: invalid config: {exc}")
        return None, extra, sha
    return config, extra, sha


_RETIRED: dict[tuple[str, str], tuple[object, ...]] = {
    ("slots", "write_rule"): ("route",),
    ("slots", "heads"): (),  # used by the retired write rules only: any value
    ("scorer", "slot_gate"): (False,),
}
"""Fields of configs saved by earlier versions, for settings no longer offered, with the values
that mean what this version does (empty: any); a model saved with another value is refused."""


def _without_retired(model: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    """``model`` without the retired fields, each checked to mean what this version does."""
    out = dict(model)
    for (section, key), accepted in _RETIRED.items():
        part = out.get(section)
        if isinstance(part, dict) and key in part:
            part = dict(part)
            value = part.pop(key)
            if accepted and value not in accepted:
                problems.append(f"{CONFIG_NAME}: model.{section}.{key} = {value!r} is no longer supported; train a new model")
            out[section] = part
    return out


def _check_fields(data: dict[str, Any], cls: type, where: str, problems: list[str]) -> None:
    # Strict on load: a field missing from a saved config means it came from other code,
    # and silently filling in today's default could rebuild a different model.
    names = {f.name for f in fields(cls)}
    for key in sorted(set(data) - names):
        problems.append(f"{CONFIG_NAME}: unknown config field {where}.{key}")
    for f in fields(cls):
        if f.name not in data and f"{where}.{f.name}" not in _ADDED_FIELDS:
            required = f.default is MISSING and f.default_factory is MISSING
            kind = "required " if required else ""
            problems.append(f"{CONFIG_NAME}: missing {kind}config field {where}.{f.name}")


def _read_weights(
    path: Path, expected_sha: str | None, problems: list[str]
) -> dict[str, Tensor] | None:
    if not path.is_file():
        problems.append(f"missing file {WEIGHTS_NAME}")
        return None
    try:
        blob = path.read_bytes()
    except OSError as exc:
        problems.append(f"cannot read {WEIGHTS_NAME}: {exc}")
        return None
    if expected_sha is not None and hashlib.sha256(blob).hexdigest() != expected_sha:
        problems.append(
            f"{WEIGHTS_NAME} does not match the weights_sha256 in {CONFIG_NAME} "
            "(corrupt file, or weights and config from different saves)"
        )
    try:
        return st_load(blob)
    except SafetensorError as exc:
        problems.append(f"{WEIGHTS_NAME} is not a valid safetensors file: {exc}")
        return None


def _compare_state(expected: dict[str, Tensor], found: dict[str, Tensor]) -> list[str]:
    problems = [f"missing tensor {k}" for k in sorted(set(expected) - set(found))]
    problems += [f"unexpected tensor {k}" for k in sorted(set(found) - set(expected))]
    for key in sorted(set(expected) & set(found)):
        want, got = tuple(expected[key].shape), tuple(found[key].shape)
        if want != got:
            problems.append(f"shape mismatch for {key}: config gives {want}, file has {got}")
        elif not found[key].dtype.is_floating_point:
            problems.append(f"tensor {key} has non-float dtype {found[key].dtype}")
    return problems


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        # Leave no stray temp file behind, then let the original error through.
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    # Makes the rename durable on POSIX; Windows cannot open a directory, and there
    # os.replace is already as durable as the platform offers.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
