"""The hint that an optional part of dwarf raises when the extra it needs is not installed.

The core package carries only what the embedded SQLite path needs. The PostgreSQL driver, the CLI, the
dashboard, HTTPHost and the NATS relay each sit behind an extra (``pip install 'dwarf-workflow[postgres]'``
and so on); importing one without its extra fails with one line that names the extra to install.
"""

from __future__ import annotations

__all__ = ["extra_hint", "missing_extra", "require_postgres"]

POSTGRES = "PostgreSQL support"


def extra_hint(what: str, extra: str) -> str:
    """The one-line message: ``what`` needs ``extra``, and the command that installs it."""
    return f"{what} needs the {extra} extra: pip install 'dwarf-workflow[{extra}]'"


def missing_extra(what: str, extra: str, error: ImportError) -> ImportError:
    """The ImportError to raise (``from error``) when importing ``what``'s dependencies failed."""
    return ImportError(extra_hint(what, extra), name=error.name)


def require_postgres() -> None:
    """Raise the postgres extra's hint unless psycopg and its pool are importable."""
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError as error:
        raise missing_extra(POSTGRES, "postgres", error) from error
