"""A safetensors file's header, read without its data: what tensors it holds, checked against its length.

Both the model loader (:mod:`ctxmem_plugin.reranker.checkpoint`) and the encoder checks
(:mod:`ctxmem_plugin.encoders.safety`) read weights files a user hands in; they look at the
header first (8 bytes of length, then JSON), so nothing is allocated for a file that does not
hold what it should, and a file that is not safetensors at all is refused before any loader sees it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ctxmem_plugin import safejson

_HEADER_LIMIT = 100 * 1024 * 1024  # safetensors' own bound on its JSON header
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1,
                "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
FLOAT_DTYPES = frozenset({"F64", "F32", "F16", "BF16"})


@dataclass(frozen=True)
class TensorInfo:
    """One tensor as a safetensors header describes it."""

    dtype: str
    shape: tuple[int, ...]


def read_header(path: Path, problems: list[str]) -> dict[str, TensorInfo] | None:
    """The tensors a safetensors file's header describes, checked against the file's length.

    Reads the 8-byte header length and the JSON header only, never the data. Appends what is
    wrong to ``problems`` and returns ``None`` when the file is not a valid safetensors file.
    """
    name = path.name

    def bad(why: str) -> None:
        problems.append(f"{name} is not a valid safetensors file: {why}")

    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            length = int.from_bytes(head, "little") if len(head) == 8 else -1
            if length < 2 or length > _HEADER_LIMIT or 8 + length > size:
                bad(f"a header of {length:,} bytes does not fit a file of {size:,} bytes")
                return None
            raw = fh.read(length)
        header = safejson.loads(raw.decode("utf-8"))
    except OSError as exc:
        problems.append(f"cannot read {name}: {exc.strerror}")
        return None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        bad(f"its header is not JSON ({exc})")
        return None
    if not isinstance(header, dict):
        bad("its header is not an object")
        return None
    data = size - 8 - length
    out: dict[str, TensorInfo] = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        entry = _tensor_info(info, data)
        if isinstance(entry, str):
            bad(f"tensor {safejson.show(key)}: {entry}")
            return None
        out[key] = entry
    return out


def _tensor_info(info: Any, data: int) -> TensorInfo | str:
    """A header entry as a :class:`TensorInfo`, or what is wrong with it."""
    if not isinstance(info, dict):
        return "its entry is not an object"
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if dtype not in _DTYPE_BYTES:
        return f"unknown dtype {safejson.show(dtype)}"
    if not (isinstance(shape, list) and len(shape) <= 8 and all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 1 << 40 for n in shape)):
        return f"shape {safejson.show(shape)} is not a list of sizes"
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(n, int) and not isinstance(n, bool) for n in offsets)):
        return f"data_offsets {safejson.show(offsets)} is not [begin, end]"
    begin, end = offsets
    if not 0 <= begin <= end <= data:
        return f"its data [{begin}, {end}) lies outside the file's {data:,} data bytes"
    if end - begin != math.prod(shape) * _DTYPE_BYTES[dtype]:
        return f"its data is {end - begin:,} bytes, its shape {tuple(shape)} of {dtype} needs {math.prod(shape) * _DTYPE_BYTES[dtype]:,}"
    return TensorInfo(dtype, tuple(shape))
