"""The memory server's HTTP API: one endpoint per ContextMemory method, JSON bodies, namespaces in the body.

Each call runs the memory's own method in a worker thread (the memory serialises what must be
serialised), under the server's per-request timeout. Library errors become 4xx/5xx answers
``{"error": {"type", "message", "source"}}`` that :class:`~ctxmem_plugin.remote.RemoteMemory`
raises again as the same exception class.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException

from ctxmem_plugin import __version__
from ctxmem_plugin import namespaces as ns
from ctxmem_plugin.errors import AuthError, CtxMemError, InputError, ServerError
from ctxmem_plugin.server import schemas as s
from ctxmem_plugin.wire import (
    API_PREFIX,
    dumps,
    entry_from_json,
    error_to_json,
    hit_to_json,
    one_line,
    status_of,
    stored_to_json,
)

if TYPE_CHECKING:
    from ctxmem_plugin.memory import ContextMemory

JSON = "application/json"


class RequestTimeout(ServerError):
    """A request that ran past the server's timeout (answered 504)."""


def _answer(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(payload), status_code=status, media_type=JSON, headers=headers)


def _error(exc: CtxMemError, status: int | None = None) -> Response:
    status = status or (504 if isinstance(exc, RequestTimeout) else status_of(exc))
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, AuthError) else None
    return _answer(error_to_json(exc), status, headers)


def _documented(model: type) -> dict[int | str, dict[str, Any]]:
    return {200: {"model": model}}


