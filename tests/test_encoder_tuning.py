"""Encoder fine-tuning: the pairs it learns from, what it learns, the directory it writes, the checks on it."""

from __future__ import annotations

import json
import random
import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from ctxmem_plugin.reranker.checkpoint import load_model
from ctxmem_plugin.encoders import DEFAULT_MODEL, SentenceEncoder, default_model_path
from ctxmem_plugin.training.encoder_tuning import (
    EncoderTuneConfig,
    TunePair,
    batch_columns,
    evidence_pairs,
    false_negatives,
    pairs_per_epoch,
    tune_encoder,
    tuning_batches,
)
from ctxmem_plugin.errors import CheckpointError, InputError
from ctxmem_plugin.retrieval.text import embed_text
from ctxmem_plugin.reranker.model import ModelConfig
from ctxmem_plugin.training.trainer import TrainConfig, build_model
from ctxmem_plugin.training.data import load_conversations
from ctxmem_plugin.encoders.tuned import encoder_dir_problems, tuned_name, weights_fingerprint

from helpers import run_two_ranks
from test_locomo import _sample, _write

NAMES = ["Alma", "Bruno", "Chidi", "Dana", "Emeka", "Fatou", "Goran", "Hana", "Ivo", "Jun", "Kofi", "Lena"]
# Questions whose evidence shares no content word with them: the base model only half knows
# that "where does X keep the bike" is answered by "X: the shed behind the bakery".
PLACES = ["the shed behind the bakery", "a cellar under the old mill", "my cousin's garage", "the station lockers",
          "a barn near the river", "the attic at work", "a tent in the garden", "the boat house",
          "a kiosk by the port", "the school gym", "my aunt's porch", "the church crypt"]
PAIRS = [TunePair(f"Where does {n} keep the bike?", f"{n}: It stays in {p} these days.") for n, p in zip(NAMES, PLACES)]


def margin(encoder: SentenceEncoder, pairs: list[TunePair]) -> float:
    """Mean of cos(question, its turn) minus the mean cos(question, the other turns)."""
    q = encoder.encode([p.question for p in pairs])
    t = encoder.encode([p.turn for p in pairs])
    sims = q @ t.T  # (n, n)
    n = len(pairs)
    return float(np.mean(np.diag(sims)) - (sims.sum() - np.trace(sims)) / (n * n - n))


def test_evidence_pairs_are_questions_and_their_turns_as_embedded(tmp_path: Path) -> None:
    (conv,) = load_conversations([_write(tmp_path, [_sample()])])
    cat, fence, tell = "Ann: Hi Bo, my cat is Tofu.", "Ann: I painted the fence blue. [image: a blue fence]", "Bo: Tell me!"
    both = frozenset({cat, fence, tell})
    assert evidence_pairs([conv]) == [
        TunePair("What is Ann's cat called?", cat, 0, frozenset({cat})),
        TunePair("Which year?", cat, 0, both),
        TunePair("Which year?", fence, 0, both),
        TunePair("Which year?", tell, 0, both),
    ]


class WordsEncoder:
    """A stand-in miner: bag of words, so which turns rank highest is known."""

    name, dim = "words", 64

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), np.float32)
        for i, text in enumerate(texts):
            for w in re.findall(r"[a-z]+", text.lower()):
                out[i, self.vocab.setdefault(w, len(self.vocab))] += 1
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)

    def encode_query(self, text: str) -> np.ndarray:
        return self.encode([text])[0]


