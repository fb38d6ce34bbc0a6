"""Fixtures of the process-level crash tests (defined in tests.process.fixtures)."""

from tests.process.fixtures import replica_set, throwaway_postgres

__all__ = ["replica_set", "throwaway_postgres"]
