"""Stands in for ``dwarf.dashboard`` installed without the ``web`` extra: importing it fails the way the
real module does when uvicorn is missing (an ImportError caused by the missing package)."""

from __future__ import annotations

missing = ModuleNotFoundError("No module named 'uvicorn'", name="uvicorn")
raise ImportError("the dwarf dashboard needs the 'web' extra") from missing
