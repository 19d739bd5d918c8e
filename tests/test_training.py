"""Training and using the ctxmem model: loss goes down, resume is exact, DDP works, runtime is sound."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch

from ctxmem_plugin.reranker.checkpoint import save_model
from ctxmem_plugin.errors import CheckpointError
from ctxmem_plugin.memory import ContextMemory
from ctxmem_plugin.training.trainer import TrainConfig, build_model, train
from ctxmem_plugin.training.data import gather, load_conversations, load_dataset, save_dataset

from helpers import REPO, HashEncoder, run_two_ranks

LOGS = REPO / "examples" / "chat_logs"
TINY = TrainConfig(epochs=3, batch_size=16, lr=5e-3, num_slots=4, hidden=16, write_chunk=4, members=2)


@pytest.fixture(scope="module")
def dataset():
    encoder = HashEncoder(64, "hash-64")
    convs = load_conversations([LOGS])
    return gather(convs, encoder, pool=30, cues_per_conversation=60, seed=0)


def test_self_supervised_data_from_plain_logs(dataset) -> None:
    kinds = dataset.describe()
    assert kinds["examples"] > 30 and kinds.get("cue", 0) > 0
    # Every cue's target turn is among its candidates in almost every case (cues share words).
    assert np.mean([e.labels.any() for e in dataset.examples]) > 0.8


def test_tiny_training_lowers_loss(dataset, tmp_path: Path) -> None:
    model, log = train(dataset, replace(TINY, epochs=4), tmp_path / "m")
    assert log[-1]["loss"] < log[0]["loss"] * 0.95, log
    saved = json.loads((tmp_path / "m" / "train_log.json").read_text())
    assert [e["loss"] for e in saved["epochs"]] == [e["loss"] for e in log]
    assert saved["data"]["examples"] == len(dataset.examples)
    assert {p.name for p in (tmp_path / "m").iterdir()} >= {"config.json", "model.safetensors", "train_log.json"}


def test_resume_continues_the_same_loss_curve(dataset, tmp_path: Path) -> None:
    _, straight = train(dataset, replace(TINY, epochs=4), tmp_path / "a")
    train(dataset, replace(TINY, epochs=2), tmp_path / "b")
    _, resumed = train(dataset, replace(TINY, epochs=4), tmp_path / "b", resume=True)
    assert len(resumed) == 4
    assert np.allclose([e["loss"] for e in resumed], [e["loss"] for e in straight], rtol=1e-4)


def test_resuming_a_run_saved_before_the_focus_keeps_it_off(tmp_path: Path) -> None:
    from ctxmem_plugin.training.trainer import resume_config

    old = {k: v for k, v in asdict(TINY).items() if k not in ("focus_rate", "focus_pool")}
    # Settings of experiments that were not kept, as earlier versions saved them.
    old.update(slot_write_rule="route", slot_gate=False, ignore_evidence_neighbours=False)
    tmp_path.joinpath("train_log.json").write_text(json.dumps({"config": old, "epochs": []}))
    cfg = resume_config(tmp_path, replace(TINY, epochs=9))
    assert (cfg.focus_rate, cfg.focus_pool, cfg.epochs) == (0.0, 0, 9)
    old["slot_gate"] = True  # trained with a retired setting: it cannot be resumed
    tmp_path.joinpath("train_log.json").write_text(json.dumps({"config": old, "epochs": []}))
    with pytest.raises(CheckpointError, match="slot_gate, which this version no longer has"):
        resume_config(tmp_path, TINY)


def _as_questions(dataset):
    """The chat logs' cues relabelled as questions: LoCoMo-style examples without a LoCoMo file."""
    return replace(dataset, examples=[replace(e, kind="question") if e.kind == "cue" else e for e in dataset.examples])


def test_training_is_deterministic(dataset) -> None:
    before = torch.are_deterministic_algorithms_enabled()
    model_a, a = train(dataset, replace(TINY, epochs=2))
    model_b, b = train(dataset, replace(TINY, epochs=2))
    assert [e["loss"] for e in a] == [e["loss"] for e in b]
    weights_b = model_b.state_dict()
    for name, value in model_a.state_dict().items():
        assert torch.equal(value, weights_b[name]), name
    assert torch.are_deterministic_algorithms_enabled() == before  # the caller's setting is back


