"""`capacity-bot backup`: a consistent SQLite copy taken while the database is being written,
that opens and holds the rows; clear one-line refusals otherwise."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.runtime.backup import BackupError, backup, default_name
from tests.test_cli import _cli

NOW = datetime(2026, 3, 14, 9, 26, 53, tzinfo=UTC)


def _database(tmp_path: Path, rows: int) -> Path:
    """An SQLite file in WAL mode, as the bot keeps it."""
    path = tmp_path / "bot.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE residents (id INTEGER PRIMARY KEY, name TEXT)")
        conn.executemany(
            "INSERT INTO residents (name) VALUES (?)", [(f"r{n}",) for n in range(rows)]
        )
    return path


def _count(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT count(*) FROM residents").fetchone()[0]


def test_a_backup_taken_during_writes_is_a_consistent_single_file(tmp_path: Path):
    source = _database(tmp_path, 2_000)
    writing = threading.Event()
    done = threading.Event()

    def writer() -> None:
        # Another connection keeps writing, one transaction of 100 rows at a time, as the bot would.
        with sqlite3.connect(source, timeout=10) as conn:
            while not done.is_set():
                with conn:
                    conn.executemany(
                        "INSERT INTO residents (name) VALUES (?)", [("w",) for _ in range(100)]
                    )
                writing.set()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        writing.wait(5)
        target = backup(f"sqlite+aiosqlite:///{source}", tmp_path, now=NOW)
    finally:
        done.set()
        thread.join()
    assert (
        target == tmp_path / default_name(NOW) == tmp_path / "capacity-bot-20260314T092653Z.sqlite3"
    )
    # Restore check: the copy opens on its own (no -wal beside it), is intact, and holds
    # whole transactions only (every writer transaction is 100 rows).
    assert not Path(f"{target}-wal").exists()
    with sqlite3.connect(target) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    copied = _count(target)
    assert copied >= 2_000 and (copied - 2_000) % 100 == 0
    assert not list(tmp_path.glob(".*.partial"))


def test_bad_output_paths_are_refused_and_nothing_is_left(tmp_path: Path):
    source = _database(tmp_path, 3)
    url = f"sqlite+aiosqlite:///{source}"
    with pytest.raises(BackupError, match="no folder"):
        backup(url, tmp_path / "missing" / "b.sqlite3")
    existing = tmp_path / "kept.sqlite3"
    existing.write_bytes(b"precious")
    with pytest.raises(BackupError, match="already exists"):
        backup(url, existing)
    assert existing.read_bytes() == b"precious"
    with pytest.raises(BackupError, match="no database file"):
        backup(f"sqlite+aiosqlite:///{tmp_path}/none.sqlite3", tmp_path / "x.sqlite3")
    assert not (tmp_path / "x.sqlite3").exists() and not (tmp_path / "none.sqlite3").exists()


async def test_the_command_prints_the_backup_path_and_restores(tmp_path: Path):
    _database(tmp_path, 12)  # the file of the CLI tests' DATABASE_URL
    code, out, err = await _cli(tmp_path, "backup")
    assert code == 0, err
    printed = Path(out.strip())
    assert printed.parent == Path("backups") and printed.name.startswith("capacity-bot-")
    assert _count(tmp_path / printed) == 12


async def test_the_command_refuses_a_bad_path_or_postgresql_in_one_line(tmp_path: Path):
    _database(tmp_path, 1)
    code, out, err = await _cli(tmp_path, "backup", "--output", "/nonexistent/dir/b.sqlite3")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "--output" in err and "Traceback" not in err
    code, _, err = await _cli(
        tmp_path, "backup", DATABASE_URL="postgresql+asyncpg://capacity:pw@db/capacity"
    )
    assert code == 2 and err.count("\n") == 1 and "pg_dump" in err and "README" in err
    assert "pw" not in err


def test_a_folder_given_with_a_final_slash_must_exist_and_no_file_takes_its_name(tmp_path: Path):
    """`--output /srv/backups/` with the folder missing (a backup disk not mounted) made a
    file named `backups`, and every later night failed on it."""
    url = f"sqlite+aiosqlite:///{_database(tmp_path, 3)}"
    missing = tmp_path / "backups"
    with pytest.raises(BackupError, match=rf"^--output: there is no folder {missing}/; "):
        backup(url, f"{missing}/", now=NOW)
    assert not missing.exists()
    missing.mkdir()
    assert backup(url, f"{missing}/", now=NOW) == missing / default_name(NOW)


def test_backups_made_in_the_same_second_get_their_own_files(tmp_path: Path):
    url = f"sqlite+aiosqlite:///{_database(tmp_path, 3)}"
    folder = tmp_path / "backups"
    folder.mkdir()
    first, second, third = (backup(url, folder, now=NOW) for _ in range(3))
    assert [first.name, second.name, third.name] == [
        "capacity-bot-20260314T092653Z.sqlite3",
        "capacity-bot-20260314T092653Z-2.sqlite3",
        "capacity-bot-20260314T092653Z-3.sqlite3",
    ]
    assert all(_count(path) == 3 for path in (first, second, third))


def _readme_cron_line() -> str:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    [block] = re.findall(r"```cron\n(.*?)```", readme, flags=re.DOTALL)
    [line] = [line for line in block.splitlines() if line and not line.startswith("#")]
    return line


def test_the_readme_s_cron_line_makes_a_new_dated_backup_each_night(tmp_path: Path):
    """The README's crontab line, run twice as cron would (sh -c, from no particular folder),
    with this machine's paths for the bot's folder, its command and the backup folder."""
    minute, hour, *_, command = _readme_cron_line().split(maxsplit=5)
    assert minute.isdigit() and hour.isdigit()
    bot_folder, backups = tmp_path / "capacity-bot", tmp_path / "backups"
    bot_folder.mkdir()
    backups.mkdir()
    database = _database(bot_folder, 5)
    (bot_folder / ".env").write_text(f"DATABASE_URL=sqlite:///{database}\n")
    command = (
        command.replace("/srv/capacity-bot", str(bot_folder))
        .replace(".venv/bin/capacity-bot", f"{sys.executable} -m bot.runtime.cli")
        .replace("/srv/backups/", f"{backups}/")
    )
    # Cron's environment holds none of the bot's settings: they come from its .env.
    env = {k: v for k, v in os.environ.items() if k not in ("BOT_TOKEN", "DATABASE_URL")}
    for _ in range(2):
        night = subprocess.run(
            ["sh", "-c", command], cwd="/", env=env, capture_output=True, text=True, timeout=60
        )
        assert night.returncode == 0 and night.stdout == night.stderr == "", night
    made = sorted(backups.iterdir())
    assert len(made) == 2 and all(
        re.fullmatch(r"capacity-bot-\d{8}T\d{6}Z(-2)?\.sqlite3", path.name) for path in made
    )
    assert all(_count(path) == 5 for path in made)


async def test_the_command_refuses_a_missing_folder_with_a_final_slash(tmp_path: Path):
    _database(tmp_path, 1)
    code, out, err = await _cli(tmp_path, "backup", "--output", "nightly/")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "--output: there is no folder nightly/" in err
    assert not (tmp_path / "nightly").exists()
