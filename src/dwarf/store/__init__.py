"""Persistence: the narrow store interface, its SQLite and PostgreSQL implementations, and migrations.

Every SQL statement of the project lives in this package: the engine names queries, it never writes SQL.
"""
