"""Model directories a user hands in cannot hurt: bounded before anything is built, no encoder
directory that could unpickle or run code, one-line errors with the full list behind --verbose."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from safetensors.torch import save_file

import ctxmem_plugin.encoders
from ctxmem_plugin.cli import main
from ctxmem_plugin.encoders import SentenceEncoder
from ctxmem_plugin.errors import CheckpointError, InputError
from ctxmem_plugin.memory import ContextMemory
from ctxmem_plugin.reranker import checkpoint
from ctxmem_plugin.reranker.checkpoint import CONFIG_NAME, load_model, save_model
from ctxmem_plugin.reranker.model import CtxMemModel, ModelConfig
from ctxmem_plugin.reranker.runtime import Reranker, RuntimeSettings
from ctxmem_plugin.reranker.scorer import ScorerConfig
from ctxmem_plugin.reranker.slots import SlotConfig
from ctxmem_plugin.retrieval.features import FEATURE_NAMES

from helpers import HashEncoder

CONFIG = ModelConfig(
    slots=SlotConfig(dim=64, num_slots=4, feature_dim=8),
    scorer=ScorerConfig(num_features=len(FEATURE_NAMES), dim=64, hidden=8, bilinear_rank=4),
    encoder="hash-64", feature_names=FEATURE_NAMES,
)


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    save_model(CtxMemModel(CONFIG), tmp_path / "model", extra={"runtime": {"pool": 20, "write_chunk": 4}})
    return tmp_path / "model"


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The members of every model the loader builds (none may be built for a bad directory)."""
    built: list[int] = []

    class Recorded(CtxMemModel):
        def __init__(self, config: ModelConfig, *args: Any, **kwargs: Any) -> None:
            built.append(config.members)
            super().__init__(config, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "CtxMemModel", Recorded)
    return built


def _edit(directory: Path, path: str, value: Any) -> None:
    document = json.loads((directory / CONFIG_NAME).read_text())
    node = document
    keys = path.split(".")
    for key in keys[:-1]:
        node = node[key]
    node[keys[-1]] = value
    (directory / CONFIG_NAME).write_text(json.dumps(document))


@pytest.mark.parametrize(("path", "value", "says"), [
    ("model.slots.num_slots", 10**9, "SlotConfig.num_slots must be in [1, 1024], got 1000000000"),
    ("model.members", 1000, "ModelConfig.members must be in [1, 64], got 1000"),
    ("model.scorer.depth", 10**6, "ScorerConfig.depth must be in [1, 16], got 1000000"),
    ("model.slots.num_slots", 1024, "shape mismatch for members.0.slots.initial: config gives (1024, 64), file has (4, 64)"),
    ("model.members", 64, "missing tensor members.1."),
    ("model.slots.dim", 8192, "scorer.dim (64) != slots.dim (8192)"),
])
def test_a_config_that_does_not_fit_its_weights_fails_in_one_line_before_anything_is_built(
    saved: Path, builds: list[int], path: str, value: Any, says: str
) -> None:
    _edit(saved, path, value)
    with pytest.raises(CheckpointError) as info:
        load_model(saved)
    message = str(info.value)
    assert "\n" not in message and says in message, message
    assert builds == []  # the weights file's header was compared first: nothing allocated for it


def test_a_config_of_more_weights_than_the_loader_takes_is_refused_before_its_header_is_compared(saved: Path, builds: list[int]) -> None:
    for key in ("model.slots.dim", "model.scorer.dim"):
        _edit(saved, key, 8192)
    _edit(saved, "model.slots.ffn_mult", 16)
    with pytest.raises(CheckpointError, match="at most 268,435,456 are loaded"):
        load_model(saved)
    assert builds == []


