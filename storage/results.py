"""How many rows an UPDATE, DELETE or INSERT ... SELECT touched.

``AsyncSession.execute`` is typed as returning a ``Result``; for a statement that returns no
rows it is a ``CursorResult``, the class that carries the DB-API's ``rowcount``. The check
below is that narrowing, made once for every caller.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import CursorResult, Executable
from sqlalchemy.ext.asyncio import AsyncSession


async def affected_rows(
    session: AsyncSession, statement: Executable, params: Mapping[str, Any] | None = None
) -> int:
    """Run a statement without RETURNING; the number of rows it matched (-1 when the
    driver cannot tell, as in PEP 249)."""
    result = await session.execute(statement, params)
    if not isinstance(result, CursorResult):
        raise TypeError(f"{type(statement).__name__} gave no row count: it returns rows")
    return result.rowcount
