"""The embedded store's integrity checks and repairs: what ``ctxmem-plugin doctor`` runs.

:func:`check` reads a memory directory and lists what is wrong, one :class:`Finding` each:

- ``database``: the file is a whole SQLite database and ``PRAGMA integrity_check`` passes;
- ``schema``: the recorded version matches the tables and is this code's;
- ``meta``: ``generation`` and ``dim`` are numbers, every stored vector has ``dim`` finite values;
- ``fts``: the full-text index agrees with the turns (FTS5's ``integrity-check``), each turn's
  token count and the per-namespace statistics BM25 reads agree with it;
- ``vectors``: the approximate index of large memories (:mod:`.ann`: centroids and the cell of
  each turn, kept in SQLite) is whole: centroids of the memory's width with finite values, and,
  once trained, exactly one cell row per turn;
- ``slots``: every slot state is readable, finite, and the size its model needs (when the model
  is given, see :class:`SlotShape`);
- ``namespaces``: every stored namespace is a valid one and inside the root range.

:func:`repair` rebuilds what the turns hold the truth for: the approximate index, the FTS
indexes, token counts and BM25 statistics, slot states (dropped, rebuilt from the turns on
use), the recorded schema version (the one the tables show) and ``meta`` numbers. A damaged
database file or a turn whose vector is broken cannot be rebuilt here and stays a finding.

It works on the directory, not on an open store: a memory too damaged to open is the one that
needs it. The caller holds the writer lock while repairing.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import numpy as np

from ctxmem_plugin import namespaces as ns
from ctxmem_plugin.errors import NamespaceError
from ctxmem_plugin.storage import schema
from ctxmem_plugin.storage.base import Finding, SlotShape
from ctxmem_plugin.storage.bm25 import index_namespaced
from ctxmem_plugin.storage.opening import database_file_problem, meta_problems
from ctxmem_plugin.storage.sqlite import DB_NAME, VECTOR_DTYPES, LongTermStore

_BATCH = 4096
_MAX_LISTED = 20  # lines of PRAGMA integrity_check reported


def check(directory: Path, *, slots: SlotShape | None = None) -> list[Finding]:
    """Every problem found in the memory at ``directory`` (empty: none). Changes nothing."""
    directory = Path(directory)
    path = directory / DB_NAME
    problem = database_file_problem(path)
    if problem is not None:
        return [Finding("database", problem, False)]
    try:
        with closing(_connect(path, read_only=True)) as db:
            return _check_database(db, directory, slots)
    except sqlite3.DatabaseError as exc:
        return [Finding("database", f"cannot be read: {exc}", False)]


def _check_database(db: sqlite3.Connection, directory: Path, slots: SlotShape | None) -> list[Finding]:
    rows = [r[0] for r in db.execute("PRAGMA integrity_check").fetchmany(_MAX_LISTED)]
    if rows != ["ok"]:
        return [Finding("database", f"integrity_check: {line}", False) for line in rows]
    found = _schema_findings(db)
    if any(not f.repairable for f in found) or schema.tables_version(db) != len(schema.MIGRATIONS):
        return found  # the checks below read the current schema's tables
    meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
    found += [Finding("meta", p, True) for p in meta_problems(meta.get)]
    dim = _dim(meta)
    dtype = meta.get("vector_dtype", "float32")
    if dtype not in VECTOR_DTYPES:
        return found  # meta_problems named it; the vectors cannot be read without it
    found += _vector_findings(db, dim, dtype)
    found += _fts_findings(directory)
    found += _namespace_findings(db)
    found += _slot_findings(db, dim, slots)
    found += _index_findings(db, dim)
    return found


def _connect(path: Path, *, read_only: bool) -> sqlite3.Connection:
    uri = f"file:{path}?mode=ro" if read_only else f"file:{path}?mode=rw"
    return sqlite3.connect(uri, uri=True, isolation_level=None, timeout=5.0)


def _dim(meta: dict[str, str]) -> int | None:
    value = meta.get("dim")
    return int(value) if isinstance(value, str) and value.isdigit() and 0 < int(value) <= 65536 else None


def _schema_findings(db: sqlite3.Connection) -> list[Finding]:
    (current,) = db.execute("PRAGMA user_version").fetchone()
    tables = schema.tables_version(db)
    if tables is None:
        return [Finding("schema", "its tables match no schema version of this ctxmem-plugin", False)]
    found = []
    if current != tables:
        found.append(Finding("schema", f"records version {current}, its tables are version {tables}", True))
    if tables < len(schema.MIGRATIONS):
        found.append(Finding("schema", f"version {tables} predates this ctxmem-plugin's {len(schema.MIGRATIONS)}", True))
    return found


def _vector_findings(db: sqlite3.Connection, dim: int | None, dtype: str) -> list[Finding]:
    if dim is None:
        return []
    width = dim * np.dtype(dtype).itemsize
    (wrong,) = db.execute("SELECT count(*) FROM turns WHERE length(vector) != ?", (width,)).fetchone()
    found = []
    if wrong:
        found.append(Finding("meta", f"{wrong} turn(s) hold vectors that are not {dim} {dtype} values "
                                     "(re-encode them: ctxmem-plugin reembed)", False))
    if any(not np.isfinite(vecs).all() for _, vecs in _vectors(db, dim, dtype)):
        found.append(Finding("meta", "stored vectors hold NaN or infinite values (re-encode: ctxmem-plugin reembed)", False))
    return found


def _vectors(db: sqlite3.Connection, dim: int, dtype: str) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(ids, vectors)`` of the turns whose vectors have ``dim`` values, in id order, in batches."""
    last = -1
    width = dim * np.dtype(dtype).itemsize
    while True:
        rows = db.execute(
            "SELECT id, vector FROM turns WHERE id > ? AND length(vector) = ? ORDER BY id LIMIT ?", (last, width, _BATCH)
        ).fetchall()
        if not rows:
            return
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        yield ids, np.stack([np.frombuffer(r[1], dtype=dtype) for r in rows])
        last = int(ids[-1])


