"""Model directories: save -> load round trips, and every kind of damage is reported at once."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from ctxmem_plugin.reranker.checkpoint import CONFIG_NAME, WEIGHTS_NAME, load_model, read_config, save_model
from ctxmem_plugin.errors import CheckpointError
from ctxmem_plugin.reranker.model import CtxMemModel, ModelConfig
from ctxmem_plugin.reranker.scorer import ScorerConfig
from ctxmem_plugin.reranker.slots import SlotConfig

CONFIG = ModelConfig(
    slots=SlotConfig(dim=16, num_slots=4, feature_dim=3),
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
    """Every problem found, one per line; the error itself is one line naming the first."""
    with pytest.raises(CheckpointError) as info:
        load_model(directory)
    details = info.value.details
    assert "\n" not in str(info.value) and details and details[0] in str(info.value)
    more = f" (and {len(details) - 1} more problem(s)" if len(details) > 1 else ""
    assert more in str(info.value)
    return "\n".join([*details, f"{len(details)} problem(s)"])


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
        del doc["model"]["slots"]["num_slots"]
        del doc["model"]["scorer"]["use_slots"]
        del doc["model"]["encoder"]

    _edit_config(saved, edit)
    message = _problems(saved)
    for expected in (
        "unknown key 'surprise'",
        "unknown config field model.slots.bogus_width",
        "missing config field model.slots.num_slots",
        "missing config field model.scorer.use_slots",
        "missing required config field model.encoder",
    ):
        assert expected in message
    assert "5 problem(s)" in message


def test_invalid_config_values_and_newer_version(saved: Path) -> None:
    _edit_config(saved, lambda doc: doc["model"]["slots"].update(num_slots=10**9))
    assert "SlotConfig.num_slots must be in [1, 1024], got 1000000000" in _problems(saved)
    _edit_config(saved, lambda doc: doc["model"].update(version=99))
    assert "newer than this code supports" in _problems(saved)


def test_tensor_key_and_shape_problems_are_each_listed(saved: Path) -> None:
    tensors = load_file(saved / WEIGHTS_NAME)
    del tensors["members.0.slots.gate.weight"]
    tensors["members.0.slots.stale_buffer"] = torch.zeros(2)
    tensors["members.0.scorer.bil_query"] = torch.zeros(5, 16)
    save_file(tensors, saved / WEIGHTS_NAME)
    _edit_config(saved, lambda doc: doc.pop("weights_sha256"))  # a hand-assembled directory
    message = _problems(saved)
    assert "missing tensor members.0.slots.gate.weight" in message
    assert "unexpected tensor members.0.slots.stale_buffer" in message
    assert "shape mismatch for members.0.scorer.bil_query: config gives (4, 16), file has (5, 16)" in message
    assert "3 problem(s)" in message


def test_weights_from_another_config_are_rejected(saved: Path) -> None:
    # A save interrupted between the two replacements: new weights, old config.
    bigger = CtxMemModel(
        ModelConfig(
            SlotConfig(dim=16, num_slots=8, feature_dim=3),
            CONFIG.scorer,
            CONFIG.encoder,
            CONFIG.feature_names,
        )
    )
    save_file({k: v.contiguous() for k, v in bigger.state_dict().items()}, saved / WEIGHTS_NAME)
    message = _problems(saved)
    assert "does not match the weights_sha256" in message
    assert "shape mismatch for members.0.slots.initial" in message


def test_a_model_saved_before_members_existed_loads_as_one_member(model: CtxMemModel, saved: Path) -> None:
    # The layout of earlier versions: tensors named slots.* and scorer.*, no members field.
    tensors = {k.removeprefix("members.0."): v for k, v in load_file(saved / WEIGHTS_NAME).items()}
    assert "slots.initial" in tensors and not any(k.startswith("members.") for k in tensors)
    save_file(tensors, saved / WEIGHTS_NAME)
    _edit_config(saved, lambda doc: (doc.pop("weights_sha256"), doc["model"].pop("members")))
    loaded = load_model(saved)
    assert loaded.config == CONFIG and loaded.config.members == 1
    for ref, out in zip(_outputs(model), _outputs(loaded), strict=True):
        torch.testing.assert_close(out, ref)


ENSEMBLE = replace(CONFIG, members=3)


def _state_and_scores(model: CtxMemModel) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    state = model.write(model.init_slots(2), torch.randn(2, 5, 16, generator=g), features=torch.randn(2, 5, 3, generator=g))
    inputs = (torch.randn(2, 6, 4, generator=g), torch.tensor([[True] * 6, [True] * 4 + [False] * 2]),
              torch.randn(2, 16, generator=g), torch.randn(2, 6, 16, generator=g))
    return state, model(*inputs[:2], inputs[2], inputs[3], state), inputs[0]


def test_members_keep_their_own_slots_and_the_model_scores_with_their_mean(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = CtxMemModel(ENSEMBLE)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    state, scores, features = _state_and_scores(model)
    assert state.shape == (2, 3 * 4, 16) and model.state_slots == 12
    g = torch.Generator().manual_seed(5)
    turns, feats = torch.randn(2, 5, 16, generator=g), torch.randn(2, 5, 3, generator=g)
    parts = model.member_slots(state)
    for member, own in zip(model.members, parts, strict=True):
        # Each member's part of the state is what it writes alone.
        torch.testing.assert_close(own, member.write(member.init_slots(2), turns, features=feats))
    assert not torch.allclose(parts[0], parts[1])
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    assert torch.equal(torch.randn(2, 6, 4, generator=g), features)  # drawn in the same order
    query, cand = torch.randn(2, 16, generator=g), torch.randn(2, 6, 16, generator=g)
    each = torch.stack([m(features, mask, query, cand, s) for m, s in zip(model.members, parts)])  # (3, 2, 6)
    torch.testing.assert_close(scores[mask], each.mean(dim=0)[mask])
    assert torch.isneginf(scores[~mask]).all()
    assert not torch.allclose(each[0][mask], each[1][mask])

    save_model(model, tmp_path / "m")
    names = set(load_file(tmp_path / "m" / WEIGHTS_NAME))
    assert {n.split(".")[1] for n in names} == {"0", "1", "2"}
    loaded = load_model(tmp_path / "m")
    assert loaded.config == ENSEMBLE
    for ref, out in zip(_state_and_scores(model), _state_and_scores(loaded), strict=True):
        torch.testing.assert_close(out, ref)


def test_members_without_slots_are_all_averaged_whatever_stand_in_slots_they_get() -> None:
    config = replace(ENSEMBLE, scorer=replace(CONFIG.scorer, use_slots=False))
    torch.manual_seed(3)
    model = CtxMemModel(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    g = torch.Generator().manual_seed(6)
    features, query, cand = torch.randn(2, 6, 4, generator=g), torch.randn(2, 16, generator=g), torch.randn(2, 6, 16, generator=g)
    stand_in = torch.zeros(2, 1, 16)  # what training passes a model without slots
    scores = model(features, None, query, cand, stand_in)
    each = torch.stack([m(features, None, query, cand, stand_in) for m in model.members])  # (3, 2, 6)
    torch.testing.assert_close(scores, each.mean(dim=0))
    assert not torch.allclose(scores, each[0])
    torch.testing.assert_close(model(features, None, query, cand, model.init_slots(2)), scores)


def test_a_slot_state_of_the_wrong_size_is_refused() -> None:
    model = CtxMemModel(ENSEMBLE)
    one_member_state = model.members[0].init_slots(2)  # (2, 4, 16): a third of the state
    with pytest.raises(ValueError):
        model(torch.randn(2, 6, 4), None, torch.randn(2, 16), torch.randn(2, 6, 16), one_member_state)
    with pytest.raises(ValueError):
        model.write(one_member_state, torch.randn(2, 5, 16))


def test_an_untrained_model_of_several_members_returns_the_base_score_exactly() -> None:
    torch.manual_seed(2)
    _, scores, features = _state_and_scores(CtxMemModel(ENSEMBLE))
    mask = torch.isfinite(scores)
    assert mask.sum() == 10
    assert torch.equal(scores[mask], features[..., CONFIG.scorer.base_score_index][mask])


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
