"""Log pseudonyms: keyed with the bot token, so logs cannot be brute-forced back to ids.
Database errors: the values they quote never reach a log line, in either format."""

from __future__ import annotations

import hashlib
import json
import logging
import traceback
from collections.abc import Iterator

import pytest
from sqlalchemy import insert, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from bot.logs import configure_logging, log_pseudonym
from storage.db import Database
from storage.models import Resident
from tests.broadcast_helpers import seed_residents
from tests.factories import new_clock

TOKEN = "123456:TEST-token-for-the-log-pseudonyms"
PERSON = 987_654_321
NAME = "Alice Martin"


def test_log_pseudonyms_are_stable_for_one_secret_and_differ_with_another():
    one = log_pseudonym(424242, TOKEN)
    assert one == log_pseudonym(424242, TOKEN)  # stable: refusals of one person line up
    assert len(one) == 12 and int(one, 16) >= 0
    assert one != log_pseudonym(424243, TOKEN)
    assert one != log_pseudonym(424242, "654321:another-token")  # keyed
    # Not the old unkeyed digest, which anyone could recompute for every Telegram id.
    assert one != hashlib.sha256(b"424242").hexdigest()[:12]


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


async def database_errors(db: Database) -> list[Exception]:
    """Real errors of PostgreSQL and asyncpg that quote a row's values."""
    clock = new_clock()
    await seed_residents(db, clock, [PERSON])
    errors: list[Exception] = []
    with pytest.raises(IntegrityError) as duplicate:  # DETAIL: Key (telegram_id)=(...)
        await seed_residents(db, clock, [PERSON])
    errors.append(duplicate.value)
    with pytest.raises(IntegrityError) as not_null:  # DETAIL: Failing row contains (...)
        async with db.write() as session:
            await session.execute(
                insert(Resident).values(telegram_id=PERSON + 1, first_name=NAME, created_at=None)
            )
    errors.append(not_null.value)
    with pytest.raises(DBAPIError) as bad_argument:  # invalid input for query argument $1: ...
        async with db.read() as session:
            await session.execute(text("SELECT CAST(:n AS integer)"), {"n": NAME})
    errors.append(bad_argument.value)
    return errors


@pytest.mark.storage
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_database_errors_reach_the_logs_without_the_values_they_quote(
    db, log_format, restore_logging, capsys
):
    errors = await database_errors(db)
    trace = "".join(traceback.format_exception(errors[0]))
    assert f"Key (telegram_id)=({PERSON}) already exists" in trace  # what must not be logged
    configure_logging("INFO", [TOKEN], log_format)
    log = logging.getLogger("capacity_bot.test")
    for error in errors:
        log.warning("the database refused it: %s", error.orig)  # in the message
        log.error("the handler failed", exc_info=error)  # in the trace
    output = capsys.readouterr().err
    if log_format == "json":
        entries = [json.loads(line) for line in output.strip().splitlines()]
        assert len(entries) == 6 and all(e["logger"] == "capacity_bot.test" for e in entries)
    assert str(PERSON) not in output and "Alice" not in output
    assert "Key (telegram_id)=(<redacted>) already exists" in output
    assert "Failing row contains (<redacted>)" in output
    assert "invalid input for query argument $1: <redacted>" in output
    assert "UniqueViolationError" in output and "NotNullViolationError" in output
