"""Model directories: save -> load round trips, and every kind of damage is reported at once."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from ctxmem_plugin.checkpoint import CONFIG_NAME, WEIGHTS_NAME, load_model, read_config, save_model
from ctxmem_plugin.errors import CheckpointError
from ctxmem_plugin.model import CtxMemModel, ModelConfig
from ctxmem_plugin.scorer import ScorerConfig
from ctxmem_plugin.slots import SlotConfig

CONFIG = ModelConfig(
    slots=SlotConfig(dim=16, num_slots=4, heads=2, feature_dim=3),
    scorer=ScorerConfig(num_features=4, base_score_index=1, dim=16, hidden=8, bilinear_rank=4),
    encoder="sentence-transformers/all-MiniLM-L6-v2",
    feature_names=("fused", "bm25", "dense", "neighbour"),
)


@pytest.fixture
def model() -> CtxMemModel:
    torch.manual_seed(0)
    model = CtxMemModel(CONFIG)
    with torch.no_grad():  # as if trained: no parameter left at its init value
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.fixture
def saved(model: CtxMemModel, tmp_path: Path) -> Path:
    directory = tmp_path / "model"
    save_model(model, directory, extra={"steps": 12, "note": "test"})
    return directory


def _outputs(model: CtxMemModel) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    slots = model.slots.write(
        model.slots.init_slots(2),
        torch.randn(2, 5, 16, generator=g),
        features=torch.randn(2, 5, 3, generator=g),
    )
    scores = model(
        torch.randn(2, 6, 4, generator=g),
        None,
        torch.randn(2, 16, generator=g),
        torch.randn(2, 6, 16, generator=g),
        slots,
    )
    return slots, scores


def _edit_config(directory: Path, edit: Callable[[dict[str, Any]], object]) -> None:
    path = directory / CONFIG_NAME
    document = json.loads(path.read_text())
    edit(document)
    path.write_text(json.dumps(document))


def _problems(directory: Path) -> str:
    with pytest.raises(CheckpointError) as info:
        load_model(directory)
    return str(info.value)


def test_save_load_round_trip(model: CtxMemModel, saved: Path) -> None:
    loaded = load_model(saved)
    assert loaded.config == CONFIG
    assert not loaded.training
    for ref, out in zip(_outputs(model), _outputs(loaded), strict=True):
        torch.testing.assert_close(out, ref)
    config, extra = read_config(saved)
    assert config == CONFIG and extra == {"steps": 12, "note": "test"}


def test_directory_holds_exactly_json_and_safetensors(saved: Path) -> None:
    assert sorted(p.name for p in saved.iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]
    document = json.loads((saved / CONFIG_NAME).read_text())
    assert document["model"]["feature_names"] == list(CONFIG.feature_names)
    assert set(load_file(saved / WEIGHTS_NAME)) == set(CtxMemModel(CONFIG).state_dict())


def test_save_overwrites_previous_model(model: CtxMemModel, saved: Path) -> None:
    with torch.no_grad():
        model.scorer.log_base_scale.fill_(2.0)
    save_model(model, saved)
    assert load_model(saved).scorer.log_base_scale.item() == 2.0
    assert sorted(p.name for p in saved.iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]


def test_unserialisable_extra_writes_nothing(model: CtxMemModel, tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        save_model(model, tmp_path / "m", extra={"bad": object()})
    assert not (tmp_path / "m").exists()


def test_not_a_directory(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "nope")


def test_missing_files_are_both_listed(tmp_path: Path) -> None:
    message = _problems(tmp_path)
    assert "missing file config.json" in message and "missing file model.safetensors" in message
    assert "2 problem(s)" in message


def test_bad_json_and_corrupt_weights_are_both_listed(saved: Path) -> None:
    (saved / CONFIG_NAME).write_text("{not json")
    blob = (saved / WEIGHTS_NAME).read_bytes()
    (saved / WEIGHTS_NAME).write_bytes(blob[: len(blob) // 2])
    message = _problems(saved)
    assert "config.json is not valid JSON" in message
    assert "model.safetensors is not a valid safetensors file" in message


def test_flipped_byte_in_weights_is_detected(saved: Path) -> None:
    blob = bytearray((saved / WEIGHTS_NAME).read_bytes())
    blob[-5] ^= 0xFF  # inside the tensor data: the header still parses
    (saved / WEIGHTS_NAME).write_bytes(bytes(blob))
    assert "does not match the weights_sha256" in _problems(saved)


def test_unknown_and_missing_config_fields_are_each_listed(saved: Path) -> None:
    def edit(doc: dict[str, Any]) -> None:
        doc["surprise"] = 1
        doc["model"]["slots"]["bogus_width"] = 3
        del doc["model"]["slots"]["heads"]
        del doc["model"]["scorer"]["use_slots"]
        del doc["model"]["encoder"]

    _edit_config(saved, edit)
    message = _problems(saved)
    for expected in (
        "unknown key 'surprise'",
        "unknown config field model.slots.bogus_width",
        "missing config field model.slots.heads",
        "missing config field model.scorer.use_slots",
        "missing required config field model.encoder",
    ):
        assert expected in message
    assert "5 problem(s)" in message


def test_invalid_config_values_and_newer_version(saved: Path) -> None:
    _edit_config(saved, lambda doc: doc["model"]["slots"].update(heads=5))
    assert "divisible" in _problems(saved)
    _edit_config(saved, lambda doc: doc["model"].update(version=99))
    assert "newer than this code supports" in _problems(saved)


def test_tensor_key_and_shape_problems_are_each_listed(saved: Path) -> None:
    tensors = load_file(saved / WEIGHTS_NAME)
    del tensors["slots.gate.weight"]
    tensors["slots.stale_buffer"] = torch.zeros(2)
    tensors["scorer.bil_query"] = torch.zeros(5, 16)
    save_file(tensors, saved / WEIGHTS_NAME)
    _edit_config(saved, lambda doc: doc.pop("weights_sha256"))  # a hand-assembled directory
    message = _problems(saved)
    assert "missing tensor slots.gate.weight" in message
    assert "unexpected tensor slots.stale_buffer" in message
    assert "shape mismatch for scorer.bil_query: config gives (4, 16), file has (5, 16)" in message
    assert "3 problem(s)" in message


def test_weights_from_another_config_are_rejected(saved: Path) -> None:
    # A save interrupted between the two replacements: new weights, old config.
    bigger = CtxMemModel(
        ModelConfig(
            SlotConfig(dim=16, num_slots=8, heads=2, feature_dim=3),
            CONFIG.scorer,
            CONFIG.encoder,
            CONFIG.feature_names,
        )
    )
    save_file({k: v.contiguous() for k, v in bigger.state_dict().items()}, saved / WEIGHTS_NAME)
    message = _problems(saved)
    assert "does not match the weights_sha256" in message
    assert "shape mismatch for slots.initial" in message


def test_model_config_validation() -> None:
    with pytest.raises(ValueError, match="feature_names"):
        ModelConfig(CONFIG.slots, CONFIG.scorer, "enc", ("a", "b"))
    with pytest.raises(ValueError, match=r"scorer\.dim"):
        ModelConfig(CONFIG.slots, ScorerConfig(num_features=4, dim=32), "enc", CONFIG.feature_names)
    with pytest.raises(ValueError, match="unknown ModelConfig field"):
        ModelConfig.from_dict({**CONFIG.to_dict(), "other": 1})
    assert ModelConfig.from_dict(json.loads(json.dumps(CONFIG.to_dict()))) == CONFIG
    with pytest.raises(ValueError, match="missing ModelConfig field"):
        ModelConfig.from_dict({k: v for k, v in CONFIG.to_dict().items() if k != "encoder"})
