"""Rendering of outbox messages, in the recipient's language at the moment of sending.

Each feature registers a renderer for the kinds of message it queues (`@renders("kind")`).
A renderer returns what to send, or None when the message became pointless (a reminder for a
cancelled registration, a notice about a workshop that was called off): it is then dropped.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from bot.plumbing.context import BotContext
from bot.plumbing.delivery import Outgoing
from bot.services.outbox import FAILURE_REPORT, ClaimedMessage
from bot.services.registration import PROMOTION_NOTICE
from handlers import views
from handlers.common import Reply

NoticeRenderer = Callable[[BotContext, ClaimedMessage], Awaitable[list[Outgoing] | None]]
_RENDERERS: dict[str, NoticeRenderer] = {}


def renders(kind: str) -> Callable[[NoticeRenderer], NoticeRenderer]:
    def register(renderer: NoticeRenderer) -> NoticeRenderer:
        if kind in _RENDERERS:
            raise ValueError(f"a renderer for {kind!r} is already registered")
        _RENDERERS[kind] = renderer
        return renderer

    return register


async def render_notice(context: BotContext, message: ClaimedMessage) -> list[Outgoing] | None:
    renderer = _RENDERERS.get(message.kind)
    if renderer is None:
        raise ValueError(f"no renderer for outbox messages of kind {message.kind!r}")
    return await renderer(context, message)


@renders(PROMOTION_NOTICE)
async def _promotion(context: BotContext, message: ClaimedMessage) -> list[Outgoing] | None:
    assert message.chat_id is not None
    card = await context.services.catalogue.card(
        int(message.payload["workshop_id"]), message.chat_id
    )
    if card is None or card.my_status != "confirmed" or not card.is_open:
        return None
    r = Reply.for_recipient(context, message.chat_id, message.language)
    return [Outgoing.message(*views.promotion_notice(r, card))]


@renders(FAILURE_REPORT)
async def _failure_report(context: BotContext, message: ClaimedMessage) -> list[Outgoing] | None:
    """A row failed for good, to the facilitators' channel: which one and why, never its
    content (bot/services/outbox.py queues this line once per failed row)."""
    assert message.chat_id is not None
    failed = message.payload
    r = Reply.for_recipient(context, message.chat_id, context.services.settings.default_language)
    text = r.t(
        "errors.outbox_failed",
        kind=failed["kind"],
        row=failed["row"],
        attempts=failed["attempts"],
        error=failed["error"],
    )
    return [Outgoing.message(text)]
