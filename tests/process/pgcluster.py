"""A throwaway PostgreSQL server for tests that restart the server or pause its backends.

Such tests must not touch the PostgreSQL that other developers' tests share, so ``ThrowawayPostgres``
runs ``initdb`` into a fresh directory and starts a private server on a free port (fsync on, trust auth,
listening on 127.0.0.1 only). Running as root (as the tests do here and in CI), the server runs as the
``postgres`` OS user, since PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg

_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
COMMAND_TIMEOUT = 60.0


def postgres_bin_dir() -> Path | None:
    """The newest installed server binaries directory, or None when initdb/pg_ctl are missing."""
    for directory in _BIN_DIRS:
        if (directory / "initdb").exists() and (directory / "pg_ctl").exists():
            return directory
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb and shutil.which("pg_ctl") else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _children_of(pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


class ThrowawayPostgres:
    """A private PostgreSQL server in a temporary directory, removed by ``stop``."""

    def __init__(self, bin_dir: Path) -> None:
        self._bin = bin_dir
        self.port = _free_port()
        self._base = Path(tempfile.mkdtemp(prefix="dwarf-pg-"))
        self._data = self._base / "data"
        self._as_postgres: list[str] = []
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self._base, owner.pw_uid, owner.pw_gid)
            self._as_postgres = ["runuser", "-u", "postgres", "--"]

    def _run(self, *command: str) -> None:
        result = subprocess.run(
            [*self._as_postgres, *command],
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{command[0]} failed: {result.stdout}{result.stderr}\n{self.server_log()}")

    def start(self) -> None:
        self._run(
            str(self._bin / "initdb"),
            "-D",
            str(self._data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",  # initdb's own final flush only; the server below runs with fsync on
        )
        with open(self._data / "postgresql.conf", "a") as conf:
            conf.write(
                f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self._base}'\nfsync = on\nmax_connections = 200\n"
            )
        self._pg_ctl("start")

    def _pg_ctl(self, action: str, *options: str) -> None:
        log = str(self._base / "server.log")
        self._run(
            str(self._bin / "pg_ctl"), action, "-D", str(self._data), "-w", "-t", "30", "-l", log, *options
        )

    def restart(self, mode: str = "fast") -> None:
        """Restart the server: ``fast`` disconnects every client; ``immediate`` is a crash and recovery."""
        self._pg_ctl("restart", "-m", mode)

    def halt(self) -> None:
        """Stop the server as a crash would (``immediate``), keeping its files: ``start_again`` revives it."""
        self._pg_ctl("stop", "-m", "immediate")

    def start_again(self) -> None:
        """Start a server stopped by ``halt`` (crash recovery runs first)."""
        self._pg_ctl("start")

    def server_log(self) -> str:
        path = self._base / "server.log"
        return path.read_text()[-3000:] if path.exists() else ""

    def postmaster_pid(self) -> int | None:
        try:
            return int((self._data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    @property
    def admin_dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def create_database(self, name: str) -> str:
        """Create an empty database; return its DSN."""
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"'.encode())
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def backend_pids(self, application_name: str) -> list[int]:
        """The server processes serving connections of that application name."""
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (application_name,)
            ).fetchall()
        return [int(row[0]) for row in rows]

    def _signal_backend(self, pid: int, signum: signal.Signals) -> None:
        postmaster = self.postmaster_pid()
        # Only ever a process of this server: a stale pid must not hit anything else on the machine.
        assert postmaster is not None and pid in _children_of(postmaster), f"{pid} is not a backend here"
        os.kill(pid, signum)

    def pause_process(self, pid: int) -> None:
        """SIGSTOP one backend of this server: its client's queries wait, unanswered, until resumed."""
        self._signal_backend(pid, signal.SIGSTOP)

    def resume_process(self, pid: int) -> None:
        """SIGCONT a backend paused by ``pause_process`` (harmless when it is not paused)."""
        with contextlib.suppress(ProcessLookupError, AssertionError):
            self._signal_backend(pid, signal.SIGCONT)

    def stop(self) -> None:
        """Stop the server whatever state its processes are in (even paused), and delete its files."""
        postmaster = self.postmaster_pid()
        try:
            if postmaster is not None:
                # A paused backend would keep the postmaster waiting for it forever.
                for pid in _children_of(postmaster):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGCONT)
                try:
                    self._pg_ctl("stop", "-m", "immediate")
                except (RuntimeError, subprocess.TimeoutExpired):
                    for pid in [postmaster, *_children_of(postmaster)]:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
        finally:
            shutil.rmtree(self._base, ignore_errors=True)


@contextlib.contextmanager
def throwaway_postgres_server(bin_dir: Path) -> Iterator[ThrowawayPostgres]:
    server = ThrowawayPostgres(bin_dir)
    try:
        server.start()
        yield server
    finally:
        server.stop()
