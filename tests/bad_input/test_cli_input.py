"""Bad input to the `musicbot` command line: one clear line on stderr, exit 2, nothing
changed. Subprocesses are slow, so a handful each (more `generate` cases in
tests/app/test_cli.py)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.app.test_cli import musicbot

CLI_CASES = [
    (("admin", "grant", "42", "ten"), "Invalid amount", "1000000000"),
    (("admin", "take", "42", "-5"), "Invalid amount", "1000000000"),
    (("admin", "set", "42", "1e99"), "Invalid amount", "1000000000"),
    (("admin", "grant", "<@1>", "5"), "Invalid member", "at most 64"),
    (("admin", "grant", "42"), "usage: musicbot admin grant", "AMOUNT"),
    (("generate", "drone", "--duration", "0"), "Invalid duration", "between 1 and 30"),
    (("generate", "drone", "--seed", "-1"), "Invalid seed", "4294967295"),
    (("generate", "", "--duration", "2"), "Invalid prompt", "empty"),
    (("generate", "drone", "--genre", "x" * 41), "Invalid genre", "40"),
]


def _ledger(folder: Path) -> list[tuple]:
    path = folder / "musicbot.sqlite3"
    if not path.exists():
        return []
    with sqlite3.connect(path) as conn:
        return list(conn.execute("SELECT * FROM ledger ORDER BY id"))


@pytest.mark.parametrize(("args", "field", "hint"), CLI_CASES)
def test_cli_refuses_in_one_line_and_changes_nothing(tmp_path: Path, args: tuple[str, ...],
                                                     field: str, hint: str) -> None:
    where = ("--platform", "discord", "--community", "1234") if args[0] == "admin" else ()
    if args[0] == "admin":
        assert musicbot("admin", "grant", "42", "1", *where, cwd=tmp_path).returncode == 0
    before = _ledger(tmp_path)
    done = musicbot(*args, *where, "--model", "debug", cwd=tmp_path) if args[0] == "generate" \
        else musicbot(*args, *where, cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert field in done.stderr and hint in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert _ledger(tmp_path) == before
