"""Surveys in chat: questions with big buttons, written answers, invitations, cards, digests.

Each answer edits the question message in place into the next question, so the chat stays
short. A written answer reaches `capture_written_answer` through the free-text router
(handlers/free_text.py) only while the question shown last waits for text. Stale buttons (a question already
answered, a finished or closed survey) get a polite alert and change nothing.
"""

from __future__ import annotations

import html
import io
import logging
import re
from datetime import datetime

from babel.numbers import format_decimal
from telegram import InlineKeyboardButton, InputFile, Update
from telegram.ext import (
    ApplicationHandlerStop,
    CallbackQueryHandler,
    CommandHandler,
    filters,
)

from bot.plumbing.callbacks import Callback, define_actions
from bot.plumbing.context import BotContext, BotHandler, BotJobQueue
from bot.plumbing.delivery import Outgoing, kick_delivery
from bot.services.conversations import Conversation
from bot.services.outbox import ClaimedMessage
from bot.services.surveys.cards import DIGEST, INVITATION, RESPONSE_CARD, AskedQuestion, CardLine
from bot.services.surveys.definitions import (
    DATE_PLACEHOLDER,
    NEEDS,
    WORKSHOP_PLACEHOLDER,
    Option,
    QuestionDef,
    QuestionType,
    SurveyDef,
)
from bot.services.surveys.digest import QuestionSummary, RunDigest
from bot.services.surveys.engine import Problem, Step, StepOutcome
from bot.services.surveys.written_question import awaited
from bot.settings import SURVEY_SWEEP_PERIOD
from bot.text.i18n import Html
from bot.text.split import split_for_telegram
from bot.text.user_text import isolated
from handlers import views
from handlers.common import Reply
from handlers.notices import renders

log = logging.getLogger(__name__)

PRIVATE = filters.ChatType.PRIVATE
SWEEP_JOB = "survey-sweep"
SCALE_FACES = ("😞", "🙁", "😐", "🙂", "😄")
BAR_WIDTH = 10
# A digest longer than this many messages goes to the channel as a text file instead.
DIGEST_MAX_MESSAGES = 3

define_actions(
    {
        "survey_start": ("Sb", ("id",)),  # participation: start, or resume where it stopped
        "survey_later": ("Sl", ("id",)),  # participation: "not now"
        "survey_pick": ("Sp", ("id", "id", "id")),  # participation, question, option
        "survey_done": ("Sd", ("id", "id")),  # participation, question (multiple choice)
        "survey_skip": ("Ss", ("id", "id")),  # participation, question (optional ones)
    }
)

Keyboard = views.Keyboard

# Toasts for answers refused under a button; written answers are re-asked in a message.
_PROBLEM_TOASTS = {
    Problem.NOTHING_TICKED: "surveys.nothing_ticked",
    Problem.NOT_OPTIONAL: "surveys.not_optional",
    Problem.UNKNOWN_CHOICE: "button.stale",
    Problem.WRONG_TYPE: "button.stale",
}
_OUTCOME_TOASTS = {
    StepOutcome.ALREADY_DONE: "surveys.already_done",
    StepOutcome.CLOSED: "surveys.closed",
    StepOutcome.STALE: "surveys.stale",
    StepOutcome.UNKNOWN: "button.stale",
}


# -- how a survey looks -------------------------------------------------------------------


def _words(
    r: Reply,
    texts: dict[str, str] | str,
    title: dict[str, str] | None,
    starts_at: datetime | None,
) -> str:
    """A text of a definition in the person's language, as HTML, with the workshop's title
    and day."""
    services = r.context.services
    text = html.escape(services.translator.localized(texts, r.language), quote=False)
    if title is not None:
        name = html.escape(services.translator.localized(title, r.language), quote=False)
        text = text.replace(WORKSHOP_PLACEHOLDER, name)
    if starts_at is not None:
        day = services.translator.date(r.language, starts_at, services.settings.tz)
        text = text.replace(DATE_PLACEHOLDER, html.escape(day, quote=False))
    return text