def test_hard_negatives_are_the_miners_best_non_evidence_turns_of_the_same_conversation(tmp_path: Path) -> None:
    convs = load_conversations([_write(tmp_path, [_sample("conv-a"), _sample("conv-b")])])
    texts = [[embed_text(st.turn) for st in c.turns] for c in convs]
    # pool=1: the best-ranked turn that is not evidence. For the cat question that is "Bo: Hi
    # Ann!": it shares "ann" with the question and is the shortest such turn (cosine).
    top = evidence_pairs(convs, miner=WordsEncoder(), pool=1)
    assert [p.negatives for p in top if p.question.startswith("What is")] == [("Bo: Hi Ann!",), ("Bo: Hi Ann!",)]
    wide = evidence_pairs(convs, miner=WordsEncoder(), pool=10, seed=5)
    assert [p.group for p in wide] == [0] * 4 + [1] * 4
    for p in wide:
        assert len(p.negatives) == 1 and p.negatives[0] not in p.evidence and p.negatives[0] in texts[p.group]
    # One negative per question, shared by its evidence turns; seeded.
    assert len({p.negatives for p in wide if p.group == 0 and p.question == "Which year?"}) == 1
    assert evidence_pairs(convs, miner=WordsEncoder(), pool=10, seed=5) == wide
    assert all(p.negatives == () for p in evidence_pairs(convs, miner=WordsEncoder(), pool=0))


def test_several_hard_negatives_are_distinct_draws_from_the_pool(tmp_path: Path) -> None:
    convs = load_conversations([_write(tmp_path, [_sample("conv-a"), _sample("conv-b")])])
    texts = [[embed_text(st.turn) for st in c.turns] for c in convs]
    one = evidence_pairs(convs, miner=WordsEncoder(), pool=3, seed=7)
    three = evidence_pairs(convs, miner=WordsEncoder(), pool=3, seed=7, per_question=3)
    pool = {p.question: set(p.negatives) for p in evidence_pairs(convs, miner=WordsEncoder(), pool=3, per_question=99)}
    for p in three:
        assert len(p.negatives) == len(set(p.negatives)) == 3  # pool=3 > the evidence: 3 distinct turns
        assert set(p.negatives) == pool[p.question] and not set(p.negatives) & p.evidence
        assert all(n in texts[p.group] for n in p.negatives)
    # The first question's first draw is the one a single negative gets: sample() starts as choice() does.
    assert three[0].negatives[:1] == one[0].negatives
    assert evidence_pairs(convs, miner=WordsEncoder(), pool=3, seed=7, per_question=3) == three


def test_batches_come_from_one_conversation_and_leftovers_are_pooled() -> None:
    pairs = [TunePair(f"q{g}-{i}", f"t{g}-{i}", g) for g, n in enumerate((10, 7, 3)) for i in range(n)]
    cfg = EncoderTuneConfig(batch_size=4)
    batches = tuning_batches(pairs, cfg, random.Random(0))
    assert all(len(b) == 4 for b in batches)
    assert sorted(len({p.group for p in b}) == 1 for b in batches).count(True) >= 3  # 2 from group 0, 1 from group 1
    used = [p for b in batches for p in b]
    assert len(used) == len(set(used)) == 20 == pairs_per_epoch(pairs, cfg)  # leftovers 2 + 3 + 3 make 2 batches
    assert pairs_per_epoch(pairs[:19], cfg) == 16  # a short last batch is left out


def test_evidence_of_the_rows_question_is_never_its_negative() -> None:
    gold = frozenset({"a", "b"})
    batch = [TunePair("q1", "a", 0, gold, ("x",)), TunePair("q1", "b", 0, gold, ("x",)),
             TunePair("q2", "c", 0, frozenset({"c"}), ("a", "y"))]
    columns = batch_columns(batch)
    assert columns == ["a", "b", "c", "x", "x", "a", "y"]
    assert false_negatives(batch, columns).tolist() == [
        [False, True, False, False, False, True, False],  # b and the mined "a" are q1's own evidence
        [True, False, False, False, False, True, False],
        [False, False, False, False, False, False, False],  # "a" is a fair negative for q2
    ]


def test_tuning_config_is_checked() -> None:
    with pytest.raises(ValueError, match="hard_negative_pool"):
        EncoderTuneConfig(hard_negative_pool=-1)
    with pytest.raises(ValueError, match="batch_size"):
        EncoderTuneConfig(batch_size=0)
    with pytest.raises(ValueError, match="hard_negatives"):
        EncoderTuneConfig(hard_negatives=0)


