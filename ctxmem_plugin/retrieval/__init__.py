"""Retrieval: candidates from BM25 and dense search, fused; re-ranker features; context packing."""