def _option_label(r: Reply, question: QuestionDef, option: Option) -> str:
    if question.type is QuestionType.SCALE:
        return f"{SCALE_FACES[int(option.key) - 1]} {option.key}"
    if question.type is QuestionType.YES_NO:
        return r.label(f"surveys.answer_{option.key}")
    if option.text is None:
        return option.key
    return r.context.services.translator.localized(option.text, r.language)


def intro_text(
    r: Reply, survey: SurveyDef, title: dict[str, str] | None, starts_at: datetime | None
) -> str:
    text = _words(r, survey.intro.as_dict(), title, starts_at)
    return text + "\n" + r.t("surveys.anonymous_note") if survey.anonymous else text


def question_view(
    r: Reply, asked: AskedQuestion, *, intro: bool = False, problem: str | None = None
) -> tuple[str, Keyboard]:
    """The question, its hint and its buttons: one per row for choices, faces for a scale."""
    survey, question = asked.survey, asked.question
    title, starts_at = asked.workshop_title, asked.workshop_starts_at
    translator = r.context.services.translator
    lines = [problem, ""] if problem else []
    if intro:
        lines += [intro_text(r, survey, title, starts_at), ""]
    lines.append(f"📝 <i>{_words(r, survey.title.as_dict(), title, starts_at)}</i>")
    lines.append(f"<b>{_words(r, question.text.as_dict(), title, starts_at)}</b>")
    if question.type is QuestionType.SCALE and question.low and question.high:
        low = translator.localized(question.low.as_dict(), r.language)
        high = translator.localized(question.high.as_dict(), r.language)
        lines.append(r.t("surveys.hint_scale", low=low, high=high))
    elif question.type is QuestionType.MULTIPLE:
        lines.append(r.t("surveys.hint_multiple"))
    elif question.type is QuestionType.TEXT:
        lines.append(r.t("surveys.hint_text", limit=question.text_limit))

    pid, index = asked.participation_id, asked.index

    def pick(position: int, label: str) -> InlineKeyboardButton:
        return r.button(label, "survey_pick", pid, index, position)

    labels = [_option_label(r, question, option) for option in asked.options]
    keyboard: Keyboard
    if question.type in (QuestionType.SCALE, QuestionType.YES_NO):
        keyboard = [[pick(i, label) for i, label in enumerate(labels)]]
    elif question.type is QuestionType.MULTIPLE:
        keyboard = [
            [pick(i, ("☑ " if option.key in asked.ticked else "☐ ") + label)]
            for i, (option, label) in enumerate(zip(asked.options, labels, strict=True))
        ]
        keyboard.append([r.button(r.label("surveys.done"), "survey_done", pid, index)])
    else:
        keyboard = [[pick(i, label)] for i, label in enumerate(labels)]
    if question.optional:
        keyboard.append([r.button(r.label("surveys.skip"), "survey_skip", pid, index)])
    return "\n".join(lines), keyboard


def invitation_view(
    r: Reply,
    participation_id: int,
    survey: SurveyDef,
    title: dict[str, str] | None,
    starts_at: datetime | None,
) -> tuple[str, Keyboard]:
    return intro_text(r, survey, title, starts_at), [
        [r.button(r.label("surveys.start"), "survey_start", participation_id)],
        [r.button(r.label("surveys.later"), "survey_later", participation_id)],
    ]


async def _thanks(r: Reply, step: Step) -> tuple[str, Keyboard]:
    """The thank-you; the needs survey is offered after it if the person has not said yet."""
    assert step.survey is not None
    text = _words(r, step.survey.thanks.as_dict(), step.workshop_title, step.workshop_starts_at)
    if step.survey.key == NEEDS:
        return text, []
    surveys = r.context.services.surveys
    offer = await surveys.pending_needs_offer(r.user_id)
    if offer is None:
        return text, []
    offer_text, keyboard = invitation_view(r, offer, surveys.catalog[NEEDS], None, None)
    return text + "\n\n" + offer_text, keyboard


