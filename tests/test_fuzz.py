"""Fuzzing with hypothesis: every log reader, metadata filters and a model's config.json.

Whatever the input, the answer is a result or one of the project's own errors (a
:class:`~ctxmem_plugin.errors.CtxMemError`, one line): hypothesis reports any other exception
(a traceback) as a failure. The examples are derandomized, so CI runs the same ones every time;
``HYPOTHESIS_PROFILE=long`` runs many more, random ones.
"""

from __future__ import annotations

import json
import math
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctxmem_plugin import safejson
from ctxmem_plugin.errors import CtxMemError
from ctxmem_plugin.formats import parse_document
from ctxmem_plugin.formats.document import open_document
from ctxmem_plugin.formats.portable import read_export
from ctxmem_plugin.memory import ContextMemory
from ctxmem_plugin.reranker import checkpoint
from ctxmem_plugin.reranker.checkpoint import load_checkpoint, save_model
from ctxmem_plugin.reranker.model import CtxMemModel, ModelConfig
from ctxmem_plugin.reranker.scorer import ScorerConfig
from ctxmem_plugin.reranker.slots import SlotConfig

from helpers import HashEncoder

settings.register_profile(
    "ci", derandomize=True, deadline=None, database=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)
settings.register_profile("long", parent=settings.get_profile("ci"), derandomize=False, max_examples=5_000)
settings.load_profile("ci")

RAN: Counter[str] = Counter()  # examples each target ran (the last test checks the total)

# -- values ----------------------------------------------------------------------------------

KEYS = ("role", "content", "name", "speaker", "timestamp", "metadata", "messages", "conversations", "from", "value",
        "type", "data", "additional_kwargs", "tool_calls", "id", "sample_id", "conversation", "speaker_a", "speaker_b",
        "session_1", "session_2", "session_1_date_time", "dia_id", "text", "blip_caption", "qa", "question", "evidence",
        "category", "namespace", "vector", "encoder", "key", "created_at", "text", "parts")
ROLES = ("user", "assistant", "human", "ai", "gpt", "system", "tool", "function", "chat", "developer", "wizard", "")

VALID_ROLES = ("user", "assistant", "human", "ai", "gpt", "system", "tool")

# Values that broke a reader, a filter or a write before (issue 25): out-of-range numbers, NaN,
# integers beyond 64 bits, lone surrogates.
hostile = st.sampled_from([1e20, -1e20, 1e300, float("inf"), float("-inf"), float("nan"), 2**63, 2**64, -(2**63) - 1, 10**30,
                           "\ud800", "a\udcff", "", " ", "9" * 40, -0.0, 253402300800, -62135596801])


def nest(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True), hostile,
    st.text(max_size=30), st.sampled_from(ROLES), st.sampled_from(["2024-03-01", "1:56 pm on 8 May, 2023", "Ann", "Bo", "D1:1", "D1:3; D2:4"]),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), inner, max_size=5),
    ),
    max_leaves=25,
)
deep = st.integers(min_value=1, max_value=300).map(nest)  # json.dumps itself stops near 1,000
timestamps = st.one_of(hostile, st.integers(), st.floats(), st.sampled_from(["2024-03-01", "1:56 pm on 8 May, 2023", "yesterday", "2024-13-45"]))
metadata = st.one_of(
    st.dictionaries(st.one_of(st.text(max_size=5), st.just("\udcff")), st.one_of(scalars, deep, json_values), max_size=3),
    json_values,
)


def message(role_key: str = "role", text_key: str = "content") -> st.SearchStrategy[dict[str, Any]]:
    """Message-shaped objects: mostly well-formed, with hostile values where they hurt."""
    return st.fixed_dictionaries(
        {role_key: st.one_of(st.sampled_from(VALID_ROLES), st.sampled_from(VALID_ROLES), json_values),
         text_key: st.one_of(st.text(min_size=1, max_size=40), st.text(min_size=1, max_size=40), json_values)},
        optional={"name": st.one_of(st.text(max_size=10), hostile), "timestamp": timestamps, "metadata": metadata,
                  "tool_calls": json_values, "id": json_values},
    )


