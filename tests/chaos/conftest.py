"""Fixtures of the chaos tests: the process-level crash test fixtures (tests.process.fixtures)."""

from tests.process.fixtures import replica_set, throwaway_postgres

__all__ = ["replica_set", "throwaway_postgres"]