# -- what the person does -----------------------------------------------------------------


async def present(r: Reply, step: Step, *, intro: bool = False) -> None:
    """Show what follows an action: in place of the pressed message, or as a new message."""
    if step.card_queued:
        kick_delivery(r.context)
    if step.outcome is StepOutcome.ASK:
        assert step.question is not None
        await r.toast()
        await r.show(*question_view(r, step.question, intro=intro))
    elif step.outcome is StepOutcome.FINISHED:
        await r.toast(r.label("surveys.saved"))
        await r.show(*await _thanks(r, step))
    elif step.outcome is StepOutcome.LATER:
        await r.toast()
        assert step.participation_id is not None
        await r.show(
            r.t("surveys.later_done"),
            [[r.button(r.label("surveys.start"), "survey_start", step.participation_id)]],
        )
    elif step.outcome is StepOutcome.INVALID:
        assert step.problem is not None and step.question is not None
        if step.problem in (Problem.EMPTY, Problem.TOO_LONG):
            problem = r.t(
                f"surveys.{step.problem.value}",
                length=step.text_length or 0,
                limit=step.question.question.text_limit,
            )
            await r.send(*question_view(r, step.question, problem=problem))
        else:
            await _notify(r, _PROBLEM_TOASTS[step.problem])
    else:
        await _notify(r, _OUTCOME_TOASTS[step.outcome])


async def _notify(r: Reply, key: str) -> None:
    """A polite alert under a button; a message when the person wrote or sent a command."""
    if r.update is not None and r.update.callback_query is not None:
        await r.toast(r.label(key), alert=True)
    else:
        await r.send(r.t(key))


async def needs_command(update: Update, context: BotContext) -> None:
    """/needs: the needs survey, from its first question or where the person stopped."""
    r = await Reply.for_update(update, context)
    if await views.consent_required(r):
        return
    step = await context.services.surveys.start_needs(r.user_id)
    if step.outcome is StepOutcome.ALREADY_DONE:
        await r.send(r.t("surveys.needs_already"))
        return
    await present(r, step, intro=True)


async def on_survey_button(update: Update, context: BotContext) -> None:
    """Every survey button: checked, then applied by the engine, which re-checks everything."""
    query = update.callback_query
    assert query is not None
    r = await Reply.for_update(update, context)
    callback = context.services.callbacks.decode(r.user_id, query.data)
    if callback is None or not r.consented:
        log.info("refused stale or forged survey button")
        await r.toast(r.label("button.stale"), alert=True)
        return
    await present(r, await _apply(r, callback))


async def _apply(r: Reply, cb: Callback) -> Step:
    surveys = r.context.services.surveys
    pid = cb.int_arg(0)
    if cb.action == "survey_start":
        return await surveys.start(r.user_id, pid)
    if cb.action == "survey_later":
        return await surveys.decline(r.user_id, pid)
    if cb.action == "survey_pick":
        return await surveys.pick(r.user_id, pid, cb.int_arg(1), cb.int_arg(2))
    if cb.action == "survey_done":
        return await surveys.done(r.user_id, pid, cb.int_arg(1))
    return await surveys.skip(r.user_id, pid, cb.int_arg(1))


async def capture_written_answer(
    update: Update, context: BotContext, conversation: Conversation
) -> None:
    """A message while a text question waits (routed by handlers/free_text.py): it is the
    answer, unless the question was shown too long ago or is no longer current."""
    user, message = update.effective_user, update.effective_message
    if user is None or message is None:
        return
    participation_id = awaited(
        conversation.data, conversation.updated_at, context.services.clock.now()
    )
    if participation_id is None:
        return
    step = await context.services.surveys.answer_text(user.id, participation_id, message.text)
    if step.outcome not in (StepOutcome.ASK, StepOutcome.FINISHED, StepOutcome.INVALID):
        return  # answered elsewhere meanwhile: let the usual handlers reply
    await present(await Reply.for_update(update, context), step)
    raise ApplicationHandlerStop


