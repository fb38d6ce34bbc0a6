"""Chaos tests: many flows on several replica processes that are killed while the database restarts."""
