"""The memory server and its client: equal answers, one writer for many processes, isolation, errors, auth.

Every test starts real server processes (``ctxmem_plugin.server.testing.ServerProcess``: uvicorn
on a free port of 127.0.0.1, the model-free HashEncoder) and stops them. The Python API's own
tests run through the client too (``tests/test_memory_api.py``, parametrized over both).
"""

from __future__ import annotations

import dataclasses
import http.client
import inspect
import json
import random
import re
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from ctxmem_plugin import open_memory
from ctxmem_plugin.api import MEMBERS, MemoryAPI, is_memory
from ctxmem_plugin.cli import main
from ctxmem_plugin.errors import AuthError, InputError, MemoryLockedError, NamespaceError, ServerError
from ctxmem_plugin.memory import ContextMemory
from ctxmem_plugin.records import NewTurn, StoredTurn, Turn
from ctxmem_plugin.remote import RemoteMemory
from ctxmem_plugin.server import check_exposure
from ctxmem_plugin.server.testing import ServerProcess

from helpers import HashEncoder

WORDS = "dog cat paris guitar pottery lisbon tea coffee running chess garden bakery violin river".split()
SPACES = [("u1",), ("u1", "s1"), ("u1", "s2"), ("u10",), ("u2", "s1")]


@pytest.fixture
def server(tmp_path: Path):
    with ServerProcess(tmp_path / "served") as process:
        yield process


@pytest.fixture
def remote(server: ServerProcess):
    with RemoteMemory(server.url) as memory:
        yield memory


def messages(rng: random.Random, n: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        {
            "role": rng.choice(["user", "assistant"]),
            "speaker": rng.choice(["Ana", "Bo", None]),
            "content": " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 12))),
            "timestamp": f"2024-05-{1 + (start + i) % 28:02d}T10:00:00",
            "metadata": {"n": start + i, "tag": rng.choice(["a", "b"])},
        }
        for i in range(n)
    ]


