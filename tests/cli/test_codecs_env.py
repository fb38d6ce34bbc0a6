"""The `dwarf` command on a database whose values are encoded (docs/codecs.md#where-to-set-them):
DWARF_CODEC names the application's codecs, without which the commands that read states say which
codec is missing."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from dwarf import AESGCMCodec, Engine, ZlibCodec
from tests.cli.conftest import invoke
from tests.engine.graphs import WAIT, chain, proxy_with, setter

KEY = bytes(range(32))


def codecs() -> list[object]:
    """What DWARF_CODEC names in these tests (a function of no arguments returning the codecs)."""
    return [ZlibCodec(), AESGCMCodec({"k1": KEY})]


def _encoded_database(path: Path) -> str:
    async def fill() -> str:
        host = proxy_with("note", chain("Note", "W"), W=setter(note="private-note"))
        async with Engine(host=host, dsn=f"sqlite:///{path}", codec=codecs()) as engine:
            key, _ = await engine.run("note", {"who": "ada"}, timeout=WAIT)
            return key

    return asyncio.run(fill())


def test_commands_read_encoded_values_with_the_codecs_dwarf_codec_names(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    key = _encoded_database(path)
    dsn = f"sqlite:///{path}"
    env = {"DWARF_CODEC": "tests.cli.test_codecs_env:codecs"}
    shown = invoke("show", key, "--json", "--dsn", dsn, env=env)
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["state"] == {"who": "ada", "note": "private-note"}
    assert invoke("history", key, "--dsn", dsn, env=env).exit_code == 0

    blind = invoke("show", key, "--dsn", dsn)
    assert blind.exit_code == 1
    assert "zlib+aesgcm.k1" in blind.stderr or "aesgcm.k1" in blind.stderr
    assert "private-note" not in blind.output
    assert invoke("list", "--dsn", dsn).exit_code == 0  # the listing reads no encoded column


def test_a_bad_dwarf_codec_reference_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    key = _encoded_database(path)
    for reference, message in (
        ("nocolon", "is not MODULE:ATTR"),
        ("no_such_module_x:codecs", "cannot import"),
        ("tests.cli.test_codecs_env:nothing", "has no attribute"),
        ("tests.cli.test_codecs_env:KEY", "is not a codec"),
    ):
        result = invoke("show", key, "--dsn", f"sqlite:///{path}", env={"DWARF_CODEC": reference})
        assert result.exit_code == 1, reference
        assert message in result.stderr, (reference, result.stderr)
