"""The Bot API emulator, over real HTTP: raw calls, a real python-telegram-bot Bot, the client."""

from __future__ import annotations

import asyncio
import struct
import sys
import time
import zlib
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import aiohttp
import httpx
import pytest
import telegram
from emulator import BotApiEmulator, EmulatorClient, EmulatorError, SimulatedUser
from emulator.formatting import EntityParseError, parse_html
from emulator.limits import RateLimit
from telegram import InlineKeyboardButton, InlineKeyboardMarkup, ReplyParameters
from telegram.error import BadRequest, Forbidden, InvalidToken, NetworkError, RetryAfter
from telegram.ext import Application, CallbackQueryHandler, CommandHandler, ContextTypes

TOKEN = "123456:TEST-TOKEN"
PROJECT_ROOT = Path(__file__).resolve().parents[1]
# PTB warns about RetryAfter.retry_after's future type whenever it raises one.
pytestmark = pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")


@pytest.fixture
async def emulator() -> AsyncIterator[BotApiEmulator]:
    server = BotApiEmulator(token=TOKEN)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def client(emulator: BotApiEmulator) -> AsyncIterator[EmulatorClient]:
    async with EmulatorClient(emulator.side_url) as side:
        yield side


@pytest.fixture
async def bot(emulator: BotApiEmulator) -> AsyncIterator[telegram.Bot]:
    ptb_bot = telegram.Bot(TOKEN, base_url=emulator.base_url)
    await ptb_bot.initialize()
    yield ptb_bot
    await ptb_bot.shutdown()


@pytest.fixture
async def alice(client: EmulatorClient) -> SimulatedUser:
    user = client.user(1001, "Alice", "fr", username="alice")
    await user.register()
    return user


def keyboard(*buttons: tuple[str, str]) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        [[InlineKeyboardButton(text, callback_data=data)] for text, data in buttons]
    )


def tiny_png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"".join(b"\x00" + b"\x00" * width for _ in range(height)))
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


# -- raw HTTP: Telegram's envelope and error shapes -------------------------------------------


async def test_raw_get_me_and_envelope(emulator: BotApiEmulator) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{emulator.base_url}{TOKEN}/getMe") as response:
            assert response.status == 200
            body = await response.json()
        assert body["ok"] is True
        assert body["result"]["is_bot"] is True
        assert body["result"]["username"] == "capacity_test_bot"
        assert body["result"]["id"] == 123456

        async with http.post(f"{emulator.base_url}{TOKEN}/GETME", json={}) as response:
            assert response.status == 200, "method names are case-insensitive"


async def test_raw_errors_wrong_token_unknown_method(emulator: BotApiEmulator) -> None:
    async with httpx.AsyncClient() as http:
        wrong = await http.post(f"{emulator.base_url}999:WRONG/getMe")
        assert wrong.status_code == 401
        assert wrong.json() == {"ok": False, "error_code": 401, "description": "Unauthorized"}

        unknown = await http.post(f"{emulator.base_url}{TOKEN}/sendTelepathy")
        assert unknown.status_code == 404
        assert unknown.json()["error_code"] == 404

        no_chat = await http.post(
            f"{emulator.base_url}{TOKEN}/sendMessage", data={"chat_id": "42", "text": "hi"}
        )
        assert no_chat.status_code == 400
        assert no_chat.json() == {
            "ok": False,
            "error_code": 400,
            "description": "Bad Request: chat not found",
        }


async def test_raw_json_body_and_text_validation(
    emulator: BotApiEmulator, alice: SimulatedUser
) -> None:
    url = f"{emulator.base_url}{TOKEN}/sendMessage"
    async with httpx.AsyncClient() as http:
        sent = await http.post(url, json={"chat_id": 1001, "text": "  hello  "})
        message = sent.json()["result"]
        assert message["text"] == "hello", "Telegram trims surrounding whitespace"
        assert message["chat"] == {
            "id": 1001,
            "type": "private",
            "first_name": "Alice",
            "username": "alice",
        }
        assert message["from"]["is_bot"] is True

        empty = await http.post(url, json={"chat_id": 1001, "text": "   "})
        assert empty.status_code == 400
        assert empty.json()["description"] == "Bad Request: message text is empty"

        markup = '{"inline_keyboard": [[{"text": "bare"}]]}'
        bare = await http.post(url, data={"chat_id": "1001", "text": "x", "reply_markup": markup})
        assert bare.status_code == 400
        assert "Text buttons are unallowed" in bare.json()["description"]


