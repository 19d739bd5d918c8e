"""Distributed ingest on Ray (``ingest --ray``) against a local Ray and the real PostgreSQL of the tests.

What it must prove: the memory it builds equals a single-process ingest of the same files (the
same rows in the same namespaces, the same vectors, no duplicates even when two files hold the
same turns and are written at once), a second run adds nothing, and a bad file fails with the
single-process ingest's one-line error, before anything is written.
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import ctxmem_plugin.encoders
from ctxmem_plugin.cli import main
from ctxmem_plugin.distributed.cluster import plan_workers
from ctxmem_plugin.errors import DependencyError, FormatError, InputError, MemoryNotFoundError
from ctxmem_plugin.formats import read_paths
from ctxmem_plugin.memory import ContextMemory

from helpers import REPO, HashEncoder

EXAMPLES = REPO / "examples" / "chat_logs"
RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


@pytest.fixture(scope="module")
def ray_local(tmp_path_factory: pytest.TempPathFactory):
    """A local Ray of 2 CPUs on loopback for this module, its files under the test's temp dir."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (extra [ray])")
    saved = {k: os.environ.get(k) for k in RAY_ENV}
    os.environ.update(RAY_ENV)
    # Workers are new interpreters: they must import this checkout, as the tests do.
    saved["PYTHONPATH"] = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), saved["PYTHONPATH"]]))
    temp = tmp_path_factory.mktemp("ray")
    if len(str(temp)) > 50:  # Unix socket paths under it must stay within 107 bytes
        import tempfile

        temp = Path(tempfile.mkdtemp(prefix="ray-"))
    try:
        ray.init(num_cpus=2, include_dashboard=False, _temp_dir=str(temp), object_store_memory=100 * 1024**2,
                 log_to_driver=False)
    except Exception as exc:  # noqa: BLE001  (any failure to start is a reason to skip, said in full)
        pytest.skip(f"a local Ray could not start here: {type(exc).__name__}: {exc}")
    yield ray
    ray.shutdown()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def database(local_postgres):
    """``database()``: a fresh PostgreSQL memory URL, dropped after the test."""
    made: list[str] = []

    def make() -> str:
        made.append(local_postgres.create_database())
        return made[-1]

    yield make
    for url in made:
        local_postgres.drop_database(url)


@pytest.fixture
def logs(tmp_path: Path) -> list[Path]:
    """The examples and generated ShareGPT files; two of them hold the same conversation (same id)."""
    out = tmp_path / "logs"
    out.mkdir()
    for i in range(4):
        conversations = [{"id": f"c{i}-{j}", "conversations": [
            {"from": "human" if k % 2 == 0 else "gpt", "value": f"file {i} chat {j} turn {k}: dog {k * j}"}
            for k in range(5 + i)]} for j in range(3)]
        (out / f"chats{i}.json").write_text(json.dumps(conversations))
    (out / "again.json").write_text((out / "chats2.json").read_text())  # the same turns, the same positions
    return [EXAMPLES, out]


def _rows(url: str) -> Counter:
    """Every stored turn as comparable values (no ids, no times), with its vector rounded."""
    with ContextMemory(url, encoder=HashEncoder(), read_only=True) as mem:
        turns = [t for page in mem.iter_turns(()) for t in page]
        vectors = mem.store.vector_map([t.id for t in turns])
    return Counter(
        (t.namespace, t.role, t.speaker, t.content, t.timestamp, json.dumps(t.metadata, sort_keys=True), t.key,
         tuple(np.round(vectors[t.id], 5).tolist()))
        for t in turns
    )


def test_ray_ingest_equals_a_single_process_ingest_and_a_second_run_adds_nothing(ray_local, database, logs) -> None:
    from ctxmem_plugin.distributed import ingest_with_ray

    single, distributed = database(), database()
    with ContextMemory(single, encoder=HashEncoder()) as mem:
        want = mem.ingest(read_paths(logs), ("team",), split_conversations=True)
    got = ingest_with_ray(logs, distributed, ("team",), split_conversations=True, encoder=HashEncoder(), workers=2)
    assert (got.added, got.duplicates, got.workers, got.gpus_per_worker) == (want.added, want.duplicates, 2, 0.0)
    assert want.duplicates > 0 and got.turns == want.added + want.duplicates  # again.json: all duplicates
    rows = _rows(distributed)
    assert rows == _rows(single)
    assert max(rows.values()) == 1  # no turn twice (the examples hold no repeated message)
    assert len({key[0] for key in rows}) > 10  # many namespaces: one per conversation

    again = ingest_with_ray(logs, distributed, ("team",), split_conversations=True, encoder=HashEncoder(), workers=2)
    assert (again.added, again.duplicates) == (0, got.turns)
    assert _rows(distributed) == rows