def raw(url: str, method: str, path: str, body: bytes | None = None, token: str | None = None) -> tuple[int, dict[str, str], Any]:
    """One HTTP request without the client: (status, headers, decoded JSON body)."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), json.loads(response.read())
    finally:
        conn.close()


def outcome(call: Any) -> tuple[str, Any]:
    """``("ok", result)`` or ``("error", (exception class, message))``: what is compared between memories.

    Ingest times are left out: the two memories write the same turns at different moments.
    """
    try:
        return "ok", untimed(call())
    except InputError as exc:
        return "error", (type(exc), str(exc))


def untimed(value: Any) -> Any:
    if isinstance(value, StoredTurn):
        return dataclasses.replace(value, created_at=0.0, updated_at=0.0)
    if isinstance(value, list):
        return [untimed(v) for v in value]
    return value


# -- the client answers as the memory does --------------------------------------------------------


def test_remote_answers_equal_local_answers(tmp_path: Path, hash_encoder: HashEncoder, remote: RemoteMemory) -> None:
    """The same calls on a ContextMemory and on a server's client give equal results and equal errors."""
    rng = random.Random(5)
    with ContextMemory(tmp_path / "local", encoder=hash_encoder) as local:
        memories = (local, remote)

        def same(call: Any) -> Any:
            results = [outcome(lambda m=m: call(m)) for m in memories]
            assert results[0] == results[1]
            return results[0][1]

        start = 0
        for round_ in range(4):
            for space in SPACES:
                batch = messages(rng, rng.randint(1, 15), start)
                start += len(batch)
                same(lambda m: m.add(batch, space))
            same(lambda m: m.add([{"content": "tea", "key": "k1"}, {"content": "coffee", "key": f"k{round_}"}], ("u1",)))
            same(lambda m: m.add({"content": "tea"}, ("u1",), dedupe=True))
            vec = rng.random() < 0.5
            entries = [NewTurn(("u2", "s1"), Turn(content=f"chess by the river {round_}"), position=f"log#{round_}",
                               vector=hash_encoder.encode_query("chess river") if vec else None)] * 2
            same(lambda m: m.write(entries))
            for query in ["tea garden", "chess river violin", "paris dog"]:
                prefix = rng.choice([(), ("u1",), ("u1", "s2"), ("u2",)])
                for method in ["auto", "hybrid", "bm25", "dense"]:
                    same(lambda m: m.search(query, prefix, k=7, method=method))
                same(lambda m: m.search(query, prefix, k=3, offset=2, filters={"tag": "a", "n": {"$gte": 10}}))
                same(lambda m: m.search_by_vector(hash_encoder.encode_query(query) * 3, prefix, k=5, filters={"role": "user"}))
                same(lambda m: m.context(query, prefix, max_tokens=60, k=10))
            same(lambda m: m.list_turns(("u1",), {"tag": "b"}, limit=5, offset=1, order="-updated_at"))
            same(lambda m: list(m.iter_turns(("u1",), batch=7)))
            same(lambda m: m.namespaces())
            same(lambda m: m.get_by_key(("u1",), "k1"))
            ids = [t.id for t in local.list_turns(())]
            picked = rng.sample(ids, 6)
            same(lambda m: m.get([*picked, 99_999]))
            assert {i: v.tolist() for i, v in local.vectors(picked).items()} == {
                i: v.tolist() for i, v in remote.vectors(picked).items()}
            same(lambda m: m.delete(picked[:2] + [99_999]))
        same(lambda m: m.forget(("u1", "s1")))
        same(lambda m: m.namespaces(("u1",)))
        assert local.stats()["namespaces"] == remote.stats()["namespaces"]
        assert local.dim == remote.dim == hash_encoder.dim
        assert np.array_equal(remote.encoder.encode(["tea garden", "dog"]), hash_encoder.encode(["tea garden", "dog"]))
        # The same mistakes give the same exception class and message.
        for bad in [
            lambda m: m.add({"role": "wizard", "content": "x"}, ("u",)),
            lambda m: m.add({"content": "x"}, ("a/b",)),
            lambda m: m.add({"content": "x"}, ()),
            lambda m: m.search("  ", ("u1",)),
            lambda m: m.search("tea", ("u1",), method="magic"),
            lambda m: m.search("tea", ("u1",), method="ctxmem"),
            lambda m: m.search("tea", ("u1",), k=-1),
            lambda m: m.search("tea", ("u1", "")),
            lambda m: m.search("tea", filters={"bad field!": 1}),
            lambda m: m.list_turns(("u1",), {"n": {"$regex": "x"}}),
            lambda m: m.search_by_vector([1.0, 2.0], ("u1",)),
            lambda m: m.explain("tea", ("u1",)),
            lambda m: m.forget(()),
        ]:
            results = [outcome(lambda m=m: bad(m)) for m in memories]
            assert results[0] == results[1]
            kind, (cls, message) = results[0]
            assert kind == "error" and issubclass(cls, InputError) and "\n" not in message


def test_conversational_search_through_the_server_equals_local(
    tmp_path: Path, hash_encoder: HashEncoder, remote: RemoteMemory
) -> None:
    """``history=`` (messages or a stored thread's namespace) reaches the server's memory whole."""
    thread = [{"role": "user", "content": "Who plays the cello?", "speaker": "Bo"},
              {"role": "assistant", "content": "Your sister Ana does."}]
    with ContextMemory(tmp_path / "local", encoder=hash_encoder) as local:
        results = []
        for m in (local, remote):
            m.add([{"content": "My sister Ana plays the cello in an orchestra"}, {"content": "I bought a red bicycle"},
                   {"content": "The orchestra plays in Leeds on Fridays"}], ("c", "history"))
            m.add(thread, ("c", "thread"))
            asked = [m.search("and where does she play?", ("c", "history"), k=3, history=h)
                     for h in (thread, ("c", "thread"), "c/thread", [], None)]
            asked.append(m.context("and where does she play?", ("c", "history"), max_tokens=50, k=3, history=thread))
            asked.append(outcome(lambda m=m: m.search("x", ("c",), history=thread, history_mode="slots")))
            asked.append(outcome(lambda m=m: m.search("x", ("c",), history=[{"role": "robot", "content": "y"}])))
            results.append(asked)
        assert results[0] == results[1]
        # The messages and their stored namespace are the same thread; no history is the query alone.
        assert results[0][0] == results[0][1] == results[0][2] != results[0][3] == results[0][4]
        assert results[0][-2][0] == results[0][-1][0] == "error"


