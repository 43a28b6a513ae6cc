"""Benchmarks for rag-local: `python -m bench --help`. Never imported by the tests (one runs the CLI)."""
