"""The `capacity-bot` command: run, demo, playground, migrate, import, backup."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import sys
from collections.abc import Callable, Coroutine
from datetime import date
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from sqlalchemy.exc import DBAPIError

from bot.services.surveys.definitions import SurveyDefinitionError, load_surveys
from bot.settings import ConfigurationError, Settings, check_database_url, load_settings

log = logging.getLogger("capacity_bot")

EXIT_CONFIG = 2
EXIT_BAD_FILE = 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="capacity-bot",
        description="Telegram bot for the participatory workshops of a digital-inclusion programme.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("run", help="run the bot, long polling by default (needs BOT_TOKEN)")
    run.add_argument(
        "--webhook",
        action="store_true",
        help="take updates through a webhook (WEBHOOK_URL, WEBHOOK_SECRET, WEBHOOK_LISTEN, "
        "WEBHOOK_PORT) instead of long polling",
    )
    demo = commands.add_parser(
        "demo", help="try the bot offline in this terminal (no token, no internet)"
    )
    demo.add_argument(
        "--database",
        default="sqlite+aiosqlite:///./data/demo.sqlite3",
        help="database of the demo (default: %(default)s)",
    )
    playground = commands.add_parser(
        "playground",
        help="try the whole bot in a browser page, offline (residents, staff, time travel)",
    )
    playground.add_argument(
        "--port",
        type=_port,
        default=8080,
        help="port of the page on 127.0.0.1; 0 picks a free one (default: %(default)s)",
    )
    playground.add_argument(
        "--database",
        default="sqlite+aiosqlite:///./data/playground.sqlite3",
        help="SQLite file of the playground, recreated at each start (default: %(default)s)",
    )
    commands.add_parser("migrate", help="bring the database schema up to date")
    importer = commands.add_parser(
        "import",
        help="import a catalogue YAML file (5 MB at most); people registered to a workshop "
        "moved or cancelled are told",
    )
    importer.add_argument(
        "file", type=Path, help="the catalogue file (see bot/services/workshops/saint-etienne.yaml)"
    )
    importer.add_argument(
        "--dry-run",
        action="store_true",
        help="print what would change and how many people would be told, and change nothing",
    )
    importer.add_argument(
        "--allow-past",
        action="store_true",
        help="import workshops dated in the past (to record workshops already held)",
    )
    backup = commands.add_parser(
        "backup", help="write a consistent copy of the SQLite database, even while the bot runs"
    )
    backup.add_argument(
        "--output",
        default=None,
        help="a new backup file, or an existing folder (a final / says it is one) for a dated "
        "file in it (default: ./backups/capacity-bot-<time>.sqlite3)",
    )
    return parser


def _port(value: str) -> int:
    if not value.isdigit() or int(value) > 65535:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port (0 to 65535)")
    return int(value)


async def _migrate(settings: Settings) -> None:
    from storage.db import Database
    from storage.migrate import upgrade_to_head

    check_database_url(settings)  # before Database makes the SQLite file's folder
    database = Database(settings.database_url)
    try:
        await upgrade_to_head(database.engine)
    finally:
        await database.dispose()


async def _import(settings: Settings, path: Path, *, dry_run: bool, allow_past: bool) -> str:
    from bot.clock import SystemClock
    from bot.services.workshops.catalogue_entries import CatalogueError
    from bot.services.workshops.catalogue_file import load_catalogue
    from bot.services.workshops.importer import import_catalogue
    from storage.db import Database
    from storage.migrate import is_at_head

    catalogue = load_catalogue(
        path,
        default_language=settings.default_language,
        tz=settings.tz,
        today=SystemClock().now().astimezone(settings.tz).date(),
    )
    if not dry_run:
        await _migrate(settings)
    database = Database(settings.database_url)
    try:
        if dry_run and not await is_at_head(database.engine):
            raise ConfigurationError(
                "DATABASE_URL: the database's schema is not up to date, and a dry run changes "
                "nothing; expected a migrated database (run `capacity-bot migrate` first)"
            )
        try:
            report = await import_catalogue(
                database,
                catalogue,
                clock=SystemClock(),
                source_name=path.name,
                allow_past=allow_past,
                dry_run=dry_run,
            )
        except DBAPIError as exc:
            # The database was just reached and its schema is there: not a connection problem.
            reason = str(exc.orig or exc).splitlines()[0]
            raise CatalogueError([f"{path}: the database refused the import ({reason})"]) from None
    finally:
        await database.dispose()
    if dry_run:
        return f"Dry run, nothing was written. The import would give: {report.summary()}"
    return report.summary()


def _run(settings: Settings, *, webhook: bool) -> int:
    # Start-up makes about 100,000 objects that live as long as the process: the collector
    # would scan them again and again while they are made (a tenth of the start-up). serve()
    # freezes them once the bot has started, and turns the collector back on.
    gc.disable()
    try:
        return _start(settings, webhook=webhook)
    finally:
        gc.enable()


def _start(settings: Settings, *, webhook: bool) -> int:
    from bot.runtime.serve import check_webhook_settings, run

    if settings.bot_token is None:
        raise ConfigurationError(
            "BOT_TOKEN is missing; expected a token from @BotFather "
            "(to try the bot without one, run `capacity-bot demo`)"
        )
    if webhook:
        check_webhook_settings(settings)
    load_surveys()  # a broken survey file stops start-up before anything else
    asyncio.run(_migrate(settings))
    log.info("starting the bot (%s)", "webhook" if webhook else "long polling")
    return run(settings, webhook=webhook)


def offline_tool(name: str) -> Callable[..., Coroutine[Any, Any, None]] | None:
    """The demo or the playground, when the offline tools (tools/) are installed beside the bot.

    Found by entry point, so that the bot never imports them (the arrows of
    docs/architecture.md)."""
    found = entry_points(group="capacity_bot.offline", name=name)
    return next(iter(found)).load() if found else None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
        from bot.logs import configure_logging

        secrets = [settings.effective_token]
        if settings.webhook_secret is not None:
            secrets.append(settings.webhook_secret.get_secret_value())
        configure_logging(settings.log_level, secrets, settings.log_format)
        if args.command == "run":
            return _run(settings, webhook=args.webhook)
        elif args.command == "backup":
            from bot.runtime.backup import BackupError, backup

            try:
                print(backup(settings.database_url, args.output))
            except BackupError as exc:
                print(f"capacity-bot: {exc}", file=sys.stderr)
                return EXIT_CONFIG
        elif args.command == "migrate":
            asyncio.run(_migrate(settings))
            print("The database is up to date.")
        elif args.command == "import":
            from bot.services.workshops.catalogue_entries import CatalogueError

            try:
                print(
                    asyncio.run(
                        _import(
                            settings, args.file, dry_run=args.dry_run, allow_past=args.allow_past
                        )
                    )
                )
            except CatalogueError as exc:
                for line in exc.lines:
                    print(line, file=sys.stderr)
                print("Nothing was imported.", file=sys.stderr)
                return EXIT_BAD_FILE
        elif args.command in ("demo", "playground"):
            tool = offline_tool(args.command)
            if tool is None:
                # The production image ships the bot only (README, "Docker").
                print(
                    f"capacity-bot {args.command}: the offline tools are not installed here; "
                    "from a clone of the repository: pip install -e ./tools",
                    file=sys.stderr,
                )
                return EXIT_CONFIG
            if args.command == "demo":
                asyncio.run(tool(settings, args.database, today=date.today()))
            else:
                asyncio.run(tool(settings, args.database, port=args.port, today=date.today()))
    except (ConfigurationError, SurveyDefinitionError) as exc:
        print(f"capacity-bot: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except (OSError, DBAPIError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        if args.command == "playground" and isinstance(exc, OSError):
            # Its page files and port are checked where they are used: this is the system.
            message = f"playground: stopped on a system error ({reason})"
        elif args.command == "playground":
            message = (
                f"--database: cannot open the playground's database ({reason}); "
                "expected a writable SQLite file"
            )
        else:
            message = (
                f"DATABASE_URL: cannot open the database ({reason}); "
                "expected a reachable database (is the server running?)"
            )
        print(f"capacity-bot: {message}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