DOCUMENTS = {
    "openai": st.lists(st.one_of(message(), st.fixed_dictionaries({"messages": st.lists(message(), max_size=4)}), json_values), max_size=5),
    "langchain": st.lists(st.one_of(st.fixed_dictionaries({"type": st.sampled_from(ROLES), "data": st.one_of(message(), json_values)}),
                                    json_values), max_size=5),
    "sharegpt": st.lists(st.one_of(st.fixed_dictionaries({"conversations": st.lists(message("from", "value"), max_size=4)}),
                                   json_values), max_size=4),
    "locomo": st.lists(st.fixed_dictionaries(
        {"sample_id": json_values, "conversation": st.one_of(st.fixed_dictionaries(
            {"speaker_a": st.sampled_from(["Ann", "", "Bo"]), "speaker_b": st.sampled_from(["Bo", "Ann"]),
             "session_1": st.one_of(st.lists(st.fixed_dictionaries(
                 {"speaker": st.sampled_from(["Ann", "Bo", "Cy"]), "dia_id": st.one_of(st.just("D1:1"), json_values),
                  "text": st.one_of(st.text(max_size=20), json_values)},
                 optional={"blip_caption": st.one_of(scalars, deep, json_values), "query": json_values}), max_size=4), json_values),
             "session_1_date_time": timestamps},
            optional={"session_2": json_values}), json_values)},
        optional={"qa": json_values}), max_size=3),
}


def check_parsed(parsed: Any) -> None:
    """What a reader returns is storable: valid Unicode, metadata JSON within bounds."""
    for item in parsed.turns:
        assert safejson.is_unicode(item.turn.content)
        assert safejson.problem(item.turn.metadata) is None


def run_reader(tmp_path: Path, name: str, text: str, fmt: str | None) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        data = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        data = None  # escaped surrogates written raw: the reader must refuse the bytes itself
    try:
        parsed = parse_document(open_document(path, data), fmt, skip_invalid=True)
    except CtxMemError as exc:
        assert "\n" not in str(exc)
        return
    check_parsed(parsed)


# -- readers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", sorted(DOCUMENTS))
@pytest.mark.parametrize("layout", ["json", "jsonl"])
@settings(max_examples=60)
@given(data=st.data())
def test_each_json_reader_answers_any_document_with_turns_or_its_own_error(tmp_path: Path, fmt: str, layout: str, data: st.DataObject) -> None:
    records = data.draw(DOCUMENTS[fmt])
    forced = data.draw(st.sampled_from([fmt, None]))  # named, or detected
    if layout == "json":
        text = json.dumps(records, allow_nan=True)
    else:
        text = "".join(json.dumps(r, allow_nan=True) + "\n" for r in records) or "\n"
    run_reader(tmp_path, f"log.{layout}", text, forced)
    RAN[f"reader {fmt}"] += 1


@settings(max_examples=150)
@given(lines=st.lists(st.one_of(
    st.text(max_size=60),
    st.builds(lambda s, t: f"{s}: {t}", st.sampled_from(["Ann", "User", "Dr. Who", "x y z w v", "1abc", ""]), st.text(max_size=30)),
    st.builds(lambda t: f"## {t}", st.one_of(st.text(max_size=20), st.sampled_from(["2024-03-01", "2024-13-45", "9" * 50]))),
    st.builds(lambda t, s: f"[{t}] {s}: hi", st.sampled_from(["2024-03-01 10:00", "1e20", "99999-1-1"]), st.sampled_from(["Ann", "Bo"])),
), max_size=8))
def test_the_transcript_reader_answers_any_text_with_turns_or_its_own_error(tmp_path: Path, lines: list[str]) -> None:
    run_reader(tmp_path, "chat.txt", "\n".join(lines), "transcript")
    run_reader(tmp_path, "chat.txt", "\n".join(lines), None)
    RAN["reader transcript"] += 1