def test_each_member_is_trained_as_a_one_member_model_with_its_own_seed(dataset) -> None:
    model, log = train(dataset, replace(TINY, epochs=2, seed=4))
    assert model.config.members == 2 and len(log[-1]["member_losses"]) == 2
    for k, member in enumerate(model.members):
        alone, alone_log = train(dataset, replace(TINY, epochs=2, seed=4 + k, members=1))
        assert [e["loss"] for e in alone_log] == [e["member_losses"][k] for e in log]
        assert "member_losses" not in alone_log[-1]
        reference = alone.members[0].state_dict()
        for name, value in member.state_dict().items():
            assert torch.equal(value, reference[name]), (k, name)
    assert log[-1]["loss"] == np.mean(log[-1]["member_losses"])
    # Two seeds, two different members: the mean is of two rankings, not one twice.
    first, second = (dict(m.named_parameters()) for m in model.members)
    assert not torch.equal(first["scorer.log_base_scale"], second["scorer.log_base_scale"])


def _hybrid_and_ctxmem(mem: ContextMemory, query: str) -> tuple[list[int], list[int]]:
    return ([h.id for h in mem.search(query, ("maya",), k=10, method="hybrid")],
            [h.id for h in mem.search(query, ("maya",), k=10, method="ctxmem")])


def test_untrained_model_leaves_retrieval_unchanged(tmp_path: Path) -> None:
    from ctxmem_plugin.formats import read_paths
    from ctxmem_plugin.reranker.runtime import RuntimeSettings

    model = build_model(64, "hash-64", TINY)
    save_model(model, tmp_path / "untrained", extra={"runtime": RuntimeSettings(pool=100, write_chunk=4).to_dict()})
    with ContextMemory(tmp_path / "mem", encoder=HashEncoder(), model=tmp_path / "untrained") as mem:
        mem.ingest(read_paths([LOGS / "maya.jsonl"]), ("maya",))
        for query in ["what is the dog called", "new job", "trip to Lisbon", "soup recipe"]:
            hybrid, ctx = _hybrid_and_ctxmem(mem, query)
            assert ctx == hybrid


def test_focus_brings_a_follow_ups_referent_into_the_candidates(tmp_path: Path) -> None:
    import random

    from ctxmem_plugin.reranker.runtime import RuntimeSettings

    model = build_model(64, "hash-64", TINY)
    assert model.config.slots.has_focus and model.config.scorer.focus
    settings = RuntimeSettings(pool=3, write_chunk=4, focus_pool=2)
    save_model(model, tmp_path / "m", extra={"runtime": settings.to_dict()})
    rng = random.Random(0)
    vocab = [f"topic{i}" for i in range(500)]
    history = [{"role": "user", "content": " ".join(rng.sample(vocab, 6))} for _ in range(120)]
    referent = history[40]["content"].split()
    with ContextMemory(tmp_path / "mem", encoder=HashEncoder(), model=tmp_path / "m") as mem:
        ids = mem.add(history, ("u", "history"))
        # The conversation going on now mentions the referent; the follow-up names nothing.
        mem.add({"role": "user", "content": " ".join(referent[:4])}, ("u", "now"))
        query = "what was that again?"
        hits = {h.id: h for h in mem.search(query, ("u", "history"), k=30, history=("u", "now"), history_mode="slots")}
        assert ids[40] in hits and hits[ids[40]].signals["focus"]["rank"] == 1
        # The same thread given as messages leaves the same focus: the same hits.
        said = [{"role": "user", "content": " ".join(referent[:4])}]
        again = mem.search(query, ("u", "history"), k=30, history=said, history_mode="slots")
        assert [(h.id, round(h.score, 5)) for h in again] == [(h.id, round(h.score, 5)) for h in hits.values()]
        # An empty conversation has no focus: nothing is added, and no hit says "focus".
        plain = mem.search(query, ("u", "history"), k=30, history=("u", "nothing-yet"), history_mode="slots")
        assert ids[40] not in {h.id for h in plain}
        assert not any("focus" in h.signals for h in plain)
        # By default the focus is the searched namespace's own: its latest turns.
        own = {h.id: h for h in mem.search(query, ("u", "history"), k=30)}
        assert ids[-1] in own and "focus" in own[ids[-1]].signals
        # The default conversational mode with a model: both searches re-ranked without a focus
        # (the thread is in the joined text), merged; every hit from the namespace searched.
        fused = mem.search(" ".join(referent[:2]), ("u", "history"), k=10, history=said)
        assert len(fused) == 10 and all(h.namespace == ("u", "history") for h in fused)
        assert all("focus" not in h.signals and h.signals["fuse"]["rank_alone"] + h.signals["fuse"]["rank_with_thread"] > 0
                   for h in fused)
        assert [h.score for h in fused] == sorted((h.score for h in fused), reverse=True)


