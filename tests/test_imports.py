"""The public API imports cheaply: no torch, sentence-transformers or faiss until they are needed."""

from __future__ import annotations

import subprocess
import sys

import ctxmem_plugin


def test_all_names_resolve() -> None:
    for name in ctxmem_plugin.__all__:
        assert getattr(ctxmem_plugin, name) is not None, name


def test_import_is_light() -> None:
    code = (
        "import sys, ctxmem_plugin; "
        "print(sorted(m for m in ('torch', 'sentence_transformers', 'faiss', 'langchain_core') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
