"""SQLAlchemy's aiosqlite adapter, with each statement in one trip to the connection's thread.

aiosqlite runs every sqlite3 call on a thread of its own, and SQLAlchemy's adapter makes four
calls per statement (open a cursor, execute, fetch all, close): four hand-overs between the
event loop and that thread, each a queue put, a thread wake-up, a future and a loop wake-up.
The journey benchmark (bench/journey.py, BENCHMARKS.md) found these hand-overs to be a large
part of the bot's CPU per update. Here a statement is one trip: the thread opens the cursor,
executes, fetches every row and closes, and hands back the rows with the description, row count
and last row id. Transactions, locking and isolation are unchanged (the same sqlite3 connection,
the same thread, the same statements in the same order).

Server-side cursors (results streamed with ``stream``/``yield_per``, as the exports do) keep
aiosqlite's own cursor: they fetch in chunks by design.
"""

from __future__ import annotations

import collections
import sqlite3
from typing import Any

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.util import EMPTY_DICT

_Outcome = tuple[Any, int, int | None, list[Any] | None]


def _run_statement(
    connection: sqlite3.Connection, operation: str, parameters: Any, many: bool
) -> _Outcome:
    """On the connection's thread: the whole life of one cursor."""
    cursor = connection.cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
        elif parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else None
        return description, cursor.rowcount, cursor.lastrowid, rows
    finally:
        cursor.close()


class OneTripCursor(AsyncAdapt_aiosqlite_cursor):
    """A buffered cursor that exists on the event loop's side only: nothing to open or close
    on the connection's thread."""

    __slots__ = ("_description", "_lastrowid", "_rowcount")

    def __init__(self, adapt_connection: AsyncAdapt_aiosqlite_connection) -> None:
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = None  # type: ignore[assignment]
        self._soft_closed_memoized = EMPTY_DICT
        self._rows = collections.deque()
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: int | None = None

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> int:
        return self._lastrowid  # type: ignore[return-value]

    @property
    def arraysize(self) -> int:
        return 1

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        """Rows are always fetched all at once; nothing to size."""

    async def _async_soft_close(self) -> None:
        """Nothing is open on the connection's thread once a statement has run."""

    def close(self) -> None:
        self._rows.clear()

    async def _execute_async(self, operation: Any, parameters: Any) -> None:
        await self._run(operation, parameters, many=False)

    async def _executemany_async(self, operation: Any, seq_of_parameters: Any) -> None:
        await self._run(operation, seq_of_parameters, many=True)

    async def _run(self, operation: Any, parameters: Any, *, many: bool) -> None:
        async with self._adapt_connection._execute_mutex:
            connection = self._connection
            outcome = await connection._execute(
                _run_statement, connection._conn, operation, parameters, many
            )
        self._description, self._rowcount, self._lastrowid, rows = outcome
        self._rows = collections.deque(rows) if rows is not None else collections.deque()

    def nextset(self) -> None:
        """sqlite3 has a single result set per statement."""


class OneTripConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ()
    _cursor_cls = OneTripCursor

    def _in_transaction(self) -> bool:
        """sqlite3's own flag, read without a trip: the connection is idle when this is asked."""
        return self._connection._connection is not None and self._connection._conn.in_transaction

    def rollback(self) -> None:
        """Only when a transaction is open: the pool rolls back every connection returned to
        it, after the unit of work has already ended its transaction, and a read of one
        statement (Database.snapshot) never opens one. The connections are in sqlite3's
        autocommit mode (transactions start with an explicit BEGIN), so nothing is skipped
        that would roll anything back."""
        if self._in_transaction():
            super().rollback()

    def commit(self) -> None:
        if self._in_transaction():
            super().commit()


class OneTripDBAPI(AsyncAdapt_aiosqlite_dbapi):
    """The DB-API module given to ``create_async_engine(module=...)`` for SQLite URLs."""

    def __init__(self) -> None:
        super().__init__(aiosqlite, sqlite3)

    def connect(self, *arg: Any, **kw: Any) -> OneTripConnection:
        adapted = super().connect(*arg, **kw)
        return OneTripConnection(self, adapted._connection)
