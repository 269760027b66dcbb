"""Operations settings of the command: webhook mode's required settings, JSON log lines."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.logs import configure_logging
from bot.runtime.serve import check_webhook_settings
from bot.settings import ConfigurationError, load_settings
from tests.test_cli import TOKEN, _cli


async def test_webhook_mode_without_its_url_is_one_line_and_exit_2(tmp_path: Path):
    code, _, err = await _cli(tmp_path, "run", "--webhook", BOT_TOKEN=TOKEN)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "WEBHOOK_URL" in lines[0] and "expected" in lines[0]
    assert "Traceback" not in err and TOKEN not in err


def test_webhook_mode_without_its_secret_names_it():
    settings = load_settings(webhook_url="https://bot.example.org/telegram")
    with pytest.raises(ConfigurationError, match=r"^WEBHOOK_SECRET is missing .*expected"):
        check_webhook_settings(settings)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_logs_are_one_redacted_object_per_line(restore_logging, capsys):
    configure_logging("INFO", [TOKEN], "json")
    log = logging.getLogger("capacity_bot.test")
    log.info("calling https://api.telegram.org/bot%s/getMe", TOKEN)
    try:
        raise RuntimeError(f"request to /bot{TOKEN}/sendMessage failed")
    except RuntimeError:
        log.exception("the handler failed", extra={"error_id": "E7Q2"})
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["level"] == "INFO" and first["logger"] == "capacity_bot.test"
    assert first["message"] == "calling https://api.telegram.org/bot<redacted>/getMe"
    assert first["time"].endswith("+00:00") and "exc_info" not in first
    assert second["error_id"] == "E7Q2" and second["level"] == "ERROR"
    assert "RuntimeError" in second["exc_info"] and "Traceback" in second["exc_info"]
    assert TOKEN not in "\n".join(lines)


def test_text_logs_stay_the_default_and_redact_traces_too(restore_logging, capsys):
    configure_logging("INFO", [TOKEN])
    try:
        raise RuntimeError(f"request to /bot{TOKEN}/sendMessage failed")
    except RuntimeError:
        logging.getLogger("capacity_bot.test").exception("the handler failed")
    err = capsys.readouterr().err
    assert " ERROR capacity_bot.test: the handler failed" in err
    assert "RuntimeError: request to /bot<redacted>/sendMessage" in err and TOKEN not in err


@pytest.mark.parametrize("command", ["demo", "playground"])
def test_without_the_offline_tools_demo_and_playground_say_how_to_install_them(
    command, restore_logging, monkeypatch, tmp_path, capsys
):
    """The Docker image ships the bot only: the offline tools' entry points are not there."""
    from bot.runtime import cli

    monkeypatch.chdir(tmp_path)  # no .env of the developer's
    monkeypatch.delenv("BOT_TOKEN", raising=False)
    monkeypatch.setattr(cli, "entry_points", lambda **_: ())
    assert cli.main([command]) == cli.EXIT_CONFIG == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert f"capacity-bot {command}:" in err and "pip install -e ./tools" in err