# -- a real python-telegram-bot Bot ----------------------------------------------------------


async def test_ptb_send_and_edit(bot: telegram.Bot, alice: SimulatedUser) -> None:
    assert bot.username == "capacity_test_bot"
    sent = await bot.send_message(
        1001, "<b>Bienvenue</b> &amp; merci", parse_mode="HTML", reply_markup=keyboard(("Oui", "y"))
    )
    assert sent.text == "Bienvenue & merci"
    assert sent.entities[0].type == "bold" and sent.entities[0].length == 9
    assert sent.reply_markup.inline_keyboard[0][0].callback_data == "y"

    edited = await bot.edit_message_text("Plus tard", chat_id=1001, message_id=sent.message_id)
    assert edited.text == "Plus tard"
    assert edited.reply_markup is None, "editing text without reply_markup drops the keyboard"

    with pytest.raises(BadRequest, match="Message is not modified"):
        await bot.edit_message_text("Plus tard", chat_id=1001, message_id=sent.message_id)
    with pytest.raises(BadRequest, match="Message to edit not found"):
        await bot.edit_message_text("x", chat_id=1001, message_id=999)

    with_markup = await bot.edit_message_reply_markup(
        chat_id=1001, message_id=sent.message_id, reply_markup=keyboard(("Go", "go"))
    )
    assert with_markup.reply_markup.inline_keyboard[0][0].text == "Go"

    [message] = await alice.messages()
    assert message.text == "Plus tard" and message.edited and message.button_texts() == ["Go"]
    assert message.html is None


async def test_ptb_errors_map_to_exceptions(
    bot: telegram.Bot, alice: SimulatedUser, client: EmulatorClient
) -> None:
    with pytest.raises(BadRequest, match="Chat not found"):
        await bot.send_message(555, "hi")
    with pytest.raises(BadRequest, match="Message is too long"):
        await bot.send_message(1001, "x" * 4097)
    # Length counts text after entity parsing: tags do not count.
    await bot.send_message(1001, "<i>" + "x" * 4096 + "</i>", parse_mode="HTML")
    with pytest.raises(BadRequest, match='Can\'t parse entities: unsupported start tag "br"'):
        await bot.send_message(1001, "a<br>b", parse_mode="HTML")
    with pytest.raises(BadRequest, match="Button_data_invalid"):
        await bot.send_message(1001, "x", reply_markup=keyboard(("b", "d" * 65)))
    with pytest.raises(BadRequest, match="Button_data_invalid"):
        await bot.send_message(1001, "x", reply_markup=keyboard(("b", "é" * 33)))  # 66 bytes
    await bot.send_message(1001, "x", reply_markup=keyboard(("b", "d" * 64)))
    with pytest.raises(BadRequest, match="Message caption is too long"):
        await bot.send_document(1001, b"data", filename="a.txt", caption="c" * 1025)

    await alice.block()
    with pytest.raises(Forbidden, match="bot was blocked by the user"):
        await bot.send_message(1001, "hi")
    await alice.unblock()
    await bot.send_message(1001, "hi again")

    with pytest.raises(InvalidToken):
        async with telegram.Bot("1:WRONG", base_url=bot.base_url.removesuffix(TOKEN)):
            pass


async def test_long_polling_wakes_on_new_update(bot: telegram.Bot, client: EmulatorClient) -> None:
    alice = client.user(1001, "Alice", "fr")
    started = time.monotonic()
    polling = asyncio.create_task(bot.get_updates(timeout=10))
    await asyncio.sleep(0.05)  # let the poll reach the server and wait there
    assert not polling.done()
    message_id = await alice.send("/start deep")
    [update] = await polling
    assert time.monotonic() - started < 2, "the long poll returned as soon as the update came"
    assert update.message.message_id == message_id
    assert update.message.text == "/start deep"
    assert update.message.from_user.language_code == "fr"
    assert update.message.entities[0].type == "bot_command"
    assert update.message.entities[0].length == len("/start")

    await alice.send("second")
    unconfirmed = await bot.get_updates(timeout=0)
    assert [u.message.text for u in unconfirmed] == ["/start deep", "second"]
    confirmed = await bot.get_updates(offset=update.update_id + 1, timeout=0)
    assert [u.message.text for u in confirmed] == ["second"]
    assert await bot.get_updates(offset=confirmed[-1].update_id + 1, timeout=0) == ()