def test_both_memories_have_every_member_of_the_contract() -> None:
    for name in MEMBERS:
        contract = inspect.getattr_static(MemoryAPI, name, None)
        for cls in (ContextMemory, RemoteMemory):
            member = inspect.getattr_static(cls, name, None)
            if contract is None or isinstance(contract, property):
                continue  # attributes set in __init__; properties are checked on instances below
            assert member is not None, f"{cls.__name__}.{name}"
            want = [(p.name, p.kind, p.default) for p in inspect.signature(contract).parameters.values()]
            have = [(p.name, p.kind, p.default) for p in inspect.signature(member).parameters.values()]
            assert have == want or name in ("__enter__", "__exit__"), f"{cls.__name__}.{name}"
    assert not is_memory(ContextMemory) and not is_memory(object())


def test_open_memory_picks_by_location_and_each_refuses_the_others_options(tmp_path: Path, server: ServerProcess) -> None:
    with open_memory(server.url) as memory:
        assert isinstance(memory, RemoteMemory) and is_memory(memory)
    with open_memory(tmp_path / "here", encoder=HashEncoder()) as memory:
        assert isinstance(memory, ContextMemory) and is_memory(memory)
    with pytest.raises(InputError, match="encoder: options of a memory in this process"):
        open_memory(server.url, encoder=HashEncoder())
    with pytest.raises(InputError, match="token and timeout are options of a memory server"):
        open_memory(tmp_path / "there", token="secret")
    with pytest.raises(InputError, match=r"is a memory server, not a directory: open it with RemoteMemory"):
        ContextMemory(server.url, encoder=HashEncoder())
    assert not (tmp_path / "there").exists() and not Path("http:").exists()


# -- many processes, one writer -------------------------------------------------------------------

WRITER = textwrap.dedent("""
    import json, random, sys
    from ctxmem_plugin.remote import RemoteMemory
    url, me, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(me)
    ids = []
    with RemoteMemory(url) as memory:
        for i in range(rounds):
            size = rng.choice([1, 1, 3])
            ids += memory.add([{"content": f"writer {me} round {i} part {j} tea garden", "metadata": {"w": me}}
                               for j in range(size)], ("shared", f"w{me % 2}"))
            if i % 5 == 0:
                memory.search("tea garden", ("shared",), k=3)
    print(json.dumps(ids))
""")


def test_concurrent_client_processes_write_each_turn_exactly_once(server: ServerProcess, remote: RemoteMemory) -> None:
    writers, rounds = 4, 25
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, server.url, str(w), str(rounds)], stdout=subprocess.PIPE,
                              text=True) for w in range(writers)]
    acknowledged: list[int] = []
    for proc in procs:
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0
        acknowledged += json.loads(out.strip().splitlines()[-1])
    stored = remote.list_turns(("shared",))
    contents = [t.content for t in stored]
    assert len(contents) == len(set(contents)) == len(acknowledged) == len(set(acknowledged))  # each write once
    assert sorted(t.id for t in stored) == sorted(acknowledged)  # every acknowledged id is there
    for w in range(writers):
        mine = [t for t in stored if t.metadata["w"] == w]
        assert {re.sub(r" part \d+.*", "", t.content) for t in mine} == {f"writer {w} round {i}" for i in range(rounds)}
        assert all(t.namespace == ("shared", f"w{w % 2}") for t in mine)