async def after_registration(r: Reply, workshop_id: int, *, confirmed: bool) -> None:
    """After a seat: the "before" autonomy question. After a first registration ever: the
    needs survey offer (after that question's thank-you when there is one)."""
    surveys = r.context.services.surveys
    offer = await surveys.offer_needs_after_first_registration(r.user_id)
    if confirmed:
        step = await surveys.ask_autonomy_before(r.user_id, workshop_id)
        if step.outcome is StepOutcome.ASK and step.question is not None:
            await r.send(*question_view(r, step.question, intro=True))
            return
    if offer is not None:
        await r.send(*invitation_view(r, offer, surveys.catalog[NEEDS], None, None))


def survey_handlers() -> list[BotHandler]:
    """/needs and the survey buttons (group 0, before the resident's generic button handler)."""
    return [
        CommandHandler("needs", needs_command, filters=PRIVATE),
        CallbackQueryHandler(on_survey_button, pattern=r"^1\|S"),
    ]


# -- scheduled work -----------------------------------------------------------------------


async def survey_sweep(context: BotContext) -> None:
    """Invitations after workshops, follow-ups, and digests of closed polls."""
    report = await context.services.surveys.sweep()
    if report.queued:
        kick_delivery(context)


def schedule_survey_sweep(job_queue: BotJobQueue) -> None:
    job_queue.run_repeating(survey_sweep, interval=SURVEY_SWEEP_PERIOD, first=5, name=SWEEP_JOB)


@renders(INVITATION)
async def _invitation(context: BotContext, message: ClaimedMessage) -> list[Outgoing] | None:
    assert message.chat_id is not None
    view = await context.services.surveys.invitation(int(message.payload["participation_id"]))
    if view is None:
        return None  # answered or closed meanwhile
    r = Reply.for_recipient(context, message.chat_id, message.language)
    return [
        Outgoing.message(
            *invitation_view(
                r,
                view.participation_id,
                view.survey,
                view.workshop_title,
                view.workshop_starts_at,
            )
        )
    ]


# -- the facilitators' channel ------------------------------------------------------------


def _answer_words(r: Reply, line: CardLine) -> str:
    if line.skipped:
        return r.t("surveys.card.skipped")
    if line.text is not None:
        return f"« {html.escape(isolated(line.text), quote=False)} »"
    if line.number is not None:
        return f"{SCALE_FACES[line.number - 1]} {line.number}"
    labels = {option.key: option for option in line.options}
    return ", ".join(
        html.escape(_option_label(r, line.question, labels.get(key, Option(key, key))), quote=False)
        for key in line.choices
    )


@renders(RESPONSE_CARD)
async def _response_card(context: BotContext, message: ClaimedMessage) -> list[Outgoing] | None:
    assert message.chat_id is not None
    card = await context.services.surveys.response_card(int(message.payload["answer_set_id"]))
    if card is None:
        return None
    r = Reply.for_recipient(context, message.chat_id, None)
    translator = context.services.translator
    lines = [
        r.t(
            "surveys.card.title",
            survey=translator.localized(card.survey.title.as_dict(), r.language),
        )
    ]
    if card.workshop_title is not None and card.workshop_starts_at is not None:
        lines.append(_workshop_line(r, card.workshop_title, card.workshop_starts_at))
    if card.person is not None:
        lines.append(r.t("surveys.card.person", name=isolated(card.person)))
    elif card.survey.anonymous:
        lines.append(r.t("surveys.card.anonymous"))
    for line in card.lines:
        label = translator.localized(line.question.label.as_dict(), r.language)
        lines.append(r.t("surveys.card.line", label=label, answer=Html(_answer_words(r, line))))
    return [Outgoing.message("\n".join(lines))]


def _workshop_line(r: Reply, title: dict[str, str], starts_at: datetime) -> str:
    services = r.context.services
    return r.t(
        "surveys.digest.workshop",
        title=services.translator.localized(title, r.language),
        date=services.translator.date(r.language, starts_at, services.settings.tz),
    )