def _fts_findings(directory: Path) -> list[Finding]:
    try:
        return _fts_checked(directory)
    except sqlite3.OperationalError as exc:  # no right to open the file for writing, say
        return [Finding("fts", f"not checked: {exc}", False)]


def _fts_checked(directory: Path) -> list[Finding]:
    # FTS5 runs its integrity-check as a write statement: in a transaction that is rolled back.
    found = []
    with closing(_connect(directory / DB_NAME, read_only=False)) as db:
        db.execute("PRAGMA query_only=OFF")
        db.execute("BEGIN")
        try:
            db.execute("INSERT INTO turns_fts(turns_fts, rank) VALUES ('integrity-check', 1)")
        except sqlite3.OperationalError as exc:
            if (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in (5, 6):  # busy: a writer holds it
                found.append(Finding("fts", "not checked: another process is writing to the memory", False))
            else:
                found.append(Finding("fts", f"the full-text index does not match the turns ({exc})", True))
        except sqlite3.DatabaseError as exc:
            found.append(Finding("fts", f"the full-text index does not match the turns ({exc})", True))
        finally:
            db.execute("ROLLBACK")
        if not found:
            stale = db.execute(
                "SELECT count(*) FROM turns t LEFT JOIN (SELECT doc, count(*) AS n FROM turns_fts_instance GROUP BY doc) f"
                " ON f.doc = t.id WHERE t.n_tokens != coalesce(f.n, 0)"
            ).fetchone()[0]
            if stale:
                found.append(Finding("fts", f"{stale} turn(s) record a token count their index entry does not have", True))
        found += _stats_findings(db)
        found += _namespaced_findings(db)
    return found


def _namespaced_findings(db: sqlite3.Connection) -> list[Finding]:
    """The per-prefix postings (``turns_nsfts``) hold the turns' tokens and nothing of deleted turns."""
    db.execute("BEGIN")
    try:
        db.execute("INSERT INTO turns_nsfts(turns_nsfts) VALUES ('integrity-check')")
    except sqlite3.DatabaseError as exc:
        return [Finding("fts", f"the per-namespace postings are damaged ({exc})", True)]
    finally:
        db.execute("ROLLBACK")
    docs = "SELECT DISTINCT doc FROM turns_nsfts_instance"
    (stale,) = db.execute(f"SELECT count(*) FROM ({docs}) WHERE doc NOT IN (SELECT id FROM turns)").fetchone()
    (missing,) = db.execute(f"SELECT count(*) FROM turns WHERE n_tokens > 0 AND id NOT IN ({docs})").fetchone()
    found = []
    if stale:
        found.append(Finding("fts", f"the per-namespace postings hold words of {stale:,} deleted turn(s)", True))
    if missing:
        found.append(Finding("fts", f"{missing:,} turn(s) are missing from the per-namespace postings", True))
    return found


def _stats_findings(db: sqlite3.Connection) -> list[Finding]:
    truth = {r[0]: (r[1], r[2]) for r in db.execute("SELECT namespace, count(*), total(n_tokens) FROM turns GROUP BY namespace")}
    kept = {r[0]: (r[1], float(r[2])) for r in db.execute("SELECT namespace, turns, tokens FROM namespace_stats")}
    if truth != kept:
        differ = sorted(set(truth) ^ set(kept) | {k for k in set(truth) & set(kept) if truth[k] != kept[k]})
        return [Finding("fts", f"the BM25 statistics of {len(differ)} namespace(s) do not match their turns", True)]
    return []


def _namespace_findings(db: sqlite3.Connection) -> list[Finding]:
    found = []
    low, high = ns.prefix_range(())
    for table in ("turns", "slot_states"):
        keys = [r[0] for r in db.execute(f"SELECT DISTINCT namespace FROM {table}")]  # noqa: S608 (fixed names)
        for key in keys:
            problem = _key_problem(key)
            if problem:
                found.append(Finding("namespaces", f"{table} holds namespace {key!r:.60}: {problem}", False))
        outside = db.execute(
            f"SELECT count(*) FROM {table} WHERE NOT (namespace >= ? AND namespace < ?)", (low, high)  # noqa: S608
        ).fetchone()[0]
        if outside:
            found.append(Finding("namespaces", f"{outside} row(s) of {table} fall outside the root range", False))
    return found


def _key_problem(key: object) -> str | None:
    if not isinstance(key, str) or not key.endswith(ns.SEPARATOR):
        return "not a stored namespace key (labels joined by '/', with a trailing '/')"
    try:
        ns.validate(ns.from_key(key))
    except NamespaceError as exc:
        return str(exc)
    return None


_SLOT_ROWS = (
    "SELECT namespace, model_id, state, typeof(last_turn_id) = 'integer' AND typeof(turns) = 'integer' FROM slot_states"
)


def _slot_findings(db: sqlite3.Connection, dim: int | None, slots: SlotShape | None) -> list[Finding]:
    return [
        Finding("slots", f"the slot state of {key!r:.60} {problem}", True)
        for key, model_id, state, typed in db.execute(_SLOT_ROWS).fetchall()
        if (problem := slot_problem(model_id, state, bool(typed), dim, slots))
    ]


def slot_problem(model_id: object, state: object, typed: bool, dim: int | None, slots: SlotShape | None) -> str | None:
    """What is wrong with one slot state row (``None``: nothing found)."""
    if not isinstance(state, bytes) or not typed:
        return "is not a slot state row"
    size = len(state)
    if slots is not None and model_id == slots.model_id and size != slots.state_bytes:
        return f"has {size:,} bytes, the model's {slots.state_bytes:,}"
    if dim is not None and size % (4 * dim):
        return f"has {size:,} bytes, not whole {dim}-wide slots"
    if not np.isfinite(np.frombuffer(state[: size - size % 4], dtype=np.float32)).all():
        return "holds NaN or infinite values"
    return None


def _index_findings(db: sqlite3.Connection, dim: int | None) -> list[Finding]:
    rows = db.execute("SELECT nlist, dim, centroids FROM ann_centroids").fetchall()
    if not rows:
        (cells,) = db.execute("SELECT count(*) FROM ann_cells").fetchone()
        return [Finding("vectors", f"{cells:,} approximate-index cell rows without centroids", True)] if cells else []
    if len(rows) > 1:
        return [Finding("vectors", f"{len(rows)} sets of centroids, not one", True)]
    nlist, width, blob = rows[0]
    if not (isinstance(nlist, int) and isinstance(width, int) and isinstance(blob, bytes)) or width != dim \
            or nlist < 1 or len(blob) != nlist * width * 4:
        return [Finding("vectors", f"the approximate index's centroids are not {nlist!r} x {dim} float32 values", True)]
    if not np.isfinite(np.frombuffer(blob, dtype=np.float32)).all():
        return [Finding("vectors", "the approximate index's centroids hold NaN or infinite values", True)]
    (turns,) = db.execute("SELECT count(*) FROM turns").fetchone()
    (placed,) = db.execute(
        "SELECT count(*) FROM (SELECT DISTINCT a.id FROM ann_cells a JOIN turns t ON t.id = a.id"
        " AND t.namespace = a.namespace WHERE a.cell >= 0 AND a.cell < ?)", (nlist,)
    ).fetchone()
    (rows_,) = db.execute("SELECT count(*) FROM ann_cells").fetchone()
    if placed != turns or rows_ != turns:
        return [Finding("vectors", f"the approximate index places {placed:,} of {turns:,} turns ({rows_:,} cell rows)", True)]
    return []


# -- repair -------------------------------------------------------------------------------------


def repair(directory: Path, *, slots: SlotShape | None = None) -> list[str]:
    """Rebuild what SQLite holds the truth for (module docstring); returns what was done.

    The caller holds the memory's writer lock. Findings that cannot be rebuilt are left as they are.
    """
    directory = Path(directory)
    found = check(directory, slots=slots)
    parts = {f.part for f in found if f.repairable}
    done: list[str] = []
    if not parts:
        return done
    with _writing(directory / DB_NAME) as db:
        if "schema" in parts:
            tables = schema.tables_version(db)
            if tables is not None:
                db.execute(f"PRAGMA user_version = {int(tables)}")
                done.append(f"schema: recorded version set to {tables}, the version its tables show")
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        if any(f.part == "meta" and f.repairable for f in found):
            done += _repair_meta(db, meta)
    with _writing(directory / DB_NAME) as db:
        if schema.tables_version(db) == len(schema.MIGRATIONS):
            if "fts" in parts:
                done += _repair_fts(db)
            if "slots" in parts:
                done += _repair_slots(db, slots)
    if "vectors" in parts or "schema" in parts or "meta" in parts:
        store = LongTermStore(directory)  # opened for writing: applies missing migrations too
        try:
            with store.transaction():
                cells = store.rebuild_index()
        finally:
            store.close()
        if cells:
            done.append(f"vectors: the approximate index retrained from the turns ({cells:,} cells)")
        elif "vectors" in parts:
            done.append("vectors: the approximate index dropped (the memory is searched exactly until it is large)")
    return done


@contextmanager
def _writing(path: Path) -> Iterator[sqlite3.Connection]:
    with closing(_connect(path, read_only=False)) as db:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")


def _repair_meta(db: sqlite3.Connection, meta: dict[str, str]) -> list[str]:
    done = []
    if "generation" in meta and not meta["generation"].isdigit():
        db.execute("UPDATE meta SET value = '1' WHERE key = 'generation'")
        done.append("meta: generation reset (the vector index is rebuilt to match it)")
    if "dim" in meta and _dim(meta) is None:
        widths = [r[0] for r in db.execute("SELECT DISTINCT length(vector) FROM turns")]
        if len(widths) == 1 and widths[0] % 4 == 0 and widths[0]:
            db.execute("UPDATE meta SET value = ? WHERE key = 'dim'", (str(widths[0] // 4),))
            done.append(f"meta: dim set to {widths[0] // 4}, the width of the stored vectors")
        elif not widths:
            db.execute("DELETE FROM meta WHERE key IN ('dim', 'encoder')")
            done.append("meta: dim and encoder cleared (no turns: the next write records them)")
    dtype = meta.get("vector_dtype")
    dim = _dim(dict(db.execute("SELECT key, value FROM meta").fetchall()))
    if dtype is not None and dtype not in VECTOR_DTYPES and dim is not None:
        widths = {r[0] for r in db.execute("SELECT DISTINCT length(vector) FROM turns")}
        found = [t for t in VECTOR_DTYPES if widths <= {dim * np.dtype(t).itemsize}]
        if len(found) == 1 or not widths:
            db.execute("UPDATE meta SET value = ? WHERE key = 'vector_dtype'", (found[0],))
            done.append(f"meta: vector_dtype set to {found[0]}, the type of the stored vectors")
    return done


def _repair_fts(db: sqlite3.Connection) -> list[str]:
    db.execute("INSERT INTO turns_fts(turns_fts) VALUES ('rebuild')")
    db.execute(
        "UPDATE turns SET n_tokens = coalesce((SELECT count(*) FROM turns_fts_instance WHERE doc = turns.id), 0)"
    )
    db.execute("DELETE FROM namespace_stats")
    db.execute(
        "INSERT INTO namespace_stats(namespace, turns, tokens) SELECT namespace, count(*), total(n_tokens) FROM turns GROUP BY namespace"
    )
    db.execute("INSERT INTO turns_nsfts(turns_nsfts) VALUES ('delete-all')")
    index_namespaced(db)
    return ["fts: full-text indexes, token counts and BM25 statistics rebuilt from the turns"]


def _repair_slots(db: sqlite3.Connection, slots: SlotShape | None) -> list[str]:
    dim = _dim(dict(db.execute("SELECT key, value FROM meta").fetchall()))
    bad = [key for key, model_id, state, typed in db.execute(_SLOT_ROWS).fetchall()
           if slot_problem(model_id, state, bool(typed), dim, slots)]
    db.executemany("DELETE FROM slot_states WHERE namespace = ?", [(k,) for k in bad])
    return [f"slots: {len(bad)} damaged slot state(s) dropped; they are rebuilt from the turns on use"] if bad else []


def unscrubbed_bytes(directory: Path) -> int:
    """Bytes left in the database's write-ahead log (``-wal``) of the memory at ``directory``.

    Right after a forget, more than zero means the log could not be cleared: another process
    holds a read transaction, and the log may still hold the deleted text.
    """
    try:
        return (Path(directory) / f"{DB_NAME}-wal").stat().st_size
    except FileNotFoundError:
        return 0
