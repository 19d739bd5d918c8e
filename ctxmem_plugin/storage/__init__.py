"""Storage: the SQLite store (source of truth), its schema, BM25, the FAISS index, the writer lock.

The only package that runs SQL. Everything else reaches the rows through
:class:`~ctxmem_plugin.storage.sqlite.LongTermStore`'s public methods.
"""