@pytest.mark.slow
def test_tuning_pulls_questions_towards_their_evidence_and_writes_a_safe_directory(tmp_path: Path, minilm) -> None:
    cfg = EncoderTuneConfig(epochs=3, lr=1e-4, batch_size=6, seed=3)
    seen: list[tuple[int, float]] = []  # (epochs done, margin of the model then)

    def measure(epochs_done: int, encoder: SentenceEncoder) -> None:
        assert not encoder._load().training
        seen.append((epochs_done, margin(encoder, PAIRS)))

    report = tune_encoder(PAIRS, tmp_path / "enc", base=default_model_path(), base_name=DEFAULT_MODEL, cfg=cfg, on_epoch=measure)
    tuned = SentenceEncoder(tmp_path / "enc", device="cpu", name=report.name)
    before, after = margin(minilm, PAIRS), margin(tuned, PAIRS)
    assert after > before + 0.05, (before, after)
    # Measured after every epoch; the last measurement is the saved model's.
    assert [e for e, _ in seen] == [1, 2, 3] and seen[-1][1] == pytest.approx(after, abs=1e-5)
    assert report.pairs == len(PAIRS) and len(report.losses) == 3 and report.losses[-1] < report.losses[0]
    assert report.name == tuned_name(DEFAULT_MODEL, tmp_path / "enc") == f"{DEFAULT_MODEL}+tuned-{weights_fingerprint(tmp_path / 'enc')}"
    files = {p.name for p in (tmp_path / "enc").rglob("*") if p.is_file()}
    assert "model.safetensors" in files and not {f for f in files if f.endswith((".bin", ".pt", ".pkl"))}
    assert encoder_dir_problems(tmp_path / "enc", report.name) == []
    assert [p.name for p in tmp_path.iterdir()] == ["enc"]  # no staging directory left behind
    # Same seed, same data: the same weights, so the same name (and the run without the
    # per-epoch measurement gets the same weights as the run with it).
    again = tune_encoder(PAIRS, tmp_path / "enc2", base=default_model_path(), base_name=DEFAULT_MODEL, cfg=cfg)
    assert again.name == report.name
    # The model measured after epoch 1 is the one a 1-epoch run saves (a constant learning rate).
    one = tune_encoder(PAIRS, tmp_path / "enc1", base=default_model_path(), base_name=DEFAULT_MODEL, cfg=replace(cfg, epochs=1))
    assert margin(SentenceEncoder(tmp_path / "enc1", device="cpu", name=one.name), PAIRS) == pytest.approx(seen[0][1], abs=1e-5)
    assert seen[0][1] != pytest.approx(after, abs=1e-3)  # and it differs from the last epoch's
    with pytest.raises(InputError, match="at least 2"):
        tune_encoder(PAIRS[:1], tmp_path / "x", base=default_model_path(), base_name=DEFAULT_MODEL)


