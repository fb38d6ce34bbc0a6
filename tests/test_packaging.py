"""What `pip install dwarf-workflow` delivers: a small wheel, a lean core install, and hints for the extras.

The wheel is built from a clean copy of the sources (a ``build/`` directory left in the checkout would
carry deleted files into it) and installed with ``--no-deps`` into a fresh virtual environment next to the
core dependencies alone, as pip would install them. Optional parts used without their extra must fail with
one line that names the extra.
"""

from __future__ import annotations

import lzma
import os
import posixpath
import re
import runpy
import shutil
import subprocess
import sys
import tarfile
import textwrap
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dwarf.dashboard.bundle import pack, tar_of
from dwarf.store.base import _parse_query_file, split_statements

ROOT = Path(__file__).resolve().parents[1]
MERMAID_ARCHIVE = ROOT / "src" / "dwarf" / "dashboard" / "mermaid" / "mermaid.tar.xz"
ENTRY = "mermaid.esm.min.mjs"
MAX_WHEEL_BYTES = 600 * 1000

OPTIONAL_MODULES = (
    "psycopg",
    "psycopg_pool",
    "starlette",
    "uvicorn",
    "jinja2",
    "typer",
    "rich",
    "httpx",
    "nats",
    "cryptography",
)
"""Top-level modules that only extras bring: the core install must not have any of them."""

POSTGRES_HINT = "PostgreSQL support needs the postgres extra: pip install 'dwarf-workflow[postgres]'"


def _pyproject() -> dict[str, Any]:
    with (ROOT / "pyproject.toml").open("rb") as file:
        project: dict[str, Any] = tomllib.load(file)["project"]
    return project


def _setup(command: list[str]) -> None:
    """Run a set-up step (build, venv, pip), failing with its output rather than a bare exit code."""
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stdout}\n{result.stderr}"


# ------------------------------------------------------------------------------------- vendored Mermaid

# `import x from "./a.mjs"`, `import "./a.mjs"`, `export {x} from "./a.mjs"` (minified: no spaces needed).
_STATIC_IMPORT = re.compile(r'(?:^|[;}\s])(?:import|export)\s*(?:[\w*{}\s,$]*?from\s*)?"(\.[^"]+)"')
_DYNAMIC_IMPORT = re.compile(r'import\(\s*"(\.[^"]+)"\s*\)')
FLOWCHART_DYNAMIC = ("flowDiagram-", "dagre-")
"""The lazily loaded chunks a flowchart takes: its diagram and its default layout. Every other dynamic
import loads another diagram type, another layout, a debugging hook, or KaTeX, which draws ``$$...$$`` in
labels: our labels never hold "$$" (``mermaid.escape_label``), so no diagram of ours asks for it."""


