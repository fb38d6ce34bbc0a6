"""How `dwarf` ends when it cannot do what it was asked: one line on stderr, exit code 1 or 2, no traceback.

``ReportingGroup`` is the Typer group class of the CLI. It owns the whole exit path, so that every way a
command can fail looks the same to a person and to a script:

- a usage error (an unknown option, a value that does not parse, an argument that is not valid text)
  prints ``error: ...`` and exits 2;
- a refusal (``Refusal``: the engine said no, the database cannot be opened) prints ``error: ...`` and
  exits 1;
- anything else, i.e. a bug, prints ``error: unexpected <type>: ...`` and exits 1. The traceback is
  printed only under ``dwarf --debug`` or ``DWARF_DEBUG=1``, for a bug report.

Typer's own rendering (a boxed panel over several lines) is bypassed on purpose: a script reading stderr
wants one line, and a person wants the message, not the frame around it.
"""

from __future__ import annotations

import errno
import os
import re
import sys
from collections.abc import Sequence
from typing import IO, Any, NoReturn

import typer
from typer.core import TyperGroup

try:  # Typer carries its own copy of Click since 0.2x; its exceptions are not the click package's.
    from typer._click import Context
    from typer._click.exceptions import ClickException, UsageError
except ImportError:  # pragma: no cover - an older Typer, on the click package itself
    from click import ClickException, Context, UsageError  # type: ignore[assignment]

__all__ = ["DEBUG_ENV", "Refusal", "ReportingGroup", "debug_requested", "one_line", "refuse"]

DEBUG_ENV = "DWARF_DEBUG"
"""Set to 1 to let an unexpected error print its traceback (the same as ``dwarf --debug``)."""

MAX_MESSAGE = 1000
"""Characters of a message shown at most: an echoed argument can be megabytes long."""

# A flow or step key is "{shard}-{id}-{16-character token}"; the token is a secret even on a terminal,
# since an error line ends up in bug reports and CI logs.
_KEY = re.compile(r"\b(\d+-\d+-)[A-Za-z0-9_-]{16}(?![A-Za-z0-9_-])")
_TRUE = frozenset({"1", "true", "yes", "on"})


class Refusal(ClickException):
    """The command cannot do what was asked (exit code 1): the message says why, on one line."""

    exit_code = 1


def refuse(message: str) -> NoReturn:
    """End the command with a refusal."""
    raise Refusal(message)


def one_line(message: str) -> str:
    """``message`` folded onto one line, key tokens masked, and cut to ``MAX_MESSAGE`` characters."""
    text = " ".join(part.strip() for part in str(message).splitlines() if part.strip())
    text = _KEY.sub(r"\1***", text)
    if len(text) > MAX_MESSAGE:
        text = text[: MAX_MESSAGE - 1] + "…"
    return text


def debug_requested(ctx: Context | None = None) -> bool:
    """Whether an unexpected error should show its traceback: ``--debug`` or ``DWARF_DEBUG=1``."""
    if os.environ.get(DEBUG_ENV, "").strip().lower() in _TRUE:
        return True
    return bool(ctx is not None and ctx.find_root().params.get("debug"))


def _write_line(text: str, file: IO[str] | None = None) -> None:
    """Print one line on stderr, whatever the terminal's encoding can show (never raising on it)."""
    stream = file if file is not None else sys.stderr
    encoding = getattr(stream, "encoding", None) or "utf-8"
    # An argument that was not valid text arrives with surrogates; an error echoing it must still print.
    safe = text.encode(encoding, errors="backslashreplace").decode(encoding, errors="replace")
    typer.echo(safe, file=stream)


def _undecodable(args: Sequence[str]) -> str | None:
    """The first argument holding bytes the locale could not decode (Python keeps them as surrogates)."""
    for arg in args:
        if any("\udc80" <= char <= "\udcff" for char in arg):
            return arg
    return None


class ReportingGroup(TyperGroup):
    """The `dwarf` command group: every failure ends as one line on stderr with exit code 1 or 2."""

    _shown_in_full: BaseException | None = None
    """An unexpected error let through with its traceback because --debug was given."""

    def invoke(self, ctx: Context) -> Any:
        try:
            return super().invoke(ctx)
        except (ClickException, typer.Exit, typer.Abort):
            raise
        except Exception as error:
            if isinstance(error, OSError) and error.errno == errno.EPIPE:
                raise  # the reader went away (`dwarf list | head`): Typer exits quietly
            if debug_requested(ctx):
                self._shown_in_full = error
                raise
            raise self._unexpected(error) from error

    @staticmethod
    def _unexpected(error: Exception) -> Refusal:
        what = type(error).__name__
        detail = one_line(str(error))
        hint = f"rerun with --debug (or {DEBUG_ENV}=1) for the traceback"
        return Refusal(f"unexpected {what}: {detail} ({hint})" if detail else f"unexpected {what} ({hint})")

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        try:
            bad = _undecodable(argv)
            if bad is not None:
                shown = os.fsencode(bad).decode("ascii", errors="backslashreplace")
                raise UsageError(
                    f"the argument '{shown}' is not valid text in this system's encoding "
                    f"({sys.getfilesystemencoding()})"
                )
            result = super().main(
                argv, prog_name, complete_var, standalone_mode=False,
                windows_expand_args=windows_expand_args, **extra,
            )  # fmt: skip
        except ClickException as error:
            if type(error).__name__ == "NoArgsIsHelpError":  # `dwarf` alone: the help, not an error
                context = getattr(error, "ctx", None)
                typer.echo(context.get_help() if context is not None else error.format_message(), err=True)
                return self._exit(error.exit_code, standalone_mode)
            _write_line(f"error: {self._describe(error)}")
            return self._exit(error.exit_code, standalone_mode)
        except typer.Abort:
            _write_line("error: aborted")
            return self._exit(1, standalone_mode)
        except Exception as error:
            # Raised outside a command (while parsing or completing, say): the same rule applies.
            if debug_requested() or error is self._shown_in_full:
                raise
            _write_line(f"error: {self._unexpected(error).format_message()}")
            return self._exit(1, standalone_mode)
        if not standalone_mode:
            return result
        # Typer's non-standalone mode hands back the exit code of a `typer.Exit(code)` as the result.
        code = result if isinstance(result, int) and not isinstance(result, bool) else 0
        sys.exit(code)

    @staticmethod
    def _describe(error: ClickException) -> str:
        message = one_line(error.format_message())
        if isinstance(error, UsageError) and error.ctx is not None:
            return f"{message} (see {error.ctx.command_path} --help)"
        return message

    @staticmethod
    def _exit(code: int, standalone_mode: bool) -> int:
        if standalone_mode:
            sys.exit(code)
        return code
