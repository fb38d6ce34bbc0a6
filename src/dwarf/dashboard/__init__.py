"""The web dashboard (``dwarf serve``): browse flows, read their history, resume, cancel and fork them.

It needs the ``web`` extra (``pip install 'dwarf-workflow[web]'``). ``serve`` runs it under uvicorn;
``create_app`` gives the ASGI application to mount or run yourself.
"""

from __future__ import annotations

try:
    import jinja2  # noqa: F401
    import starlette  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError as error:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "the dwarf dashboard needs the 'web' extra: pip install 'dwarf-workflow[web]'", name=error.name
    ) from error

from dwarf.dashboard.app import create_app
from dwarf.dashboard.server import serve

__all__ = ["create_app", "serve"]
