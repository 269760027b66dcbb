"""The facilitators' channel: one-line notices of registrations, cancellations, promotions.

The lines are queued by the registration transactions (bot/services/channel.py) and rendered
here at send time, in the facilitators' language (the default language). They are sent
silently: the channel is read at leisure, a mediator card is what should ring.
"""

from __future__ import annotations

from telegram.constants import ParseMode

from bot.plumbing.context import BotContext
from bot.plumbing.delivery import Outgoing
from bot.services.channel import NOTICE_KIND, NoticeEvent, NoticeFacts
from bot.services.outbox import ClaimedMessage
from bot.text.i18n import Html
from bot.text.user_text import isolated
from handlers.common import Reply
from handlers.notices import renders


@renders(NOTICE_KIND)
async def render_channel_notice(
    context: BotContext, message: ClaimedMessage
) -> list[Outgoing] | None:
    services = context.services
    facts = await services.channel_notices.facts(message.payload)
    if facts is None or message.chat_id is None:
        return None
    r = Reply.for_recipient(context, message.chat_id, services.settings.default_language)
    return [
        Outgoing(
            "send_message",
            {
                "text": notice_line(r, facts),
                "parse_mode": ParseMode.HTML,
                "disable_notification": True,
            },
        )
    ]


def notice_line(r: Reply, facts: NoticeFacts) -> str:
    """One short line, e.g. "✅ Alice — Atelier (mar. 2 déc. 14:00, EPN) · 3 places libres"."""
    services = r.context.services
    translator, tz = services.translator, services.settings.tz
    workshop = r.t(
        "relay.notice.workshop",
        title=translator.localized(facts.title, r.language),
        date=translator.short_date(r.language, facts.starts_at, tz),
        time=translator.time(r.language, facts.starts_at, tz),
        venue=facts.venue_name,
    )
    common = {
        "person": person_name(r, facts.person),
        "workshop": Html(workshop),
    }
    seats = (
        r.p("relay.notice.seats_left", facts.seats_left)
        if facts.seats_left
        else r.t("relay.notice.full")
    )
    match facts.event:
        case NoticeEvent.CONFIRMED:
            return r.t("relay.notice.confirmed", seats=Html(seats), **common)
        case NoticeEvent.WAITLISTED:
            return r.t("relay.notice.waitlisted", rank=facts.waitlist_rank or 0, **common)
        case NoticeEvent.CANCELLED if facts.promoted:
            promoted = person_name(r, facts.promoted_person)
            return r.t("relay.notice.cancelled_promoted", promoted=promoted, **common)
        case NoticeEvent.CANCELLED:
            return r.t("relay.notice.cancelled", seats=Html(seats), **common)
        case NoticeEvent.LEFT_WAITLIST:
            return r.t("relay.notice.left_waitlist", **common)
        case NoticeEvent.PROMOTED:
            return r.t("relay.notice.promoted", **common)


def person_name(r: Reply, first_name: str | None) -> str:
    """A resident's first name set apart from the line (user input), or "someone";
    for every line that names a resident to the team (notices, relay cards)."""
    return isolated(first_name) if first_name else r.label("relay.notice.someone")
