"""How the resident journey looks: texts and keyboards built from service results."""

from __future__ import annotations

from html import escape

from telegram import InlineKeyboardButton

from bot.services.registration import MyPlace
from bot.services.workshops.admin import ManagedWorkshop
from bot.services.workshops.listing import Choice, WorkshopCard, WorkshopPage, WorkshopSummary
from bot.text.i18n import LANGUAGE_NAMES, Html
from handlers.common import Reply

Keyboard = list[list[InlineKeyboardButton]]
BUTTON_TITLE_CHARS = 38


def _escape_html(text: str) -> str:
    return escape(text, quote=False)


def shorten(text: str, limit: int = BUTTON_TITLE_CHARS) -> str:
    """Shorten a title for a button, at a word boundary when there is one."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,:;-") + "…"


def consent_prompt(r: Reply) -> tuple[str, Keyboard]:
    keyboard = [
        [r.button(r.t("consent.accept"), "consent", 1)],
        [r.button(r.t("consent.decline"), "consent", 0)],
        [
            r.button(name, "notice", code)
            for code, name in LANGUAGE_NAMES.items()
            if code != r.language
        ],
    ]
    months = r.p("privacy.months", r.context.services.settings.retention_months)
    return r.t("start.welcome") + "\n\n" + r.t("privacy.short", months=Html(months)), keyboard


def language_choice(r: Reply) -> tuple[str, Keyboard]:
    keyboard = [[r.button(name, "lang", code)] for code, name in LANGUAGE_NAMES.items()]
    # The announcements switch (handlers/broadcasts.py) lives with the other settings.
    keyboard.append([r.button(r.label("broadcast.settings_button"), "broadcast_settings")])
    return r.t("language.ask"), keyboard


def main_menu(r: Reply, greeting: str | None = None) -> tuple[str, Keyboard]:
    keyboard = [
        [r.button(r.t("menu.workshops"), "list", 0, 0, 0)],
        [r.button(r.t("menu.mine"), "mine")],
        [r.button(r.t("menu.language"), "languages")],
        [r.button(r.t("menu.help"), "help")],
    ]
    if r.context.services.settings.admin_chat_id is not None:
        keyboard.insert(-1, [r.button(r.label("relay.button"), "mediator_ask")])
    return (greeting or r.t("menu.title")), keyboard


def _when(r: Reply, summary: WorkshopSummary) -> str:
    services = r.context.services
    tz = services.settings.tz
    translator = services.translator
    return r.t(
        "workshop.when",
        date=translator.date(r.language, summary.starts_at, tz),
        start=translator.time(r.language, summary.starts_at, tz),
        end=translator.time(r.language, summary.ends_at, tz),
    )


def workshop_list(
    r: Reply,
    page: WorkshopPage,
    territory_id: int,
    theme_id: int,
    area_name: str | None,
    theme_name: dict[str, str] | None,
) -> tuple[str, Keyboard]:
    translator = r.context.services.translator
    tz = r.context.services.settings.tz
    filters = r.t(
        "list.filters",
        area=area_name or r.t("list.all_areas"),
        theme=translator.localized(theme_name, r.language)
        if theme_name
        else r.t("list.all_themes"),
    )
    keyboard: Keyboard = [
        [
            r.button(r.t("list.pick_area"), "pick_area", theme_id),
            r.button(r.t("list.pick_theme"), "pick_theme", territory_id),
        ]
    ]
    if page.total == 0:
        text = r.t("list.title") + "\n" + filters + "\n\n" + r.t("list.empty")
        if territory_id or theme_id:
            keyboard.append([r.button(r.t("list.show_all"), "list", 0, 0, 0)])
    else:
        text = "\n".join(
            [
                r.t("list.title"),
                filters,
                "",
                r.p("list.count", page.total),
                r.t("list.page", page=page.page + 1, pages=page.page_count)
                if page.page_count > 1
                else "",
                r.t("list.tap_one"),
            ]
        ).replace("\n\n\n", "\n\n")
        for item in page.items:
            seats = "🈵 " if item.seats_left == 0 else ""
            label = (
                f"{seats}{translator.short_date(r.language, item.starts_at, tz)} "
                f"{translator.time(r.language, item.starts_at, tz)} · "
                f"{shorten(translator.localized(item.title, r.language))}"
            )
            keyboard.append([r.button(label, "card", item.id, territory_id, theme_id, page.page)])
        navigation = []
        if page.page > 0:
            navigation.append(
                r.button(r.t("list.previous"), "list", territory_id, theme_id, page.page - 1)
            )
        if page.page + 1 < page.page_count:
            navigation.append(
                r.button(r.t("list.next"), "list", territory_id, theme_id, page.page + 1)
            )
        if navigation:
            keyboard.append(navigation)
    keyboard.append([r.button(r.t("menu.back_to_menu"), "menu")])
    return text, keyboard


def filter_choices(
    r: Reply, choices: list[Choice], *, kind: str, territory_id: int, theme_id: int
) -> tuple[str, Keyboard]:
    """Buttons to choose a neighbourhood (kind="area") or a theme (kind="theme")."""
    translator = r.context.services.translator
    keyboard: Keyboard = []
    for choice in choices:
        name = translator.localized(choice.name, r.language)
        if kind == "area":
            keyboard.append([r.button(name, "list", choice.id, theme_id, 0)])
        else:
            keyboard.append([r.button(name, "list", territory_id, choice.id, 0)])
    if kind == "area":
        keyboard.append([r.button(r.t("list.all_areas"), "list", 0, theme_id, 0)])
    else:
        keyboard.append([r.button(r.t("list.all_themes"), "list", territory_id, 0, 0)])
    return r.t(f"list.choose_{kind}"), keyboard


def workshop_card(r: Reply, card: WorkshopCard, back: tuple[int, int, int]) -> tuple[str, Keyboard]:
    translator = r.context.services.translator
    summary = card.summary
    lines = [
        f"<b>{_escape_html(translator.localized(summary.title, r.language))}</b>",
        r.t("workshop.theme", theme=translator.localized(summary.theme_name, r.language)),
        _when(r, summary),
        r.t(
            "workshop.where",
            venue=card.venue_name,
            address=card.venue_address,
            area=summary.territory_name,
        ),
    ]
    description = translator.localized(card.description, r.language)
    if description:
        lines += ["", _escape_html(description)]
    opening = translator.localized(card.opening_notes, r.language)
    if opening:
        lines.append(r.t("workshop.opening", notes=opening))
    access = translator.localized(card.accessibility_notes, r.language)
    if access:
        lines.append(r.t("workshop.access", notes=access))
    lines.append("")
    keyboard: Keyboard = []
    workshop_id = summary.id
    if card.status == "cancelled":
        lines.append(r.t("workshop.cancelled"))
    elif not card.is_open:
        lines.append(r.t("workshop.closed"))
    elif card.my_status == "confirmed":
        lines.append(r.t("workshop.you_are_in"))
        keyboard.append([r.button(r.t("workshop.cancel"), "cancel_ask", workshop_id, 0)])
    elif card.my_status == "waitlisted":
        lines.append(r.t("workshop.you_wait", rank=card.my_waitlist_rank or 0))
        keyboard.append([r.button(r.t("workshop.leave_waitlist"), "cancel_ask", workshop_id, 0)])
    elif summary.seats_left > 0:
        lines.append(r.p("workshop.seats_left", summary.seats_left))
        keyboard.append([r.button(r.t("workshop.register"), "register", workshop_id, *back)])
    else:
        lines.append(
            r.p("workshop.full", card.waitlist_length)
            if card.waitlist_length
            else r.t("workshop.full_nobody_waiting")
        )
        keyboard.append([r.button(r.t("workshop.join_waitlist"), "register", workshop_id, *back)])
    keyboard.append([r.button(r.t("workshop.map"), "venue", workshop_id)])
    keyboard.append([r.button(r.t("workshop.back"), "list", *back)])
    return "\n".join(lines).strip(), keyboard


def place_line(r: Reply, place: MyPlace) -> str:
    translator = r.context.services.translator
    tz = r.context.services.settings.tz
    status = (
        r.t("mine.confirmed")
        if place.status == "confirmed"
        else r.t("mine.waitlisted", rank=place.waitlist_rank or 0)
    )
    return r.t(
        "mine.line",
        title=translator.localized(place.title, r.language),
        date=translator.date(r.language, place.starts_at, tz),
        start=translator.time(r.language, place.starts_at, tz),
        venue=place.venue_name,
        status=Html(status),
    )


def my_places(r: Reply, places: list[MyPlace]) -> tuple[str, Keyboard]:
    if not places:
        return r.t("mine.empty"), [
            [r.button(r.t("menu.workshops"), "list", 0, 0, 0)],
            [r.button(r.t("menu.back_to_menu"), "menu")],
        ]
    translator = r.context.services.translator
    text = "\n\n".join([r.t("mine.title"), *(place_line(r, p) for p in places)])
    keyboard: Keyboard = [
        [
            r.button(
                r.label(
                    "mine.cancel", title=shorten(translator.localized(p.title, r.language), 26)
                ),
                "cancel_ask",
                p.workshop_id,
                1,
            )
        ]
        for p in places
    ]
    keyboard.append([r.button(r.t("menu.workshops"), "list", 0, 0, 0)])
    keyboard.append([r.button(r.t("menu.back_to_menu"), "menu")])
    return text, keyboard


def _essentials(r: Reply, card: WorkshopCard) -> dict[str, str]:
    translator = r.context.services.translator
    return {
        "title": translator.localized(card.summary.title, r.language),
        "when": Html(_when(r, card.summary)),
        "venue": card.venue_name,
        "address": card.venue_address,
    }


def registration_confirmed(r: Reply, card: WorkshopCard) -> tuple[str, Keyboard]:
    return r.t("register.confirmed", **_essentials(r, card)), [
        [r.button(r.t("workshop.map"), "venue", card.summary.id)],
        [r.button(r.label("reminder.calendar_button"), "calendar", card.summary.id)],
        [r.button(r.t("menu.mine"), "mine")],
    ]


def waitlist_joined(r: Reply, card: WorkshopCard, rank: int) -> tuple[str, Keyboard]:
    return r.t("register.waitlisted", rank=rank, **_essentials(r, card)), [
        [r.button(r.t("menu.mine"), "mine")],
        [r.button(r.t("menu.workshops"), "list", 0, 0, 0)],
    ]


def cancel_question(r: Reply, card: WorkshopCard, origin: int) -> tuple[str, Keyboard]:
    key = "cancel.ask_waitlist" if card.my_status == "waitlisted" else "cancel.ask"
    keep = (
        r.button(r.t("cancel.keep"), "mine")
        if origin == 1
        else r.button(r.t("cancel.keep"), "card", card.summary.id, 0, 0, 0)
    )
    return r.t(key, **_essentials(r, card)), [
        [r.button(r.t("cancel.confirm"), "cancel_yes", card.summary.id, origin)],
        [keep],
    ]


def promotion_notice(r: Reply, card: WorkshopCard) -> tuple[str, Keyboard]:
    return r.t("register.promoted", **_essentials(r, card)), [
        [r.button(r.t("workshop.map"), "venue", card.summary.id)],
        [r.button(r.t("workshop.cancel"), "cancel_ask", card.summary.id, 1)],
    ]


async def consent_required(r: Reply) -> bool:
    """The consent gate: True, after showing the consent prompt, when the person has not
    consented and the caller must stop. A button is answered and its message replaced;
    a command or typed text gets the prompt as a new message (what r.show does then)."""
    if r.consented:
        return False
    await r.toast()
    await r.show(*consent_prompt(r))
    return True


def upcoming_picker(
    r: Reply, workshops: list[ManagedWorkshop], more: bool, page: int, pick: str, turn: str
) -> Keyboard:
    """Staff pickers of upcoming workshops: a button per workshop (action `pick`, its id),
    then previous/next page buttons (action `turn`, the page) where there are any."""
    services = r.context.services
    tz = services.settings.tz
    keyboard = [
        [
            r.button(
                shorten(
                    f"{services.translator.short_date(r.language, w.starts_at, tz)} · "
                    f"{services.translator.localized(w.title, r.language)}"
                ),
                pick,
                w.id,
            )
        ]
        for w in workshops
    ]
    pages = []
    if page > 0:
        pages.append(r.button(r.label("workshop_admin.previous"), turn, page - 1))
    if more:
        pages.append(r.button(r.label("workshop_admin.next"), turn, page + 1))
    if pages:
        keyboard.append(pages)
    return keyboard
