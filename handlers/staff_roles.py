"""Team roles in chat: /grant and /revoke for coordinators.

`/grant ROLE USER_ID` changes at once; `/grant USER_ID` offers the roles as buttons; `/grant`
alone explains. Every change is recorded with who made it (bot/services/staff.py), the person
is told in their language through the outbox, and their command menu follows their roles.
"""

from __future__ import annotations

import logging
import re

from telegram import Update
from telegram.error import BadRequest, Forbidden
from telegram.ext import CallbackQueryHandler, CommandHandler, filters

from bot.plumbing.callbacks import define_actions
from bot.plumbing.context import BotContext, BotHandler
from bot.plumbing.delivery import Outgoing, kick_delivery
from bot.services.outbox import ClaimedMessage
from bot.services.staff import COORDINATOR, ROLE_NOTICE, RoleOutcome
from bot.text.i18n import Html
from bot.text.user_text import quoted
from handlers.common import Reply, require_role
from handlers.notices import renders
from handlers.staff_menus import refresh_staff_menu
from storage.models import StaffRole

log = logging.getLogger(__name__)

# Button arguments are 31-bit numbers and Telegram ids are larger: a person's id travels as
# two parts, id // SPLIT and id % SPLIT. The role travels as its index in ROLES, an order
# that buttons already sent depend on (append new roles, never reorder).
define_actions(
    {
        "role_grant": ("Gg", ("id", "id", "id")),  # role index, id high part, id low part
        "role_revoke": ("Gr", ("id", "id", "id")),
    }
)
CALLBACK_PATTERN = r"^1\|G"
ROLES: tuple[str, ...] = tuple(StaffRole)
SPLIT = 2**31
PRIVATE = filters.ChatType.PRIVATE
RESIDENT = "resident"
_TELEGRAM_ID = re.compile(r"\d{1,15}")


def _roles_list(r: Reply) -> Html:
    return Html(
        "\n".join(
            r.t(
                "roles.line",
                key=role,
                name=r.label(f"roles.name.{role}"),
                about=r.label(f"roles.about.{role}"),
            )
            for role in ROLES
        )
    )


def _telegram_id(text: str) -> int | None:
    return int(text) if _TELEGRAM_ID.fullmatch(text) and int(text) > 0 else None


async def grant_command(update: Update, context: BotContext) -> None:
    """/grant ROLE USER_ID (coordinators)."""
    await _role_command(update, context, "grant")


async def revoke_command(update: Update, context: BotContext) -> None:
    """/revoke ROLE USER_ID (coordinators)."""
    await _role_command(update, context, "revoke")


async def _role_command(update: Update, context: BotContext, action: str) -> None:
    r = await Reply.for_update(update, context)
    if not await require_role(r, f"/{action}", COORDINATOR):  # not its arguments: an id
        return
    args = context.args or []
    if len(args) == 1 and (target := _telegram_id(args[0])) is not None:
        await _offer_roles(r, action, target)
        return
    if len(args) != 2:
        await r.send(r.t(f"roles.usage_{action}", roles=_roles_list(r)))
        return
    role, user = args[0].lower(), args[1]
    if role == RESIDENT:
        await r.send(r.t("roles.resident"))
        return
    if role not in ROLES:
        await r.send(r.t("roles.unknown_role", value=quoted(args[0]), keys=", ".join(ROLES)))
        return
    target = _telegram_id(user)
    if target is None:
        await r.send(r.t("roles.bad_user", value=quoted(user)))
        return
    await _change(r, action, role, target)


async def _offer_roles(r: Reply, action: str, target: int) -> None:
    """The friendlier path: the roles that can be given (or taken back) as buttons."""
    held = await r.context.services.staff.roles_of(target)
    choices = [role for role in ROLES if (role in held) == (action == "revoke")]
    if not choices:
        await r.send(
            r.t("roles.holds_none" if action == "revoke" else "roles.all_held", user=target)
        )
        return
    high, low = divmod(target, SPLIT)
    keyboard = [
        [r.button(r.label(f"roles.name.{role}"), f"role_{action}", ROLES.index(role), high, low)]
        for role in choices
    ]
    await r.send(r.t(f"roles.choose_{action}", user=target), keyboard)


async def on_button(update: Update, context: BotContext) -> None:
    """A role button: checked again (signature, then role) on every press."""
    query = update.callback_query
    assert query is not None
    r = await Reply.for_update(update, context)
    callback = context.services.callbacks.decode(r.user_id, query.data)
    if callback is None or callback.int_arg(0) >= len(ROLES):
        log.info(
            "refused stale or forged role button from %s", context.services.pseudonym(r.user_id)
        )
        await r.toast(r.label("button.stale"), alert=True)
        return
    if not await require_role(r, "a role button", COORDINATOR):
        return
    await r.toast()
    action = "grant" if callback.action == "role_grant" else "revoke"
    target = callback.int_arg(1) * SPLIT + callback.int_arg(2)
    await _change(r, action, ROLES[callback.int_arg(0)], target)


async def _change(r: Reply, action: str, role: str, target: int) -> None:
    """Make the change, update the person's menu, say what happened, then tell them."""
    services = r.context.services
    change = services.staff.grant if action == "grant" else services.staff.revoke
    outcome = await change(r.user_id, target, role)
    params = {"user": target, "role": r.label(f"roles.name.{role}")}
    if outcome is RoleOutcome.NOT_ALLOWED:  # lost the coordinator role a moment ago
        await r.show(r.t("staff.refused"))
        return
    if outcome is RoleOutcome.DONE:
        log.info(
            "%s %s: %s by %s",
            action,
            role,
            services.pseudonym(target),
            services.pseudonym(r.user_id),
        )
        done = r.t("roles.granted" if action == "grant" else "roles.revoked", **params)
        if not await refresh_staff_menu(r.context.bot, services, target):
            done += "\n" + r.t("roles.menu_later")
        await r.show(done)
        kick_delivery(r.context)
        return
    await r.show(r.t(f"roles.{outcome.value}", **params))


@renders(ROLE_NOTICE)
async def _role_notice(context: BotContext, message: ClaimedMessage) -> list[Outgoing] | None:
    """Tell the person, unless the change was undone meanwhile or they never talked to us.

    Their menu is set again here, just before: the notice says the new commands are in the
    menu only when Telegram took it, otherwise how to get them (/start)."""
    assert message.chat_id is not None
    role, action = message.payload["role"], message.payload["action"]
    held = role in await context.services.staff.roles_of(message.chat_id)
    if held != (action == "grant"):
        return None
    try:
        await context.bot.get_chat(message.chat_id)
    except (BadRequest, Forbidden):
        return None
    services = context.services
    menu_set = await refresh_staff_menu(context.bot, services, message.chat_id)
    profile = await services.residents.profile(message.chat_id)
    r = Reply.for_recipient(context, message.chat_id, profile.language if profile else None)
    key = f"roles.notice_{action}" if menu_set else f"roles.notice_{action}_no_menu"
    return [Outgoing.message(r.t(key, role=r.label(f"roles.name.{role}")))]


def staff_role_handlers() -> list[BotHandler]:
    return [
        CommandHandler("grant", grant_command, filters=PRIVATE),
        CommandHandler("revoke", revoke_command, filters=PRIVATE),
        CallbackQueryHandler(on_button, pattern=CALLBACK_PATTERN),
    ]
