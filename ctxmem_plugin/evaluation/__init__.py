"""Evaluation: retrieval recall on labelled data (``ctxmem-plugin eval``)."""
