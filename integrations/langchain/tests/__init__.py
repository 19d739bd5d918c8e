# A package, so that this directory's conftest is imported as ``tests.conftest`` and does not
# shadow the core's when both suites run together (``pytest tests integrations/langchain/tests``).