def archive_members(archive: Path = MERMAID_ARCHIVE) -> dict[str, bytes]:
    """The regular files of the Mermaid archive by member name."""
    with tarfile.open(archive, "r:xz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]


def flowchart_closure(modules: dict[str, bytes]) -> set[str]:
    """The module names (archive members) that drawing a flowchart loads, following the ES-module imports
    from the entry module: every static import, and the dynamic imports in ``FLOWCHART_DYNAMIC``."""
    reached: set[str] = set()
    pending = [ENTRY]
    while pending:
        name = posixpath.normpath(pending.pop())
        if name in reached:
            continue
        reached.add(name)
        if name not in modules:
            continue  # reported by the caller as missing
        source = modules[name].decode("utf-8")
        folder = posixpath.dirname(name)
        pending += [posixpath.join(folder, spec) for spec in _STATIC_IMPORT.findall(source)]
        pending += [
            posixpath.join(folder, spec)
            for spec in _DYNAMIC_IMPORT.findall(source)
            if posixpath.basename(spec).startswith(FLOWCHART_DYNAMIC)
        ]
    return reached


def test_shipped_mermaid_is_exactly_what_a_flowchart_loads() -> None:
    members = archive_members()
    needed = flowchart_closure(members)
    shipped = {name for name in members if name.endswith(".mjs")}
    assert sorted(needed - shipped) == [], "chunks a flowchart loads are missing"
    assert sorted(shipped - needed) == [], "chunks no flowchart loads (delete them)"
    assert set(members) - shipped == {"LICENSE"}
    assert members["LICENSE"] == (MERMAID_ARCHIVE.parent / "LICENSE").read_bytes()


def test_flowchart_closure_reaches_the_diagram_and_its_layout() -> None:
    names = {posixpath.basename(name) for name in flowchart_closure(archive_members())}
    for prefix in (ENTRY, *FLOWCHART_DYNAMIC):
        assert any(name.startswith(prefix) for name in names), prefix
    excluded = ("sequenceDiagram-", "cose-bilkent-", "swimlanes-", "katex-")
    assert not any(name.startswith(excluded) for name in names)


def test_mermaid_archive_is_byte_stable(tmp_path: Path) -> None:
    # Re-packing the archive's own files gives the same tar stream: sorted names, fixed modes, owners and
    # mtimes, no directory entries. (The xz layer is compared whole too: same liblzma, same bytes.)
    for name, body in archive_members().items():
        (tmp_path / "dist" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "dist" / name).write_bytes(body)
    shipped = MERMAID_ARCHIVE.read_bytes()
    assert tar_of(tmp_path / "dist") == lzma.decompress(shipped)
    pack(tmp_path / "dist", tmp_path / "again.tar.xz")
    assert (tmp_path / "again.tar.xz").read_bytes() == shipped
    with tarfile.open(MERMAID_ARCHIVE, "r:xz") as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == sorted(m.name for m in members)
    assert {(m.type, m.mode, m.uid, m.gid, m.uname, m.gname, m.mtime) for m in members} == {
        (tarfile.REGTYPE, 0o644, 0, 0, "", "", 0)
    }


# ----------------------------------------------------------------------------------------------- wheel


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package's wheel, built from a copy of pyproject.toml, setup.py, README.md and src/."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    source.mkdir()
    shutil.copy(ROOT / "pyproject.toml", source)
    shutil.copy(ROOT / "setup.py", source)
    shutil.copy(ROOT / "README.md", source)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    out = work / "dist"
    _setup([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "-q", "-w", str(out)])
    (built,) = out.glob("dwarf_workflow-*.whl")
    return built


def test_wheel_is_under_600_kb(wheel: Path) -> None:
    assert wheel.stat().st_size < MAX_WHEEL_BYTES


def test_wheel_ships_the_mermaid_archive_and_its_licence_not_loose_modules(wheel: Path) -> None:
    wheel_zip = zipfile.ZipFile(wheel)
    names = set(wheel_zip.namelist())
    folder = "dwarf/dashboard/mermaid/"
    assert {name for name in names if name.startswith(folder)} == {
        folder + "mermaid.tar.xz",
        folder + "LICENSE",
        folder + "README.md",
    }
    assert wheel_zip.read(folder + "mermaid.tar.xz") == MERMAID_ARCHIVE.read_bytes()
    assert [name for name in names if name.endswith(".mjs")] == ["dwarf/dashboard/static/diagrams.mjs"]


def test_wheel_ships_every_data_file_of_the_package(wheel: Path) -> None:
    # The SQL statements, migrations, templates and static files are read at run time; one left out of the
    # package-data globs breaks an installed dwarf while the tests (run from the checkout) still pass.
    package = ROOT / "src"
    data = {
        path.relative_to(package).as_posix()
        for path in (package / "dwarf").rglob("*")
        if path.is_file() and path.suffix not in {".py", ".pyc"} and "__pycache__" not in path.parts
    }
    assert data - set(zipfile.ZipFile(wheel).namelist()) == set()


def test_core_dependencies_name_no_driver_framework_or_cli_library() -> None:
    core = " ".join(str(requirement) for requirement in _pyproject()["dependencies"])
    for package in (
        "psycopg",
        "typer",
        "rich",
        "starlette",
        "uvicorn",
        "jinja2",
        "httpx",
        "nats",
        "cryptography",
    ):
        assert package not in core, package


def test_all_extra_brings_every_optional_part_and_dev_brings_all() -> None:
    extras: dict[str, list[str]] = _pyproject()["optional-dependencies"]
    assert extras["all"] == ["dwarf-workflow[postgres,cli,web,http,nats,crypto]"]
    assert "dwarf-workflow[all]" in extras["dev"]


# ------------------------------------------------------------------------------------ core install


class CoreInstall:
    """A fresh virtual environment holding the wheel and the core dependencies only."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.python = root / "venv" / "bin" / "python"
        self.scripts = root / "venv" / "bin"

    def run(self, *args: str, code: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``python -c code`` (or ``args``) in the environment, from a directory outside the checkout."""
        command = [str(self.python), "-c", textwrap.dedent(code)] if code is not None else list(args)
        env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "DWARF_"))}
        return subprocess.run(command, cwd=self.root, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def core_install(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CoreInstall]:
    root = tmp_path_factory.mktemp("core")
    install = CoreInstall(root)
    _setup([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")])
    pip = [sys.executable, "-m", "pip", "--python", str(install.python), "install", "-q"]
    _setup([*pip, "--no-deps", str(wheel)])
    _setup([*pip, *_pyproject()["dependencies"]])
    yield install


def _last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def test_core_install_runs_a_flow_on_sqlite(core_install: CoreInstall) -> None:
    result = core_install.run(
        code="""
        import asyncio
        from dwarf import END, Engine, Graph, TestProxy

        graph = Graph("greeting")
        graph.add_task("Greet", "tasks/greet")
        graph.add_transition("Greet", END)
        host = TestProxy()
        host.handle_graph("greeting", graph)
        host.handle_task("tasks/greet", lambda flow: flow.set("text", "hello " + flow.get_str("name")))

        async def main():
            async with Engine(host=host, dsn="sqlite:///flows.db") as engine:
                _, outcome = await engine.run("greeting", {"name": "Ada"})
                print(outcome.status, outcome.state["text"])
                # Schedules' cron expressions need only the core dependencies too.
                nightly = await engine.schedule("nightly", "greeting", cron="0 3 * * *", timezone="UTC")
                print(nightly.timing)

        asyncio.run(main())
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines() == ["completed hello Ada", "cron 0 3 * * * (UTC)"]


def test_core_install_has_no_postgres_driver_web_framework_or_cli_library(core_install: CoreInstall) -> None:
    result = core_install.run(
        code=f"""
        import importlib.util
        print(sorted(name for name in {OPTIONAL_MODULES!r} if importlib.util.find_spec(name) is not None))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_postgres_store_without_the_extra_fails_with_the_hint(core_install: CoreInstall) -> None:
    result = core_install.run(code="from dwarf.store.postgres import PostgresStore")
    assert result.returncode == 1
    assert _last_line(result.stderr) == f"ImportError: {POSTGRES_HINT}"


def test_engine_on_a_postgresql_dsn_without_the_extra_fails_with_the_hint(core_install: CoreInstall) -> None:
    result = core_install.run(
        code="""
        import asyncio
        from dwarf import Engine

        async def main():
            engine = Engine(workers=0, dsn="postgresql://nobody@127.0.0.1:1/none")
            try:
                await engine.startup()
            except ImportError as error:
                print(error)

        asyncio.run(main())
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == POSTGRES_HINT


def test_pgnotify_relay_without_the_extra_fails_with_the_hint(core_install: CoreInstall) -> None:
    result = core_install.run(code="from dwarf.hosts.pgnotify import PgNotifyRelay")
    assert _last_line(result.stderr) == (
        "ImportError: PgNotifyRelay needs the postgres extra: pip install 'dwarf-workflow[postgres]'"
    )


def test_dwarf_command_without_the_cli_extra_prints_the_hint_and_exits_1(core_install: CoreInstall) -> None:
    result = core_install.run(str(core_install.scripts / "dwarf"), "list")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "the dwarf command needs the cli extra: pip install 'dwarf-workflow[cli]'"
    )


def test_cli_app_without_the_cli_extra_fails_with_the_hint(core_install: CoreInstall) -> None:
    result = core_install.run(code="from dwarf.cli import app")
    assert _last_line(result.stderr) == (
        "ImportError: the dwarf command needs the cli extra: pip install 'dwarf-workflow[cli]'"
    )


def test_dashboard_without_the_web_extra_fails_with_the_hint(core_install: CoreInstall) -> None:
    result = core_install.run(code="import dwarf.dashboard")
    assert "pip install 'dwarf-workflow[web]'" in _last_line(result.stderr)


def test_http_host_without_the_http_extra_fails_with_the_hint(core_install: CoreInstall) -> None:
    result = core_install.run(code="from dwarf.hosts.http import HTTPHost; HTTPHost()")
    assert "pip install 'dwarf-workflow[http]'" in _last_line(result.stderr)


def test_nats_relay_without_the_nats_extra_fails_with_the_hint(core_install: CoreInstall) -> None:
    result = core_install.run(code="from dwarf.hosts.nats import NatsRelay; NatsRelay('nats://127.0.0.1:1')")
    assert "pip install 'dwarf-workflow[nats]'" in _last_line(result.stderr)


def test_aes_gcm_codec_without_the_crypto_extra_fails_with_the_hint(core_install: CoreInstall) -> None:
    result = core_install.run(code="from dwarf import AESGCMCodec; AESGCMCodec({'k1': bytes(32)})")
    assert _last_line(result.stderr) == (
        "ImportError: AESGCMCodec (encryption at rest) needs the crypto extra: "
        "pip install 'dwarf-workflow[crypto]'"
    )


def test_core_install_compresses_stored_values(core_install: CoreInstall) -> None:
    result = core_install.run(
        code="""
        from dwarf import ZlibCodec
        print(ZlibCodec(min_bytes=0).encode(b"x" * 100)[0])
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "zlib"


def test_the_wheels_sql_without_comments_holds_the_same_statements() -> None:
    """setup.py strips the SQL files' comment lines in the wheel: every query and migration must load to
    exactly the statements the repository's commented files load to."""
    strip = runpy.run_path(str(ROOT / "setup.py"), run_name="setup_for_tests")["strip_sql_comments"]
    sql_files = sorted((ROOT / "src" / "dwarf" / "store").rglob("*.sql"))
    assert len(sql_files) > 20
    for path in sql_files:
        text = path.read_text(encoding="utf-8")
        stripped = strip(text)
        assert len(stripped) < len(text)
        if "migrations" in path.parts:
            assert _statements(stripped) == _statements(text), path.name
            continue
        named, stripped_named = _parse_query_file(text), _parse_query_file(stripped)
        assert named.keys() == stripped_named.keys(), path.name
        for name, sql in named.items():
            assert _statements(stripped_named[name]) == _statements(sql), (path.name, name)


def _statements(script: str) -> list[str]:
    """The statements the engine runs from ``script``, blank lines aside (they mean nothing to SQL)."""
    return ["\n".join(line for line in s.splitlines() if line.strip()) for s in split_statements(script)]
