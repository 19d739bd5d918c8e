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

Loading checks before it allocates: the config against its bounds, then the names, shapes and
dtypes in the weights file's header (its first bytes, :func:`read_header`) against the weights
that config describes (:meth:`CtxMemModel.weight_shapes`), and the total against
:data:`MAX_PARAMETERS`. Only a directory that passes is built and loaded, so a config cannot make
the process allocate more than its weights file holds. Every problem found is collected; the
error names the first and keeps the list in ``details`` (``--verbose`` on the CLI).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file as st_load_file
from safetensors.torch import save as st_save

from ctxmem_plugin import safejson
from ctxmem_plugin.weights import FLOAT_DTYPES, TensorInfo, read_header
from ctxmem_plugin.errors import CheckpointError
from ctxmem_plugin.reranker.model import MODEL_VERSION, CtxMemModel, ModelConfig
from ctxmem_plugin.reranker.scorer import ScorerConfig
from ctxmem_plugin.reranker.slots import SlotConfig
from ctxmem_plugin.encoders.safety import encoder_problems
from ctxmem_plugin.encoders.tuned import encoder_dir_problems

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
_TOP_LEVEL_KEYS = ("model", "weights_sha256", "extra")

MAX_PARAMETERS = 1 << 28
"""Most weights a model may have (1 GiB as float32; trained models hold a few million)."""

MAX_CONFIG_BYTES = 1 << 20
"""Longest ``config.json`` read (saved ones are a few kilobytes)."""


@dataclass(frozen=True)
class Checkpoint:
    """A loaded model directory: the model, the caller's ``extra`` and the SHA-256 of the weights."""

    model: CtxMemModel
    extra: dict[str, Any]
    weights_sha256: str
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
    """Rebuild a model from its directory and load its weights (:func:`load_checkpoint`).

    Args:
        directory: a directory written by :func:`save_model`.
        map_location: device to put the model on, e.g. ``"cpu"`` or ``"cuda:0"``.

    Returns:
        The model, in eval mode.

    Raises:
        CheckpointError: naming the first problem found, all of them in ``details`` (missing
            files, bad JSON, unknown or missing config fields, a corrupt weights file,
            missing/unexpected tensors, shape mismatches, an encoder it names that is missing,
            corrupt or not safetensors-only).
    """
    return load_checkpoint(directory, map_location=map_location).model


def load_checkpoint(directory: Path, *, map_location: str = "cpu") -> Checkpoint:
    """:func:`load_model`, also returning the ``extra`` dict and the weights' SHA-256.

    Nothing is built before the config and the weights file's header agree (module docstring).
    """
    directory = Path(directory)
    _require_directory(directory)
    problems: list[str] = []
    config, extra, expected_sha = _read_config(directory, problems)
    weights = directory / WEIGHTS_NAME
    mismatch: list[str] = []  # listed after the header's problems: a file that is no safetensors comes first
    actual_sha = _weights_digest(weights, expected_sha, mismatch)
    header = read_header(weights, problems) if actual_sha is not None else None
    problems += mismatch
    oversized = _size_problems(config) if config is not None else []
    problems += oversized
    if config is not None and header is not None and not oversized:
        if config.members == 1:
            header = _single_member_layout(header)
        problems += _compare_header(CtxMemModel.weight_shapes(config), header)
    if config is not None:
        problems += _encoder_problems(directory, config)
    if problems or config is None or header is None or actual_sha is None:
        raise _error(directory, problems)
    # The file holds exactly the weights the config describes: building allocates what it holds.
    try:
        tensors = st_load_file(str(weights))
    except (SafetensorError, OSError) as exc:  # changed since its header was read
        raise _error(directory, [f"{WEIGHTS_NAME} is not a valid safetensors file: {exc}"]) from None
    if config.members == 1:
        tensors = _single_member_layout(tensors)
    model = _build(config)
    model.load_state_dict(tensors, strict=True)
    return Checkpoint(model.to(map_location).eval(), extra, actual_sha)


def _build(config: ModelConfig) -> CtxMemModel:
    """The one place a model directory's module is built, once its header matched the config."""
    return CtxMemModel(config)


