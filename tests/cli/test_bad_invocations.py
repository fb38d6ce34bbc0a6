"""Every bad invocation of the installed `dwarf` script ends the same way: exactly one line on stderr
starting with "error: ", nothing on stdout, exit code 1 (refused) or 2 (usage), no traceback, no file
created, no password and no key token echoed.

The table runs the real console script in a separate process, as a person or a script would, from an
empty working directory (so that a file created by mistake, such as ./dwarf.db, is seen). The
well-formed database the invocations aim at is made once by `dwarf demo`.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cli.test_console_script import SCRIPT, TIMEOUT, _env

PASSWORD = "s3cret-pw"
CLOSED_PORT = f"postgresql://ops:{PASSWORD}@127.0.0.1:1/flows"
MISSING_DATABASE = f"postgresql://postgres:{PASSWORD}@127.0.0.1:5432/dwarf_no_such_database_here"
LONG_ID = "1-" + "9" * 5000 + "-AAAAAAAAAAAAAAAA"
UNDECODABLE = os.fsdecode(b"\xff\xfe-1-\xc3")  # bytes that are not UTF-8, as the shell hands them over


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@dataclass(frozen=True)
class Demo:
    """The database `dwarf demo` made, and keys of its flows."""

    dsn: str
    directory: Path
    interrupted: str  # a flow waiting for its answer
    step: str  # a step of the completed flow (something fork accepts)

    @property
    def tokens(self) -> list[str]:
        # A key is shard-id-token, and a token may itself hold "-" (URL-safe base64).
        return [key.split("-", 2)[2] for key in (self.interrupted, self.step)]


def _run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args], cwd=cwd, env=_env(**env), capture_output=True, text=True, timeout=TIMEOUT,
        errors="backslashreplace",
    )  # fmt: skip


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    directory = tmp_path_factory.mktemp("demo")
    dsn = f"sqlite:///{directory / 'flows.db'}"
    made = _run(["demo", "--json", "--dsn", dsn], directory)
    assert made.returncode == 0, made.stderr
    flows = json.loads(made.stdout)["flows"]
    [interrupted] = [flow["flow_key"] for flow in flows if flow["outcome"]["status"] == "interrupted"]
    [completed] = [flow["flow_key"] for flow in flows if flow["outcome"]["status"] == "completed"]
    history = _run(["history", completed, "--json", "--dsn", dsn], directory)
    step = json.loads(history.stdout)["steps"][-1]["step_key"]
    return Demo(dsn, directory, interrupted, step)


# Each case: an id, then the arguments. "{dsn}", "{interrupted}" and "{step}" stand for the demo's; a case
# without "--dsn" gets the demo's database appended, so that only the bad part is bad.
CASES: list[tuple[str, list[str]]] = [
    # --- DSNs ---
    ("empty dsn", ["list", "--dsn", ""]),
    ("blank dsn", ["list", "--dsn", "   "]),
    ("unknown scheme", ["list", "--dsn", "mysql://ops@db/flows"]),
    ("no scheme", ["list", "--dsn", "flows.db"]),
    ("postgres on a closed port", ["list", "--dsn", CLOSED_PORT]),
    ("postgres database missing", ["show", "1-1-AAAAAAAAAAAAAAAA", "--dsn", MISSING_DATABASE]),
    ("postgres dsn that is no url", ["list", "--dsn", f"postgresql://ops:{PASSWORD}@[::1/flows"]),
    ("postgres port not a number", ["list", "--dsn", f"postgresql://ops:{PASSWORD}@db:port/flows"]),
    ("sqlite in a missing directory", ["list", "--dsn", "sqlite:///no/such/dir/flows.db"]),
    ("sqlite file missing", ["cancel", "1-1-AAAAAAAAAAAAAAAA", "--dsn", "sqlite:///nothing.db"]),
    ("sqlite uri filename", ["list", "--dsn", "sqlite:///file:x.db"]),
    ("sqlite uri filename creating", ["list", "--dsn", "sqlite:///file:x.db?mode=rwc"]),
    ("sqlite without a path", ["list", "--dsn", "sqlite://"]),
    ("sqlite shards missing", ["list", "--dsn", "sqlite:///flows%d.db", "--shards", "3"]),
    ("sqlite file that is no database", ["list", "--dsn", "sqlite:///{garbage}"]),
    ("zero shards", ["list", "--shards", "0"]),
    ("shards not a number", ["list", "--shards", "many"]),
    ("undecodable dsn", ["list", "--dsn", "sqlite:///" + UNDECODABLE + ".db"]),
    # --- keys ---
    ("5000-digit flow id", ["show", LONG_ID]),
    ("5000-digit id to history", ["history", LONG_ID]),
    ("5000-digit id to mermaid", ["history", "--mermaid", LONG_ID]),
    ("5000-digit id to resume", ["resume", LONG_ID]),
    ("5000-digit id to cancel", ["cancel", LONG_ID]),
    ("5000-digit id to delete", ["delete", LONG_ID]),
    ("5000-digit step id", ["step", LONG_ID]),
    ("5000-digit step id to fork", ["fork", LONG_ID]),
    ("100,000-character key", ["show", "1-1-" + "A" * 100_000]),
    ("id beyond 64 bits", ["show", "1-99999999999999999999-AAAAAAAAAAAAAAAA"]),
    ("shard beyond 64 bits", ["step", "99999999999999999999-1-AAAAAAAAAAAAAAAA"]),
    ("unicode digits", ["show", "\u0661-\u0661-AAAAAAAAAAAAAAAA"]),
    ("empty key", ["show", ""]),
    ("key of dashes", ["history", "--", "--"]),
    ("key without token", ["show", "1-1-"]),
    ("missing key", ["show"]),
    ("undecodable key", ["show", UNDECODABLE]),
    # --- JSON ---
    ("data not json", ["resume", "{interrupted}", "--data", "{bad"]),
    ("data empty", ["resume", "{interrupted}", "--data", ""]),
    ("data an array", ["resume", "{interrupted}", "--data", "[1, 2]"]),
    ("data a string", ["resume", "{interrupted}", "--data", '"yes"']),
    ("data null", ["resume", "{interrupted}", "--data", "null"]),
    ("data nested deeply", ["resume", "{interrupted}", "--data", "[" * 100_000]),
    ("data with a 5000-digit number", ["resume", "{interrupted}", "--data", '{"a": ' + "9" * 5000 + "}"]),
    ("data undecodable", ["resume", "{interrupted}", "--data", '{"a": "' + UNDECODABLE + '"}']),
    ("set without equals", ["fork", "{step}", "--set", "amount"]),
    ("set without key", ["fork", "{step}", "--set", "=3"]),
    ("set nested deeply", ["fork", "{step}", "--set", "amount=" + "[" * 100_000]),
    ("set a 5000-digit number", ["fork", "{step}", "--set", "amount=" + "9" * 5000]),
    # --- cursors ---
    ("cursor not base64", ["list", "--cursor", "!!!"]),
    ("cursor random base64", ["list", "--cursor", _b64(bytes(range(256)) * 3)]),
    ("cursor short base64", ["list", "--cursor", "AAAA"]),
    ("cursor nested json", ["list", "--cursor", _b64(b"[" * 40_000 + b"]" * 40_000)]),
    ("cursor huge number", ["list", "--cursor", _b64(b'{"c": 1, "s": 1, "i": ' + b"9" * 5000 + b"}")]),
    ("cursor huge shard", ["list", "--cursor", _b64(b'{"c": 1, "s": 99999999999999999999999, "i": 1}')]),
    ("cursor infinite time", ["list", "--cursor", _b64(b'{"c": 1e999, "s": 1, "i": 1}')]),
    ("cursor json array", ["list", "--cursor", _b64(b"[1, 2, 3]")]),
    ("cursor json null", ["list", "--cursor", _b64(b"null")]),
    ("cursor wrong types", ["list", "--cursor", _b64(b'{"c": "x", "s": [], "i": {}}')]),
    # --- filters and limits ---
    ("unknown status", ["list", "--status", "asleep"]),
    ("empty status", ["list", "--status", ""]),
    ("negative limit", ["list", "--limit", "-1"]),
    ("limit not a number", ["list", "--limit", "ten"]),
    ("negative priority", ["list", "--priority", "-1"]),
    ("priority beyond 64 bits", ["list", "--priority", "9" * 30]),
    ("negative shard", ["list", "--shard", "-1"]),
    ("shard that does not exist", ["list", "--shard", "9" * 30]),
    ("age that is no age", ["list", "--older-than", "5x"]),
    ("negative age", ["list", "--newer-than", "-5"]),
    ("infinite age", ["list", "--older-than", "1e999"]),
    ("age of a malformed sum", ["list", "--newer-than", "1h-30m"]),
    ("undecodable search", ["list", "--search", UNDECODABLE]),
    # --- commands ---
    ("unknown command", ["lst"]),
    ("unknown option", ["list", "--colour"]),
    ("purge nobody confirmed", ["purge"]),
    ("graph without a colon", ["graph", "examples"]),
    ("graph of a missing module", ["graph", "no_such_module_here:graph"]),
    ("undecodable graph", ["graph", UNDECODABLE + ":graph"]),
]


def _expand(args: list[str], demo: Demo, garbage: Path) -> list[str]:
    values = {"{dsn}": demo.dsn, "{interrupted}": demo.interrupted, "{step}": demo.step}
    expanded = [values.get(arg, arg).replace("{garbage}", str(garbage)) for arg in args]
    needs_database = expanded and expanded[0] not in {"graph", "lst"} and "--dsn" not in expanded
    return [*expanded, "--dsn", demo.dsn] if needs_database and len(expanded) > 1 else expanded


@pytest.mark.parametrize(("case", "args"), CASES, ids=[case for case, _ in CASES])
def test_a_bad_invocation_prints_one_line_and_exits_1_or_2(
    demo: Demo, workdir: Path, tmp_path: Path, case: str, args: list[str]
) -> None:
    garbage = tmp_path / "notes.txt"
    garbage.write_text("not a database, just some notes\n" * 100)
    before = sorted(path.name for path in demo.directory.iterdir())
    result = _run(_expand(args, demo, garbage), workdir)
    assert result.returncode in {1, 2}, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: "), result.stderr[-2000:]
    assert result.stderr.count("\n") == 1 and result.stderr.endswith("\n"), result.stderr[-2000:]
    assert result.stdout == ""
    assert PASSWORD not in result.stderr
    assert not any(token in result.stderr for token in demo.tokens)
    assert sorted(path.name for path in demo.directory.iterdir()) == before
    assert garbage.read_text() == "not a database, just some notes\n" * 100


def test_the_table_holds_many_kinds_of_bad_invocations() -> None:
    assert len(CASES) >= 63


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["list", "--dsn", ""], 2),
        (["list", "--dsn", "mysql://db/flows"], 2),
        (["list", "--status", "asleep"], 2),
        (["show", UNDECODABLE], 2),
        (["show", "1-1-AAAAAAAAAAAAAAAA", "--dsn", CLOSED_PORT], 1),
        (["list", "--dsn", "sqlite:///nothing.db"], 1),
    ],
)
def test_usage_errors_exit_2_and_refusals_exit_1(workdir: Path, args: list[str], code: int) -> None:
    assert _run(args, workdir).returncode == code


def test_an_empty_dsn_is_refused_rather_than_meaning_the_default(workdir: Path) -> None:
    result = _run(["list", "--dsn", ""], workdir)
    assert result.returncode == 2
    assert result.stderr.startswith("error: Invalid value for --dsn: is empty")


def test_a_dsn_from_the_environment_is_checked_like_the_option(workdir: Path) -> None:
    result = _run(["list"], workdir, DWARF_DSN="mysql://db/flows")
    assert result.returncode == 2
    assert "--dsn" in result.stderr


def test_an_unexpected_error_is_one_line_naming_its_type_and_how_to_see_more(workdir: Path) -> None:
    # A graph module that crashes on import stands for any bug: the CLI cannot know it in advance.
    (workdir.parent / "crashing.py").write_text("raise ZeroDivisionError('boom')\n")
    env = {"PYTHONPATH": str(workdir.parent)}
    result = _run(["graph", "crashing:graph"], workdir, **env)
    assert result.returncode == 1
    assert result.stderr == (
        "error: unexpected ZeroDivisionError: boom "
        "(rerun with --debug (or DWARF_DEBUG=1) for the traceback)\n"
    )


@pytest.mark.parametrize(("flag", "env"), [(["--debug"], {}), ([], {"DWARF_DEBUG": "1"})])
def test_debug_shows_the_traceback_of_an_unexpected_error(
    workdir: Path, flag: list[str], env: dict[str, str]
) -> None:
    (workdir.parent / "crashing.py").write_text("raise ZeroDivisionError('boom')\n")
    result = _run([*flag, "graph", "crashing:graph"], workdir, PYTHONPATH=str(workdir.parent), **env)
    assert result.returncode == 1
    assert "Traceback" in result.stderr
    assert "ZeroDivisionError: boom" in result.stderr


def test_an_unexpected_error_in_process_is_one_line_too(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.cli.conftest import invoke

    def explode(*args: object, **kwargs: object) -> None:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr("dwarf.cli.commands.with_engine", explode)
    result = invoke("list", "--dsn", "sqlite:///whatever.db")
    assert result.exit_code == 1
    assert result.stderr == (
        "error: unexpected RecursionError: maximum recursion depth exceeded "
        "(rerun with --debug (or DWARF_DEBUG=1) for the traceback)\n"
    )
