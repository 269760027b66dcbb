"""The capacity-bot command as an operator uses it: real processes, real exit codes."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest
from emulator.client import EmulatorClient
from emulator.server import BotApiEmulator

from storage.db import sqlite_file

TOKEN = "424242:SECRET-token-that-must-never-be-logged"


def _env(tmp_path: Path, **extra: str | None) -> dict[str, str]:
    """The test's environment; a setting given as None is left unset (its default applies)."""
    env: dict[str, str | None] = {
        k: v for k, v in os.environ.items() if k not in ("BOT_TOKEN", "DATABASE_URL")
    }
    env["DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path}/bot.sqlite3"
    env.update(extra)
    return {k: v for k, v in env.items() if v is not None}


async def _cli(tmp_path: Path, *args: str, **env: str | None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.runtime.cli",
        *args,
        cwd=tmp_path,
        env=_env(tmp_path, **env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    return process.returncode or 0, out.decode(), err.decode()


@pytest.mark.parametrize(
    ("setting", "value", "named"),
    [
        ("DATABASE_URL", "mysql://localhost/x", "DATABASE_URL"),
        ("TIMEZONE", "Mars/Olympus", "TIMEZONE"),
        ("ADMIN_CHAT_ID", "the-channel", "ADMIN_CHAT_ID"),
        ("DEFAULT_LANGUAGE", "de", "DEFAULT_LANGUAGE"),
        ("BOT_TOKEN", "not-a-token-SECRET", "BOT_TOKEN"),
        ("TELEGRAM_BASE_URL", "ftp://example", "TELEGRAM_BASE_URL"),
    ],
)
async def test_a_bad_setting_is_one_line_naming_it_and_exit_2(tmp_path, setting, value, named):
    code, _, err = await _cli(tmp_path, "migrate", **{setting: value})
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and named in lines[0] and "expected" in lines[0]
    assert "Traceback" not in err and "SECRET" not in err


async def test_an_unreachable_database_is_one_line(tmp_path):
    code, _, err = await _cli(
        tmp_path, "migrate", DATABASE_URL="postgresql+asyncpg://nobody@127.0.0.1:1/none"
    )
    assert code == 2
    assert err.count("\n") == 1 and "DATABASE_URL" in err and "Traceback" not in err


async def test_run_without_a_token_says_how_to_try_the_demo(tmp_path):
    code, _, err = await _cli(tmp_path, "run")
    assert code == 2 and "BOT_TOKEN" in err and "demo" in err


async def test_migrate_creates_the_sqlite_file_on_first_run(tmp_path):
    code, out, _ = await _cli(tmp_path, "migrate", DATABASE_URL="sqlite+aiosqlite:///./data/x.db")
    assert code == 0 and "up to date" in out
    assert (tmp_path / "data" / "x.db").exists()


async def test_migrate_creates_the_default_data_folder_on_a_fresh_clone(tmp_path):
    code, out, err = await _cli(tmp_path, "migrate", DATABASE_URL=None)
    assert code == 0 and "up to date" in out, err
    assert (tmp_path / "data" / "capacity-bot.sqlite3").is_file()


@pytest.mark.parametrize("command", ["migrate", "run"])
@pytest.mark.parametrize(
    ("database", "said"),
    [
        ("sqlite+aiosqlite:///{tmp}/missing/dir/bot.sqlite3", "no folder {tmp}/missing/dir"),
        ("sqlite:///./db/bot.sqlite3", "no folder db"),
        ("sqlite:///", "no SQLite file"),
        ("sqlite://", "no SQLite file"),
        ("sqlite+aiosqlite:///:memory:", "no SQLite file"),
    ],
    ids=["missing-folder", "missing-relative-folder", "empty-path", "no-path", "in-memory"],
)
async def test_a_database_url_without_a_lasting_file_is_one_line_and_exit_2(
    tmp_path, command, database, said
):
    """Only the default's ./data is created: an explicit folder that does not exist is a typo
    (or a missing volume) to be told, and an in-memory database would lose everything."""
    # Should start-up get that far, a Bot API that refuses the token ends `run` at once.
    async with BotApiEmulator(token="999999:another-bots-token-of-the-emulator") as emulator:
        code, out, err = await _cli(
            tmp_path,
            command,
            DATABASE_URL=database.format(tmp=tmp_path),
            BOT_TOKEN=TOKEN,
            TELEGRAM_BASE_URL=emulator.base_url,
        )
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("capacity-bot: DATABASE_URL ") and "expected" in lines[0]
    assert said.format(tmp=tmp_path) in lines[0]
    assert "up to date" not in out and "Traceback" not in err
    assert not (tmp_path / "missing").exists() and not (tmp_path / "db").exists()


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite+aiosqlite:////srv/bot/x.sqlite3", "/srv/bot/x.sqlite3"),
        ("sqlite:///data/x.sqlite3", "data/x.sqlite3"),
        ("sqlite:///~/x.sqlite3", "~/x.sqlite3"),  # SQLite does not expand ~
        ("sqlite:///file:/srv/bot/x.sqlite3?uri=true", "/srv/bot/x.sqlite3"),
        ("sqlite:///file:///srv/my%20bot/x.sqlite3?uri=true", "/srv/my bot/x.sqlite3"),
        ("sqlite:///file:x.sqlite3?uri=true&mode=memory", None),
        ("sqlite:///file::memory:?uri=true", None),
        ("sqlite:///:memory:", None),
        ("sqlite:///", None),
        ("sqlite://", None),
    ],
)
def test_the_file_of_an_sqlite_url_is_the_one_sqlite_opens(url, path):
    assert sqlite_file(url) == (None if path is None else Path(path))


async def test_import_reports_bad_rows_and_imports_nothing(tmp_path):
    bad = tmp_path / "catalogue.yaml"
    bad.write_text(
        "territories:\n  - key: ok\n    name: Montreynaud\n  - key: Bad Key\n    name: x\n"
    )
    code, _, err = await _cli(tmp_path, "import", str(bad))
    assert code == 1
    assert "catalogue.yaml: territories[2] (key=Bad Key): key:" in err
    assert "Nothing was imported." in err


async def test_run_with_long_polling_never_logs_the_token_and_stops_on_sigint(tmp_path):
    async with BotApiEmulator(token=TOKEN) as emulator, EmulatorClient(emulator.side_url) as client:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot.runtime.cli",
            "run",
            cwd=tmp_path,
            env=_env(
                tmp_path, BOT_TOKEN=TOKEN, TELEGRAM_BASE_URL=emulator.base_url, LOG_LEVEL="DEBUG"
            ),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        user = client.user(77, "Ines", "fr")
        await user.send("/start")
        welcome = await user.wait_message(timeout=30)
        assert "Bonjour" in welcome.text
        process.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(process.communicate(), timeout=30)
    logs = out.decode() + err.decode()
    assert process.returncode == 0, logs[-2000:]
    assert "bot ready" in logs
    assert TOKEN not in logs and TOKEN.split(":")[1] not in logs


def test_run_starts_with_the_collector_off_and_turns_it_back_on(monkeypatch, tmp_path):
    """Start-up's objects are made without collections (serve() then freezes them); the
    collector is on again whatever happens."""
    import gc

    import bot.runtime.serve
    from bot.runtime import cli
    from bot.settings import load_settings

    during: list[bool] = []

    def serve_stub(settings: object, *, webhook: bool) -> int:
        during.append(gc.isenabled())
        raise RuntimeError("the bot failed")

    monkeypatch.setattr(bot.runtime.serve, "run", serve_stub)
    settings = load_settings(
        bot_token="123456:ABC-DEF1234ghIkl-zyx57W2v1u123ew11",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'bot.sqlite3'}",
    )
    with pytest.raises(RuntimeError):
        cli._run(settings, webhook=False)
    assert during == [False]
    assert gc.isenabled()