async def test_press_makes_callback_query_and_answer_reaches_user(
    bot: telegram.Bot, alice: SimulatedUser
) -> None:
    sent = await bot.send_message(
        1001, "Conditions", reply_markup=keyboard(("J'accepte", "terms:yes"), ("Non", "terms:no"))
    )
    query_id = await alice.press("J'accepte")
    [update] = await bot.get_updates(timeout=1)
    query = update.callback_query
    assert query.id == query_id
    assert query.data == "terms:yes"
    assert query.from_user.id == 1001
    assert query.message.message_id == sent.message_id
    assert query.message.reply_markup is not None

    await bot.answer_callback_query(query_id, text="Merci !", show_alert=True)
    answer = await alice.callback_answer(query_id)
    assert answer.text == "Merci !" and answer.show_alert
    with pytest.raises(BadRequest, match="Query is too old"):
        await bot.answer_callback_query(query_id)

    with pytest.raises(AssertionError, match=r"available: \[\"J'accepte\", 'Non'\]"):
        await alice.press("Peut-être")
    assert await alice.press("terms:no")  # matched by callback_data
    stale = await alice.press_data("forged", message_id=sent.message_id)
    updates = await bot.get_updates(offset=update.update_id + 1, timeout=0)
    assert [u.callback_query.data for u in updates] == ["terms:no", "forged"]
    assert updates[-1].callback_query.id == stale
    with pytest.raises(BadRequest, match="Message_too_long"):
        await bot.answer_callback_query(stale, text="x" * 201)


async def test_waits_follow_a_cursor_without_losing_events(
    bot: telegram.Bot, alice: SimulatedUser
) -> None:
    old = await bot.send_message(1001, "before the command")
    await alice.send("/start")
    sent = await bot.send_message(1001, "Bienvenue", reply_markup=keyboard(("OK", "ok")))
    await bot.send_message(1001, "Second")
    await bot.edit_message_text("Bienvenue !", chat_id=1001, message_id=sent.message_id)
    await bot.send_message(1001, "Third")

    # What came before the user's own last action counts as seen.
    first = await alice.wait_message()
    assert first.text == "Bienvenue" and first.message_id != old.message_id
    third = await alice.wait_message(contains="Third")
    assert third.text == "Third"
    # Skipped events stay available, each returned once, in order.
    assert (await alice.wait_message()).text == "Second"
    edit = await alice.wait_event(kind="edit")
    assert edit.message.text == "Bienvenue !" and edit.message.edited
    with pytest.raises(AssertionError, match=r"no new message in chat 1001 within 0\.1s"):
        await alice.wait_message(timeout=0.1)

    waiting = asyncio.create_task(alice.wait_message(contains="later", timeout=5))
    await asyncio.sleep(0.05)
    await bot.send_message(1001, "a bit later")
    assert (await waiting).text == "a bit later"


async def test_delete_and_reply(bot: telegram.Bot, alice: SimulatedUser) -> None:
    question = await alice.send("Une question ?")
    reply = await bot.send_message(
        1001, "Réponse", reply_parameters=ReplyParameters(message_id=question)
    )
    assert reply.reply_to_message.text == "Une question ?"
    with pytest.raises(BadRequest, match="Message to be replied not found"):
        await bot.send_message(1001, "x", reply_parameters=ReplyParameters(message_id=999))
    kept = await bot.send_message(1001, "kept")

    assert await bot.delete_message(1001, reply.message_id)
    with pytest.raises(BadRequest, match="Message to delete not found"):
        await bot.delete_message(1001, reply.message_id)
    assert [m.message_id for m in await alice.messages()] == [kept.message_id]
    assert (await alice.last()).text == "kept"
    deletion = await alice.wait_event(kind="delete")
    assert deletion.message_id == reply.message_id


