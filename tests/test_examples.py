"""The runnable programs under examples/ work as ``make demo`` runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_order_checkout_ships_the_order_and_prints_its_history(tmp_path: Path) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), str(ROOT / "src"), env.get("PYTHONPATH")]))
    env.pop("DWARF_TEST_DSN", None)
    # A fresh working directory, so that the example's default SQLite file (dwarf.db) lands there.
    result = subprocess.run(
        [sys.executable, "-m", "examples.order_checkout"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert "shipped" in result.stdout
    assert "flowchart" in result.stdout
    assert (tmp_path / "dwarf.db").exists()
