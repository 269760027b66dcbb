"""Hostile and bad input, property-based (hypothesis), over every handler of the real bot.

The real Application runs against the Bot API emulator on both databases. Messages are fed
with `application.process_update` (fast, and done when it returns; replies still go over
real HTTP to the emulator); button presses go through the emulator (`press_data`), so the
bot answers a query Telegram really has open, through polling and the update processor.

For every generated update:
- the error handler is never reached (no record on the `handlers.errors` logger);
- a private message gets an answer in the chat, and the Arabic-speaking resident is answered
  in Arabic; every pressed button gets its answerCallbackQuery (no spinner left);
- what must change nothing changes nothing: foreign groups and channels, updates without a
  user or a chat, edited messages, garbage or forged callback data, another person's buttons,
  and a resident's replay of staff buttons (table counts and workshop seats before/after).
And while all of it runs, no log record holds a simulated person's Telegram id, first name
or any text they sent.

Examples are few (CI time) and derandomized, with no example database, so runs are
deterministic.
"""

from __future__ import annotations

import itertools
import logging
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from emulator.client import EmulatorClient, SimulatedUser
from emulator.server import BotApiEmulator
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update

from bot.plumbing.callbacks import ACTIONS
from bot.plumbing.context import BotApplication
from bot.services.residents import ResidentService
from storage.db import Database
from storage.models import Base, Registration, Workshop
from tests.e2e import bot_running, services_of, settings_for
from tests.factories import new_clock, seed_place, seed_workshop

pytestmark = [pytest.mark.storage, pytest.mark.e2e]

ADMIN_CHAT = -100_777
FOREIGN_GROUP = -200_188
FOREIGN_CHANNEL = -100_399
# Large, distinctive ids and names, so that finding one in a log line means a leak.
RESIDENT_FR = 7_301_911_43
RESIDENT_AR = 7_302_922_54
NEWCOMER = 7_303_933_65
MEDIATOR = 7_304_944_76
COORDINATOR = 7_305_955_87
FACILITATOR = 7_306_966_98
PEOPLE = {
    RESIDENT_FR: ("Oxalinde", "fr"),
    RESIDENT_AR: ("Qadriyyah", "ar"),
    NEWCOMER: ("Ubertholt", "en"),
    MEDIATOR: ("Mehdiwan", "fr"),
    COORDINATOR: ("Clairvaux", "fr"),
    FACILITATOR: ("Fatoumbel", "fr"),
}
RESIDENTS = (RESIDENT_FR, RESIDENT_AR, NEWCOMER)
STAFF = (MEDIATOR, COORDINATOR, FACILITATOR)
ARABIC = re.compile(r"[\u0600-\u06FF]")
# Buttons only staff may press; a resident replaying one (correctly signed for them) must
# be refused and change nothing.
STAFF_ACTIONS = tuple(
    name
    for name, (code, _) in ACTIONS.items()
    if code[0] in "WGT"
    or name.startswith("roll_")
    or (
        code[0] == "B" and name not in ("broadcast_optout", "broadcast_optin", "broadcast_settings")
    )
)
COMMANDS = (
    "start menu workshops mine language help privacy needs checkin claim mydata forget "
    "attendance broadcast enrol newworkshop editworkshop stats export grant revoke"
).split()
# Library loggers at DEBUG would hold whole updates; production keeps them at INFO and above
# (bot/logs.py), and so does the audit.
LIBRARY_LOGGERS = (
    "telegram",
    "aiohttp",
    "httpx",
    "httpcore",
    "aiosqlite",
    "asyncpg",
    "sqlalchemy",
    "hpack",
)


@dataclass
class Bench:
    application: BotApplication
    client: EmulatorClient
    db: Database
    users: dict[int, SimulatedUser]
    keyboard_of: dict[int, int]  # a bot message with a keyboard in each private chat
    live_workshop: int
    cancelled_workshop: int
    records: list[logging.LogRecord] = field(default_factory=list)
    texts_sent: set[str] = field(default_factory=set)
    ids = itertools.count(10**7)


