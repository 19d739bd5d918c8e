"""The checks every encoder directory passes before it is loaded: safetensors weights, nothing else.

An encoder directory comes from a user: ``--encoder``, the ``encoder`` a model was trained with
(a path in its ``config.json``) or the tuned encoder a model carries (:mod:`.tuned`). Loading it
through sentence-transformers could unpickle a ``pytorch_model.bin`` or import a custom module
class, i.e. run code. So before anything is loaded, :func:`encoder_problems` requires: no file
that loads through pickle or is code; every module in ``modules.json`` a sentence-transformers
class in a subdirectory of its own; weights in safetensors files whose headers parse.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

from ctxmem_plugin import safejson
from ctxmem_plugin.weights import read_header

REFUSED_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".npy", ".npz", ".h5", ".msgpack",
                    ".py", ".pyc", ".so")
"""Files through which a sentence-transformers / transformers directory could unpickle data or run code."""

MAX_FILES = 10_000
"""An encoder directory holds a few dozen files; more is not one."""


def encoder_problems(directory: Path, label: str | None = None) -> list[str]:
    """Why ``directory`` is not a safe sentence-transformers directory (empty: it is).

    Args:
        directory: the encoder directory.
        label: how problems name it (default: its path).
    """
    label = label or str(directory)
    if not directory.is_dir():
        return [f"missing encoder directory {label}"]
    files = []
    for path in directory.rglob("*"):
        files.append(path)
        if len(files) > MAX_FILES:
            return [f"{label} holds more than {MAX_FILES:,} files; not an encoder directory"]
    problems = [
        f"{label}/{path.relative_to(directory)}: pickle-based and code files are never loaded"
        for path in sorted(files)
        if path.suffix.lower() in REFUSED_SUFFIXES
    ]
    problems += _module_problems(directory, label)
    weights = sorted(p for p in files if p.suffix == ".safetensors" and p.is_file())
    if not any(p.parent == directory for p in weights):
        problems.append(f"{label} has no model.safetensors: only safetensors weights are loaded")
    for path in weights:
        found: list[str] = []
        if read_header(path, found) is None:
            problems += [f"{label}/{path.relative_to(directory)}: {p}" for p in found]
    return problems


def _module_problems(directory: Path, label: str) -> list[str]:
    """``modules.json`` (optional: a plain transformers directory has none) lists only
    sentence-transformers classes, each in the directory itself or a subdirectory of it."""
    path = directory / "modules.json"
    if not path.exists():
        return []
    try:
        entries = safejson.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return [f"{label}/modules.json unreadable: {exc}"]
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        return [f"{label}/modules.json: expected a list of module objects"]
    problems = []
    for entry in entries:
        kind, where = entry.get("type"), entry.get("path", "")
        if not isinstance(kind, str) or not kind.startswith("sentence_transformers."):
            problems.append(f"{label}/modules.json: module type {safejson.show(kind)} is not a sentence_transformers class")
        if not isinstance(where, str) or PurePosixPath(where).is_absolute() or ".." in PurePosixPath(where).parts:
            problems.append(f"{label}/modules.json: module path {safejson.show(where)} is not inside the directory")
    return problems