def _cli(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


def test_a_bad_file_gives_the_single_process_error_and_writes_nothing(ray_local, database, logs) -> None:
    bad = logs[1] / "zz_broken.jsonl"  # read after the good files (directories are read in sorted order)
    bad.write_text('{"role": "user", "content": "hi"}\n{"role": "user", "content": "hi"\n')
    (logs[1] / "zz_worse.jsonl").write_text("not json at all\n")
    url = database()
    single = _cli("ingest", *logs, "--memory", url, "--namespace", "team")
    distributed = _cli("ingest", *logs, "--memory", url, "--namespace", "team", "--ray")
    assert single == distributed
    assert single[0] == 2 and single[1].startswith(f"Error: {bad}:2: malformed JSON line") and single[1].count("\n") == 1
    with pytest.raises(MemoryNotFoundError, match="no ctxmem schema"):  # not even the schema was created
        ContextMemory(url, encoder=HashEncoder(), read_only=True)

    from ctxmem_plugin.distributed import ingest_with_ray

    with pytest.raises(FormatError) as raised:
        ingest_with_ray(logs, url, ("team",), encoder=HashEncoder())
    assert str(raised.value) == single[1].removeprefix("Error: ").strip()


def test_skipped_records_are_reported_as_a_single_process_ingest_reports_them(ray_local, database, logs) -> None:
    from ctxmem_plugin.distributed import ingest_with_ray

    (logs[1] / "notes.md").write_text("# a README beside the logs\n\nnothing to see\n")
    (logs[1] / "some_bad.jsonl").write_text('{"role": "user", "content": "kept"}\n{"role": 5}\n[1, 2\n')
    single, distributed = database(), database()
    with ContextMemory(single, encoder=HashEncoder()) as mem:
        want = mem.ingest(read_paths(logs, skip_invalid=True), ("team",))
    got = ingest_with_ray(logs, distributed, ("team",), skip_invalid=True, encoder=HashEncoder(), workers=2)
    assert len(want.invalid) == 3 and got.invalid == want.invalid and got.added == want.added
    assert _rows(distributed) == _rows(single)


@pytest.mark.slow
def test_cli_ray_ingest_with_the_real_model_equals_the_single_process_cli(
    ray_local, database, minilm, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default encoder loaded by each Ray worker gives the vectors of a single-process ingest."""
    single, distributed = database(), database()
    with monkeypatch.context() as patch:  # the single process reuses the session's model (the same weights)
        patch.setattr(ctxmem_plugin.encoders, "SentenceEncoder", lambda model=None, **_: minilm)
        code, out = _cli("ingest", EXAMPLES, "--memory", single, "-n", "demo", "--json")
    assert code == 0, out
    code, out = _cli("ingest", EXAMPLES, "--memory", distributed, "-n", "demo", "--json", "--ray", "--ray-workers", "2")
    assert code == 0, out
    summary = json.loads(out)
    assert (summary["added"], summary["ray_workers"], summary["gpus_per_worker"]) == (json.loads(
        _cli("ingest", EXAMPLES, "--memory", single, "-n", "demo", "--json")[1])["duplicates"], 2, 0.0)

    def stored(url: str) -> dict[tuple, np.ndarray]:
        with ContextMemory(url, encoder=minilm, read_only=True) as mem:
            turns = mem.list_turns(())
            vectors = mem.store.vector_map([t.id for t in turns])
        return {(t.namespace, t.role, t.speaker, t.content, t.timestamp): vectors[t.id] for t in turns}

    want, got = stored(single), stored(distributed)
    assert got.keys() == want.keys() and len(got) == summary["added"]
    for key, vector in want.items():
        np.testing.assert_allclose(got[key], vector, atol=1e-5)


def test_ray_refuses_an_embedded_memory(tmp_path: Path) -> None:
    code, out = _cli("ingest", EXAMPLES, "--memory", tmp_path / "mem", "--ray")
    assert code == 2 and "is a directory, which admits one writing process" in out and out.count("\n") == 1
    assert not (tmp_path / "mem").exists()
    code, out = _cli("ingest", EXAMPLES, "--memory", tmp_path / "mem", "--ray-workers", "2")
    assert code == 2 and "--ray-workers needs --ray" in out


def test_ray_missing_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    from ctxmem_plugin.distributed import ingest_with_ray

    with pytest.raises(DependencyError, match=r"^distributed ingest needs Ray: pip install 'ctxmem-plugin\[ray\]'$"):
        ingest_with_ray([EXAMPLES], "postgresql://nobody@/nodb", ("x",))
    code, out = _cli("ingest", EXAMPLES, "--memory", "postgresql://nobody@/nodb", "--ray")
    assert (code, out) == (1, "Error: distributed ingest needs Ray: pip install 'ctxmem-plugin[ray]'\n")


class _Cluster:
    def __init__(self, **resources: float) -> None:
        self.resources = resources

    def cluster_resources(self) -> dict[str, float]:
        return self.resources


def test_workers_ask_for_gpus_only_when_the_cluster_has_them() -> None:
    cpu_only = plan_workers(_Cluster(CPU=8.0), files=20, workers=None)
    assert (cpu_only.workers, cpu_only.num_gpus) == (8, 0.0)
    gpus = plan_workers(_Cluster(CPU=32.0, GPU=4.0), files=20, workers=None)
    assert (gpus.workers, gpus.num_gpus) == (4, 1.0)
    shared = plan_workers(_Cluster(CPU=32.0, GPU=2.0), files=20, workers=8)
    assert (shared.workers, shared.num_gpus) == (8, 0.25)  # more writers than GPUs: they share
    assert plan_workers(_Cluster(CPU=8.0), files=3, workers=None).workers == 3  # a file is the unit of work
    with pytest.raises(InputError, match="workers must be >= 1"):
        plan_workers(_Cluster(CPU=8.0), files=3, workers=0)
