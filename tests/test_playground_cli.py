"""`capacity-bot playground` as a real process: its address, its page, a clean stop."""

from __future__ import annotations

import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from offline.playground.run import mark_as_playground

TIMEOUT_S = 60
ADDRESS = re.compile(r"http://127\.0\.0\.1:(\d+)/")


def command(tmp_path: Path, *args: str) -> list[str]:
    database = f"sqlite+aiosqlite:///{tmp_path}/data/playground.sqlite3"
    return [sys.executable, "-m", "bot.runtime.cli", "playground", "--database", database, *args]


def environment() -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name != "BOT_TOKEN"}
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def run_to_the_end(
    tmp_path: Path, arguments: list[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Runs the command in tmp_path until it exits (a refusal), its output kept."""
    return subprocess.run(
        arguments,
        capture_output=True,
        text=True,
        encoding="utf-8",
        cwd=tmp_path,
        env=env or environment(),
        timeout=TIMEOUT_S,
    )


def refused(tmp_path: Path, database: str, env: dict[str, str] | None = None) -> str:
    """Runs the playground on that --database: it must refuse; its one line of error."""
    result = run_to_the_end(
        tmp_path,
        [
            sys.executable,
            "-m",
            "bot.runtime.cli",
            "playground",
            "--port",
            "0",
            "--database",
            database,
        ],
        env,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    return result.stderr.strip()


def test_prints_its_address_serves_the_page_and_stops_on_sigterm(tmp_path: Path) -> None:
    # Yesterday's rehearsal: a database the playground made (its header says so).
    stale = tmp_path / "data" / "playground.sqlite3"
    stale.parent.mkdir()
    mark_as_playground(stale)
    with sqlite3.connect(stale) as yesterday:
        yesterday.execute("CREATE TABLE yesterday (rehearsal TEXT)")
    yesterday.close()
    process = subprocess.Popen(
        command(tmp_path, "--port", "0"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        cwd=tmp_path,
        env=environment(),
    )
    try:
        assert process.stdout is not None
        banner = []
        while line := process.stdout.readline():
            banner.append(line)
            if ADDRESS.search(line):
                break
        found = ADDRESS.search("".join(banner))
        assert found, "".join(banner) + (process.stderr.read() if process.stderr else "")
        with urllib.request.urlopen(found.group(0), timeout=TIMEOUT_S) as response:
            assert b'data-ready="false"' in response.read()

        # A page is following the chats: SIGTERM still stops everything, and ends its stream.
        with urllib.request.urlopen(found.group(0) + "api/events", timeout=TIMEOUT_S) as events:
            assert events.readline().startswith(b'data: {"type": "snapshot"')
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=TIMEOUT_S)
            events.read()  # the stream ends (a hung server would time out here)
        # Read through the buffered streams: communicate() would skip what they hold.
        out = process.stdout.read()
        err = process.stderr.read() if process.stderr else ""
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert "recreated fresh" in "".join(banner) + out
    assert out.rstrip().endswith("Stopped.")
    with sqlite3.connect(stale) as today:
        tables = {name for (name,) in today.execute("SELECT name FROM sqlite_master")}
    today.close()
    assert "yesterday" not in tables and "workshops" in tables


def test_a_file_the_playground_did_not_make_is_never_deleted(tmp_path: Path) -> None:
    precious = tmp_path / "precious.sqlite3"
    with sqlite3.connect(precious) as database:
        database.execute("CREATE TABLE notes (text TEXT)")
    database.close()
    other = tmp_path / "notes.txt"
    other.write_text("not a database")
    before = precious.read_bytes()

    for path in (precious, other):
        error = refused(tmp_path, f"sqlite+aiosqlite:///{path}")
        assert error.startswith(f"capacity-bot: --database: {path} exists and is not a playground")
    assert precious.read_bytes() == before
    assert other.read_text() == "not a database"


def test_the_bot_s_own_database_is_refused(tmp_path: Path) -> None:
    own = tmp_path / "capacity-bot.sqlite3"
    mark_as_playground(own)  # even one that looks like the playground's
    env = environment() | {"DATABASE_URL": f"sqlite:///{own}"}
    error = refused(tmp_path, "sqlite+aiosqlite:///./capacity-bot.sqlite3", env)
    assert error.startswith("capacity-bot: --database: ")
    assert "DATABASE_URL" in error
    assert own.exists()


@pytest.mark.parametrize(
    "database",
    ["sqlite+aiosqlite:///:memory:", "sqlite+aiosqlite:///{tmp}/a-file/playground.sqlite3"],
    ids=["in-memory", "unwritable"],
)
def test_a_database_the_playground_cannot_use_names_the_option(
    tmp_path: Path, database: str
) -> None:
    (tmp_path / "a-file").write_text("a file, not a folder")
    error = refused(tmp_path, database.format(tmp=tmp_path))
    assert error.startswith("capacity-bot: --database: ")
    assert "DATABASE_URL" not in error


def test_a_port_in_use_is_one_line_naming_the_option(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_to_the_end(tmp_path, command(tmp_path, "--port", str(port)))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(f"capacity-bot: --port: cannot listen on 127.0.0.1:{port}")


def test_a_database_that_is_not_an_sqlite_file_is_refused(tmp_path: Path) -> None:
    result = run_to_the_end(
        tmp_path,
        [
            sys.executable,
            "-m",
            "bot.runtime.cli",
            "playground",
            "--database",
            "postgresql://postgres@127.0.0.1/test",
        ],
    )
    assert result.returncode == 2
    assert result.stderr.startswith("capacity-bot: --database: ")
    assert len(result.stderr.strip().splitlines()) == 1