def test_trained_model_in_memory_and_chunk_invariant_slots(dataset, tmp_path: Path) -> None:
    from ctxmem_plugin.formats import read_paths

    train(dataset, TINY, tmp_path / "m")
    turns = [st.turn for st in read_paths([LOGS / "maya.jsonl"])[0].turns]
    with ContextMemory(tmp_path / "one", encoder=HashEncoder(), model=tmp_path / "m") as a, \
         ContextMemory(tmp_path / "many", encoder=HashEncoder(), model=tmp_path / "m") as b:
        a.add(turns, ("maya",))
        for t in turns:  # one add() per turn: same slots as one add() of everything
            b.add(t, ("maya",))
        assert torch.allclose(a.reranker.slots_for(("maya",)), b.reranker.slots_for(("maya",)), atol=1e-5)
        hits = a.search("dog name", ("maya",), k=5)
        assert hits and all("ctxmem" in h.signals for h in hits)
        info = a.explain("dog name", ("maya",))
        assert len(info["attention"]) == TINY.num_slots and abs(sum(info["attention"]) - 1) < 1e-4
        assert info["top_slots"] and info["top_slots"][0]["turns"]
    # Slot states persist: reopening gives the same slots without replaying.
    with ContextMemory(tmp_path / "one", encoder=HashEncoder(), model=tmp_path / "m") as a2, \
         ContextMemory(tmp_path / "many", encoder=HashEncoder(), model=tmp_path / "m", read_only=True) as b2:
        assert torch.allclose(a2.reranker.slots_for(("maya",)), b2.reranker.slots_for(("maya",)), atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_memory_with_the_model_on_cuda_matches_cpu(dataset, tmp_path: Path) -> None:
    from ctxmem_plugin.formats import read_paths

    train(dataset, TINY, tmp_path / "m")
    turns = [st.turn for st in read_paths([LOGS / "maya.jsonl"])[0].turns]
    with ContextMemory(tmp_path / "cpu", encoder=HashEncoder(), model=tmp_path / "m", device="cpu") as a, \
         ContextMemory(tmp_path / "gpu", encoder=HashEncoder(), model=tmp_path / "m", device="cuda") as b:
        assert b.reranker.device == "cuda"
        for mem in (a, b):
            mem.add(turns, ("maya",))
            mem.add({"role": "user", "content": "that trip to Lisbon"}, ("maya-now",))
        torch.testing.assert_close(b.reranker.slots_for(("maya",)).cpu(), a.reranker.slots_for(("maya",)), atol=1e-4, rtol=1e-4)
        for query, focus in [("what is the dog called", None), ("what was that again?", ("maya-now",))]:
            ha, hb = a.search(query, ("maya",), k=5, focus=focus), b.search(query, ("maya",), k=5, focus=focus)
            assert [h.id for h in ha] == [h.id for h in hb]
            assert np.allclose([h.score for h in ha], [h.score for h in hb], atol=1e-4)


def test_corrupt_model_dir_is_a_clear_error(dataset, tmp_path: Path) -> None:
    train(dataset, replace(TINY, epochs=1), tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="model.safetensors"):
        ContextMemory(tmp_path / "mem", encoder=HashEncoder(), model=tmp_path / "m")


DDP_WORKER = r"""
import json, sys, hashlib
sys.path.insert(0, {tests!r})
from dataclasses import asdict, replace
import torch
from ctxmem_plugin.training.trainer import TrainConfig, train
from ctxmem_plugin.training.data import load_dataset
torch.set_num_threads(1)
data = load_dataset({data!r})
cfg = TrainConfig(epochs=2, batch_size=8, lr=5e-3, num_slots=4, hidden=16, write_chunk=4, members=2)
model, log = train(data, cfg, None)
digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.parameters())).hexdigest()
print(json.dumps({{"log": log, "digest": digest}}))
"""


def test_ddp_two_processes_on_cpu(dataset, tmp_path: Path) -> None:
    data_path = tmp_path / "data.npz"
    save_dataset(dataset, data_path)
    assert len(load_dataset(data_path).examples) == len(dataset.examples)
    script = DDP_WORKER.format(tests=str(Path(__file__).parent), data=str(data_path))
    outs = run_two_ranks(script)
    # Gradients are averaged across processes, so both hold identical weights and the same log.
    assert outs[0]["digest"] == outs[1]["digest"]
    assert outs[0]["log"][0]["loss"] == pytest.approx(outs[1]["log"][0]["loss"])
    assert outs[0]["log"][-1]["loss"] < outs[0]["log"][0]["loss"]


def test_a_model_trained_before_some_features_existed_reads_the_columns_it_knows(tmp_path: Path, monkeypatch) -> None:
    from ctxmem_plugin.training import trainer as training
    from ctxmem_plugin.formats import read_paths
    from ctxmem_plugin.retrieval.features import FEATURE_NAMES, candidate_features
    from ctxmem_plugin.reranker.runtime import RuntimeSettings

    older = tuple(name for name in FEATURE_NAMES if name not in ("session_mean_fused", "prev_dense"))
    monkeypatch.setattr(training, "FEATURE_NAMES", (older[0], *older[:0:-1]))  # "hybrid" first, the rest reversed
    model = build_model(64, "hash-64", replace(TINY, members=1))
    monkeypatch.undo()
    assert model.config.scorer.num_features == len(older)
    torch.manual_seed(0)
    with torch.no_grad():  # a residual that reads every column, so that a wrong column shows
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    save_model(model, tmp_path / "old", extra={"runtime": RuntimeSettings(pool=100, write_chunk=4).to_dict()})
    turns = [st.turn for st in read_paths([LOGS / "maya.jsonl"])[0].turns]
    # On the CPU wherever it runs: the model is called directly below with CPU tensors.
    with ContextMemory(tmp_path / "mem", encoder=HashEncoder(), model=tmp_path / "old", device="cpu") as mem:
        mem.add(turns, ("maya",))
        runtime = mem.reranker
        assert runtime is not None
        query = "when did Maya get the dog?"
        cands = mem.retriever.candidates(query, mem.encoder.encode_query(query), ("maya",))
        rows = {t.id: t for t in mem.get(cands.ids.tolist())}
        scored = runtime.rescore(cands, rows, mem.retrieval)
        features = candidate_features(cands, rows, mem.retrieval)
        columns = [FEATURE_NAMES.index(name) for name in runtime.model.config.feature_names]
        with torch.no_grad():
            direct = runtime.model(
                torch.from_numpy(features[:, columns])[None], None, torch.from_numpy(cands.query_vector)[None],
                torch.from_numpy(cands.vectors)[None], runtime.slots_for(("maya",)), None,
            )[0]
        assert np.allclose(scored.score, direct.double().numpy(), atol=1e-6)
        assert mem.search(query, ("maya",), k=3)


def test_a_model_that_reads_a_feature_this_version_lacks_is_refused(tmp_path: Path, monkeypatch) -> None:
    from ctxmem_plugin.training import trainer as training
    from ctxmem_plugin.retrieval.features import FEATURE_NAMES
    from ctxmem_plugin.reranker.runtime import RuntimeSettings

    monkeypatch.setattr(training, "FEATURE_NAMES", (*FEATURE_NAMES, "from_a_later_version"))
    model = build_model(64, "hash-64", replace(TINY, members=1))
    monkeypatch.undo()
    save_model(model, tmp_path / "new", extra={"runtime": RuntimeSettings(pool=100, write_chunk=4).to_dict()})
    with pytest.raises(CheckpointError, match=r"\['from_a_later_version'\] are not computed by this version"):
        ContextMemory(tmp_path / "mem", encoder=HashEncoder(), model=tmp_path / "new")


def test_resume_refuses_a_model_trained_on_other_features(dataset, tmp_path: Path, monkeypatch) -> None:
    from ctxmem_plugin.training import trainer as training

    train(dataset, replace(TINY, epochs=1, members=1), tmp_path / "m")
    monkeypatch.setattr(training, "FEATURE_NAMES", training.FEATURE_NAMES[:-1])  # as a later version gathers
    with pytest.raises(CheckpointError, match="--resume needs the same"):
        train(dataset, replace(TINY, epochs=2, members=1), tmp_path / "m", resume=True)
