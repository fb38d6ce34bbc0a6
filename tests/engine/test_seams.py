"""The engine's parts talk through public seams (docs/design.md#the-engines-parts).

``Engine`` keeps configuration, lifecycle and thin public methods; what the scheduler, the executor, the
wedge sweep and the operations share is the ``Runtime`` built at startup. These tests keep it that way:
no module imports a private name from ``engine.py``, no collaborator imports the ``Engine`` at run time,
nothing outside ``engine.py`` reaches into an engine's private attributes, and ``engine.py`` stays small.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENGINE_MODULE = ROOT / "src" / "dwarf" / "engine" / "engine.py"
THIS_FILE = Path(__file__).resolve()
# ``engine._x``, ``first_engine._x``, ``Engine()._x``, ``self._engine._x``: an engine's private attribute.
PRIVATE_ENGINE_ATTRIBUTE = re.compile(r"(?:\b\w*engine\w*|\bEngine\([^)]*\))\._[a-z]")
MAX_ENGINE_LINES = 450


def _python_files() -> Iterator[Path]:
    for directory in ("src", "tests", "bench", "examples"):
        for path in sorted((ROOT / directory).rglob("*.py")):
            if "__pycache__" not in path.parts and path.resolve() != THIS_FILE:
                yield path


def _imports_from(tree: ast.AST, module: str) -> Iterator[tuple[ast.ImportFrom, bool]]:
    """The ``from module import ...`` statements of ``tree``, each with whether it is under TYPE_CHECKING."""
    guarded: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            guarded.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == module:
            yield node, id(node) in guarded


def test_no_module_imports_a_private_name_from_engine_py() -> None:
    offenders = []
    for path in _python_files():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node, _ in _imports_from(tree, "dwarf.engine.engine"):
            private = [alias.name for alias in node.names if alias.name.startswith("_")]
            if private:
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {', '.join(private)}")
    assert offenders == []


def test_the_engines_collaborators_never_import_the_engine_at_run_time() -> None:
    """Only type annotations may name ``Engine`` in the engine package (the host hooks receive it, and the
    runtime names its owner as the sender of peer signals); nothing there calls into it."""
    offenders = []
    for path in sorted(ENGINE_MODULE.parent.glob("*.py")):
        if path.name in ("engine.py", "__init__.py"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node, under_type_checking in _imports_from(tree, "dwarf.engine.engine"):
            if not under_type_checking:
                offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == []


def test_nothing_outside_engine_py_touches_an_engines_private_attributes() -> None:
    offenders = []
    for path in _python_files():
        if path == ENGINE_MODULE:
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if PRIVATE_ENGINE_ATTRIBUTE.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == []


def _engine_private_names() -> set[str]:
    """The private attributes and methods ``Engine`` has (every ``self._x`` in its class body)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(ENGINE_MODULE.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ClassDef) and node.name == "Engine":
            for sub in ast.walk(node):
                if (
                    isinstance(sub, ast.Attribute)
                    and isinstance(sub.value, ast.Name)
                    and sub.value.id == "self"
                    and sub.attr.startswith("_")
                    and not sub.attr.startswith("__")
                ):
                    names.add(sub.attr)
    return names


def test_nothing_outside_engine_py_uses_a_private_name_of_the_engine_whatever_the_variable() -> None:
    """Catches ``plain._config`` too, where the variable's name does not say it holds an engine."""
    names = _engine_private_names()
    assert {"_config", "_runtime", "_scheduler"} <= names
    alternatives = "|".join(sorted(names))
    private = re.compile(rf"(?<!\bself)\.({alternatives})\b")
    offenders = []
    for path in _python_files():
        if path == ENGINE_MODULE:
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if private.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == []


def test_the_private_attribute_check_recognises_what_it_must() -> None:
    for line in (
        "engine._stores[0]",
        "await first_engine._crash()",
        "Engine()._workers",
        "self._engine._ring(1)",
    ):
        assert PRIVATE_ENGINE_ATTRIBUTE.search(line), line
    for line in ("engine.runtime.stores", "engine.__class__", "self._engine.create()", "engine.settings"):
        assert not PRIVATE_ENGINE_ATTRIBUTE.search(line), line


def test_engine_py_keeps_to_configuration_lifecycle_and_thin_methods() -> None:
    lines = len(ENGINE_MODULE.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_ENGINE_LINES, f"engine.py has {lines} lines; move operations out of it"
