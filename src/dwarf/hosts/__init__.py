"""Production hosts: ``local`` (in-process tasks), ``http`` (tasks behind HTTP endpoints) and the relays
that carry the engine's signals between replicas (``pgnotify``, ``nats``, ``relay``).

Nothing is imported here on purpose: each host pulls in only its own dependencies (httpx for ``http``,
nats-py for ``nats``), so import the submodule you use, e.g. ``from dwarf.hosts.local import LocalHost``.
"""