def _single_member_layout(tensors: dict[str, Any]) -> dict[str, Any]:
    """Weights saved before models had members (``slots.*``, ``scorer.*``) as member 0's."""
    if any(key.startswith("members.") for key in tensors):
        return tensors
    return {f"members.0.{key}": value for key, value in tensors.items()}


def _size_problems(config: ModelConfig) -> list[str]:
    count = sum(math.prod(shape) for shape in CtxMemModel.weight_shapes(config).values())
    if count > MAX_PARAMETERS:
        return [f"{CONFIG_NAME}: the config describes {count:,} weights; at most {MAX_PARAMETERS:,} are loaded"]
    return []


def _encoder_problems(directory: Path, config: ModelConfig) -> list[str]:
    """Every encoder directory the config names gets the same checks (:mod:`ctxmem_plugin.encoders.safety`)."""
    if config.encoder_dir is not None:
        return encoder_dir_problems(directory / config.encoder_dir, config.encoder)
    named = Path(config.encoder)
    if named.is_dir():
        return [f"encoder {config.encoder}: {p}" for p in encoder_problems(named, config.encoder)]
    return []


def _require_directory(directory: Path) -> None:
    if not directory.is_dir():
        raise CheckpointError(f"model directory {directory} does not exist or is not a directory")


def _error(directory: Path, problems: list[str]) -> CheckpointError:
    """One line naming the first problem; every problem in ``details``."""
    problems = [" ".join(p.split()) for p in problems] or ["unusable model directory"]
    more = f" (and {len(problems) - 1} more problem(s); details lists them, --verbose on the CLI)" if len(problems) > 1 else ""
    return CheckpointError(f"cannot load model from {directory}: {problems[0]}{more}", problems)


def _read_config(
    directory: Path, problems: list[str]
) -> tuple[ModelConfig | None, dict[str, Any], str | None]:
    """Parse ``config.json``, appending every problem found; ``(None, {}, None)`` if unusable."""
    path = directory / CONFIG_NAME
    if not path.is_file():
        problems.append(f"missing file {CONFIG_NAME}")
        return None, {}, None
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            problems.append(f"{CONFIG_NAME} is larger than {MAX_CONFIG_BYTES:,} bytes; a model's config is a few kilobytes")
            return None, {}, None
        document = safejson.loads(path.read_text(encoding="utf-8"))
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
    if sha is not None and not (isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)):
        problems.append(f"{CONFIG_NAME}: weights_sha256 must be 64 lowercase hex digits")
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
    runtime = extra.get("runtime")
    if runtime is not None and not isinstance(runtime, dict):
        problems.append(f"{CONFIG_NAME}: extra.runtime must be an object, found {type(runtime).__name__}")
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


def _weights_digest(path: Path, expected_sha: str | None, problems: list[str]) -> str | None:
    """SHA-256 of the weights file, read in blocks; a mismatch with ``expected_sha`` is a problem."""
    if not path.is_file():
        problems.append(f"missing file {WEIGHTS_NAME}")
        return None
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        problems.append(f"cannot read {WEIGHTS_NAME}: {exc.strerror}")
        return None
    if expected_sha is not None and digest.hexdigest() != expected_sha:
        problems.append(
            f"{WEIGHTS_NAME} does not match the weights_sha256 in {CONFIG_NAME} "
            "(corrupt file, or weights and config from different saves)"
        )
    return digest.hexdigest()


def _compare_header(expected: dict[str, tuple[int, ...]], found: dict[str, TensorInfo]) -> list[str]:
    problems = [f"missing tensor {k}" for k in sorted(set(expected) - set(found))]
    # Names from the file are shown as they are only when printable and short.
    problems += [f"unexpected tensor {k if k.isprintable() and len(k) <= 80 else safejson.show(k)}"
                 for k in sorted(set(found) - set(expected))]
    for key in sorted(set(expected) & set(found)):
        want, got = expected[key], found[key].shape
        if want != got:
            problems.append(f"shape mismatch for {key}: config gives {want}, file has {got}")
        elif found[key].dtype not in FLOAT_DTYPES:
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