async def test_edited_message_group_and_channel_updates(
    bot: telegram.Bot, client: EmulatorClient
) -> None:
    alice = client.user(1001, "Alice")
    message_id = await alice.send("typo")
    await alice.send_edited(message_id, "fixed")

    group = client.group(-100200, "Atelier")
    await group.send(alice, "/inscrire@capacity_test_bot")
    channel = client.channel(-100300, "Annonces", username="annonces")
    await channel.post("Nouvel atelier")

    updates = await bot.get_updates(timeout=0)
    assert updates[1].edited_message.text == "fixed"
    group_message = updates[2].message
    assert group_message.chat.type == "supergroup" and group_message.chat.title == "Atelier"
    assert group_message.entities[0].length == len("/inscrire@capacity_test_bot")
    post = updates[3].channel_post
    assert post.from_user is None and updates[3].effective_user is None
    assert post.sender_chat.id == -100300

    in_group = await bot.send_message(-100200, "Inscrit", reply_markup=keyboard(("Voir", "see")))
    assert (await group.wait_message()).message_id == in_group.message_id
    await group.press(alice, "Voir")
    await bot.send_message("@annonces", "par nom d'utilisateur")
    assert (await channel.wait_message()).text == "par nom d'utilisateur"

    chat = await bot.get_chat(-100200)
    assert chat.title == "Atelier"
    assert await bot.leave_chat(-100200)
    with pytest.raises(Forbidden, match="not a member"):
        await bot.send_message(-100200, "still there?")
    with pytest.raises(BadRequest, match="private chats"):
        await bot.leave_chat(1001)


async def test_venue_location_chat_action(bot: telegram.Bot, alice: SimulatedUser) -> None:
    await bot.send_venue(1001, 45.76, 4.83, "Médiathèque", "1 place Bellecour")
    await bot.send_location(1001, 45.0, 4.0)
    await bot.send_chat_action(1001, "typing")
    with pytest.raises(BadRequest, match="Wrong parameter action"):
        await bot.send_chat_action(1001, "dancing")

    venue, location = await alice.messages()
    assert venue.kind == "venue" and venue.venue["title"] == "Médiathèque"
    assert venue.venue["location"] == {"latitude": 45.76, "longitude": 4.83}
    assert location.kind == "location" and location.location["latitude"] == 45.0
    action = await alice.wait_event(kind="action")
    assert action.action == "typing"


async def test_documents_and_photos_are_downloadable(
    bot: telegram.Bot, alice: SimulatedUser
) -> None:
    content = b"BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n"
    sent = await bot.send_document(
        1001, content, filename="atelier.ics", caption="<i>Votre agenda</i>", parse_mode="HTML"
    )
    assert sent.document.file_name == "atelier.ics"
    assert sent.document.mime_type == "text/calendar"
    assert sent.document.file_size == len(content)
    message = await alice.wait_message(contains="agenda")
    assert message.kind == "document" and message.html == "<i>Votre agenda</i>"
    assert message.document["file_name"] == "atelier.ics"
    assert await alice.download(message) == content

    again = await bot.send_document(1001, sent.document.file_id)  # re-send without upload
    assert again.document.file_id == sent.document.file_id

    photo = await bot.send_photo(1001, tiny_png(3, 2), caption="plan")
    assert (photo.photo[-1].width, photo.photo[-1].height) == (3, 2)
    assert await alice.download(await alice.last()) == tiny_png(3, 2)
    with pytest.raises(BadRequest, match="Wrong file identifier"):
        await bot.send_photo(1001, "no-such-file-id")


async def test_commands_per_scope_and_language(
    bot: telegram.Bot, client: EmulatorClient, alice: SimulatedUser
) -> None:
    await bot.set_my_commands([("start", "Démarrer"), ("aide", "Aide")], language_code="fr")
    await bot.set_my_commands(
        [("admin", "Admin")], scope=telegram.BotCommandScopeChat(chat_id=1001)
    )
    assert [c.command for c in await bot.get_my_commands(language_code="fr")] == ["start", "aide"]
    assert await bot.get_my_commands() == ()
    assert await client.commands(language_code="fr") == [
        {"command": "start", "description": "Démarrer"},
        {"command": "aide", "description": "Aide"},
    ]
    assert await client.commands("chat:1001") == [{"command": "admin", "description": "Admin"}]
    with pytest.raises(BadRequest, match="Bot_command_invalid"):
        await bot.set_my_commands([("Bad-Name", "x")])
    assert await bot.delete_my_commands(language_code="fr")
    assert await client.commands(language_code="fr") == []


async def test_webhook_methods(bot: telegram.Bot) -> None:
    assert await bot.set_webhook("https://example.invalid/hook")
    assert (await bot.get_webhook_info()).url == "https://example.invalid/hook"
    with pytest.raises(telegram.error.Conflict):
        await bot.get_updates(timeout=0)
    assert await bot.delete_webhook(drop_pending_updates=True)
    assert await bot.get_updates(timeout=0) == ()


