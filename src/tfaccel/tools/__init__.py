"""Tooling around the compiler, never used by ``trace`` itself: the model zoo and the bundled examples the
tests, benchmarks and demo trace, and the generator of ``docs/supported-ops.md``.
"""
