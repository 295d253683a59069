"""Helpers shared by the tests and by bench/: the local broker and topics (`kafka`), the CLI
run as a child process (`cli`), parm/ directories (`parm`), a standard run's data (`runs`),
throwaway certificates (`certs`), the secrets every test hands the tool (`secrets`), the real
Matomo answers under tests/fixtures (`samples`) and the reliability proofs' harness
(`reliability`).

Importable as `support` from the tests (pyproject.toml: pytest's `pythonpath = ["tests"]`) and
from bench/ scripts, which put tests/ on sys.path first. Nothing here imports from bench/, and
nothing here starts a broker or a server on import.
"""
