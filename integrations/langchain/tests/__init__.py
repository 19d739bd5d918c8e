# A package, so that this directory's conftest is imported as ``tests.conftest``: the core's
# test modules do ``from conftest import ...`` and must keep getting the core's conftest when
# both suites run together (``pytest tests integrations/langchain/tests``).
