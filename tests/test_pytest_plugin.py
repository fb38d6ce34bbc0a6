"""The `dwarf.testing` pytest plugin, as another project meets it: installing dwarf registers the plugin in
every pytest run of the environment, so loading it must never break a test suite that has nothing to do
with dwarf, with or without pytest-asyncio.

Each test runs pytest in a separate process on a small project in a temporary directory. "Without
pytest-asyncio" is made real there: ``-p no:asyncio`` keeps pytest from loading the installed plugin, and
a module on PYTHONPATH named ``pytest_asyncio`` raises ImportError, as a missing package does.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TIMEOUT = 120.0

UNRELATED_TEST = """
def test_arithmetic() -> None:
    assert 1 + 1 == 2
"""

ENGINE_TEST = """
from dwarf import END, Graph, Status, TestProxy


async def test_a_flow_runs(dwarf_engine) -> None:
    graph = Graph("hello")
    graph.add_task("Greet", "greet")
    graph.add_transition_chain("Greet", END)
    host = TestProxy()
    host.handle_graph("hello", graph)
    host.handle_task("greet", lambda flow: flow.set("greeting", "hi"))
    engine = await dwarf_engine(host)
    _, outcome = await engine.run("hello", {}, timeout=30)
    assert outcome.status == Status.COMPLETED
    assert outcome.state["greeting"] == "hi"
"""


def _project(root: Path, test_source: str, *, ini: str = "") -> Path:
    """A project of one test file (and a pytest.ini, so that this repository's settings do not apply)."""
    project = root / "project"
    project.mkdir()
    (project / "pytest.ini").write_text("[pytest]\n" + ini)
    (project / "test_it.py").write_text(textwrap.dedent(test_source))
    return project


def _without_pytest_asyncio(root: Path) -> dict[str, str]:
    """An environment in which ``import pytest_asyncio`` fails like a package that is not installed."""
    shim = root / "shim"
    shim.mkdir()
    (shim / "pytest_asyncio.py").write_text("raise ImportError(\"No module named 'pytest_asyncio'\")\n")
    return _env(PYTHONPATH=str(shim))


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DWARF_", "PYTEST_"))}
    env.pop("PYTHONPATH", None)
    return {**env, **extra}


def _pytest(project: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=project, env=env, capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip


def test_the_plugin_is_registered_by_the_installed_package() -> None:
    from importlib.metadata import entry_points

    assert [ep.value for ep in entry_points(group="pytest11") if ep.name == "dwarf"] == ["dwarf.testing"]


def test_an_unrelated_suite_without_pytest_asyncio_runs_with_dwarf_installed(tmp_path: Path) -> None:
    project = _project(tmp_path, UNRELATED_TEST)
    env = _without_pytest_asyncio(tmp_path)
    result = _pytest(project, env, "-p", "no:asyncio")
    output = result.stdout + result.stderr
    assert "Error while loading plugin" not in output
    assert result.returncode == 0, output
    assert "1 passed" in result.stdout
    # The run really had dwarf's plugin and no pytest-asyncio.
    plugins = _pytest(project, env, "-p", "no:asyncio", "--fixtures")
    assert "dwarf_engine" in plugins.stdout
    assert "event_loop_policy" not in plugins.stdout  # one of pytest-asyncio's fixtures


def test_without_pytest_asyncio_a_test_asking_for_dwarf_engine_is_told_what_to_install(
    tmp_path: Path,
) -> None:
    project = _project(tmp_path, "def test_wants_an_engine(dwarf_engine) -> None:\n    pass\n")
    result = _pytest(project, _without_pytest_asyncio(tmp_path), "-p", "no:asyncio")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 error" in result.stdout
    assert "the dwarf_engine fixture needs pytest-asyncio" in result.stdout
    assert "pip install pytest-asyncio" in result.stdout


@pytest.mark.parametrize("mode", ["auto", "strict"])
def test_with_pytest_asyncio_dwarf_engine_runs_a_flow(tmp_path: Path, mode: str) -> None:
    source = (
        ENGINE_TEST
        if mode == "auto"
        else "import pytest\n\n"
        + ENGINE_TEST.replace(
            "async def test_a_flow_runs", "@pytest.mark.asyncio\nasync def test_a_flow_runs"
        )
    )
    ini = f"asyncio_mode = {mode}\nasyncio_default_fixture_loop_scope = function\n"
    project = _project(tmp_path, source, ini=ini)
    result = _pytest(project, _env())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