@settings(max_examples=150)
@given(records=st.lists(st.one_of(
    st.fixed_dictionaries({"namespace": st.one_of(st.lists(st.one_of(st.text(min_size=1, max_size=6), hostile), min_size=1, max_size=3), json_values),
                           "content": st.one_of(st.text(min_size=1, max_size=20), json_values)},
                          optional={"role": st.sampled_from(VALID_ROLES), "speaker": st.one_of(st.text(max_size=5), hostile),
                                    "timestamp": timestamps, "metadata": metadata, "key": st.one_of(st.text(max_size=5), hostile),
                                    "vector": st.lists(st.one_of(st.floats(), hostile), max_size=4), "encoder": json_values}),
    json_values), max_size=4))
def test_the_export_reader_answers_any_file_with_records_or_its_own_error(tmp_path: Path, records: list[Any]) -> None:
    path = tmp_path / "export.jsonl"
    path.write_text("".join(json.dumps(r, allow_nan=True) + "\n" for r in records), encoding="utf-8", errors="surrogatepass")
    try:
        exported = read_export(path)
    except CtxMemError as exc:
        assert "\n" not in str(exc)
    else:
        for record in exported:
            assert safejson.problem(record.turn.metadata) is None
            assert record.vector is None or all(math.isfinite(x) for x in record.vector)
    RAN["reader export"] += 1


# -- filters ---------------------------------------------------------------------------------

FIELDS = st.one_of(st.sampled_from(["role", "speaker", "timestamp", "created_at", "session", "place.city", "place", "a-b", "x.y.z"]),
                   st.text(max_size=8), st.integers(), st.none())
OPS = st.sampled_from(["$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$regex", "eq"])
filters = st.dictionaries(
    FIELDS,
    st.one_of(json_values, hostile, deep,
              st.dictionaries(OPS, st.one_of(json_values, hostile, deep, st.lists(st.one_of(scalars, hostile), max_size=4)), min_size=1, max_size=3)),
    max_size=4,
)


@pytest.fixture(scope="module")
def small_memory(tmp_path_factory: pytest.TempPathFactory) -> ContextMemory:
    path = tmp_path_factory.mktemp("fuzz") / "memory"
    memory = ContextMemory(path, encoder=HashEncoder())
    memory.add([
        {"content": "my dog is called Biscuit", "metadata": {"session": 1, "place": {"city": "Oslo"}}},
        {"content": "tomatoes in the garden", "speaker": "Ann", "timestamp": "2024-03-01", "metadata": {"session": 2, "tags": ["a", "b"]}},
        {"content": "the dog likes the garden", "role": "assistant", "metadata": {"session": 2.5, "place": "home", "x": None}},
    ], ("u",))
    yield memory
    memory.close()


@settings(max_examples=200)
@given(spec=st.one_of(filters, json_values))
def test_any_filter_gives_turns_under_the_namespace_or_its_own_error(small_memory: ContextMemory, spec: Any) -> None:
    try:
        listed = small_memory.list_turns(("u",), spec)
        found = small_memory.search("dog garden", ("u",), filters=spec, method="bm25")
    except CtxMemError as exc:
        assert "\n" not in str(exc)
    else:
        known = {t.id for t in small_memory.list_turns(("u",))}
        assert {t.id for t in listed} <= known and {h.id for h in found} <= known
    RAN["filters"] += 1


# -- model config.json -----------------------------------------------------------------------

CONFIG = ModelConfig(
    slots=SlotConfig(dim=16, num_slots=4, feature_dim=3),
    scorer=ScorerConfig(num_features=4, base_score_index=1, dim=16, hidden=8, bilinear_rank=4),
    encoder="hash-16", feature_names=("fused", "bm25", "dense", "neighbour"),
)
WEIGHTS = {k: math.prod(v) for k, v in CtxMemModel.weight_shapes(CONFIG).items()}


@pytest.fixture(scope="module")
def model_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("fuzz-model") / "model"
    save_model(CtxMemModel(CONFIG), directory, extra={"runtime": {"pool": 10, "write_chunk": 4}})
    return directory