def _fake_encoder_dir(root: Path) -> tuple[Path, str]:
    enc = root / "encoder"
    enc.mkdir(parents=True)
    (enc / "modules.json").write_text(json.dumps([{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]))
    save_file({"w": torch.zeros(2)}, enc / "model.safetensors")
    return enc, tuned_name("base", enc)


def test_encoder_dir_problems_name_each_defect(tmp_path: Path) -> None:
    enc, name = _fake_encoder_dir(tmp_path)
    assert encoder_dir_problems(enc, name) == []
    save_file({"w": torch.ones(2)}, enc / "model.safetensors")
    (enc / "pytorch_model.bin").write_bytes(b"pickle")
    (enc / "modules.json").write_text(json.dumps([{"type": "evil.module.Loader"}]))
    problems = encoder_dir_problems(enc, name)
    assert len(problems) == 3, problems
    assert any("pytorch_model.bin" in p and "pickle" in p for p in problems)
    assert any("'evil.module.Loader'" in p for p in problems)
    assert any("does not match the fingerprint" in p for p in problems)
    assert any("carries no weights fingerprint" in p for p in encoder_dir_problems(enc, "base"))
    assert encoder_dir_problems(tmp_path / "missing", name) == ["missing encoder directory missing/"]


def test_a_model_that_carries_an_encoder_is_checked_on_load(tmp_path: Path) -> None:
    from ctxmem_plugin.reranker.checkpoint import save_model

    enc, name = _fake_encoder_dir(tmp_path / "model")
    model = build_model(8, name, replace(TrainConfig(), hidden=4), encoder_dir="encoder")
    save_model(model, tmp_path / "model")
    assert load_model(tmp_path / "model").config.encoder_dir == "encoder"
    save_file({"w": torch.ones(2)}, enc / "model.safetensors")  # other weights under the same name
    with pytest.raises(CheckpointError, match="encoder/model.safetensors does not match the fingerprint"):
        load_model(tmp_path / "model")
    (enc / "model.safetensors").write_bytes(b"corrupted")
    with pytest.raises(CheckpointError, match="encoder/model.safetensors: model.safetensors is not a valid safetensors file") as info:
        load_model(tmp_path / "model")
    assert any("does not match the fingerprint" in p for p in info.value.details)
    shutil.rmtree(enc)
    with pytest.raises(CheckpointError, match="missing encoder directory encoder/"):
        load_model(tmp_path / "model")


def test_encoder_dir_is_a_fixed_name_not_a_path() -> None:
    config = build_model(8, "x+tuned-00", replace(TrainConfig(), hidden=4)).config
    assert config.encoder_dir is None and ModelConfig.from_dict(config.to_dict()) == config
    data = config.to_dict()
    data["encoder_dir"] = "../../elsewhere"
    with pytest.raises(ValueError, match="encoder_dir must be one of None, 'encoder'"):
        ModelConfig.from_dict(data)
    # A config saved before the field existed loads without it.
    del data["encoder_dir"]
    assert ModelConfig.from_dict(data).encoder_dir is None


def _cli(*args: str | Path, code: int = 0):
    from click.testing import CliRunner

    from ctxmem_plugin.cli import main

    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == code, (result.output, result.exception)
    return result


def test_tune_encoder_needs_labelled_logs(tmp_path: Path) -> None:
    chat = Path(__file__).resolve().parents[1] / "examples" / "chat_logs"
    result = _cli("train", chat, "--out", tmp_path / "m", "--tune-encoder", code=2)
    assert "--tune-encoder needs labelled questions" in result.output
    assert not (tmp_path / "m").exists()


@pytest.mark.slow
def test_train_tunes_the_encoder_and_memories_use_it(tmp_path: Path) -> None:
    logs = _write(tmp_path, [_sample("conv-a"), _sample("conv-b")])
    out = tmp_path / "model"
    result = _cli("train", logs, "--out", out, "--epochs", "1", "--cues", "5")
    assert "encoder tuned on 8 pairs" in result.stdout
    config = json.loads((out / "config.json").read_text())["model"]
    name = config["encoder"]
    assert config["encoder_dir"] == "encoder" and name == tuned_name(DEFAULT_MODEL, out / "encoder")
    tuning = json.loads((out / "train_log.json").read_text())["encoder_tuning"]
    assert (tuning["pairs"], tuning["name"], tuning["base"], len(tuning["losses"])) == (8, name, DEFAULT_MODEL, 2)
    assert tuning["config"]["epochs"] == EncoderTuneConfig.epochs == 2
    assert (tuning["hard_negatives"], tuning["config"]["hard_negative_pool"]) == (8, 10)

    # A memory built with the model is built with its encoder.
    mem = tmp_path / "mem"
    _cli("ingest", logs, "--memory", mem, "--model", out)
    assert json.loads(_cli("stats", "--memory", mem, "--json").stdout)["encoder"] == name
    hits = json.loads(_cli("query", "What is Ann's cat called?", "--memory", mem, "--model", out, "-k", "3", "--json").stdout)
    assert any("Tofu" in h["text"] for h in hits) and all("ctxmem" in h["signals"] for h in hits)

    evaluated = json.loads(_cli("eval", "locomo", logs, "--model", out, "--json").stdout)
    assert evaluated["encoder"] == name and "ctxmem" in evaluated["methods"]

    # One built before the model: a clear error, then one reembed.
    old = tmp_path / "old"
    _cli("ingest", logs, "--memory", old)
    refused = _cli("query", "What is Ann's cat called?", "--memory", old, "--model", out, code=2)
    assert "all-MiniLM-L6-v2" in refused.output and "reembed" in refused.output
    summary = json.loads(_cli("reembed", "--memory", old, "--model", out, "--json").stdout)
    assert summary == {"turns": 12, "from": DEFAULT_MODEL, "encoder": name}
    again = json.loads(_cli("query", "What is Ann's cat called?", "--memory", old, "--model", out, "-k", "3", "--json").stdout)
    assert [h["text"] for h in again] == [h["text"] for h in hits]

    # Resuming keeps the tuned encoder; --frozen-encoder trains without one.
    _cli("train", logs, "--out", out, "--epochs", "2", "--cues", "5", "--resume")
    assert json.loads((out / "config.json").read_text())["model"]["encoder"] == name
    _cli("train", logs, "--out", tmp_path / "frozen", "--epochs", "1", "--cues", "5", "--frozen-encoder")
    frozen = json.loads((tmp_path / "frozen" / "config.json").read_text())["model"]
    assert (frozen["encoder"], frozen["encoder_dir"]) == (DEFAULT_MODEL, None)
    assert not (tmp_path / "frozen" / "encoder").exists()
    # --encoder-negatives 0: tuned without mining; --encoder-epochs sets the tuning's length.
    _cli("train", logs, "--out", tmp_path / "plain", "--epochs", "1", "--cues", "5", "--encoder-negatives", "0",
         "--encoder-epochs", "1")
    plain = json.loads((tmp_path / "plain" / "train_log.json").read_text())["encoder_tuning"]
    assert (plain["pairs"], plain["hard_negatives"], plain["config"]["hard_negative_pool"]) == (8, 0, 0)
    assert (len(plain["losses"]), plain["config"]["epochs"]) == (1, 1)
    # --encoder-hard-negatives: each question brings that many (the config records it).
    _cli("train", logs, "--out", tmp_path / "three", "--epochs", "1", "--cues", "5", "--encoder-hard-negatives", "3",
         "--encoder-epochs", "1")
    three = json.loads((tmp_path / "three" / "train_log.json").read_text())["encoder_tuning"]
    assert (three["hard_negatives"], three["config"]["hard_negatives"], three["config"]["hard_negative_pool"]) == (8, 3, 10)


TUNE_WORKER = r"""
import json, os, sys
from pathlib import Path
import torch
os.environ.setdefault("HF_HUB_OFFLINE", "1")
from ctxmem_plugin.encoders import SentenceEncoder
from ctxmem_plugin.training.encoder_tuning import EncoderTuneConfig, bundle_tuned_encoder
from ctxmem_plugin.training.trainer import init_distributed
from ctxmem_plugin.training.data import load_conversations
torch.set_num_threads(1)
init_distributed("cpu")
convs = load_conversations([{logs!r}])
enc, report = bundle_tuned_encoder(convs, Path({out!r}), base=SentenceEncoder(device="cpu"), cfg=EncoderTuneConfig(batch_size=4))
print(json.dumps({{"name": enc.name, "negatives": report and report.negatives, "vector": enc.encode_query("bike").tolist()}}))
"""


@pytest.mark.slow
def test_under_torchrun_rank_zero_tunes_and_every_rank_uses_its_encoder(tmp_path: Path) -> None:
    logs = _write(tmp_path, [_sample("conv-a"), _sample("conv-b")])
    script = TUNE_WORKER.format(logs=str(logs), out=str(tmp_path / "model"))
    outs = run_two_ranks(script)
    assert [o["negatives"] for o in outs] == [8, None]  # rank 0 mined a hard negative for each pair and tuned
    assert outs[0]["name"] == outs[1]["name"] == tuned_name(DEFAULT_MODEL, tmp_path / "model" / "encoder")
    assert outs[0]["vector"] == outs[1]["vector"]