def create_app(memory: ContextMemory, *, token: str | None = None, timeout: float = 60.0) -> FastAPI:
    """The ASGI application serving ``memory``.

    Args:
        memory: an open memory; the application uses it and never closes it.
        token: the bearer token every ``/v1`` request must carry; ``None`` = no token asked.
        timeout: seconds a request may run; a longer one is answered ``504`` (the work it
            started still finishes: a write may be committed, so retry with ``dedupe``).
    """
    if not timeout > 0:
        raise InputError(f"timeout must be > 0 seconds, got {timeout}")
    expected = None if token is None else token.encode("utf-8")
    app = FastAPI(
        title="ctxmem memory server",
        version=__version__,
        summary="The Python API of one ctxmem memory over HTTP: JSON bodies, namespaces in the body.",
    )
    bearer = HTTPBearer(auto_error=False, description="Needed when the server was started with --token.")

    async def authorize(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if expected is None:
            return
        given = b"" if credentials is None else credentials.credentials.encode("utf-8")
        if not secrets.compare_digest(given, expected):  # constant time: the token is not guessed byte by byte
            raise AuthError("missing or wrong bearer token (Authorization: Bearer <token>)")

    async def answer(call: Callable[[], Any]) -> Response:
        """``call()``'s result as a JSON answer; the call and the encoding run in a worker thread,
        so the event loop keeps reading other requests meanwhile."""
        with anyio.move_on_after(timeout):
            body = await anyio.to_thread.run_sync(lambda: dumps(call()), abandon_on_cancel=True)
            return Response(body, media_type=JSON)
        raise RequestTimeout(f"the request ran past the server's {timeout:g} s timeout (a write may still complete)")

    errors = {status: {"model": s.ErrorOut} for status in (400, 401, 404, 409, 422, 500, 504)}
    v1 = APIRouter(prefix=API_PREFIX, dependencies=[Depends(authorize)], responses=errors)  # type: ignore[arg-type]

    # -- writes ---------------------------------------------------------------------------

    @v1.post("/write", responses=_documented(s.IdsOut), summary="Store many turns at once (ContextMemory.write)")
    async def write(body: s.WriteIn) -> Response:
        def call() -> dict[str, Any]:
            entries = [entry_from_json(e.model_dump(), f"entry {i}") for i, e in enumerate(body.entries)]
            return {"ids": memory.write(entries, dedupe=body.dedupe)}

        return await answer(call)

    @v1.post("/add", responses=_documented(s.IdsOut), summary="Store messages in a namespace (ContextMemory.add)")
    async def add(body: s.AddIn) -> Response:
        return await answer(lambda: {"ids": memory.add(body.messages, body.namespace, dedupe=body.dedupe)})

    @v1.post("/delete", responses=_documented(s.IdsOut), summary="Delete turns by id; answers the ids that existed")
    async def delete(body: s.IdsIn) -> Response:
        return await answer(lambda: {"ids": memory.delete(body.ids)})

    @v1.post("/forget", responses=_documented(s.CountOut), summary="Remove everything under a namespace")
    async def forget(body: s.NamespaceIn) -> Response:
        return await answer(lambda: {"count": memory.forget(body.namespace)})

    @v1.post("/reembed", responses=_documented(s.CountOut), summary="Re-encode every turn with the server's encoder")
    async def reembed(body: s.ReembedIn) -> Response:
        return await answer(lambda: {"count": memory.reembed(batch=body.batch)})

    @v1.post("/flush", summary="Write the vector index to disk now")
    async def flush(body: s.Empty) -> Response:
        return await answer(lambda: memory.flush() or {})

    # -- reads ----------------------------------------------------------------------------

    @v1.post("/get", responses=_documented(s.TurnsOut), summary="Turns by id (unknown ids are left out)")
    async def get(body: s.IdsIn) -> Response:
        return await answer(lambda: {"turns": [stored_to_json(t) for t in memory.get(body.ids)]})

    @v1.post("/get_by_key", responses=_documented(s.MaybeTurnOut), summary="The turn stored under a key in a namespace")
    async def get_by_key(body: s.KeyIn) -> Response:
        def call() -> dict[str, Any]:
            turn = memory.get_by_key(body.namespace, body.key)
            return {"turn": None if turn is None else stored_to_json(turn)}

        return await answer(call)

    @v1.post("/list_turns", responses=_documented(s.TurnsOut), summary="Turns under a namespace prefix, without a query")
    async def list_turns(body: s.ListIn) -> Response:
        def call() -> dict[str, Any]:
            turns = memory.list_turns(body.namespace, body.filters, limit=body.limit, offset=body.offset, order=body.order)
            return {"turns": [stored_to_json(t) for t in turns]}

        return await answer(call)

    @v1.post(
        "/iter_turns",
        response_class=StreamingResponse,
        summary="Every turn under a prefix in the order stored: one JSON line {\"turns\": [...]} per batch",
        description="Streamed (application/x-ndjson) and not bound by the request timeout.",
    )
    async def iter_turns(body: s.IterIn) -> StreamingResponse:
        space = ns.validate(body.namespace, allow_empty=True)  # before the answer starts: a bad one is a 400

        def lines() -> Iterator[bytes]:
            for page in memory.iter_turns(space, batch=body.batch):
                yield dumps({"turns": [stored_to_json(t) for t in page]}) + b"\n"

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    @v1.post("/namespaces", responses=_documented(s.NamespacesOut), summary="Namespaces under a prefix, with their turn counts")
    async def namespaces(body: s.PrefixIn) -> Response:
        return await answer(
            lambda: {"namespaces": [{"namespace": list(space), "turns": n} for space, n in memory.namespaces(body.prefix)]}
        )

    @v1.post("/search", responses=_documented(s.HitsOut), summary="The turns under a prefix most relevant to a query")
    async def search(body: s.SearchIn) -> Response:
        def call() -> dict[str, Any]:
            hits = memory.search(
                body.query, body.namespace, body.k, body.filters, method=body.method, offset=body.offset,
                history=body.history, history_mode=body.history_mode,
            )
            return {"hits": [hit_to_json(h) for h in hits]}

        return await answer(call)

    @v1.post("/search_by_vector", responses=_documented(s.HitsOut), summary="Exact dense search with a given vector")
    async def search_by_vector(body: s.VectorSearchIn) -> Response:
        def call() -> dict[str, Any]:
            hits = memory.search_by_vector(body.vector, body.namespace, k=body.k, filters=body.filters)
            return {"hits": [hit_to_json(h) for h in hits]}

        return await answer(call)

    @v1.post("/vectors", responses=_documented(s.VectorsOut), summary="Stored embeddings by id (unknown ids left out)")
    async def vectors(body: s.IdsIn) -> Response:
        def call() -> dict[str, Any]:
            found = memory.vectors(body.ids)
            return {"ids": list(found), "vectors": [v.tolist() for v in found.values()]}

        return await answer(call)

    @v1.post("/context", responses=_documented(s.TextOut), summary="Prompt-ready memories within a token budget")
    async def context(body: s.ContextIn) -> Response:
        return await answer(lambda: {"text": memory.context(body.query, body.namespace, body.max_tokens, k=body.k, history=body.history)})

    @v1.post("/explain", summary="Which slots a query attends to (needs a model)")
    async def explain(body: s.ExplainIn) -> Response:
        return await answer(lambda: memory.explain(body.query, body.namespace, top_turns=body.top_turns))

    @v1.post("/embed", responses=_documented(s.EmbedOut), summary="Vectors of texts by the memory's encoder")
    async def embed(body: s.EmbedIn) -> Response:
        def call() -> dict[str, Any]:
            encoder = memory.encoder
            if body.query:
                return {"vectors": [encoder.encode_query(t).tolist() for t in body.texts]}
            return {"vectors": encoder.encode(body.texts).tolist() if body.texts else []}

        return await answer(call)

    @v1.get("/generation", responses=_documented(s.GenerationOut), summary="The write counter (unchanged: nothing written)")
    async def generation() -> Response:
        return await answer(lambda: {"generation": memory.generation})

    @v1.get("/stats", summary="Counts and sizes: turns per namespace, files, encoder, model")
    async def stats() -> Response:
        return await answer(memory.stats)

    @v1.get("/info", responses=_documented(s.InfoOut), summary="The server's encoder, model and settings")
    async def info() -> Response:
        return await answer(
            lambda: {
                "version": __version__, "encoder": memory.encoder.name, "dim": memory.dim, "read_only": memory.read_only,
                "model": None if memory.reranker is None else memory.reranker.describe(), "timeout_s": timeout,
            }
        )

    app.include_router(v1)

    @app.get("/health", responses=_documented(s.HealthOut), summary="Liveness (no token needed)")
    async def health() -> Response:
        return _answer({"status": "ok", "version": __version__})

    # -- errors ---------------------------------------------------------------------------

    @app.exception_handler(CtxMemError)
    async def library_error(request: Request, exc: CtxMemError) -> Response:
        return _error(exc)

    @app.exception_handler(RequestValidationError)
    async def bad_body(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first["loc"])
        return _error(InputError(one_line(f"{where}: {first['msg']}" if where else str(first["msg"]))), 422)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        return _error(ServerError(f"{exc.detail}: {request.method} {request.url.path}"), exc.status_code)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> Response:
        # Starlette logs the traceback after this answer is sent; the client gets one line.
        return _error(ServerError(one_line(f"internal error ({type(exc).__name__}): {exc}")), 500)

    return app
