"""examples/langchain_agent.py runs offline and recalls across threads, per user."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "langchain_agent.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ctxmem_langchain_agent_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_with_fake_encoder(tmp_path: Path, hash_encoder: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CTXMEM_CHAT_MODEL", raising=False)
    transcript = _load().run(str(tmp_path / "mem"), encoder=hash_encoder)
    answers = {thread: answer for _, thread, _, answer in transcript}
    assert answers["thread-1"] == "Noted."
    assert "Biscuit" in answers["thread-3"] and "Whiskers" not in answers["thread-3"]
    assert "Biscuit" not in answers["thread-4"]


@pytest.mark.slow
def test_example_main_with_the_real_encoder(
    tmp_path: Path, minilm: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``main`` as a user runs it (the default encoder is all-MiniLM-L6-v2)."""
    monkeypatch.delenv("CTXMEM_CHAT_MODEL", raising=False)
    module = _load()
    monkeypatch.setattr(
        module, "ContextMemory", _with_encoder(module.ContextMemory, minilm)
    )  # reuse the session's model
    module.main(["--memory", str(tmp_path / "mem")])
    out = capsys.readouterr().out
    alice = out.split("[alice / thread-3]")[1].split("[bob")[0]
    assert "Biscuit" in alice and "Whiskers" not in alice
    assert os.listdir(tmp_path / "mem")


def _with_encoder(cls: Any, encoder: Any) -> Any:
    def make(path: Any, **kwargs: Any) -> Any:
        kwargs["encoder"] = kwargs.get("encoder") or encoder
        return cls(path, **kwargs)

    return make