def test_the_server_is_the_one_writer_and_closes_the_memory_when_stopped(tmp_path: Path, hash_encoder: HashEncoder) -> None:
    server = ServerProcess(tmp_path / "m")
    server.start()
    try:
        with RemoteMemory(server.url) as memory:
            ids = memory.add(messages(random.Random(1), 40), ("u",))
            before = [(h.id, round(h.score, 6)) for h in memory.search("tea garden", ("u",), k=10)]
        with pytest.raises(MemoryLockedError):
            ContextMemory(tmp_path / "m", encoder=hash_encoder, lock_timeout=0.2)
    finally:
        assert server.stop() == 0  # SIGINT: a clean shutdown
    with ContextMemory(tmp_path / "m", encoder=hash_encoder, lock_timeout=0.2) as local:  # and the lock released
        assert [t.id for t in local.list_turns(("u",))] == ids
        assert [(h.id, round(h.score, 6)) for h in local.search("tea garden", ("u",), k=10)] == before


# -- isolation ------------------------------------------------------------------------------------


def test_namespaces_are_isolated_through_the_server(remote: RemoteMemory) -> None:
    rng = random.Random(9)
    owned: dict[tuple[str, ...], set[int]] = {space: set(remote.add(messages(rng, 12), space)) for space in SPACES}

    def under(prefix: tuple[str, ...]) -> set[int]:
        return set().union(*(ids for space, ids in owned.items() if space[: len(prefix)] == prefix))

    for prefix in [("u1",), ("u1", "s1"), ("u10",), ("u2",), ("u2", "s1"), ("u",), ("u1", "s")]:
        allowed = under(prefix)
        for query in ["tea garden", "chess river", "dog paris violin"]:
            for method in ["hybrid", "bm25", "dense"]:
                assert {h.id for h in remote.search(query, prefix, k=100, method=method)} <= allowed
            vector = remote.encoder.encode_query(query)
            assert {h.id for h in remote.search_by_vector(vector, prefix, k=100)} == allowed  # exact: all of them
        assert {t.id for t in remote.list_turns(prefix)} == allowed
        assert {t.id for page in remote.iter_turns(prefix, batch=5) for t in page} == allowed
        assert sum(count for _, count in remote.namespaces(prefix)) == len(allowed)
    assert remote.forget(("u1",)) == len(under(("u1",)))
    assert {t.id for t in remote.list_turns(())} == under(("u10",)) | under(("u2",))


def test_a_stream_of_turns_leaves_the_client_free_between_pages(remote: RemoteMemory) -> None:
    ids = remote.add([{"content": f"note {i}"} for i in range(250)], ("u",))
    seen: list[int] = []
    for page in remote.iter_turns(("u",), batch=40):
        assert [t.id for t in remote.get([t.id for t in page])] == [t.id for t in page]  # a call between pages
        seen += [t.id for t in page]
    assert seen == ids
    for _page in remote.iter_turns(("u",), batch=10):
        break  # stopped early: the stream's connection is dropped, the client still works
    assert remote.namespaces() == [(("u",), 250)]


