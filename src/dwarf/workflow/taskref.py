"""Task references: a registered handler standing for its task URL in ``Graph.add_task``.

A host that registers a handler under a URL records the URL on the handler (``remember_task_url``), so a
graph can name the function instead of repeating the URL: ``graph.add_task("Plan", plan)``. The graph
keeps only the URL (``task_url_of``), which is what its JSON, the engine and the history hold.

Decisions:

- The URLs live in an attribute of the handler, not in a registry, so that a graph module needs nothing
  but the function and a host that goes away takes nothing with it. An object that refuses attributes (a
  bound method, a builtin) is served all the same but cannot be used as a reference: pass its URL.
- A handler registered under several URLs (on one host or several) is ambiguous as a reference: the
  graph refuses it and asks for the URL.
"""

from __future__ import annotations

from typing import Any, Final

from dwarf.errors import InvalidGraphError

__all__ = ["TASK_URLS_ATTRIBUTE", "remember_task_url", "task_url_of"]

TASK_URLS_ATTRIBUTE: Final = "__dwarf_task_urls__"
"""The attribute of a registered handler holding the tuple of URLs it is served at."""


def remember_task_url(handler: Any, url: str) -> None:
    """Record on ``handler`` that a host serves it at ``url`` (nothing for an object without attributes)."""
    urls = _recorded(handler)
    if url in urls:
        return
    try:
        setattr(handler, TASK_URLS_ATTRIBUTE, (*urls, url))
    except (AttributeError, TypeError):
        pass


def task_url_of(reference: Any, node: str) -> str:
    """The URL the handler ``reference`` was registered under, for node ``node``; InvalidGraphError when
    it was never registered or was registered under several URLs."""
    urls = _recorded(reference)
    name = getattr(reference, "__qualname__", None) or type(reference).__name__
    if not urls:
        raise InvalidGraphError(
            f"node {node!r}: {name} is not a registered task; register it on the host first "
            f"(@host.task(...) or host.add_task(url, {name})), or pass its URL as a string"
        )
    if len(urls) > 1:
        listed = ", ".join(repr(url) for url in urls)
        raise InvalidGraphError(
            f"node {node!r}: {name} is registered under several URLs ({listed}); pass the URL this node runs"
        )
    return urls[0]


def _recorded(handler: Any) -> tuple[str, ...]:
    urls = getattr(handler, TASK_URLS_ATTRIBUTE, ())
    if isinstance(urls, tuple) and all(isinstance(url, str) for url in urls):
        return urls
    return ()