class Capture(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__(logging.DEBUG)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        library = record.name.split(".")[0] in LIBRARY_LOGGERS
        if library and record.levelno < logging.INFO:
            return
        self.records.append(record)


@pytest.fixture
async def bench(db: Database, database_url: str) -> AsyncIterator[Bench]:
    clock = new_clock()
    place = await seed_place(db)
    live = await seed_workshop(db, clock, place=place, title="Atelier vivant")
    cancelled = await seed_workshop(db, clock, place=place, title="Atelier annulé")
    async with db.write() as session:
        (await session.get(Workshop, cancelled)).status = "cancelled"  # type: ignore[union-attr]
    residents = ResidentService(db, clock)
    for telegram_id in (RESIDENT_FR, RESIDENT_AR):
        name, language = PEOPLE[telegram_id]
        await residents.give_consent(telegram_id, name, language)
    records: list[logging.LogRecord] = []
    capture = Capture(records)
    root = logging.getLogger()
    root.addHandler(capture)
    # The project's own modules at DEBUG, everything they might log included.
    ours = [logging.getLogger(name) for name in ("bot", "handlers", "storage")]
    previous_levels = [logger.level for logger in ours]
    for logger in ours:
        logger.setLevel(logging.DEBUG)
    try:
        async with BotApiEmulator() as emulator, EmulatorClient(emulator.side_url) as client:
            users = {
                tid: client.user(tid, name, language) for tid, (name, language) in PEOPLE.items()
            }
            await client.register(*users.values())
            admin = client.group(ADMIN_CHAT, "Facilitateurs")
            await admin.send(users[FACILITATOR], "Bonjour l'équipe")
            await client.group(FOREIGN_GROUP, "Quartier").send(users[RESIDENT_FR], "salut")
            await client.channel(FOREIGN_CHANNEL, "Une chaîne").post("annonce")
            config = settings_for(
                emulator,
                database_url,
                admin_chat_id=ADMIN_CHAT,
                staff=f"mediator:{MEDIATOR},coordinator:{COORDINATOR},facilitator:{FACILITATOR}",
                flood_rate=100,
                flood_burst=1000,
                outbox_sweep_seconds=60,
            )
            async with bot_running(config, clock) as application:
                keyboard_of = {}
                for telegram_id in PEOPLE:
                    sent = await application.bot.send_message(
                        telegram_id,
                        "·",
                        reply_markup=InlineKeyboardMarkup(
                            [[InlineKeyboardButton("·", callback_data="1|m|x")]]
                        ),
                    )
                    keyboard_of[telegram_id] = sent.message_id
                yield Bench(application, client, db, users, keyboard_of, live, cancelled, records)
    finally:
        root.removeHandler(capture)
        for logger, level in zip(ours, previous_levels, strict=True):
            logger.setLevel(level)


# -- what can change ------------------------------------------------------------------------


async def fingerprint(db: Database) -> tuple[int, ...]:
    """Row counts of every table and the seats of the workshops, in one query."""
    tables = Base.metadata.sorted_tables
    columns = [select(func.count()).select_from(t).scalar_subquery() for t in tables]
    columns.append(select(func.coalesce(func.sum(Workshop.seats_taken), 0)).scalar_subquery())
    columns.append(select(func.count()).where(Workshop.status == "scheduled").scalar_subquery())
    async with db.read() as session:
        row = (await session.execute(select(*columns))).one()
    return tuple(int(value) for value in row)


# -- updates --------------------------------------------------------------------------------


def _user(telegram_id: int) -> dict[str, Any]:
    name, language = PEOPLE[telegram_id]
    return {"id": telegram_id, "is_bot": False, "first_name": name, "language_code": language}


def _private(telegram_id: int) -> dict[str, Any]:
    return {"id": telegram_id, "type": "private", "first_name": PEOPLE[telegram_id][0]}


def _message(bench: Bench, chat: dict, sender: int | None, text: str) -> dict[str, Any]:
    message: dict[str, Any] = {
        "message_id": next(bench.ids),
        "date": int(time.time()),
        "chat": chat,
        "text": text,
    }
    if sender is not None:
        message["from"] = _user(sender)
    command = re.match(r"/[A-Za-z0-9_@]+", text)
    if command:
        message["entities"] = [{"type": "bot_command", "offset": 0, "length": command.end()}]
    return message


def _update(bench: Bench, **content: Any) -> Update:
    return Update.de_json({"update_id": next(bench.ids), **content}, bench.application.bot)


# Text as people and attackers type it: any unicode (right-to-left, emoji, control
# characters, NUL), sometimes longer than Telegram's 4096.
any_text = st.one_of(
    st.text(min_size=1, max_size=60),
    st.text(
        alphabet=st.sampled_from(
            "ابتثجحخدذرسشصضطظعغفقكلمنهوي \u200f\u202e👍🏽👨‍👩‍👧\x00\x07\n\t<>&\"'"
        ),
        min_size=1,
        max_size=80,
    ),
    st.integers(4090, 4200).map(lambda n: "é" * n),
).filter(lambda text: text.strip() != "")

absurd_argument = st.one_of(
    st.sampled_from(["", "-1", "0", "abc", "999999999999999999999", "mediator", "1e9", "%s"]),
    st.text(max_size=20),
    st.integers(500, 520).map(lambda n: "A" * n),
)
command_text = st.builds(
    lambda name, args: " ".join([f"/{name}", *args]).strip(),
    st.sampled_from(COMMANDS),
    st.lists(absurd_argument, max_size=3),
)


@st.composite
def signed_callback(draw: st.DrawFn) -> tuple[str, int, int, tuple]:
    """A correctly signed button for `owner` (kind "own"), or one made for somebody else."""
    owner = draw(st.sampled_from(sorted(PEOPLE)))
    action = draw(st.sampled_from(sorted(ACTIONS)))
    args = tuple(
        draw(
            st.sampled_from([0, 1])
            if kind == "flag"
            else st.sampled_from(["fr", "en", "ar"])
            if kind == "lang"
            else st.one_of(st.integers(0, 3), st.integers(0, 2**31 - 1))
        )
        for kind in ACTIONS[action][1]
    )
    presser = draw(st.one_of(st.just(owner), st.sampled_from(sorted(PEOPLE))))
    return action, owner, presser, args


garbage_data = st.one_of(
    st.binary(min_size=1, max_size=64).map(lambda b: b.decode("latin-1")),
    st.text(min_size=1, max_size=64),
    st.sampled_from(["1|r|1|0|0|0|AAAAAAAA", "2|m|x", "1|zz|x", "1|m", "|||", "1|r|-1|0|0|0|x"]),
)

event = st.one_of(
    st.tuples(st.just("text"), st.sampled_from(sorted(PEOPLE)), any_text),
    st.tuples(st.just("command"), st.sampled_from(sorted(PEOPLE)), command_text),
    st.tuples(st.just("edited"), st.sampled_from(sorted(PEOPLE)), command_text),
    st.tuples(st.just("signed"), st.just(0), signed_callback()),
    st.tuples(st.just("stale"), st.sampled_from(RESIDENTS), st.sampled_from(["register", "card"])),
    st.tuples(st.just("garbage"), st.sampled_from(sorted(PEOPLE)), garbage_data),
    st.tuples(st.just("group"), st.sampled_from(sorted(PEOPLE)), st.one_of(any_text, command_text)),
    st.tuples(st.just("channel"), st.just(0), st.one_of(any_text, command_text)),
    st.tuples(st.just("admin"), st.sampled_from(STAFF), st.one_of(any_text, command_text)),
    st.tuples(st.just("no_chat"), st.sampled_from(sorted(PEOPLE)), any_text),
    st.tuples(st.just("blocked"), st.sampled_from(RESIDENTS), st.booleans()),
)


# -- the property ---------------------------------------------------------------------------


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(events=st.lists(event, min_size=1, max_size=5))
# Always played: typed answers with NUL, control characters and over-long text in every
# conversation that stores them, and the absurd arguments named in the issue.
@example(events=[("command", MEDIATOR, "/newworkshop"), ("text", MEDIATOR, "Titre\x00nul\u202e")])
@example(events=[("command", MEDIATOR, "/broadcast"), ("text", MEDIATOR, "Fête\x00 " * 600)])
@example(
    events=[
        ("command", MEDIATOR, "/enrol"),
        ("text", MEDIATOR, "Nom\x00\x07"),
        ("text", MEDIATOR, "06\x0012"),
    ]
)
@example(events=[("command", RESIDENT_AR, "/needs"), ("text", RESIDENT_AR, "\x00" + "ب" * 5000)])
@example(
    events=[
        ("command", RESIDENT_FR, "/checkin " + "A" * 500),
        ("command", COORDINATOR, "/editworkshop -1"),
        ("command", COORDINATOR, "/grant abc"),
        ("command", COORDINATOR, "/grant mediator 99999999999999999999999"),
        ("command", COORDINATOR, "/stats 2026-13 nulle-part"),
    ]
)
@example(
    events=[
        ("signed", 0, ("mediator_ask", RESIDENT_FR, RESIDENT_FR, ())),
        ("text", RESIDENT_FR, "aide\x00" * 900),
    ]
)
async def test_no_input_breaks_the_bot_or_changes_what_it_must_not(
    bench: Bench, events: list[tuple]
) -> None:
    for kind, who, payload in events:
        await play(bench, kind, who, payload)
    errors = [r for r in bench.records if r.name.startswith("handlers.errors") and r.levelno >= 40]
    assert not errors, [r.getMessage() for r in errors]
    audit_logs(bench)


async def play(bench: Bench, kind: str, who: int, payload: Any) -> None:
    """Feed one event and check what must hold for its kind."""
    before = await fingerprint(bench.db)
    last_seq = (await bench.client.stats())["last_seq"]
    strict = True  # nothing may change in the database
    if kind in ("text", "command"):
        bench.texts_sent.add(payload)
        update = _update(bench, message=_message(bench, _private(who), who, payload))
        await bench.application.process_update(update)
        await answered_in_chat(bench, who, last_seq)
        strict = False
    elif kind == "edited":
        bench.texts_sent.add(payload)
        edited = _message(bench, _private(who), who, payload) | {"edit_date": int(time.time())}
        await bench.application.process_update(_update(bench, edited_message=edited))
    elif kind == "signed":
        action, owner, presser, args = payload
        data = services_of(bench.application).callbacks.encode(owner, action, *args)
        await press(bench, presser, data)
        if presser == owner and not (presser in RESIDENTS and action in STAFF_ACTIONS):
            strict = False  # a genuine button of this person: it may act
    elif kind == "stale":
        services = services_of(bench.application)
        data = services.callbacks.encode(who, payload, bench.cancelled_workshop, 0, 0, 0)
        await press(bench, who, data)
        gone = services.callbacks.encode(who, payload, 2**31 - 1, 0, 0, 0)
        await press(bench, who, gone)
    elif kind == "garbage":
        await press(bench, who, payload)
    elif kind == "group":
        bench.texts_sent.add(payload)
        chat = {"id": FOREIGN_GROUP, "type": "supergroup", "title": "Quartier"}
        await bench.application.process_update(
            _update(bench, message=_message(bench, chat, who, payload))
        )
    elif kind == "channel":
        bench.texts_sent.add(payload)
        chat = {"id": FOREIGN_CHANNEL, "type": "channel", "title": "Une chaîne"}
        await bench.application.process_update(
            _update(bench, channel_post=_message(bench, chat, None, payload))
        )
    elif kind == "admin":
        bench.texts_sent.add(payload)
        chat = {"id": ADMIN_CHAT, "type": "supergroup", "title": "Facilitateurs"}
        message = _message(bench, chat, who, payload)
        message["reply_to_message"] = _message(bench, chat, None, "une carte")
        await bench.application.process_update(_update(bench, message=message))
    elif kind == "no_chat":
        bench.texts_sent.add(payload)
        inline = {"id": str(next(bench.ids)), "from": _user(who), "query": payload, "offset": ""}
        await bench.application.process_update(_update(bench, inline_query=inline))
        answer = {
            "poll_id": "p1",
            "user": _user(who),
            "option_ids": [0],
            "option_persistent_ids": ["a"],
        }
        await bench.application.process_update(_update(bench, poll_answer=answer))
    elif kind == "blocked":
        bot = {"id": bench.application.bot.id, "is_bot": True, "first_name": "Bot"}
        statuses = ({"status": "member"}, {"status": "kicked", "until_date": 0})
        old, new = statuses if payload else statuses[::-1]
        change = {
            "chat": _private(who),
            "from": _user(who),
            "date": int(time.time()),
            "old_chat_member": {"user": bot, **old},
            "new_chat_member": {"user": bot, **new},
        }
        await bench.application.process_update(_update(bench, my_chat_member=change))
        strict = False  # blocking the bot may mark the person inactive
    if strict:
        assert await fingerprint(bench.db) == before, (kind, who, payload)


async def press(bench: Bench, presser: int, data: str) -> None:
    """Press a button carrying `data` in the presser's chat; it must be answered."""
    user = bench.users[presser]
    query_id = await user.press_data(data, message_id=bench.keyboard_of[presser])
    await user.callback_answer(query_id, timeout=10)


async def answered_in_chat(bench: Bench, who: int, after: int) -> None:
    """The bot said something in the person's chat, in Arabic for the Arabic speaker."""
    events = [
        e
        for e in await bench.client.events(after, timeout=0)
        if e.chat_id == who and e.source == "bot" and e.kind in ("message", "edit")
    ]
    assert events, f"no answer to {who}"
    if who == RESIDENT_AR:
        texts = [e.message.text or e.message.caption or "" for e in events if e.message]
        assert any(ARABIC.search(text) for text in texts), texts


def audit_logs(bench: Bench) -> None:
    """No Telegram id, first name or sent text of a simulated person in any log record."""
    formatter = logging.Formatter("%(name)s %(message)s")
    secrets = [str(telegram_id) for telegram_id in PEOPLE]
    secrets += [name for name, _ in PEOPLE.values()]
    # Short or common texts ("a", "/start") are in log lines for other reasons.
    secrets += [
        text for text in bench.texts_sent if len(text.strip()) >= 8 and not text.startswith("/")
    ]
    for record in bench.records:
        line = formatter.format(record)
        leaked = [secret for secret in secrets if secret in line]
        assert not leaked, (record.name, line[:300])


async def registrations_of(db: Database) -> list[tuple[int, str]]:
    async with db.read() as session:
        rows = await session.execute(
            select(Registration.workshop_id, Registration.status).order_by(Registration.id)
        )
        return [(workshop_id, str(status)) for workshop_id, status in rows]


async def test_forged_buttons_never_act_for_another_person_a_cancelled_workshop_or_a_role(
    bench: Bench,
) -> None:
    services = services_of(bench.application)
    encode = services.callbacks.encode
    live, cancelled = bench.live_workshop, bench.cancelled_workshop

    async def pressed(presser: int, data: str) -> str:
        user = bench.users[presser]
        query_id = await user.press_data(data, message_id=bench.keyboard_of[presser])
        return (await user.callback_answer(query_id)).text or ""

    # Another person's valid button: refused, in the presser's language.
    answer = await pressed(RESIDENT_AR, encode(RESIDENT_FR, "register", live, 0, 0, 0))
    assert ARABIC.search(answer), answer
    # A genuine button for a cancelled workshop, or one that no longer exists.
    await pressed(RESIDENT_FR, encode(RESIDENT_FR, "register", cancelled, 0, 0, 0))
    await pressed(RESIDENT_FR, encode(RESIDENT_FR, "register", 2**31 - 1, 0, 0, 0))
    assert await registrations_of(bench.db) == []
    # A resident replaying staff buttons signed for them: refused by role.
    for action, args in (("we_cancel_yes", (live,)), ("broadcast_confirm", ()), ("roll_list", ())):
        answer = await pressed(RESIDENT_FR, encode(RESIDENT_FR, action, *args))
        assert "réservée" in answer, (action, answer)
    # A mediator's own button, pressed by a resident: its signature is not theirs.
    answer = await pressed(RESIDENT_FR, encode(MEDIATOR, "we_cancel_yes", live))
    assert "plus valable" in answer
    async with bench.db.read() as session:
        assert (await session.get(Workshop, live)).status == "scheduled"  # type: ignore[union-attr]

    # Control: the same register button, pressed by the person it was made for, works.
    await pressed(RESIDENT_FR, encode(RESIDENT_FR, "register", live, 0, 0, 0))
    assert await registrations_of(bench.db) == [(live, "confirmed")]