# -- flood limits and fault injection --------------------------------------------------------


async def test_per_chat_and_global_rate_limits(bot: telegram.Bot, client: EmulatorClient) -> None:
    users = [client.user(2000 + n) for n in range(4)]
    await client.register(*users)
    await client.configure(per_chat_rate=1)
    await bot.send_message(2000, "one")
    with pytest.raises(RetryAfter, match="Retry in"):
        await bot.send_message(2000, "two")
    await bot.send_message(2001, "other chat is free")

    await client.configure(per_chat_rate=None, global_rate=3)
    for user in users[:3]:
        await bot.send_message(user.user_id, "within the global limit")
    with pytest.raises(RetryAfter):
        await bot.send_message(2003, "fourth in one second")

    stats = await client.stats()
    assert stats["responses_429"] == 2 and stats["rate_limited"] == 2
    assert stats["sends"] == {"sendMessage": 5}
    assert stats["max_per_second"] == 5, "limits were reconfigured, the record was not"
    assert stats["max_per_chat_per_second"] == 2
    traffic = await client.traffic()
    assert traffic["chat_ids"] == [2000, 2001, 2000, 2001, 2002]
    assert traffic["times"] == sorted(traffic["times"])


async def test_a_per_chat_burst_is_a_sliding_window(
    bot: telegram.Bot, client: EmulatorClient
) -> None:
    users = [client.user(2100 + n) for n in range(2)]
    await client.register(*users)
    await client.configure(per_chat_rate=1, per_chat_burst=3)  # 3 in any 3 s
    for n in range(3):
        await bot.send_message(2100, f"burst {n}")
    with pytest.raises(RetryAfter) as refused:
        await bot.send_message(2100, "fourth within 3 s")
    wait = refused.value.retry_after
    wait = wait.total_seconds() if isinstance(wait, timedelta) else wait
    assert 1 <= wait <= 3
    await bot.send_message(2101, "other chat is free")
    stats = await client.stats()
    assert stats["per_chat_burst"] == 3 and stats["rate_limited"] == 1
    assert stats["max_per_chat_per_second"] == 3
    await asyncio.sleep(wait)
    await bot.send_message(2100, "the first left the window")

    await client.configure(per_chat_burst=1)  # back to strictly one per second
    await bot.send_message(2101, "one")
    with pytest.raises(RetryAfter):
        await bot.send_message(2101, "two")


def test_rate_limit_window_below_one_per_second() -> None:
    limit = RateLimit(0.5)  # one send in any two seconds
    assert limit.retry_after("chat", 10.0) is None
    limit.record("chat", 10.0)
    assert limit.retry_after("chat", 11.5) == 1
    assert limit.retry_after("chat", 12.01) is None


async def test_injected_failures_and_unreachable_api(
    bot: telegram.Bot, alice: SimulatedUser, client: EmulatorClient
) -> None:
    with pytest.raises(EmulatorError, match="no Bot API method 'sendMesage'"):
        await client.fail_next("sendMesage", 500)
    await client.fail_next("sendMessage", 500, count=2)
    await client.fail_next("sendMessage", 429, retry_after=1)
    for _ in range(2):
        with pytest.raises(NetworkError, match="Internal Server Error"):
            await bot.send_message(1001, "x")
    with pytest.raises(RetryAfter):
        await bot.send_message(1001, "x")
    await bot.send_message(1001, "recovered")

    await client.set_unreachable(True)
    with pytest.raises(NetworkError, match="Bad Gateway"):
        await bot.get_me()
    assert (await client.stats())["errors"]["502"] == 1, "the side API stays reachable"
    await client.set_unreachable(True, drop_connections=True)
    with pytest.raises(NetworkError):
        await bot.send_message(1001, "lost")
    await client.set_unreachable(False)
    await bot.get_me()

    stats = await client.stats()
    assert stats["injected_failures"] == 3
    assert stats["responses_429"] == 1 and stats["rate_limited"] == 0
    assert stats["sends"] == {"sendMessage": 1}


# -- the whole loop: a PTB Application polling the emulator --------------------------------


