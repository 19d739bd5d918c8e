"""Properties of the slot memory: masking, gradients, batch independence, identity at init."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F

from ctxmem_plugin.reranker.slots import SlotConfig, SlotMemory, focus_trace

CFG = SlotConfig(dim=16, num_slots=4, feature_dim=3)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # These tensors are tiny: intra-op threads only add synchronisation, and on a busy 2-core
    # CI machine they spin against other processes and make the tests 10-30x slower.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(params=[0.0, 0.5], ids=lambda rate: f"focus{rate}")
def memory(request: pytest.FixtureRequest) -> SlotMemory:
    """Every property holds without and with a focus slot."""
    torch.manual_seed(0)
    return SlotMemory(dataclasses.replace(CFG, focus_rate=request.param))


def _turns(b: int, t: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(b, t, CFG.dim, generator=g), dim=-1)  # (b, t, d)


def test_shapes(memory: SlotMemory) -> None:
    slots = memory.init_slots(3)
    assert slots.shape == (3, 4, 16)
    new = memory.write(slots, _turns(3, 5), features=torch.randn(3, 5, 3))
    assert new.shape == (3, 4, 16)
    ctx, attn = memory.read(new, torch.randn(3, 16))
    assert ctx.shape == (3, 16) and attn.shape == (3, 4)
    ctx, attn = memory.read(new, torch.randn(3, 7, 16))
    assert ctx.shape == (3, 7, 16) and attn.shape == (3, 7, 4)
    torch.testing.assert_close(attn.sum(-1), torch.ones(3, 7))
    q, attn = memory.contextualise(new, torch.randn(3, 7, 16))
    assert q.shape == (3, 7, 16) and attn.shape == (3, 7, 4)


def test_masked_turn_contents_change_nothing(memory: SlotMemory) -> None:
    slots = memory.init_slots(2)
    turns = _turns(2, 6)
    feats = torch.randn(2, 6, 3)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 0, 1, 0, 1, 1]], dtype=torch.bool)
    ref = memory.write(slots, turns, mask, feats)
    junk = turns.clone()
    junk[~mask] = float("nan")  # even NaN padding must not leak
    junk_feats = feats.clone()
    junk_feats[~mask] = 1e6
    assert torch.equal(memory.write(slots, junk, mask, junk_feats), ref)


def test_padding_equals_no_padding(memory: SlotMemory) -> None:
    slots = memory.init_slots(1)
    turns = _turns(1, 4)
    padded = torch.cat([turns, torch.randn(1, 3, 16)], dim=1)
    mask = torch.tensor([[True] * 4 + [False] * 3])
    torch.testing.assert_close(memory.write(slots, padded, mask), memory.write(slots, turns))


def test_fully_masked_row_is_unchanged_exactly(memory: SlotMemory) -> None:
    torch.manual_seed(2)
    slots = memory.write(memory.init_slots(3), _turns(3, 4))
    mask = torch.tensor([[True, True], [False, False], [True, False]])
    new = memory.write(slots, _turns(3, 2, seed=5), mask)
    assert torch.equal(new[1], slots[1])
    assert not torch.allclose(new[0], slots[0])
    assert not torch.allclose(new[2], slots[2])


def test_features_none_means_zero_features(memory: SlotMemory) -> None:
    with torch.no_grad():  # the "route" rule starts with zero feature weights: train them a bit
        torch.nn.init.normal_(memory.feature_proj.weight, std=0.1)
    slots, turns = memory.init_slots(2), _turns(2, 3)
    assert torch.equal(
        memory.write(slots, turns), memory.write(slots, turns, features=torch.zeros(2, 3, 3))
    )
    assert not torch.allclose(
        memory.write(slots, turns), memory.write(slots, turns, features=torch.ones(2, 3, 3))
    )
    no_feat = SlotMemory(SlotConfig(dim=16, num_slots=4, feature_dim=0))
    with pytest.raises(ValueError, match="feature_dim=0"):
        no_feat.write(no_feat.init_slots(2), turns, features=torch.ones(2, 3, 1))


def test_gradients_reach_every_parameter(memory: SlotMemory) -> None:
    with torch.no_grad():  # the zero-initialised output layers would otherwise block the rest
        torch.nn.init.normal_(memory.ffn[-1].weight, std=0.1)
    slots = memory.init_slots(2)
    slots = memory.write(slots, _turns(2, 5), features=torch.randn(2, 5, 3))
    slots = memory.write(slots, _turns(2, 3, seed=3), features=torch.randn(2, 3, 3))
    query = torch.randn(2, 16)
    context, _ = memory.read(slots, query)
    q_ctx, _ = memory.contextualise(slots, query)
    (context.square().sum() + q_ctx.square().sum()).backward()
    for name, p in memory.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    # The ones the product depends on, by name.
    for name in (
        "initial",
        "w_query.weight",
        "w_key.weight",
        "w_value.weight",
        "gate.weight",
        "read_out.weight",
    ):
        assert memory.get_parameter(name).grad.abs().sum() > 0


def test_batch_rows_are_independent(memory: SlotMemory) -> None:
    with torch.no_grad():
        torch.nn.init.normal_(memory.read_out.weight, std=0.1)
    turns, feats, query = _turns(2, 5), torch.randn(2, 5, 3), torch.randn(2, 3, 16)
    slots = memory.write(memory.init_slots(2), turns, features=feats)
    q_ctx, attn = memory.contextualise(slots, query)
    turns2, feats2, query2 = turns.clone(), feats.clone(), query.clone()
    turns2[1], feats2[1], query2[1] = torch.randn(5, 16), torch.randn(5, 3), torch.randn(3, 16)
    slots2 = memory.write(memory.init_slots(2), turns2, features=feats2)
    q_ctx2, attn2 = memory.contextualise(slots2, query2)
    assert torch.equal(slots2[0], slots[0])
    assert torch.equal(q_ctx2[0], q_ctx[0]) and torch.equal(attn2[0], attn[0])
    assert not torch.allclose(slots2[1], slots[1])


def test_untrained_contextualise_is_identity(memory: SlotMemory) -> None:
    slots = memory.write(memory.init_slots(2), _turns(2, 4))
    for query in (torch.randn(2, 16), torch.randn(2, 5, 16)):
        q_ctx, _ = memory.contextualise(slots, query)
        assert torch.equal(q_ctx, query)
    with torch.no_grad():
        torch.nn.init.normal_(memory.read_out.weight, std=0.1)
    assert not torch.allclose(memory.contextualise(slots, query)[0], query)


def test_chunked_writes_and_empty_chunks(memory: SlotMemory) -> None:
    a, b = _turns(2, 3, seed=1), _turns(2, 2, seed=2)
    slots = memory.write(memory.init_slots(2), a)
    # Row 0 gets a second chunk; row 1 has nothing new (an add() on another session).
    mask = torch.tensor([[True, True], [False, False]])
    after = memory.write(slots, b, mask)
    assert torch.equal(after[1], slots[1])
    torch.testing.assert_close(after[0:1], memory.write(slots[0:1], b[0:1]))
    # Recurrence: order of chunks matters, so chunks really are folded in one after another.
    swapped = memory.write(memory.write(memory.init_slots(2), b), a)
    assert not torch.allclose(swapped, memory.write(slots, b))


def test_state_size_does_not_grow_with_history(memory: SlotMemory) -> None:
    keys = set(memory.state_dict())
    slots = memory.init_slots(2)
    for step in range(40):
        slots = memory.write(slots, _turns(2, 3, seed=step))
        assert slots.shape == (2, 4, 16)
    assert torch.isfinite(slots).all()
    assert set(memory.state_dict()) == keys


def test_write_does_not_modify_inputs(memory: SlotMemory) -> None:
    slots = memory.write(memory.init_slots(2), _turns(2, 3))
    before = slots.clone()
    memory.write(slots, _turns(2, 2, seed=9))
    assert torch.equal(slots, before)


def test_config_round_trip_and_validation() -> None:
    assert SlotConfig.from_dict(CFG.to_dict()) == CFG
    with pytest.raises(ValueError, match="unknown SlotConfig field"):
        SlotConfig.from_dict({**CFG.to_dict(), "bogus": 1})
    with pytest.raises(ValueError, match="focus slot needs num_slots >= 2"):
        SlotConfig(num_slots=1, focus_rate=0.5)
    with pytest.raises(ValueError, match=r"SlotConfig.num_slots must be in \[1, 1024\], got 1000000"):
        SlotConfig(num_slots=10**6)
    with pytest.raises(ValueError, match="SlotConfig.dim must be an integer, got 'abc'"):
        SlotConfig.from_dict({**CFG.to_dict(), "dim": "abc"})
    with pytest.raises(ValueError, match="num_slots"):
        SlotConfig(num_slots=0)


def test_follows_dtype() -> None:
    memory = SlotMemory(CFG).double()
    slots = memory.write(memory.init_slots(2), _turns(2, 3).double())
    assert slots.dtype == torch.float64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cpu_and_cuda_agree(memory: SlotMemory) -> None:
    with torch.no_grad():
        torch.nn.init.normal_(memory.read_out.weight, std=0.1)
        torch.nn.init.normal_(memory.ffn[-1].weight, std=0.1)
    turns, feats, query = _turns(3, 5), torch.randn(3, 5, 3), torch.randn(3, 16)
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    cpu_slots = memory.write(memory.init_slots(3), turns, mask, feats)
    cpu_q = memory.contextualise(cpu_slots, query)[0]
    gpu = memory.to("cuda")
    gpu_slots = gpu.write(gpu.init_slots(3), turns.cuda(), mask.cuda(), feats.cuda())
    gpu_q = gpu.contextualise(gpu_slots, query.cuda())[0]
    assert gpu_slots.device.type == "cuda"
    torch.testing.assert_close(gpu_slots.cpu(), cpu_slots, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(gpu_q.cpu(), cpu_q, atol=1e-5, rtol=1e-4)


def _topic(centre: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """``n`` unit turns scattered around ``centre``: one topic of conversation."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(n, centre.shape[-1], generator=g) / centre.shape[-1] ** 0.5
    return F.normalize(centre + 0.5 * noise, dim=-1)