# -- errors, auth, timeouts -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def one_turn_server(tmp_path_factory: pytest.TempPathFactory):
    """One server for the module, holding one turn under ``("u",)``."""
    with ServerProcess(tmp_path_factory.mktemp("one-turn") / "m") as process:
        with RemoteMemory(process.url) as memory:
            memory.add({"content": "tea in the garden"}, ("u",))
        yield process


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "kind"),
    [
        ("POST", "/v1/search", b"{not json", 422, "InputError"),
        ("POST", "/v1/search", b'{"query": 3}', 422, "InputError"),
        ("POST", "/v1/search", b'{"query": "tea", "k": "many"}', 422, "InputError"),
        ("POST", "/v1/search", b'{"query": "tea", "surprise": 1}', 422, "InputError"),
        ("POST", "/v1/search", b'["query"]', 422, "InputError"),
        ("POST", "/v1/search", b'{"query": "tea", "k": -1}', 400, "InputError"),
        ("POST", "/v1/search", b'{"query": "tea", "namespace": ["a/b"]}', 400, "NamespaceError"),
        ("POST", "/v1/search", b'{"query": "tea", "method": "magic"}', 400, "InputError"),
        ("POST", "/v1/add", b'{"messages": [{"role": "wizard", "content": "x"}], "namespace": ["u"]}', 400, "InputError"),
        ("POST", "/v1/add", b'{"messages": [{"content": "x"}], "namespace": []}', 400, "NamespaceError"),
        ("POST", "/v1/write", b'{"entries": [{"namespace": ["u"], "turn": {"content": "x"}, "vector": [1.0]}]}', 400,
         "InputError"),
        ("POST", "/v1/list_turns", b'{"filters": {"n": {"$regex": "x"}}}', 400, "InputError"),
        ("POST", "/v1/iter_turns", b'{"namespace": ["u", ""]}', 400, "NamespaceError"),
        ("POST", "/v1/iter_turns", b'{"batch": 0}', 422, "InputError"),
        ("POST", "/v1/explain", b'{"query": "tea", "namespace": ["u"]}', 400, "InputError"),
        ("POST", "/v1/nothing-here", b"{}", 404, "ServerError"),
        ("GET", "/v1/search", None, 405, "ServerError"),
    ],
)
def test_bad_requests_get_4xx_with_a_one_line_error(
    one_turn_server: ServerProcess, method: str, path: str, body: bytes | None, status: int, kind: str
) -> None:
    got, _, answer = raw(one_turn_server.url, method, path, body)
    assert (got, answer["error"]["type"]) == (status, kind)
    assert answer["error"]["message"] and "\n" not in answer["error"]["message"]
    with RemoteMemory(one_turn_server.url) as memory:
        assert memory.namespaces() == [(("u",), 1)]  # nothing written by a refused request


def test_the_client_raises_the_servers_exception_classes(remote: RemoteMemory) -> None:
    with pytest.raises(NamespaceError, match="contains '/'"):
        remote.search("tea", ("a/b",))
    with pytest.raises(InputError, match=r"^message 0: content"):
        remote.add([{"role": "user"}], ("u",))
    with pytest.raises(InputError, match="NaN"):
        remote.search_by_vector([float("nan")] * remote.dim)
    assert remote.namespaces() == []


def test_the_token_is_enforced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token = "s3cret-token"
    with ServerProcess(tmp_path / "m", token=token) as server:
        assert raw(server.url, "GET", "/health")[0] == 200  # liveness needs no token
        for given in [None, "", "s3cret-tokem", token + "x", "s3cret"]:
            status, headers, answer = raw(server.url, "GET", "/v1/stats", token=given)
            assert (status, answer["error"]["type"], headers.get("www-authenticate")) == (401, "AuthError", "Bearer")
        assert raw(server.url, "POST", "/v1/add", b'{"messages": [{"content": "x"}], "namespace": ["u"]}')[0] == 401
        with pytest.raises(AuthError, match="bearer token"):
            RemoteMemory(server.url)
        with pytest.raises(AuthError):
            RemoteMemory(server.url, token="wrong")
        with RemoteMemory(server.url, token=token) as memory:
            assert memory.add({"content": "only with the token"}, ("u",)) == [1]
        monkeypatch.setenv("CTXMEM_TOKEN", token)
        with RemoteMemory(server.url) as memory:
            assert [t.content for t in memory.list_turns()] == ["only with the token"]