async def test_application_polling_end_to_end(
    emulator: BotApiEmulator, client: EmulatorClient
) -> None:
    async def start(update: telegram.Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_message is not None
        await update.effective_message.reply_html(
            "<b>Bienvenue</b> !", reply_markup=keyboard(("J'accepte", "accept"))
        )

    async def accept(update: telegram.Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        assert query is not None
        await query.answer("C'est noté")
        await query.edit_message_text("Merci, c'est accepté.")

    app = Application.builder().token(TOKEN).base_url(emulator.base_url).build()
    app.add_handler(CommandHandler("start", start))
    app.add_handler(CallbackQueryHandler(accept, pattern="^accept$"))
    async with app:
        await app.start()
        assert app.updater is not None
        await app.updater.start_polling(timeout=1, drop_pending_updates=True)
        try:
            alice = client.user(1001, "Alice", "fr")
            await alice.send("/start")
            welcome = await alice.wait_message(contains="Bienvenue")
            assert welcome.html == "<b>Bienvenue</b> !"
            query_id = await alice.press("J'accepte")
            edit = await alice.wait_event(kind="edit")
            assert edit.message.text == "Merci, c'est accepté." and edit.message.buttons == []
            assert (await alice.callback_answer(query_id)).text == "C'est noté"
        finally:
            await app.updater.stop()
            await app.stop()


async def test_global_event_feed_long_polls(emulator: BotApiEmulator, bot: telegram.Bot) -> None:
    async with EmulatorClient(emulator.side_url) as client:
        alice = client.user(1001, "Alice")
        feed = asyncio.create_task(client.events(after=0, timeout=5))
        await asyncio.sleep(0.05)
        await alice.send("hello")
        [event] = await feed
        assert (event.kind, event.source, event.message.text) == ("message", "user", "hello")
        await bot.send_message(1001, "hi Alice")
        [reply] = await client.events(after=event.seq)
        assert (reply.source, reply.message.text) == ("bot", "hi Alice")

        await client.reset()
        assert (await client.stats())["chats"] == 0
        with pytest.raises(BadRequest, match="Chat not found"):
            await bot.send_message(1001, "forgotten")


async def test_standalone_module_prints_base_url() -> None:
    command = [sys.executable, "-m", "emulator", "--port", "0", "--token", "42:ABC"]
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, cwd=PROJECT_ROOT
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 10)).decode()
        base_url = line.split("base_url=")[1].split()[0]
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/bot")
        async with aiohttp.ClientSession() as http, http.get(f"{base_url}42:ABC/getMe") as got:
            assert (await got.json())["result"]["id"] == 42
    finally:
        process.terminate()
        await process.wait()


async def test_history_is_bounded() -> None:
    async with BotApiEmulator(token=TOKEN, history_limit=3) as server:
        async with (
            EmulatorClient(server.side_url) as client,
            telegram.Bot(TOKEN, base_url=server.base_url) as ptb_bot,
        ):
            alice = client.user(1001)
            await alice.register()
            for n in range(10):
                await ptb_bot.send_message(1001, f"message {n}")
            assert [m.text for m in await alice.messages()] == [f"message {n}" for n in (7, 8, 9)]
            assert len(server.state.chats[1001].events) <= 6
            with pytest.raises(BadRequest, match="Message to edit not found"):
                await ptb_bot.edit_message_text("old", chat_id=1001, message_id=1)


# -- HTML parse mode -------------------------------------------------------------------------


def test_html_entities_use_utf16_offsets() -> None:
    text, entities = parse_html('😀 <a href="https://example.org/?a=1&amp;b=2">lien</a>')
    assert text == "😀 lien"
    assert entities == [
        {"type": "text_link", "offset": 3, "length": 4, "url": "https://example.org/?a=1&b=2"}
    ]
    text, entities = parse_html('<pre><code class="language-python">x = 1</code></pre>')
    assert entities == [{"type": "pre", "offset": 0, "length": 5, "language": "python"}]


@pytest.mark.parametrize(
    ("markup", "error"),
    [
        ("<b>open", 'Can\'t find end tag corresponding to start tag "b"'),
        ("<b>x</i>", 'Unmatched end tag at byte offset 4, expected "</b>", found "</i>"'),
        ("é<p>x</p>", 'Unsupported start tag "p" at byte offset 2'),
        ("1 < 2", 'Unsupported start tag "" at byte offset 2'),
    ],
)
def test_html_errors_match_telegram(markup: str, error: str) -> None:
    with pytest.raises(EntityParseError) as caught:
        parse_html(markup)
    assert str(caught.value) == error