def test_routed_memory_keeps_an_early_topic_and_separates_topics() -> None:
    # Unit-level check of the property the "route" rule exists for: a topic from the start of a
    # long conversation is still held at the end, by other slots than the later topic.
    torch.manual_seed(0)
    cfg = SlotConfig(dim=64, num_slots=8, feature_dim=0)
    centres = F.normalize(torch.randn(2, 64, generator=torch.Generator().manual_seed(5)), dim=-1)
    early, late = _topic(centres[0], 16, 1), _topic(centres[1], 8 * 32, 2)

    def best_cos(memory: SlotMemory) -> tuple[float, float]:
        with torch.no_grad():
            slots = memory.write(memory.init_slots(1), early[None])
            for chunk in late.split(32):
                slots = memory.write(slots, chunk[None])
        sim = F.normalize(slots[0], dim=-1) @ centres.T  # (m, 2)
        return float(sim[:, 0].max()), float(sim[sim[:, 1].argmax(), 0])

    held, mixed = best_cos(SlotMemory(cfg))
    assert held > 0.8  # some slot still points at the early topic after 256 later turns
    assert mixed < 0.5  # and it is not the slot that holds the later topic


def test_focus_trace_is_the_turn_by_turn_rule() -> None:
    turns = _turns(2, 6)
    mask = torch.tensor([[1, 1, 0, 1, 1, 0], [0, 0, 0, 0, 0, 0]], dtype=torch.bool)
    start = torch.randn(2, CFG.dim)
    expected = start.clone()
    for b in range(2):
        for t in range(6):
            if mask[b, t]:
                expected[b] = 0.7 * expected[b] + 0.3 * turns[b, t]
    torch.testing.assert_close(focus_trace(start, turns, mask, 0.3), expected)