def _bar(count: int, total: int) -> str:
    filled = round(BAR_WIDTH * count / total) if total else 0
    if count and not filled:
        filled = 1  # one answer is never drawn as none
    return "▇" * filled + "▁" * (BAR_WIDTH - filled)


def _number(r: Reply, value: float) -> str:
    return format_decimal(value, format="0.0", locale=r.language)


def _question_digest(
    r: Reply,
    position: int,
    summary: QuestionSummary,
    title: dict[str, str] | None,
    starts_at: datetime | None,
) -> list[str]:
    question = summary.question
    lines = [f"<b>{position}. {_words(r, question.text.as_dict(), title, starts_at)}</b>"]
    if summary.answered == 0:
        lines.append(r.t("surveys.digest.nobody"))
    elif summary.skipped:
        lines.append(
            r.t(
                "surveys.digest.answered_skipped", answers=summary.answered, skipped=summary.skipped
            )
        )
    else:
        lines.append(r.t("surveys.digest.answered", answers=summary.answered))
    if summary.average is not None:
        lines.append(r.t("surveys.digest.average", average=_number(r, summary.average)))
    if summary.before is not None:
        average, count = summary.before
        lines.append(r.t("surveys.digest.before", average=_number(r, average), answers=count))
    for option_count in summary.counts:
        label = html.escape(_option_label(r, question, option_count.option), quote=False)
        bar = _bar(option_count.count, summary.answered)
        if question.type is QuestionType.SCALE:
            lines.append(f"{label} {bar} {option_count.count}")
        else:
            lines.append(f"{bar} {option_count.count} · {label}")
    lines += [f"💬 « {html.escape(isolated(text), quote=False)} »" for text in summary.texts]
    return lines


def digest_text(r: Reply, digest: RunDigest) -> str:
    """The whole digest as one HTML text; split or sent as a file by the renderer."""
    translator = r.context.services.translator
    survey_title = translator.localized(digest.survey.title.as_dict(), r.language)
    head = [r.t("surveys.digest.title", survey=survey_title)]
    if digest.workshop_title is not None and digest.workshop_starts_at is not None:
        head.append(_workshop_line(r, digest.workshop_title, digest.workshop_starts_at))
    head.append(
        r.t("surveys.digest.respondents", answers=digest.respondents, invited=digest.invited)
    )
    if digest.missed and digest.closes_at is not None:
        tz = r.context.services.settings.tz
        head.append(
            r.t(
                "surveys.digest.missed",
                date=translator.date(r.language, digest.closes_at, tz),
                time=translator.time(r.language, digest.closes_at, tz),
            )
        )
    blocks = ["\n".join(head)]
    for position, summary in enumerate(digest.questions, start=1):
        summary_lines = _question_digest(
            r, position, summary, digest.workshop_title, digest.workshop_starts_at
        )
        blocks.append("\n".join(summary_lines))
    return "\n\n".join(blocks)


_TAG = re.compile(r"</?[bi]>")


def plain(text: str) -> str:
    """The text of a message without its HTML, for a .txt file."""
    return html.unescape(_TAG.sub("", text))


@renders(DIGEST)
async def _digest(context: BotContext, message: ClaimedMessage) -> list[Outgoing] | None:
    assert message.chat_id is not None
    run_id = int(message.payload["run_id"])
    digest = await context.services.surveys.digest(run_id)
    if digest is None:
        return None
    r = Reply.for_recipient(context, message.chat_id, None)
    text = digest_text(r, digest)
    parts = split_for_telegram(text)
    if len(parts) <= DIGEST_MAX_MESSAGES:
        return [Outgoing.message(part) for part in parts]
    head = text.split("\n\n", 1)[0]
    document = InputFile(io.BytesIO(plain(text).encode()), filename=f"digest-{run_id}.txt")
    return [
        Outgoing.message(head + "\n\n" + r.t("surveys.digest.file")),
        Outgoing("send_document", {"document": document}),
    ]
