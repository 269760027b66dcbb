"""Runs the emulator standalone: ``python -m emulator --port 8081 --token 123:ABC``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from emulator.server import BotApiEmulator


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m emulator",
        description="Telegram Bot API emulator with a side API (/_emulator/) to act as users.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081, help="0 picks a free port")
    parser.add_argument("--token", default="123456:TEST-TOKEN-of-the-bot-api-emulator")
    parser.add_argument("--bot-username", default="capacity_test_bot")
    parser.add_argument(
        "--global-rate", type=float, default=None, help="messages/s over all chats (429 beyond)"
    )
    parser.add_argument(
        "--per-chat-rate", type=float, default=None, help="messages/s in one chat (429 beyond)"
    )
    parser.add_argument(
        "--per-chat-burst",
        type=int,
        default=1,
        help="messages one chat may get at once: at most this many in any burst/rate seconds "
        "(default 1: strictly one per second; Telegram tolerates short bursts, 3 is closer)",
    )
    parser.add_argument(
        "--webhook-via",
        default=None,
        help="post webhook updates to this address (the reverse proxy's part), e.g. "
        "http://127.0.0.1:8443, with the path of the URL given to setWebhook",
    )
    return parser.parse_args()


async def serve(arguments: argparse.Namespace) -> None:
    emulator = BotApiEmulator(
        token=arguments.token,
        host=arguments.host,
        port=arguments.port,
        global_rate=arguments.global_rate,
        per_chat_rate=arguments.per_chat_rate,
        bot_username=arguments.bot_username,
        webhook_via=arguments.webhook_via,
    )
    if arguments.per_chat_burst != 1:
        emulator.state.configure({"per_chat_burst": arguments.per_chat_burst})
    await emulator.start()
    print(f"Bot API emulator: base_url={emulator.base_url}  token={emulator.token}", flush=True)
    print(f"Side API: {emulator.side_url}/_emulator/  (Ctrl+C stops)", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await emulator.stop()


def main() -> None:
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(parse_arguments()))


if __name__ == "__main__":
    main()
