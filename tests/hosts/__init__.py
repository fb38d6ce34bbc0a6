"""Tests of the production hosts (dwarf.hosts)."""
