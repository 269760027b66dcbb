"""`capacity-bot backup`: an online, consistent copy of the SQLite database.

SQLite's backup API copies the database as one snapshot, safe while the bot runs (in WAL mode
readers never block the bot's writes). The copy is written beside its final name and renamed
only once complete and checked, so a file with the final name is always a whole backup. The
copy is a single file (journal mode DELETE), ready to be restored by putting it in place of
the database while the bot is stopped.

PostgreSQL is backed up with its own tools (pg_dump / pg_restore, see the README).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.engine import make_url

from storage.db import sqlite_file

DEFAULT_FOLDER = Path("backups")


class BackupError(Exception):
    """The backup could not be made; the message is one line for the operator."""


def default_name(now: datetime, number: int = 1) -> str:
    """The dated name of a backup; the second one made in the same second ends in -2."""
    suffix = "" if number == 1 else f"-{number}"
    return f"capacity-bot-{now.astimezone(UTC):%Y%m%dT%H%M%SZ}{suffix}.sqlite3"


def _dated(folder: Path, now: datetime) -> Path:
    """A new dated file in the folder: a backup never replaces another."""
    number = 1
    while (folder / default_name(now, number)).exists():
        number += 1
    return folder / default_name(now, number)


def _target(output: str | Path | None, now: datetime) -> Path:
    if output is None:
        DEFAULT_FOLDER.mkdir(parents=True, exist_ok=True)
        return _dated(DEFAULT_FOLDER, now)
    text = os.fspath(output)
    path = Path(text)
    if path.is_dir():
        return _dated(path, now)
    if text.endswith(("/", os.sep)):
        # Not created: a missing folder is a typo or a backup disk not mounted, where a new
        # empty folder would hide the copies from whoever looks for them.
        raise BackupError(
            f"--output: there is no folder {text}; expected an existing folder "
            "(create it once with mkdir)"
        )
    if path.exists():
        raise BackupError(
            f"--output: {path} already exists; expected a new file name or a folder "
            "(a backup never overwrites a file)"
        )
    if not path.parent.is_dir():
        raise BackupError(
            f"--output: there is no folder {path.parent}; expected an existing folder"
        )
    return path


def _copy(source: Path, target: Path) -> None:
    partial = target.with_name(f".{target.name}.partial")
    try:
        # Read-only: a missing file is an error rather than a new empty database.
        src = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True)
        try:
            dst = sqlite3.connect(partial)
            try:
                src.backup(dst)
                dst.execute("PRAGMA journal_mode=DELETE")
                (verdict,) = dst.execute("PRAGMA quick_check").fetchone()
                if verdict != "ok":
                    raise BackupError(f"the copy failed its check ({verdict}); nothing was kept")
            finally:
                dst.close()
        finally:
            src.close()
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


async def backup_sqlite(source: Path, target: Path) -> None:
    """The copy runs in a worker thread: sqlite3 blocks, the event loop must not."""
    await asyncio.to_thread(_copy, source, target)


def backup(database_url: str, output: str | Path | None, *, now: datetime | None = None) -> Path:
    """Back up the database of DATABASE_URL; returns the backup file. `output` is --output as
    typed: a folder (existing, or named with a final /) gets a dated file, else a new file."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite":
        raise BackupError(
            "DATABASE_URL is a PostgreSQL database: back it up with pg_dump "
            "(pg_dump -Fc -f capacity.dump DATABASE), see the README, Running in production"
        )
    source = sqlite_file(url)
    if source is None:
        raise BackupError("DATABASE_URL: an in-memory database cannot be backed up")
    if not source.is_file():
        raise BackupError(
            f"DATABASE_URL: there is no database file at {source}; nothing to back up"
        )
    target = _target(output, now or datetime.now(UTC))
    try:
        asyncio.run(backup_sqlite(source, target))
    except (OSError, sqlite3.Error) as exc:
        raise BackupError(f"the backup of {source} to {target} failed ({exc})") from None
    return target
