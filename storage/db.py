"""Engine and unit-of-work factories: one engine per process, one session per unit of work.

SQLite has a single writer. A transaction that reads and then writes under SQLite's default
deferred BEGIN fails at once with "database is locked" when another writer got there first,
whatever the busy timeout. Write units of work therefore open with BEGIN IMMEDIATE (they queue
on the busy timeout instead), read units of work with a plain BEGIN, and WAL lets readers run
while a writer works. PostgreSQL needs none of this: its row locks and READ COMMITTED re-checks
make the conditional updates of the services safe.

SQLite is reached through SQLAlchemy's stock aiosqlite dialect, configured with public
parameters and events only: no driver adapter, no private attribute of SQLAlchemy or aiosqlite
(see _install_sqlite_behaviour for the one saving kept, and BENCHMARKS.md for what the adapter
this replaced used to save).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import PoolResetState

SQLITE_BUSY_TIMEOUT_S = 30


def is_sqlite(url: str | URL) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def sqlite_file(url: str | URL) -> Path | None:
    """The file an SQLite URL opens, as SQLite reads it (relative to the working folder, no
    `~`); None when no file keeps the database (no path, `:memory:`, a `mode=memory` URI):
    it is gone with its connections."""
    parsed = make_url(url)
    database = parsed.database or ""
    if parsed.query.get("uri") == "true":  # a `file:` URI, which SQLite reads itself
        uri = urlsplit(database)
        in_memory = parsed.query.get("mode") == "memory" or "mode=memory" in uri.query
        database = "" if in_memory else unquote(uri.path)
    return None if database in ("", ":memory:") else Path(database)


def ensure_sqlite_directory(url: str | URL) -> None:
    """Create the folder of an SQLite file on first run, so the default works on a fresh clone
    (`run`, `migrate` and `import` first refuse any other missing folder: check_database_url)."""
    path = sqlite_file(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)


def _transaction_open(dbapi_connection: Any) -> bool:
    """sqlite3's own flag, read through aiosqlite's public property without a trip to its
    thread; False once the driver's connection is closed (nothing left to roll back)."""
    try:
        return bool(dbapi_connection.driver_connection.in_transaction)
    except ValueError:  # aiosqlite: "no active connection"
        return False


def _install_sqlite_behaviour(engine: AsyncEngine) -> None:
    """Pragmas, explicit BEGINs, and a pool reset that skips the no-op rollback.

    Every call to sqlite3 is a hand-over to aiosqlite's thread and back (a queue put, a thread
    wake-up, a loop wake-up), which costs more CPU than most of the bot's statements. The
    session already ends each unit of work with its COMMIT or ROLLBACK; the pool would then
    roll back again every connection returned to it (`reset_on_return`, off for SQLite: see
    Database). Here the pool's reset rolls back only a transaction still open, as sqlite3 says:
    one hand-over less per unit of work, and the same safety for a unit that was cut short.
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "reset")
    def _on_reset(dbapi_connection: Any, _record: Any, state: PoolResetState) -> None:
        # Not when the connection is being garbage-collected: no event loop to await on.
        if state.asyncio_safe and _transaction_open(dbapi_connection):
            dbapi_connection.rollback()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        if mode is not None:  # None: a single statement, atomic on its own (Database.snapshot)
            conn.exec_driver_sql(f"BEGIN {mode}")


class Database:
    """Owns the engine and hands out read and write units of work.

    Statement parameters hold personal data (ids, names, free text): they are kept out of
    error messages, and so out of logs.
    """

    def __init__(self, url: str | URL, *, echo: bool = False, pool_size: int = 10) -> None:
        self.url = make_url(url)
        self.is_sqlite = is_sqlite(self.url)
        if self.is_sqlite:
            ensure_sqlite_directory(self.url)
            self.engine = create_async_engine(
                self.url,
                echo=echo,
                # isolation_level=None: sqlite3 never begins a transaction of its own; SQLAlchemy
                # decides when they begin (see "begin" in _install_sqlite_behaviour).
                connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "isolation_level": None},
                hide_parameters=True,
                pool_reset_on_return=None,  # reset by _install_sqlite_behaviour's "reset"
            )
            _install_sqlite_behaviour(self.engine)
            write_engine = self.engine.execution_options(sqlite_begin="IMMEDIATE")
            snapshot_engine = self.engine.execution_options(sqlite_begin=None)
        else:
            self.engine = create_async_engine(
                self.url,
                echo=echo,
                pool_size=pool_size,
                max_overflow=pool_size,
                pool_pre_ping=True,
                hide_parameters=True,
            )
            write_engine = self.engine
            snapshot_engine = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        # SQLite's busy handler polls with growing sleeps; queueing this process's writers on
        # an asyncio lock instead hands the write lock over at once (other processes still
        # wait on the busy timeout).
        self._writer_turn = asyncio.Lock() if self.is_sqlite else None
        self._read_sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._write_sessions = async_sessionmaker(write_engine, expire_on_commit=False)
        self._snapshot_sessions = async_sessionmaker(snapshot_engine, expire_on_commit=False)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A read-only unit of work; never commits."""
        async with self._read_sessions() as session:
            yield session  # closing the session rolls the implicit transaction back

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[AsyncSession]:
        """A read of ONE statement, outside any transaction: a single statement is atomic and
        consistent on its own, so the BEGIN and ROLLBACK of a read unit of work would be two
        more round trips for nothing. For the reads made on almost every tap (the person's
        profile, a workshop card); anything reading twice must use `read`."""
        async with self._snapshot_sessions() as session:
            yield session

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """A write unit of work: commits when the block ends normally, rolls back otherwise."""
        if self._writer_turn is None:
            async with self._write_sessions() as session, session.begin():
                yield session
            return
        async with self._writer_turn, self._write_sessions() as session, session.begin():
            yield session

    async def dispose(self) -> None:
        await self.engine.dispose()