def test_every_problem_is_in_the_details_and_behind_verbose(saved: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _edit(saved, "model.members", 3)  # 2 x (slots + scorer) tensors missing
    with pytest.raises(CheckpointError) as info:
        load_model(saved)
    details = info.value.details
    assert len(details) > 20 and all(d.startswith("missing tensor members.") for d in details)
    assert str(info.value).endswith(f"(and {len(details) - 1} more problem(s); details lists them, --verbose on the CLI)")
    monkeypatch.setattr(ctxmem_plugin.encoders, "SentenceEncoder", lambda model=None, **_: HashEncoder())
    with ContextMemory(tmp_path / "mem", encoder=HashEncoder()) as mem:
        mem.add({"content": "my dog is Biscuit"}, ("u",))
    args = ["query", "dog", "--memory", str(tmp_path / "mem"), "--model", str(saved)]
    quiet = CliRunner().invoke(main, args)
    assert quiet.exit_code == 2 and len(quiet.stderr.splitlines()) == 1
    loud = CliRunner().invoke(main, ["--verbose", *args])
    lines = loud.stderr.splitlines()
    assert loud.exit_code == 2 and lines[0] == quiet.stderr.splitlines()[0]
    assert lines[1:] == [f"  - {d}" for d in details]


def test_runtime_settings_are_checked_before_the_weights_and_name_the_file(saved: Path, builds: list[int]) -> None:
    _edit(saved, "extra.runtime.write_chunk", 0)
    with pytest.raises(CheckpointError, match=r"config.json: extra.runtime: RuntimeSettings.write_chunk must be in \[1, 4096\], got 0"):
        Reranker.load(saved, device="cpu")
    assert builds == []


def test_a_hand_assembled_directory_without_a_hash_loads_under_its_weights_hash(saved: Path) -> None:
    document = json.loads((saved / CONFIG_NAME).read_text())
    sha = document.pop("weights_sha256")
    (saved / CONFIG_NAME).write_text(json.dumps(document))
    assert Reranker.load(saved, device="cpu").model_id == sha[:16]


# -- encoder directories a model names (issue 25, defect 4) -----------------------------------


class _Boom:
    """Unpickling this would run a shell command: it is written, never loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def sentence_transformers_dir_with_pickled_weights(root: Path, marker: Path) -> Path:
    """A sentence-transformers-shaped directory whose weights are a pickle carrying os.system."""
    directory = root / "st-model"
    (directory / "1_Pooling").mkdir(parents=True)
    (directory / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]))
    (directory / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 64}))
    (directory / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 64}))
    (directory / "pytorch_model.bin").write_bytes(pickle.dumps({"weight": _Boom(marker)}))
    return directory


def test_an_encoder_path_in_a_model_config_gets_the_checks_of_a_bundled_encoder(saved: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    encoder = sentence_transformers_dir_with_pickled_weights(tmp_path, marker)
    _edit(saved, "model.encoder", str(encoder))
    with pytest.raises(CheckpointError) as info:
        ContextMemory(tmp_path / "mem", model=saved)
    assert "pytorch_model.bin: pickle-based and code files are never loaded" in str(info.value)
    assert any("no model.safetensors" in d for d in info.value.details)
    assert not (tmp_path / "mem").exists() and not marker.exists()
    with pytest.raises(InputError, match="pytorch_model.bin: pickle-based"):  # and given as --encoder
        SentenceEncoder(encoder)
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["custom module", "python file", "weights not safetensors", "module outside"])
def test_an_encoder_directory_is_refused_for_anything_but_safetensors_weights_and_library_modules(
    tmp_path: Path, damage: str
) -> None:
    directory = tmp_path / "enc"
    directory.mkdir()
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]
    save_file({"w": __import__("torch").zeros(2)}, directory / "model.safetensors")
    if damage == "custom module":
        modules.append({"idx": 1, "name": "1", "path": "1_Evil", "type": "evil.Loader"})
    elif damage == "python file":
        (directory / "modeling_evil.py").write_text("import os\n")
    elif damage == "weights not safetensors":
        (directory / "model.safetensors").write_bytes(pickle.dumps({"w": [0.0, 0.0]}))
    else:
        modules.append({"idx": 1, "name": "1", "path": "../elsewhere", "type": "sentence_transformers.models.Dense"})
    (directory / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(InputError, match="refused"):
        SentenceEncoder(directory)
    if damage == "custom module":  # the same directory with library modules only is accepted
        (directory / "modules.json").write_text(json.dumps(modules[:1]))
        assert SentenceEncoder(directory).path == directory


def test_a_setting_of_thousands_of_digits_is_refused_in_one_line() -> None:
    from ctxmem_plugin.errors import ConfigError

    with pytest.raises(ConfigError, match=r"pool must be in \[1, 100000\], got an integer of about 5,001 digits"):
        RuntimeSettings(pool=10**5000)