PATHS = ["model.slots.num_slots", "model.slots.dim", "model.slots.feature_dim", "model.slots.ffn_mult", "model.slots.focus_rate",
         "model.scorer.depth", "model.scorer.hidden", "model.scorer.dim", "model.scorer.num_features", "model.scorer.bilinear_rank",
         "model.scorer.use_slots", "model.scorer.focus", "model.members", "model.version", "model.encoder", "model.encoder_dir",
         "model.feature_names", "model", "model.slots", "model.scorer", "weights_sha256", "extra", "extra.runtime",
         "extra.runtime.pool", "extra.runtime.write_chunk", "extra.runtime.retrieval", "extra.runtime.focus_pool", "surprise"]
sizes = st.one_of(st.integers(min_value=-2, max_value=70), st.sampled_from([1024, 4096, 8192, 10**6, 10**9, 2**63, 10**100]))
edits = st.lists(st.tuples(st.sampled_from(PATHS), st.one_of(sizes, json_values, st.just("<delete>"))), min_size=1, max_size=4)


def apply(document: dict[str, Any], path: str, value: Any) -> None:
    node: Any = document
    keys = path.split(".")
    for key in keys[:-1]:
        if not isinstance(node, dict) or not isinstance(node.get(key), dict):
            return
        node = node[key]
    if isinstance(node, dict):
        if value == "<delete>":
            node.pop(keys[-1], None)
        else:
            node[keys[-1]] = value


@settings(max_examples=300)
@given(changes=edits)
def test_any_config_json_loads_or_gives_its_own_error_without_building_more_than_the_file_holds(
    model_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, changes: list[tuple[str, Any]]
) -> None:
    directory = tmp_path / "model"
    if directory.exists():
        shutil.rmtree(directory)
    shutil.copytree(model_template, directory)
    document = json.loads((directory / "config.json").read_text())
    for path, value in changes:
        apply(document, path, value)
    (directory / "config.json").write_text(json.dumps(document, allow_nan=True))
    built: list[int] = []

    def build(config: ModelConfig) -> CtxMemModel:  # the only place loading builds a module
        size = sum(math.prod(s) for s in CtxMemModel.weight_shapes(config).values())
        built.append(size)
        assert size <= sum(WEIGHTS.values()), "built a module larger than the weights file holds"
        return CtxMemModel(config)

    monkeypatch.setattr(checkpoint, "_build", build)
    try:
        loaded = load_checkpoint(directory)
    except CtxMemError as exc:
        assert "\n" not in str(exc) and exc.details
        assert not built  # refused before anything was built
    else:
        assert built and sum(p.numel() for p in loaded.model.state_dict().values()) == sum(WEIGHTS.values())
    RAN["model config"] += 1


def test_weight_shapes_are_those_of_a_built_model() -> None:
    """What the loader checks a file against before building is what building gives."""
    for members, focus, use_slots, depth, feature_dim in [(1, 0.0, True, 2, 3), (3, 0.4, True, 1, 0), (2, 0.0, False, 4, 8)]:
        config = ModelConfig(
            slots=SlotConfig(dim=12, num_slots=5, feature_dim=feature_dim, ffn_mult=3, focus_rate=focus),
            scorer=ScorerConfig(num_features=4, dim=12, hidden=7, depth=depth, bilinear_rank=3, use_slots=use_slots,
                                focus=focus > 0),
            encoder="x", feature_names=("a", "b", "c", "d"), members=members,
        )
        built = {k: tuple(v.shape) for k, v in CtxMemModel(config).state_dict().items()}
        assert CtxMemModel.weight_shapes(config) == built


def test_the_fuzzing_ran_at_least_1000_examples() -> None:
    """Runs last in this file: the targets above together tried 1,000 inputs or more."""
    targets = {"reader openai", "reader langchain", "reader sharegpt", "reader locomo", "reader transcript", "reader export",
               "filters", "model config"}
    if not targets <= set(RAN):
        pytest.skip("only part of the fuzzing ran")
    print(f"fuzz examples: {dict(RAN)}, total {sum(RAN.values())}")
    assert sum(RAN.values()) >= 1000