SLOW_SERVER = textwrap.dedent("""
    import sys, time
    from ctxmem_plugin import ContextMemory, HashEncoder
    from ctxmem_plugin.server import serve

    class SlowQueries(HashEncoder):
        def encode_query(self, text):
            if text.startswith("slow"):
                time.sleep(2.0)
            return super().encode_query(text)

    with ContextMemory(sys.argv[1], encoder=SlowQueries()) as memory:
        serve(memory, port=0, timeout=0.5, ready=lambda url: print(url, flush=True))
""")


def test_requests_past_a_timeout_are_cut_off(tmp_path: Path) -> None:
    """The server answers 504 once its timeout passes; the client gives up after its own."""
    command = [sys.executable, "-c", SLOW_SERVER, str(tmp_path / "m")]
    with ServerProcess(tmp_path / "m", command=command) as server:
        with RemoteMemory(server.url) as memory:
            memory.add({"content": "slow tea"}, ("u",))
            with pytest.raises(ServerError, match=r"ran past the server's 0\.5 s timeout"):
                memory.search("slow tea", ("u",))
        status, _, answer = raw(server.url, "POST", "/v1/search", b'{"query": "slow tea"}')
        assert status == 504 and "\n" not in answer["error"]["message"]
        assert raw(server.url, "GET", "/health")[0] == 200  # the server still answers
        with RemoteMemory(server.url, timeout=0.2) as impatient, pytest.raises(ServerError, match="did not answer within 0.2 s"):
            impatient.encoder.encode_query("slow tea")


def test_an_unreachable_server_is_a_server_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        with pytest.raises(ServerError, match=f"cannot reach the memory server at http://127.0.0.1:{port}"):
            RemoteMemory(f"http://127.0.0.1:{port}")
    for url in ["ftp://host", "http://", "http://host/?q=1"]:
        with pytest.raises(InputError, match="URL"):
            RemoteMemory(url)


def test_the_openapi_schema_has_an_endpoint_per_method(server: ServerProcess) -> None:
    status, _, schema = raw(server.url, "GET", "/openapi.json")
    assert status == 200
    paths = set(schema["paths"])
    methods = {"write", "add", "delete", "forget", "reembed", "get", "get_by_key", "list_turns", "iter_turns", "namespaces",
               "search", "search_by_vector", "vectors", "generation", "context", "explain", "stats", "flush"}
    assert {f"/v1/{m}" for m in methods} <= paths and "/health" in paths
    assert "HTTPBearer" in schema["components"]["securitySchemes"]


# -- the command ----------------------------------------------------------------------------------


def test_serve_refuses_to_listen_beyond_loopback_without_a_token(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["serve", "--memory", str(tmp_path / "m"), "--host", "0.0.0.0"])
    assert result.exit_code == 2 and "needs a bearer token" in result.output
    assert not (tmp_path / "m").exists()
    check_exposure("127.0.0.1", None)
    check_exposure("::1", None)
    check_exposure("0.0.0.0", "token")


@pytest.mark.slow
def test_ctxmem_plugin_serve_with_the_default_model(tmp_path: Path) -> None:
    """The command itself: loads the bundled model, serves, stops cleanly on SIGINT."""
    command = [sys.executable, "-m", "ctxmem_plugin.cli", "serve", "--memory", str(tmp_path / "m"), "--port", "0"]
    server = ServerProcess(tmp_path / "m", command=command, start_timeout=300)
    server.start()
    try:
        with RemoteMemory(server.url) as memory:
            assert memory.encoder.name == "all-MiniLM-L6-v2" and memory.dim == 384
            memory.add([{"speaker": "Maya", "content": "My corgi is called Pretzel."},
                        {"speaker": "Maya", "content": "I start a new job at the hospital in July."}], ("maya",))
            assert memory.search("what is the name of my dog?", ("maya",), k=1)[0].text == "My corgi is called Pretzel."
    finally:
        assert server.stop() == 0