def test_focus_slot_holds_the_latest_turns_whatever_the_chunking() -> None:
    torch.manual_seed(0)
    memory = SlotMemory(dataclasses.replace(CFG, focus_rate=0.5))
    turns = _turns(1, 9)
    whole = memory.write(memory.init_slots(1), turns)
    stepwise = memory.init_slots(1)
    for t in range(9):
        stepwise = memory.write(stepwise, turns[:, t : t + 1])
    focus = memory.focus(whole)
    assert focus is not None and memory.focus(memory.init_slots(1)).abs().max() == 0  # type: ignore[union-attr]
    torch.testing.assert_close(focus, memory.focus(stepwise))
    # The last turn weighs most: the focus is nearer to it than to any earlier turn.
    sims = F.cosine_similarity(turns[0], focus, dim=-1)  # (9,)
    assert int(sims.argmax()) == 8
    assert SlotMemory(CFG).focus(whole) is None


def test_focus_config_validation() -> None:
    with pytest.raises(ValueError, match="focus_rate"):
        SlotConfig(focus_rate=1.5)
    with pytest.raises(ValueError, match="num_slots >= 2"):
        SlotConfig(num_slots=1, focus_rate=0.5)
    assert SlotConfig.from_dict(SlotConfig(focus_rate=0.5).to_dict()).has_focus
